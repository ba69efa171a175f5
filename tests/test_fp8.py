"""FP8 on tpu: casts, torch._scaled_mm and Float8Linear, differential against torch CPU."""

import importlib.util
import pathlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.functional import ScalingType

from torch_tpu.fp8 import E4M3, E5M2, Float8Linear, convert_to_float8, to_float8

from differential import to_tpu

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"
FLOAT8 = (E4M3, E5M2)
BF16_TOLERANCE = dict(atol=2e-2, rtol=1.6e-2)


def bits(tensor):
    """The raw bit patterns, so NaN payloads and signed zeros compare too."""
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]
    return tensor.cpu().view(width)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


# --- casts -----------------------------------------------------------------------------------

EDGE_VALUES = [
    0.0, -0.0, 1.0, -1.0, 448.0, -448.0, 449.0, 464.0, 465.0, -465.0, 480.0, 1e4, -1e4,  # e4m3fn max/saturation
    57344.0, 57345.0, 61439.0, 61440.0, -61440.0, 65504.0, 1e30, -1e30,  # e5m2 max / overflow to inf
    2.0 ** -6, 2.0 ** -9, 2.0 ** -10, 1.5 * 2.0 ** -10, 2.0 ** -14, 2.0 ** -16, 2.0 ** -17, 2.0 ** -18,  # subnormals
    3.0 * 2.0 ** -11, 1.0625, 1.125, 1.1875, 0.3, -0.3,  # ties and inexact values
    float("inf"), float("-inf"), float("nan"), -float("nan"),
]


def cast_inputs(dtype):
    values = torch.cat([
        torch.randn(4000) * 100, torch.randn(2000) * 1e-2, torch.randn(2000) * 3e4,
        torch.rand(2000) * 2.0 ** -12, torch.tensor(EDGE_VALUES),
    ])
    return values.to(dtype)


@pytest.mark.parametrize("destination", FLOAT8, ids=str)
@pytest.mark.parametrize("source", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
def test_cast_to_float8_is_bit_exact(source, destination):
    values = cast_inputs(source)
    assert torch.equal(bits(to_tpu(values).to(destination)), bits(values.to(destination)))
    strided = to_tpu(values)[::3]  # a non-contiguous source
    assert torch.equal(bits(strided.to(destination)), bits(values[::3].to(destination)))


def test_cast_saturation_and_nan_follow_cpu():
    values = torch.tensor([500.0, -1e6, 1e6, float("inf"), float("nan")])
    e4m3 = to_tpu(values).to(E4M3).float().cpu()
    assert e4m3[:4].tolist() == [448.0, -448.0, 448.0, 448.0] and e4m3[4].isnan()  # no inf in e4m3fn
    e5m2 = to_tpu(values).to(E5M2).float().cpu()
    assert e5m2[:4].tolist() == [512.0, -float("inf"), float("inf"), float("inf")]  # e5m2 overflows to inf
    assert e5m2[4].isnan()


E5M2_SIGNALING_NAN_CODES = (0x7D, 0xFD)  # NaNs whose float16 pattern lacks the quiet bit


@pytest.mark.parametrize("destination", [torch.float32, torch.bfloat16, torch.float16, torch.float64, E4M3, E5M2],
                         ids=str)
@pytest.mark.parametrize("source", FLOAT8, ids=str)
def test_cast_from_float8_every_code(source, destination):
    codes = torch.arange(256, dtype=torch.uint8)
    values = codes.view(source)
    assert torch.equal(bits(to_tpu(values).to(destination)), bits(values.to(destination)))


@pytest.mark.parametrize("destination", [torch.float32, torch.float16], ids=str)
def test_e5m2_signaling_nan_is_quieted_like_cpu(destination):
    values = torch.tensor(E5M2_SIGNALING_NAN_CODES, dtype=torch.uint8).view(E5M2)
    assert torch.equal(bits(to_tpu(values).to(destination)), bits(values.to(destination)))


# --- torch._scaled_mm ------------------------------------------------------------------------


def fp8_matrix(rows, columns, dtype, spread=3.0):
    return (torch.randn(rows, columns) * spread).to(dtype)


def scales(kind, rows, columns):
    if kind == "tensorwise":
        return torch.tensor(0.37), torch.tensor(1.73)
    return torch.rand(rows, 1) + 0.5, torch.rand(1, columns) + 0.5


def assert_scaled_mm_close(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if expected.dtype in (torch.float32, torch.float64):
        # CPU rounds the scaled operands to float32 first; the MXU scales the accumulator.
        scale = expected.abs().max().item() or 1.0
        torch.testing.assert_close(actual.cpu(), expected, atol=1e-6 * scale, rtol=1e-5)
    else:
        # One rounding to the narrow output from slightly different float32 values: one step apart at most.
        torch.testing.assert_close(actual.cpu().float(), expected.float(), **BF16_TOLERANCE)


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float32, None], ids=str)
@pytest.mark.parametrize("kind", ["tensorwise", "rowwise"])
@pytest.mark.parametrize("types", [(E4M3, E4M3), (E5M2, E4M3), (E4M3, E5M2)], ids=lambda t: f"{t[0]}x{t[1]}")
def test_scaled_mm_matches_cpu(types, kind, out_dtype):
    a = fp8_matrix(48, 64, types[0])
    b = fp8_matrix(40, 64, types[1]).t()  # column-major, as CUDA wants; CPU takes any layout
    scale_a, scale_b = scales(kind, 48, 40)
    bias = torch.randn(40).to(out_dtype or torch.float32) if out_dtype else None
    expected = torch._scaled_mm(a, b, scale_a, scale_b, bias=bias, out_dtype=out_dtype)
    actual = torch._scaled_mm(to_tpu(a), to_tpu(b), to_tpu(scale_a), to_tpu(scale_b), bias=to_tpu(bias), out_dtype=out_dtype)
    assert_scaled_mm_close(actual, expected)


