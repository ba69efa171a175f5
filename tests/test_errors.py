"""Errors a user meets: device mismatch, tpu:1, ops without kernels, and the opt-in CPU fallback."""

import warnings

import pytest
import torch

import torch_tpu

ONE_CHIP = "one chip per process"


def test_mixing_tpu_with_a_cpu_tensor():
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        torch.ones(2, device="tpu") + torch.ones(2)


@pytest.mark.parametrize("action", [
    lambda host, index: host[index],
    lambda host, index: host[index, index],
    lambda host, index: host.__setitem__(index, 1.0),
    lambda host, index: host.index_put_((index,), torch.tensor(1.0), accumulate=True),
])
def test_indexing_a_cpu_tensor_with_tpu_indices_raises_cudas_error(action):
    host = torch.arange(9.0).reshape(3, 3)
    with pytest.raises(RuntimeError, match=r"^indices should be either on cpu or on the same device as the indexed "
                                           r"tensor \(cpu\)$"):
        action(host, torch.tensor([0], device="tpu"))
    assert torch.equal(host, torch.arange(9.0).reshape(3, 3))


def test_a_tpu_tensor_takes_cpu_and_tpu_indices():
    values = torch.arange(9.0).reshape(3, 3)
    for index in (torch.tensor([2, 0]), torch.tensor([2, 0], device="tpu")):
        assert torch.equal(values.to("tpu")[index].cpu(), values[torch.tensor([2, 0])])


def test_a_cpu_scalar_tensor_is_allowed_where_cpu_allows_it():
    try:
        result = torch.ones(2, device="tpu") + torch.tensor(2.0)
    except NotImplementedError:
        pytest.skip("pointwise add has no tpu kernel yet")
    assert result.device.type == "tpu" and result.cpu().tolist() == [3.0, 3.0]


def test_copy_size_mismatch():
    with pytest.raises(RuntimeError, match="must match the size"):
        torch.ones(2, device="tpu").copy_(torch.ones(3))


@pytest.mark.parametrize("action", [
    lambda: torch.ones(2, device="tpu:1"),
    lambda: torch.empty(2, device=torch.device("tpu", 1)),
    lambda: torch.zeros(2).to("tpu:1"),
    lambda: torch.ones(2, device="tpu").to("tpu:1"),
    lambda: torch.tensor([1.0], device="tpu:1"),
    lambda: torch.tpu.set_device(1),
    lambda: torch.tpu.set_device("tpu:3"),
    lambda: torch.tpu.memory_allocated(1),
    lambda: torch.tpu.get_device_properties(2),
])
def test_other_chips_are_a_clear_error(action):
    with pytest.raises(RuntimeError) as caught:
        action()
    message = str(caught.value)
    assert "tpu:" in message and "torchrun" in message and "one chip" in message


# A custom op with only a CPU kernel: it will never get a tpu kernel or decomposition.
_LIBRARY = torch.library.Library("torch_tpu_test", "DEF")
_LIBRARY.define("scale(Tensor x, float factor) -> Tensor")
_LIBRARY.define("scale_(Tensor(a!) x, float factor) -> Tensor(a!)")
_LIBRARY.define("scale.out(Tensor x, float factor, *, Tensor(a!) out) -> Tensor(a!)")
_LIBRARY.impl("scale", lambda x, factor: x * factor, "CPU")
_LIBRARY.impl("scale_", lambda x, factor: x.mul_(factor), "CPU")
_LIBRARY.impl("scale.out", lambda x, factor, *, out: torch.mul(x, factor, out=out), "CPU")
scale = torch.ops.torch_tpu_test.scale


def test_op_without_kernel_names_the_op_and_the_fallback_switch(monkeypatch):
    monkeypatch.delenv("TORCH_TPU_CPU_FALLBACK", raising=False)
    with pytest.raises(NotImplementedError) as caught:
        scale(torch.ones(2, device="tpu"), 2.0)
    message = str(caught.value)
    assert "torch_tpu_test::scale" in message and "TORCH_TPU_CPU_FALLBACK=1" in message


