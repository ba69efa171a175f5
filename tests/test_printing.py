"""repr/str of tpu tensors read like CUDA's: the CPU text with the device in the suffix."""

import pytest
import torch


def cpu_text_with_device(cpu_text):
    """Insert ``device='tpu:0'`` where PyTorch puts a device: first in the suffix list."""
    body, sep, suffix = cpu_text.rpartition("]")
    if not sep:  # 0-d: tensor(1.5000) or tensor(1.5000, dtype=...)
        head, _, rest = cpu_text.partition("(")
        value, comma, tail = rest.partition(",")
        if comma:
            return f"{head}({value}, device='tpu:0',{tail}"
        return f"{head}({value[:-1]}, device='tpu:0')"
    if suffix.startswith(")"):
        return f"{body}], device='tpu:0')"
    return f"{body}], device='tpu:0'{suffix}"


CASES = {
    "float": lambda: torch.arange(6.0).view(2, 3),
    "transposed": lambda: torch.arange(6.0).view(2, 3).t(),
    "int": lambda: torch.arange(-3, 3),
    "bfloat16": lambda: torch.linspace(-1, 1, 5).to(torch.bfloat16),
    "float16": lambda: torch.tensor([1e-4, 65504.0], dtype=torch.float16),
    "float8": lambda: torch.tensor([0.5, 448.0, -2.0]).to(torch.float8_e4m3fn),
    "bool": lambda: torch.tensor([True, False]),
    "complex": lambda: torch.tensor([1 + 2j, -0.5j]),
    "special": lambda: torch.tensor([float("nan"), float("inf"), -0.0, 1e-20]),
    "scalar": lambda: torch.tensor(1.5),
    "scalar_int64_dtype": lambda: torch.tensor(3, dtype=torch.int16),
    "empty": lambda: torch.empty(0, 3),
    "requires_grad": lambda: torch.ones(3, requires_grad=True),
    "summarised": lambda: torch.arange(5000.0).reshape(50, 100) / 7,
    "summarised_1d": lambda: torch.arange(2000, dtype=torch.int32),
}


@pytest.mark.parametrize("name", CASES)
def test_repr_matches_cpu_with_device_suffix(name):
    cpu = CASES[name]()
    tpu = cpu.detach().to("tpu").requires_grad_(cpu.requires_grad)
    # PyTorch re-wraps the suffix line when the device makes it longer, as for CUDA
    assert " ".join(repr(tpu).split()) == " ".join(cpu_text_with_device(repr(cpu)).split())
    assert str(tpu) == repr(tpu)


def test_summarised_form_has_ellipsis():
    text = repr(torch.arange(5000.0).to("tpu"))
    assert "..." in text and text.endswith("device='tpu:0')")


def test_grad_fn_is_printed():
    x = torch.ones(3, device="tpu", requires_grad=True)
    try:
        y = x * 2
    except NotImplementedError:
        pytest.skip("pointwise mul has no tpu kernel yet")
    assert repr(y) == "tensor([2., 2., 2.], device='tpu:0', grad_fn=<MulBackward0>)"


def test_printing_does_not_compute_on_the_device(monkeypatch):
    # formatting runs on a CPU copy, so it works even for ops the backend lacks
    monkeypatch.setenv("TORCH_TPU_CPU_FALLBACK", "0")
    import torch_tpu

    before = dict(torch_tpu.fallback_counts())
    repr(torch.randn(100, 100).to("tpu"))
    assert torch_tpu.fallback_counts() == before


def test_storage_repr():
    text = repr(torch.zeros(2, dtype=torch.uint8, device="tpu").untyped_storage())
    assert "device=tpu:0" in text and "of size 2" in text


def test_tensors_inside_vmap_and_grad_print_as_on_cpu_and_later_transforms_still_work():
    # repr of functorch's wrappers (BatchedTensor, GradTrackingTensor) is PyTorch's text around the wrapped tensor's;
    # it raised for tpu tensors, and torch's printing keeps functorch disabled while the failed frame is alive
    from torch.func import grad, vmap

    def printed(device):
        texts = []

        def loss(t):
            texts.append(repr(t))
            return t.sin().sum()

        x = torch.arange(6.0, device=device).view(2, 3)
        vmap(grad(loss))(x)
        vmap(vmap(lambda t: texts.append(repr(t)) or t))(x)
        return texts

    tpu_texts, cpu_texts = printed("tpu"), printed("cpu")
    assert all(text.count("device='tpu:0'") == 1 for text in tpu_texts)
    assert [text.replace(", device='tpu:0'", "") for text in tpu_texts] == cpu_texts
    x = torch.randn(3, device="tpu")
    assert torch.equal(vmap(torch.sin)(x).cpu(), torch.sin(x).cpu())