def test_scaled_mm_is_exact_products_with_float32_accumulation():
    """Integer-valued fp8 products and power-of-two scales: every step is exact, so the result is too."""
    a = torch.randint(-8, 9, (32, 256)).float().to(E4M3)
    b = torch.randint(-8, 9, (256, 16)).float().to(E5M2)
    scale_a, scale_b = torch.tensor(0.25), torch.tensor(2.0 ** -5)
    exact = (a.double() @ b.double()) * 0.25 * 2.0 ** -5
    actual = torch._scaled_mm(to_tpu(a), to_tpu(b), to_tpu(scale_a), to_tpu(scale_b), out_dtype=torch.float32)
    assert torch.equal(actual.cpu().double(), exact)


def test_scaled_mm_float32_result_is_at_least_as_accurate_as_cpu():
    a, b = fp8_matrix(64, 512, E4M3), fp8_matrix(512, 64, E4M3)
    scale_a, scale_b = torch.tensor(0.37), torch.tensor(1.73)
    exact = (a.double() @ b.double()) * scale_a.double() * scale_b.double()
    on_cpu = torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=torch.float32)
    on_tpu = torch._scaled_mm(to_tpu(a), to_tpu(b), to_tpu(scale_a), to_tpu(scale_b), out_dtype=torch.float32).cpu()
    assert (on_tpu.double() - exact).abs().max() <= (on_cpu.double() - exact).abs().max() * 1.5


@pytest.mark.parametrize("out_dtype", FLOAT8, ids=str)
def test_scaled_mm_float8_output_with_scale_result(out_dtype):
    """Integer operands and power-of-two scales make every step exact: only the fp8 rounding is left."""
    a = torch.randint(-8, 9, (32, 64)).float().to(E4M3)
    b = torch.randint(-8, 9, (64, 48)).float().to(E4M3)
    args = (a, b, torch.tensor(0.125), torch.tensor(0.25))
    for scale_result in (None, torch.tensor(0.125), torch.tensor(2.0 ** -8)):  # 2**-8 saturates e4m3fn
        expected = torch._scaled_mm(*args, scale_result=scale_result, out_dtype=out_dtype)
        actual = torch._scaled_mm(*map(to_tpu, args), scale_result=to_tpu(scale_result), out_dtype=out_dtype)
        assert torch.equal(bits(actual), bits(expected))
    # CPU applies scale_result only when out_dtype names the fp8 type, not when it defaults to it
    expected = torch._scaled_mm(*args, scale_result=torch.tensor(0.125))
    assert torch.equal(bits(torch._scaled_mm(*map(to_tpu, args), scale_result=to_tpu(torch.tensor(0.125)))), bits(expected))