def test_cpu_fallback_runs_warns_once_and_counts(monkeypatch):
    monkeypatch.setenv("TORCH_TPU_CPU_FALLBACK", "1")
    x = torch.arange(3.0).to("tpu")
    before = torch_tpu.fallback_counts().get("torch_tpu_test::scale.default", 0)
    with pytest.warns(UserWarning, match="torch_tpu_test::scale.default has no tpu kernel"):
        first = scale(x, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = scale(x, 3.0)
    assert first.device.type == "tpu" and first.cpu().tolist() == [0, 2, 4]
    assert second.cpu().tolist() == [0, 3, 6]
    assert torch_tpu.fallback_counts()["torch_tpu_test::scale.default"] == before + 2


@pytest.mark.filterwarnings("ignore:.*has no tpu kernel")
def test_cpu_fallback_writes_back_in_place_and_out(monkeypatch):
    monkeypatch.setenv("TORCH_TPU_CPU_FALLBACK", "1")
    base = torch.arange(6.0).to("tpu")
    view = base[1::2]
    result = torch.ops.torch_tpu_test.scale_(view, 10.0)
    assert result is view
    assert base.cpu().tolist() == [0, 10, 2, 30, 4, 50]
    out = torch.empty(0, device="tpu")
    returned = torch.ops.torch_tpu_test.scale.out(torch.arange(3.0).to("tpu"), 2.0, out=out)
    assert returned is out and out.device.type == "tpu" and out.cpu().tolist() == [0, 2, 4]


@pytest.mark.parametrize("dtype", [torch.float8_e4m3fnuz, torch.float8_e5m2fnuz, torch.float4_e2m1fn_x2, torch.bits8])
def test_unsupported_dtype_is_a_clear_error(dtype):
    """Formats an Ironwood chip does not store (AMD's fnuz FP8, packed FP4, raw bits) are refused by name."""
    with pytest.raises(TypeError, match=f"dtype {dtype} is not supported on the tpu device"):
        torch.zeros(2, dtype=dtype, device="tpu")
    with pytest.raises(TypeError, match="not supported on the tpu device"):
        torch.empty(2, dtype=dtype).to("tpu")


# A CPU tensor as the written operand (in-place self, out=) still dispatches to tpu, the higher-priority
# backend; CUDA raises its device-mismatch error there, and so must tpu, not an internal AttributeError.
@pytest.mark.parametrize("action", [
    lambda tpu: torch.ones(2).add_(tpu),
    lambda tpu: torch.ones(2).mul_(tpu),
    lambda tpu: torch.add(tpu, 1, out=torch.empty(2)),
    lambda tpu: torch.exp(tpu, out=torch.empty(2)),
    lambda tpu: torch.ones(2).copy_(tpu).add_(tpu),
], ids=["add_", "mul_", "add_out", "exp_out", "copy_then_add_"])
def test_a_cpu_tensor_written_by_a_tpu_op_is_a_device_mismatch(action):
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device, but found at least two "
                                           "devices, tpu:0 and cpu!"):
        action(torch.ones(2, device="tpu"))