@pytest.mark.parametrize("layout", ["row_major_mat2", "empty_rows", "empty_depth", "one_element_scales"])
def test_scaled_mm_layouts_and_empty(layout):
    a, b = fp8_matrix(16, 32, E4M3), fp8_matrix(32, 24, E4M3)
    scale_a = scale_b = torch.tensor(1.5)
    if layout == "empty_rows":
        a = fp8_matrix(0, 32, E4M3)
    elif layout == "empty_depth":
        a, b = fp8_matrix(16, 0, E4M3), fp8_matrix(0, 24, E4M3)
    elif layout == "one_element_scales":
        scale_a, scale_b = torch.full((1,), 1.5), torch.full((1, 1), 0.5)
    expected = torch._scaled_mm(a, b, scale_a, scale_b, out_dtype=torch.bfloat16)
    actual = torch._scaled_mm(to_tpu(a), to_tpu(b), to_tpu(scale_a), to_tpu(scale_b), out_dtype=torch.bfloat16)
    assert_scaled_mm_close(actual, expected)


def test_scaled_mm_device_views():
    a, b = fp8_matrix(32, 32, E4M3), fp8_matrix(64, 24, E4M3)
    expected = torch._scaled_mm(a[::2], b[::2], torch.tensor(1.0), torch.tensor(2.0), out_dtype=torch.float32)
    a_view, b_view = to_tpu(a)[::2], to_tpu(b)[::2]
    assert not a_view.is_contiguous() and not b_view.is_contiguous()
    actual = torch._scaled_mm(a_view, b_view, to_tpu(torch.tensor(1.0)), to_tpu(torch.tensor(2.0)), out_dtype=torch.float32)
    assert_scaled_mm_close(actual, expected)


def test_scaled_mm_use_fast_accum_changes_nothing():
    a, b = to_tpu(fp8_matrix(16, 64, E4M3)), to_tpu(fp8_matrix(64, 16, E4M3))
    one = to_tpu(torch.tensor(1.0))
    slow = torch._scaled_mm(a, b, one, one, out_dtype=torch.float32)
    fast = torch._scaled_mm(a, b, one, one, out_dtype=torch.float32, use_fast_accum=True)
    assert torch.equal(slow.cpu(), fast.cpu())


def test_scaled_mm_out_variant():
    a, b = fp8_matrix(16, 32, E4M3), fp8_matrix(32, 24, E4M3)
    one = torch.tensor(1.0)
    expected = torch._scaled_mm(a, b, one, one, out=torch.empty(0, dtype=torch.bfloat16))
    out = torch.empty(3, dtype=torch.bfloat16, device="tpu")
    result = torch._scaled_mm(to_tpu(a), to_tpu(b), to_tpu(one), to_tpu(one), out=out)
    assert result is out
    assert_scaled_mm_close(out, expected)


BAD_CALLS = {
    # name: (mat1, mat2, scale_a, scale_b, keyword arguments) built on CPU
    "3d_mat1": lambda: (torch.randn(2, 16, 32).to(E4M3), fp8_matrix(32, 16, E4M3), 1.0, 1.0, {}),
    "3d_mat2": lambda: (fp8_matrix(16, 32, E4M3), torch.randn(2, 32, 16).to(E4M3), 1.0, 1.0, {}),
    "shapes": lambda: (fp8_matrix(16, 32, E4M3), fp8_matrix(16, 48, E4M3), 1.0, 1.0, {}),
    "bf16_mat1": lambda: (torch.randn(16, 32).bfloat16(), fp8_matrix(32, 48, E4M3), 1.0, 1.0, {}),
    "float64_scale": lambda: (fp8_matrix(16, 32, E4M3), fp8_matrix(32, 48, E4M3), torch.tensor(1.0).double(), 1.0, {}),
    "int_scales": lambda: (fp8_matrix(16, 32, E4M3), fp8_matrix(32, 48, E4M3), torch.tensor(1), torch.tensor(1), {}),
    "1d_rowwise": lambda: (fp8_matrix(16, 32, E4M3), fp8_matrix(32, 48, E4M3), torch.ones(16), torch.ones(48), {}),
    "mixed_recipes": lambda: (fp8_matrix(16, 32, E4M3), fp8_matrix(32, 48, E4M3), torch.ones(16, 1), 1.0, {}),
    "bias_size": lambda: (fp8_matrix(16, 32, E4M3), fp8_matrix(32, 48, E4M3), 1.0, 1.0,
                          dict(bias=torch.randn(47), out_dtype=torch.float32)),
    "bias_2d": lambda: (fp8_matrix(16, 32, E4M3), fp8_matrix(32, 48, E4M3), 1.0, 1.0,
                        dict(bias=torch.randn(16, 48), out_dtype=torch.float32)),
}


def _as_scale(value):
    return torch.tensor(value) if isinstance(value, float) else value