@pytest.mark.parametrize("module", [torch.nn.Conv1d(2, 3, 3), torch.nn.Conv2d(2, 3, 3), torch.nn.ConvTranspose2d(2, 3, 3)],
                         ids=["conv1d", "conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("fallback", ["0", "1"])
def test_a_cpu_input_to_a_tpu_convolution_is_a_device_mismatch_not_a_missing_kernel(module, fallback, monkeypatch):
    # the convolution picks its CPU algorithm from the CPU input; that algorithm has no tpu kernel, and even the
    # opt-in CPU fallback must not run a call CUDA refuses for its mixed devices
    monkeypatch.setenv("TORCH_TPU_CPU_FALLBACK", fallback)
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device, but found at least two "
                                           "devices, tpu:0 and cpu!"):
        module.to("tpu")(torch.randn(1, 2, 5, 5)[:, :, 0] if isinstance(module, torch.nn.Conv1d)
                         else torch.randn(1, 2, 5, 5))


@pytest.mark.parametrize("op", [torch.lt, torch.ge, torch.xlogy])
def test_ops_cpu_refuses_for_complex_are_refused_on_tpu(op):
    """NumPy orders complex numbers lexicographically; PyTorch has no such order."""
    z = torch.tensor([1 + 2j, 3 - 1j])
    with pytest.raises(NotImplementedError) as cpu_error:
        op(z, z.flip(0))
    with pytest.raises(NotImplementedError, match=str(cpu_error.value).replace("'", ".")):
        op(z.to("tpu"), z.flip(0).to("tpu"))


@pytest.mark.parametrize("call", [
    lambda d: torch._assert_async(torch.tensor(True, device=d)),
    lambda d: torch._assert_async(torch.tensor(float("nan"), device=d)),
    lambda d: torch._assert_async(torch.tensor(0.0, device=d)),
    lambda d: torch._assert_async(torch.tensor([[0]], device=d), "no tokens left"),
    lambda d: torch._assert_async(torch.ones(2, device=d)),
    lambda d: torch._assert_async(torch.ones(0, device=d), "empty"),
], ids=["true", "nan_is_nonzero", "zero", "zero_with_message", "two_values", "no_values"])
def test_assert_async_checks_like_cpu(call):
    """torch._assert_async is a device-side assert on CUDA; on tpu, as on CPU, it checks at once."""
    try:
        call("cpu")
    except RuntimeError as error:
        with pytest.raises(RuntimeError, match=str(error)):
            call("tpu")
    else:
        call("tpu")


@pytest.mark.parametrize("call", [
    lambda: torch.ones(3, 3, device="tpu").t().to_sparse_csr(),
    lambda: torch.ones(3, 3, device="tpu").to_sparse(layout=torch.sparse_csr),
    lambda: torch.eye(3).to_sparse().to("tpu") * torch.eye(3).to_sparse().to("tpu"),
    lambda: torch.eye(3).to_sparse().to("tpu") @ torch.eye(3).to_sparse().to("tpu"),
    lambda: torch.sparse.mm(torch.eye(3).to_sparse_csr().to("tpu"), torch.ones(3, 2, device="tpu"), "sum"),
    lambda: torch.sparse.sampled_addmm(torch.eye(3).to_sparse_csr().to("tpu"), torch.ones(3, 3, device="tpu"),
                                       torch.ones(3, 3, device="tpu")),
], ids=["to_sparse_csr", "to_sparse_layout_csr", "coo_mul_coo", "coo_mm_coo", "mm_reduce", "sampled_addmm"])
def test_sparse_layouts_are_a_clear_error_naming_the_op(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CSR's "beta state" notice
        with pytest.raises(NotImplementedError,
                           match=r"The operator 'aten::\w+.*sparse layouts .* not supported on tpu"):
            call()


@pytest.mark.parametrize("call", [
    lambda: torch._empty_affine_quantized([2, 2], scale=0.5, zero_point=3, dtype=torch.quint8, device="tpu"),
    lambda: torch.quantize_per_tensor(torch.ones(3, device="tpu"), 0.1, 0, torch.quint8),
    lambda: torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8).to("tpu"),
], ids=["empty_quantized", "quantize_per_tensor", "quantized_to_tpu"])
def test_quantized_tensors_are_a_clear_error_naming_the_op(call):
    with pytest.raises(NotImplementedError, match=r"The operator 'aten::\w+.*quantized tensors .* not supported on tpu"):
        call()


@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16])
def test_a_dynamically_quantized_model_on_tpu_is_the_quantized_tensors_error(dtype):
    """quantize_dynamic's modules call the quantized:: ops (qint8 weights packed, or float16 ones), CPU-only kernels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        model = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(4, 2)), dtype=dtype)
    with pytest.raises(NotImplementedError, match=r"The operator 'quantized::\w+.*quantized tensors .* not supported"):
        model.to("tpu")(torch.ones(1, 4, device="tpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NotImplementedError, match=r"The operator '\w+::\w+.*quantized tensors .* not supported"):
            torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(4, 2)).to("tpu"), dtype=dtype)


def test_release_frames_frees_what_a_failed_kernel_made():
    """A kernel's half-built output dies with the failure, not with the exception the user may keep."""
    def failing_kernel():
        scratch = torch.empty(1000, device="tpu")  # noqa: F841 (held only by this frame)
        raise RuntimeError("refused")

    before = torch.tpu.memory_allocated()
    try:
        failing_kernel()
    except RuntimeError as error:
        assert torch.tpu.memory_allocated() == before + 4000
        torch_tpu._errors.release_frames(error)
        assert torch.tpu.memory_allocated() == before


@pytest.mark.parametrize("call", [
    lambda: torch.ones(2, 3, device="tpu").flip(0, 0),
    lambda: torch.ones(2, 3, device="tpu").masked_select(torch.ones(4, dtype=torch.bool, device="tpu")),
    lambda: torch.ones(3, device="tpu").index_select(0, torch.tensor([5], device="tpu")),
], ids=["flip", "masked_select", "index_select"])
def test_errors_from_kernels_carry_no_numpy_exception(call):
    """Neither the error nor anything chained to it comes from NumPy: the user sees PyTorch's error only."""
    with pytest.raises(Exception) as caught:
        call()
    error = caught.value
    assert type(error).__module__.partition(".")[0] in ("builtins", "torch")
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


@pytest.mark.parametrize("export", [
    lambda t: t.__dlpack__(),
    lambda t: t.__dlpack__(max_version=(1, 0)),
    lambda t: torch.utils.dlpack.to_dlpack(t),
    lambda t: __import__("numpy").from_dlpack(t),
])
def test_dlpack_export_of_a_tpu_tensor_is_refused_with_the_way_out(export):
    with pytest.raises(BufferError, match=r"DLPack cannot export a tpu tensor.*tensor\.cpu\(\)"):
        export(torch.arange(3.0, device="tpu"))


def test_dlpack_of_cpu_tensors_is_untouched():
    source = torch.arange(3.0)
    assert torch.equal(torch.from_dlpack(source.__dlpack__()), source)
    assert torch.equal(torch.utils.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(source)), source)
    assert torch.equal(torch.from_dlpack(torch.arange(3.0, device="tpu").cpu()), source)


def test_numpy_of_a_tpu_tensor_raises_cudas_type_error():
    with pytest.raises(TypeError, match="can't convert tpu:0 device type tensor to numpy. Use Tensor.cpu()"):
        torch.ones(2, device="tpu").numpy()
    assert not hasattr(torch.ones(2, device="tpu"), "__cuda_array_interface__")