def _raised(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the class is what is compared
        return type(error), str(error)
    return None


@pytest.mark.parametrize("name", BAD_CALLS)
def test_scaled_mm_errors_match_cpu(name):
    mat1, mat2, scale_a, scale_b, kwargs = BAD_CALLS[name]()
    scale_a, scale_b = _as_scale(scale_a), _as_scale(scale_b)
    expected = _raised(lambda: torch._scaled_mm(mat1, mat2, scale_a, scale_b, **kwargs))
    assert expected is not None
    tpu_kwargs = {k: to_tpu(v) for k, v in kwargs.items()}
    actual = _raised(lambda: torch._scaled_mm(to_tpu(mat1), to_tpu(mat2), to_tpu(scale_a), to_tpu(scale_b), **tpu_kwargs))
    assert actual == expected


def test_scaled_mm_rowwise_scales_must_be_contiguous_like_cpu():
    a, b = fp8_matrix(16, 32, E4M3), fp8_matrix(32, 48, E4M3)
    for make_scale in (lambda d: torch.ones(1, 16, device=d).t(), lambda d: torch.ones(16, 2, device=d)[:, :1]):
        expected = _raised(lambda: torch._scaled_mm(a, b, make_scale("cpu"), torch.ones(1, 48)))
        actual = _raised(lambda: torch._scaled_mm(to_tpu(a), to_tpu(b), make_scale("tpu"), torch.ones(1, 48, device="tpu")))
        assert expected is not None and actual == expected


def test_scaled_mm_out_dtype_must_match_out():
    a, b, one = fp8_matrix(16, 32, E4M3), fp8_matrix(32, 48, E4M3), torch.tensor(1.0)
    with pytest.raises(ValueError, match="out_dtype must match output matrix type"):
        torch._scaled_mm(to_tpu(a), to_tpu(b), to_tpu(one), to_tpu(one), out_dtype=torch.float32,
                         out=torch.empty(0, dtype=torch.bfloat16, device="tpu"))


@pytest.mark.parametrize("recipe", [ScalingType.TensorWise, ScalingType.RowWise], ids=str)
def test_functional_scaled_mm_v2(recipe):
    a, b = fp8_matrix(16, 64, E4M3), fp8_matrix(24, 64, E4M3).t()
    scale_a, scale_b = scales("tensorwise" if recipe == ScalingType.TensorWise else "rowwise", 16, 24)
    bias = torch.randn(24).bfloat16()
    expected = F.scaled_mm(a, b, scale_a, recipe, scale_b, recipe, bias=bias)
    actual = F.scaled_mm(to_tpu(a), to_tpu(b), to_tpu(scale_a), recipe, to_tpu(scale_b), recipe, bias=to_tpu(bias))
    assert_scaled_mm_close(actual, expected)
    assert_scaled_mm_close(actual, torch._scaled_mm(a, b, scale_a, scale_b, bias=bias, out_dtype=torch.bfloat16))


def test_functional_scaled_mm_v2_errors_match_cpu():
    a, b, one = fp8_matrix(16, 64, E4M3), fp8_matrix(64, 24, E4M3), torch.tensor(1.0)
    expected = _raised(lambda: F.scaled_mm(a, b, one, ScalingType.RowWise, one, ScalingType.RowWise))
    actual = _raised(lambda: F.scaled_mm(to_tpu(a), to_tpu(b), to_tpu(one), ScalingType.RowWise, to_tpu(one),
                                         ScalingType.RowWise))
    assert expected is not None and actual == expected


def test_fp8_matmul_on_a_chip_without_fp8(python_subprocess):
    """v5e's table has no fp8 MXU path: every fp8 matmul, scaled or not, is refused by name."""
    process = python_subprocess(
        """
        import torch
        a = torch.ones(16, 16, dtype=torch.float8_e4m3fn, device="tpu")
        one = torch.tensor(1.0, device="tpu")
        for matmul in (lambda: torch._scaled_mm(a, a.t(), one, one, out_dtype=torch.bfloat16),
                       lambda: torch.ops.aten.mm(a, a)):
            try:
                matmul()
                print("no error")
            except RuntimeError as error:
                print(error)
        """,
        env={"TORCH_TPU_CHIP": "v5e"},
    )
    lines = process.stdout.strip().splitlines()
    assert len(lines) == 2 and all("v5e" in line and "float8_e4m3fn" in line for line in lines), (
        process.stdout + process.stderr)


# --- Float8Linear ----------------------------------------------------------------------------


def test_to_float8_scales():
    x = torch.tensor([[1.0, -2.0], [0.5, 0.25]])
    quantized, scale = to_float8(to_tpu(x), E4M3)
    assert scale.shape == () and scale.cpu().item() == pytest.approx(2.0 / 448)
    assert quantized.dtype == E4M3 and quantized.float().abs().max().cpu().item() == 448.0
    rows, row_scales = to_float8(to_tpu(x), E4M3, contraction_dim=1)
    assert row_scales.shape == (2, 1)
    torch.testing.assert_close(row_scales.cpu(), torch.tensor([[2.0 / 448], [0.5 / 448]]))
    _, column_scales = to_float8(to_tpu(x), E5M2, contraction_dim=0)
    torch.testing.assert_close(column_scales.cpu(), torch.tensor([[1.0 / 57344, 2.0 / 57344]]))
    zeros, zero_scale = to_float8(to_tpu(torch.zeros(3)), E4M3)
    assert torch.isfinite(zero_scale.cpu()) and not zeros.float().cpu().any()


def _float8_pair(recipe, dtype, bias=True):
    reference = nn.Linear(64, 48, bias=bias).to(dtype)
    on_cpu = Float8Linear.from_float(reference, recipe)
    on_tpu = convert_to_float8(nn.Sequential(nn.Linear(64, 48, bias=bias)).to(dtype), recipe)
    on_tpu.load_state_dict({f"0.{k}": v for k, v in reference.state_dict().items()})
    return reference, on_cpu, on_tpu.to("tpu")[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise"])
def test_float8_linear_forward_backward_match_cpu(recipe, dtype):
    reference, on_cpu, on_tpu = _float8_pair(recipe, dtype)
    x = torch.randn(4, 8, 64, dtype=dtype, requires_grad=True)
    x_tpu = x.detach().to("tpu").requires_grad_()
    expected, actual = on_cpu(x), on_tpu(x_tpu)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    actual.backward(to_tpu(grad))
    tolerance = BF16_TOLERANCE if dtype == torch.bfloat16 else dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(actual.cpu(), expected, **tolerance)
    torch.testing.assert_close(x_tpu.grad.cpu(), x.grad, **tolerance)
    torch.testing.assert_close(on_tpu.weight.grad.cpu(), reference.weight.grad, **tolerance)
    torch.testing.assert_close(on_tpu.bias.grad.cpu(), reference.bias.grad, **tolerance)
    # and FP8 stays near the high-precision linear (e4m3 keeps 3 mantissa bits)
    high_precision = reference(x.detach())
    assert ((expected - high_precision).abs().max() / high_precision.abs().max()).item() < 0.08


@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise"])
def test_float8_linear_uses_e4m3_forward_and_e5m2_gradients(recipe, monkeypatch):
    calls, scaled_mm = [], torch._scaled_mm

    def logged(a, b, scale_a, scale_b, **kwargs):
        calls.append((a.dtype, b.dtype, tuple(scale_a.shape), tuple(scale_b.shape)))
        return scaled_mm(a, b, scale_a, scale_b, **kwargs)

    monkeypatch.setattr(torch, "_scaled_mm", logged)
    layer = convert_to_float8(nn.Linear(32, 16), recipe).to("tpu")
    layer(torch.randn(8, 32, device="tpu", requires_grad=True)).sum().backward()
    if recipe == "tensorwise":
        shapes = [((), ())] * 3
    else:  # scales along the contraction dimension of each product
        shapes = [((8, 1), (1, 16)), ((8, 1), (1, 32)), ((16, 1), (1, 32))]
    assert calls == [(E4M3, E4M3, *shapes[0]), (E5M2, E4M3, *shapes[1]), (E5M2, E4M3, *shapes[2])]


def test_float8_linear_without_bias_and_frozen_input():
    _, on_cpu, on_tpu = _float8_pair("tensorwise", torch.float32, bias=False)
    x = torch.randn(5, 64)
    expected = on_cpu(x)
    expected.sum().backward()
    actual = on_tpu(to_tpu(x))
    actual.sum().backward()
    torch.testing.assert_close(actual.cpu(), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(on_tpu.weight.grad.cpu(), on_cpu.weight.grad, atol=1e-4, rtol=1e-4)


def test_float8_linear_refuses_a_second_derivative():
    # a gradient penalty through an FP8 linear would differentiate the FP8 casts, which have no derivative:
    # a clear error, never a silently zero second derivative
    layer = Float8Linear(64, 32).to("tpu")
    x = torch.randn(5, 64, device="tpu", requires_grad=True)
    (grad,) = torch.autograd.grad(layer(x).sum(), x)  # first derivatives are fine
    assert grad.shape == x.shape
    with pytest.raises(NotImplementedError, match="Float8Linear: double backward"):
        torch.autograd.grad(layer(x).sum(), x, create_graph=True)


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_convert_to_float8_keeps_parameters_state_dict_and_ties():
    gpt = _load_example("models").GPT(vocabulary=32, context=8, width=16, heads=2, layers=1)
    names, linears = list(gpt.state_dict()), [n for n, m in gpt.named_modules() if isinstance(m, nn.Linear)]
    head_weight = gpt.head.weight
    convert_to_float8(gpt, "rowwise", module_filter_fn=lambda module, name: name != "head")
    assert list(gpt.state_dict()) == names
    assert gpt.head.weight is head_weight is gpt.tokens.weight  # the tied head stays tied
    assert type(gpt.head) is nn.Linear  # filtered out
    converted = {n: m.recipe for n, m in gpt.named_modules() if isinstance(m, Float8Linear)}
    assert converted == {n: "rowwise" for n in linears if n != "head"} and len(converted) >= 3
    gpt.load_state_dict(gpt.state_dict())
    assert type(convert_to_float8(gpt.head)) is Float8Linear  # a bare Linear converts too
    with pytest.raises(ValueError, match="unknown float8 recipe"):
        convert_to_float8(nn.Linear(4, 4), "blockwise")


def test_train_fp8_example_runs(capsys):
    results = _load_example("train_fp8").main(["--steps", "2", "--batch", "4"])
    assert set(results) == {"bf16", "fp8"}
    assert all(torch.isfinite(torch.tensor(loss)) for loss in results.values())
    assert "final loss" in capsys.readouterr().out


def test_fp8_inference_example_runs(capsys):
    report = _load_example("fp8_inference").main(["--batch", "2"])
    assert report["relative_logit_error"] < 0.1 and report["top1_agreement"] > 0.8
    assert "top-1 agreement" in capsys.readouterr().out
