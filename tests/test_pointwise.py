"""Pointwise kernels, differential against torch CPU on the same inputs."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from differential import assert_identical, check, check_grads, check_same_error, compare

SPECIALS = [float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.0, -1.0, 0.5]


def sample(shape, dtype=torch.float32, low=-3.0, high=3.0, seed=0, specials=True):
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) > 0.5
    if not (dtype.is_floating_point or dtype.is_complex):
        return torch.randint(int(low) - 2, int(high) + 3, shape, generator=generator).to(dtype)
    values = torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low
    flat = values.view(-1)
    if specials and flat.numel() >= 2 * len(SPECIALS):
        flat[: len(SPECIALS)] = torch.tensor(SPECIALS, dtype=torch.float64)
    return values.to(dtype)


# --------------------------------------------------------------------------------------------------
# Unary

UNARY_FLOAT = [
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "reciprocal", "sigmoid",
    "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh",
    "erf", "erfc", "erfinv", "lgamma", "digamma", "i0", "sinc", "logit", "deg2rad", "rad2deg",
    "special.i0e", "special.i1", "special.i1e", "special.ndtri", "special.log_ndtr", "special.erfcx",
    "special.entr",
]
UNARY_ANY = [
    "abs", "neg", "sign", "sgn", "floor", "ceil", "round", "trunc", "signbit", "isnan", "isinf",
    "isfinite", "isposinf", "isneginf", "logical_not", "angle", "positive", "nan_to_num", "square",
]
TOLERANCE = {"lgamma": 1e-4, "digamma": 1e-4, "special.i1e": 1e-5, "special.erfcx": 1e-5}
# CPU rounds every intermediate of these to bf16; the tpu rounds once, from float32
BF16_TOLERANCE = {"logit": 2e-2}


def torch_function(name):
    function = torch
    for part in name.split("."):
        function = getattr(function, part)
    return function


@pytest.mark.parametrize("name", UNARY_FLOAT + UNARY_ANY + ["frac"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_unary_float(name, dtype):
    x = sample((6, 5), dtype)
    tolerance = BF16_TOLERANCE.get(name) if dtype == torch.bfloat16 else TOLERANCE.get(name)
    check(torch_function(name), x, atol=tolerance, rtol=tolerance)
    check(torch_function(name), x.t(), atol=tolerance, rtol=tolerance)  # non-contiguous
    check(torch_function(name), x[2, 3], atol=tolerance, rtol=tolerance)  # 0-d
    check(torch_function(name), x[:0])  # empty


@pytest.mark.parametrize("name", UNARY_FLOAT + UNARY_ANY)
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_unary_integer_and_bool(name, dtype):
    tolerance = TOLERANCE.get(name)
    check(torch_function(name), sample((4, 3), dtype), atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.bool, torch.float32])
def test_bitwise_not(dtype):
    check(torch.bitwise_not, sample((5, 4), dtype))


def test_round_decimals_and_polygamma_and_logit_eps():
    x = sample((4, 5), torch.float32, low=-50, high=50, specials=False)
    for decimals in (-1, 0, 2):
        check(torch.round, x, decimals=decimals)
    positive = sample((4, 5), torch.float32, low=0.1, high=4, specials=False)
    for n in (0, 1, 2):
        check(torch.polygamma, n, positive, atol=1e-4, rtol=1e-4)
    check(torch.logit, sample((4, 5), low=-0.2, high=1.2), eps=0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("eps", [None, 0.0, 0.1])
@pytest.mark.parametrize("transposed", [False, True])
def test_logit_backward_at_zero_and_nan_has_cpus_lanes_and_tail(dtype, eps, transposed):
    """CPU's vector lanes divide by ``x * (1 - x)`` (-0.0 gives the gradient's opposite infinity; with ``eps`` a NaN
    fails their bounds test: 0); its scalar tail (each row's last elements) gives ``grad * inf`` at 0 and 1, and
    NaN for a NaN. Rows of 150 reach past the widest vectors (64 bf16 values a step)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(3, 150, generator=generator, dtype=torch.float64) * 1.2 - 0.1
    which = torch.randint(0, 5, x.shape, generator=generator)
    for code, value in enumerate([-0.0, 0.0, 1.0, math.nan]):
        x = torch.where(which == code, value, x)
    grad, x = torch.randn(x.shape, generator=generator).to(dtype), x.to(dtype)
    if transposed:
        grad, x = grad.t(), x.t()
    expected = torch.ops.aten.logit_backward(grad, x, eps)
    result = torch.ops.aten.logit_backward(grad.to("tpu"), x.to("tpu"), eps).cpu()
    assert torch.equal(result.isnan(), expected.isnan())
    assert torch.equal(result.nan_to_num(0), expected.nan_to_num(0))


@pytest.mark.parametrize("grad_dtype,input_dtype", [(torch.float32, torch.float64), (torch.float64, torch.float32),
                                                     (torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)])
def test_mish_backward_has_the_inputs_dtype_as_on_cpu(grad_dtype, input_dtype):
    """CPU allocates the gradient with ``input.options()`` and casts the common dtype's result into it; the tpu
    returned the common dtype."""
    generator = torch.Generator().manual_seed(0)
    grad, x = torch.randn(37, generator=generator).to(grad_dtype), torch.randn(37, generator=generator).to(input_dtype)
    expected = torch.ops.aten.mish_backward(grad, x)
    result = torch.ops.aten.mish_backward(grad.to("tpu"), x.to("tpu")).cpu()
    assert result.dtype == expected.dtype == input_dtype
    torch.testing.assert_close(result, expected)


def test_nan_to_num_uses_the_dtype_own_limits():
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = sample((4, 5), dtype)
        check(torch.nan_to_num, x)
        check(torch.nan_to_num, x, nan=1.5, posinf=2.0, neginf=-2.0)


def test_complex_unary():
    x = torch.complex(sample((3, 4), seed=1, specials=False), sample((3, 4), seed=2, specials=False))
    for name in ("abs", "angle", "sgn", "exp", "neg", "conj_physical", "sqrt", "sin", "log"):
        check(torch_function(name), x)


# --------------------------------------------------------------------------------------------------
# Binary

BINARY = [
    "add", "sub", "mul", "div", "true_divide", "remainder", "fmod", "pow", "atan2", "hypot", "maximum",
    "minimum", "fmax", "fmin", "copysign", "nextafter", "logaddexp", "logaddexp2", "xlogy",
    "floor_divide", "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor",
    "heaviside", "special.xlog1py", "special.zeta", "igamma", "igammac", "float_power", "rsub",
]
INTEGER_BINARY = ["bitwise_and", "bitwise_or", "bitwise_xor", "gcd", "lcm"]
BINARY_TOLERANCE = {"special.zeta": 1e-4, "igamma": 1e-4, "igammac": 1e-4}


def binary_operands(name, dtype, seed):
    low, high = (0.25, 3.0) if name.startswith(("special.zeta", "igamma")) else (-3.0, 3.0)
    return sample((4, 5), dtype, low, high, seed=seed), sample((5,), dtype, low, high, seed=seed + 1)


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.int16, torch.bool])
def test_binary_broadcasting(name, dtype):
    a, b = binary_operands(name, dtype, seed=3)
    if name == "heaviside":
        b = b.to(dtype)
    if dtype in (torch.int64, torch.int16) and name in ("remainder", "fmod", "floor_divide", "div"):
        b = torch.where(b == 0, 1, b).to(dtype)  # integer division by zero is tested below
    tolerance = BINARY_TOLERANCE.get(name)
    function = torch_function(name)
    check(function, a, b, atol=tolerance, rtol=tolerance)
    check(function, b.unsqueeze(1), a.t(), atol=tolerance, rtol=tolerance)  # non-contiguous, both broadcast
    check(function, a[:0], b, atol=tolerance, rtol=tolerance)  # empty


@pytest.mark.parametrize("lambd", [0.5, 0.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_shrinks_keep_nan_as_cpu_does(dtype, lambd):
    x = torch.tensor([math.nan, -0.3, 0.3, 0.0, 1.0, -math.inf, math.inf, math.nan] * 3, dtype=dtype)
    for shrink in (F.softshrink, F.hardshrink):
        check(lambda t: shrink(t, lambd), x)
    check_grads(lambda t: F.softshrink(t, lambd), x[1:5].double())


SIMD_LAYOUTS = {"contiguous": lambda t: t, "transposed": lambda t: t.t(), "strided": lambda t: t[:, ::2],
                "offset_rows": lambda t: t[:, 1:]}
BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _shrink_inputs(dtype, columns):
    """Values inside and outside softshrink's thresholds and both NaN signs, in rows long enough for CPU's
    vector loop, its scalar tail, and (at 40,000 columns) its two threads' chunks."""
    x = torch.full((3, columns), -0.1, dtype=dtype)
    x[:, ::3], x[:, 1::7], x[:, 2::11], x[:, 3::5] = 0.7, math.nan, -math.nan, -0.0
    return x


@pytest.mark.parametrize("layout", SIMD_LAYOUTS.values(), ids=SIMD_LAYOUTS.keys())
@pytest.mark.parametrize("columns", [1, 8, 17, 33, 70, 40000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_softshrink_gives_cpus_signed_zeros_and_nan_bits_in_its_vector_loop_and_tail(dtype, columns, layout):
    """Bit for bit: CPU's vector loop gives +0.0 between the thresholds and its scalar tail (the last elements of a
    contiguous row past whole vector pairs, every element of a strided one) ``x * 0``, -0.0 for a negative x;
    a bf16 NaN is 0xFFFF from its vectors and 0x7FC0 from the tail."""
    x = _shrink_inputs(dtype, columns)
    expected = F.softshrink(layout(x), 0.5)
    actual = F.softshrink(layout(x.to("tpu")), 0.5).cpu()
    bits = BITS[dtype.itemsize]
    assert torch.equal(actual.view(bits), expected.view(bits))


BF16_NAN_MAKERS = {  # each makes NaNs in float32 from the bf16 rows _nan_making_inputs gives
    "add": lambda x, y: x + y, "mul": lambda x, y: x * y, "div": torch.div, "add_number": lambda x, y: x + 2.0,
    "relu": lambda x, y: F.relu(x), "hardshrink": lambda x, y: F.hardshrink(x),
    "sigmoid": lambda x, y: torch.sigmoid(x),
    "maximum": torch.maximum, "sqrt": lambda x, y: torch.sqrt(x), "log": lambda x, y: torch.log(x),
    "silu": lambda x, y: F.silu(x), "asinh": lambda x, y: torch.asinh(x),
}


def _nan_making_inputs(columns):
    """bf16 rows where ``x + y``, ``x * y`` and ``x / y`` are NaN (inf + -inf, inf * 0, 0 / 0) and NaN inputs
    (c10's 0x7FC0)."""
    x = torch.full((3, columns), 1.5, dtype=torch.bfloat16)
    y = torch.full((3, columns), -2.0, dtype=torch.bfloat16)
    x[:, ::3], y[:, ::3] = math.inf, -math.inf
    x[:, 1::3], y[:, 1::3] = 0.0, 0.0
    x[:, 2::5] = math.nan
    return x, y


@pytest.mark.parametrize("layout", SIMD_LAYOUTS.values(), ids=SIMD_LAYOUTS.keys())
@pytest.mark.parametrize("columns", [1, 3, 40, 70])
@pytest.mark.parametrize("op", BF16_NAN_MAKERS.keys())
def test_bf16_nans_are_0xffff_from_cpus_vector_lanes_and_c10s_0x7fc0_from_its_scalar_tail(op, columns, layout,
                                                                                         fresh_dynamo):
    """Bit for bit: a bf16 NaN result computed in float32 is 0xFFFF where cpu_kernel_vec converts it in vectors
    and 0x7FC0 (c10's round_to_nearest_even) where its scalar tail does; the vml kernels (sqrt, log) convert every
    element in vectors, silu's AVX-512 build in 64-byte vectors on an AVX-512 CPU, asinh's loop none; hardshrink
    returns its input's own bits. Eager, compiled and (for add) foreach."""
    x, y = _nan_making_inputs(columns)
    function = BF16_NAN_MAKERS[op]
    expected = function(layout(x), layout(y)).view(torch.int16)
    operands = (layout(x.to("tpu")), layout(y.to("tpu")))
    assert torch.equal(function(*operands).cpu().view(torch.int16), expected)
    compiled = torch.compile(function, backend="tpu", fullgraph=True)(*operands)
    assert torch.equal(compiled.cpu().view(torch.int16), expected)
    if op == "add":
        summed = torch._foreach_add([operands[0]], [operands[1]])[0]
        assert torch.equal(summed.cpu().view(torch.int16), expected)


@pytest.mark.parametrize("layout", SIMD_LAYOUTS.values(), ids=SIMD_LAYOUTS.keys())
@pytest.mark.parametrize("columns", [8, 33, 70, 40000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_hardtanh_backward_of_nan_is_zero_in_cpus_vector_loop_and_the_gradient_in_its_tail(dtype, columns, layout):
    x = _shrink_inputs(dtype, columns)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    expected = torch.ops.aten.hardtanh_backward(layout(grad), layout(x), -1, 1)
    actual = torch.ops.aten.hardtanh_backward(layout(grad.to("tpu")), layout(x.to("tpu")), -1, 1).cpu()
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("grad_shape, x", [((3, 40), torch.tensor([[math.nan, 0.5] * 20])),
                                           ((5,), torch.tensor(math.nan)), ((2, 3), torch.tensor([0.5, math.nan, 2.0]))])
def test_hardtanh_backward_of_a_broadcast_nan_input_matches_cpu(grad_shape, x):
    grad = torch.randn(grad_shape, generator=torch.Generator().manual_seed(0))
    expected = torch.ops.aten.hardtanh_backward(grad, x, -1, 1)
    assert torch.equal(torch.ops.aten.hardtanh_backward(grad.to("tpu"), x.to("tpu"), -1, 1).cpu(), expected)


def _lane_operand(rng, values, rows, columns):
    """A random input for CPU's SIMD lanes, as (its values, the view that lays them out): contiguous, transposed,
    strided, or broadcast along the row (stride 0) from a column or from one value."""
    def draw(*shape):
        return values[torch.from_numpy(rng.integers(0, len(values), shape))]

    kind = rng.choice(["contiguous", "transposed", "strided", "column", "scalar"])
    if kind == "transposed":
        return draw(columns, rows), lambda t: t.t()
    if kind == "strided":
        return draw(rows, 2 * columns), lambda t: t[:, ::2]
    if kind == "column":
        return draw(rows, 1), lambda t: t.expand(rows, columns)
    if kind == "scalar":
        return draw(), lambda t: t.expand(rows, columns)
    return draw(rows, columns), lambda t: t


OUT_LAYOUTS = {"contiguous": lambda r, c, **k: torch.empty(r, c, **k),
               "transposed": lambda r, c, **k: torch.empty(c, r, **k).t(),
               "strided": lambda r, c, **k: torch.empty(r, 2 * c, **k)[:, ::2]}


def _lane_call(name, operands, out):
    if name == "softshrink":
        return torch.ops.aten.softshrink(*operands, 0.5) if out is None else torch.ops.aten.softshrink.out(
            *operands, 0.5, out=out)
    if out is None:
        return torch.ops.aten.hardtanh_backward(*operands, -1, 1)
    return torch.ops.aten.hardtanh_backward.grad_input(*operands, -1, 1, grad_input=out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
def test_simd_lanes_follow_broadcast_inputs_and_the_outs_layout_as_on_cpu(dtype):
    """CPU's cpu_kernel_vec vectorises a row whose output and inputs are contiguous, or whose one input is
    broadcast along it (stride 0; two broadcast inputs take the scalar loop), and writes a strided ``out=`` in its
    scalar loop: softshrink's signed zeros and bf16 NaN bits and hardtanh_backward of NaN follow, bit for bit, for
    random row lengths (vector pairs and tails of every length) and layouts."""
    rng = np.random.default_rng(torch.finfo(dtype).bits)
    values = torch.tensor([-0.1, 0.7, math.nan, -math.nan, -0.0, 0.0, 2.0], dtype=dtype)
    bits = BITS[dtype.itemsize]
    for _ in range(80):
        rows, columns = int(rng.integers(1, 4)), int(rng.integers(1, 80))
        name = rng.choice(["softshrink", "hardtanh_backward"])
        operands = [_lane_operand(rng, values, rows, columns) for _ in range(1 if name == "softshrink" else 2)]
        out_layout = rng.choice([None, *OUT_LAYOUTS])
        results = []
        for device in ("cpu", "tpu"):
            out = None if out_layout is None else OUT_LAYOUTS[out_layout](rows, columns, dtype=dtype, device=device)
            results.append(_lane_call(name, [view(base.to(device)) for base, view in operands], out))
        expected, actual = results
        case = (name, out_layout, [view(base).stride() for base, view in operands], columns)
        assert actual.stride() == expected.stride(), case
        assert torch.equal(actual.cpu().view(bits), expected.view(bits)), case


@pytest.mark.parametrize("alpha", [-1.397, 0.3, 1e-3, 3, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_add_and_sub_with_alpha_round_once_as_cpus_fused_multiply_add(dtype, alpha):
    """CPU computes ``a + alpha * b`` as one fused multiply-add (vec::fmadd; its scalar tail is contracted too): a
    product rounded before the sum differed in about a quarter of the elements. Magnitudes over 40 decades, rows
    with tails, broadcasting, foreach and out= alike, bit for bit."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(3, 1003, generator=generator, dtype=dtype)
    b = torch.randn(3, 1003, generator=generator, dtype=dtype) * torch.logspace(-20, 20, 1003, dtype=dtype)
    for function in (torch.add, torch.sub):
        check(lambda x, y: function(x, y, alpha=alpha), a, b, atol=0, rtol=0)
        check(lambda x, y: function(x, y, alpha=alpha), a, b[0], atol=0, rtol=0)
        check(lambda x, y: function(x, y, alpha=alpha, out=torch.empty_like(x)), a, b, atol=0, rtol=0)
    check(lambda x, y: torch._foreach_add([x, y], [y, x], alpha=alpha), a, b, atol=0, rtol=0)


SIGNED_ZERO_TIES = {  # with number bounds CPU keeps x where it equals the bound; with tensors its vector loop the bound
    "relu": lambda x, y: torch.relu(x), "relu_": lambda x, y: x.clone().relu_(),
    "clamp_min": lambda x, y: torch.clamp_min(x, 0.0), "clamp_max": lambda x, y: torch.clamp_max(x, -0.0),
    "clamp": lambda x, y: torch.clamp(x, 0.0, 1.0), "clamp_tensors": lambda x, y: torch.clamp(x, y, y),
    "maximum": torch.maximum, "minimum": torch.minimum,
    "foreach_clamp_min": lambda x, y: torch._foreach_clamp_min([x], 0.0)[0],
    "foreach_maximum_number": lambda x, y: torch._foreach_maximum([x], -0.0)[0],
    "foreach_minimum_numbers": lambda x, y: torch._foreach_minimum([x], [0.0])[0],
    "foreach_maximum": lambda x, y: torch._foreach_maximum([x], [y])[0],
    "logit_eps": lambda x, y: torch.logit(x.abs() * 0.25, 0.0)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", SIGNED_ZERO_TIES)
def test_signed_zero_ties_as_cpu_gives_them(name, dtype):
    """relu(-0.0) is -0.0 on CPU, and so is clamp(-0.0, 0.0, 1.0): its loops for number bounds keep x where it equals
    the bound (NumPy's maximum gave the bound); maximum, minimum and tensor bounds give the bound in its vector loop
    (rows of whole vectors here)."""
    x = torch.tensor([-0.0, 0.0, math.nan, 2.0] * 8, dtype=dtype)
    y = torch.tensor([0.0, -0.0, 1.0, math.nan] * 8, dtype=dtype)
    expected = SIGNED_ZERO_TIES[name](x, y)
    actual = SIGNED_ZERO_TIES[name](x.to("tpu"), y.to("tpu")).cpu()
    numbers = ~expected.isnan()  # (a NaN's sign is the vector loop's own)
    assert torch.equal(torch.signbit(actual[numbers]), torch.signbit(expected[numbers]))
    assert_close(actual, expected, equal_nan=True, atol=0, rtol=0)


SWEEP_REFUSALS = {  # each computed a result on tpu (or crashed, or worded the error otherwise) where CPU refuses
    "elu_out_of_another_dtype": lambda d: torch.ops.aten.elu.out(torch.ones(3, device=d),
                                                                out=torch.empty(3, dtype=torch.float64, device=d)),
    "softplus_out_complex": lambda d: torch.ops.aten.softplus.out(torch.ones(3, device=d),
                                                                  out=torch.empty(3, dtype=torch.complex64, device=d)),
    "gelu_out_bool": lambda d: torch.ops.aten.gelu.out(torch.ones(3, device=d),
                                                       out=torch.empty(3, dtype=torch.bool, device=d)),
    "hardswish_out": lambda d: torch.ops.aten.hardswish.out(torch.ones(3, device=d),
                                                            out=torch.empty(3, dtype=torch.float64, device=d)),
    "conj_physical_out": lambda d: torch.conj_physical(torch.ones(3, device=d),
                                                       out=torch.empty(3, dtype=torch.float64, device=d)),
    "prelu_weight_dtype": lambda d: torch.ops.aten._prelu_kernel(torch.ones(3, dtype=torch.int64, device=d),
                                                                 torch.ones(3, dtype=torch.uint8, device=d)),
    "prelu_bf16_with_float32_weight": lambda d: torch.ops.aten._prelu_kernel(
        torch.ones(3, dtype=torch.bfloat16, device=d), torch.ones(3, device=d)),
    "prelu_integers": lambda d: torch.ops.aten._prelu_kernel(torch.ones(3, dtype=torch.int32, device=d),
                                                             torch.ones(3, dtype=torch.int32, device=d)),
    "hardswish_backward_integers": lambda d: torch.ops.aten.hardswish_backward(
        torch.ones(3, dtype=torch.int64, device=d), torch.ones(3, dtype=torch.int64, device=d)),
    "hardswish_backward_complex": lambda d: torch.ops.aten.hardswish_backward(
        torch.ones(3, dtype=torch.complex64, device=d), torch.ones(3, dtype=torch.complex64, device=d)),
    "gelu_integers": lambda d: torch.ops.aten.gelu(torch.ones(3, dtype=torch.int64, device=d), approximate="tanh"),
    "gelu_backward_integers": lambda d: torch.ops.aten.gelu_backward(torch.ones(3, dtype=torch.int64, device=d),
                                                                     torch.ones(3, dtype=torch.int64, device=d)),
    "softshrink_integers": lambda d: torch.ops.aten.softshrink(torch.ones(3, dtype=torch.int64, device=d)),
    "floor_divide_complex": lambda d: torch.floor_divide(torch.ones(3, dtype=torch.complex64, device=d), 2),
    "div_trunc_complex": lambda d: torch.div(torch.ones(3, dtype=torch.complex64, device=d),
                                             torch.ones(3, device=d), rounding_mode="trunc"),
}


@pytest.mark.parametrize("name", SWEEP_REFUSALS)
def test_sweep_found_refusals_match_cpu(name):
    """CPU's unary activations take an out of the input's dtype only; prelu a weight of the input's dtype and a
    floating input; hardswish_backward floating operands (found by a random sweep)."""
    check_same_error(SWEEP_REFUSALS[name])


OUT_CALLS = {  # op name -> op(x, out=...) with the op's other arguments
    **{name: getattr(torch, name) for name in ("floor", "ceil", "trunc", "round", "sign", "sgn", "neg", "frac",
                                                  "bitwise_not", "signbit", "isposinf", "isneginf")},
    **{name: getattr(torch._C._nn, name) for name in ("elu", "softplus", "hardsigmoid", "silu", "gelu", "leaky_relu",
                                                        "hardswish", "mish", "softshrink")},
    "hardshrink": torch.hardshrink, "abs": torch.abs, "conj_physical": torch.conj_physical,
    "hardtanh": lambda x, out: torch._C._nn.hardtanh(x, 0, 1, out=out), "clamp": lambda x, out: torch.clamp(x, 0, 1, out=out),
    "clamp_min": lambda x, out: torch.clamp_min(x, 0, out=out), "clamp_max": lambda x, out: torch.clamp_max(x, 1, out=out),
}


@pytest.mark.parametrize("expanded", [False, True], ids=["plain_out", "expanded_out"])
@pytest.mark.parametrize("out_dtype", [torch.float64, torch.int64, torch.bool], ids=str)
@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.bool, torch.float32], ids=str)
@pytest.mark.parametrize("name", sorted(OUT_CALLS))
def test_out_calls_check_in_cpus_order(name, dtype, out_dtype, expanded):
    """An out= call wrong twice raises CPU's first error: the meta function's refusal of the input (complex floor,
    sign or clamp, bool neg), then the iterator's overlap check of an expanded out, then the out's dtype, then the
    kernel's dtype dispatch ("not implemented for"); a complex sign or clamp into a complex out computed numbers."""
    if name == "hardtanh" and expanded:
        pytest.skip("hardtanh checks complex and bool inputs before an expanded out's overlap, CPU after (left open)")

    def call(device):
        x = torch.ones(4, 2, dtype=dtype, device=device)
        out = torch.empty(2, dtype=out_dtype if out_dtype != torch.bool else dtype, device=device)
        return OUT_CALLS[name](x, out=out.expand(4, 2) if expanded else out.repeat(4, 1))

    try:
        expected = call("cpu")
    except Exception:
        check_same_error(call)
        return
    torch.testing.assert_close(call("tpu").cpu(), expected)  # values: the activations' own tests


def test_conj_physical_of_bools_into_a_bool_out():
    check(lambda x: torch.conj_physical(x, out=torch.empty(x.shape, dtype=torch.bool, device=x.device)),
          torch.tensor([True, False, True]))


@pytest.mark.parametrize("function", [torch.igamma, torch.igammac], ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_regularized_gammas_take_cpus_special_cases_in_its_order(function, dtype):
    """Every pair of zero, infinite, NaN and negative arguments: a NaN beside a zero or infinite argument gives
    0 or 1 on CPU (its checks of x == 0 and of infinities come before any arithmetic), not NaN."""
    values = torch.tensor([0.0, 0.5, 1.0, 3.0, math.inf, -math.inf, math.nan, -1.0], dtype=dtype)
    a, x = torch.meshgrid(values, values, indexing="ij")
    check(function, a, x, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", INTEGER_BINARY + ["bitwise_left_shift", "bitwise_right_shift"])
@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int64, torch.bool, torch.float32])
def test_integer_binary(name, dtype):
    a = sample((4, 6), dtype, -100, 100)
    b = sample((6,), dtype, -2, 10, seed=1) if "shift" in name else sample((6,), dtype, -100, 100, seed=1)
    check(torch_function(name), a, b)


def test_shift_past_bit_width():
    for dtype in (torch.int8, torch.uint8, torch.int64):
        a = torch.tensor([-100, -1, 1, 100], dtype=dtype) if dtype != torch.uint8 else torch.tensor([0, 1, 7, 200], dtype=dtype)
        shifts = torch.tensor([-1, 8, 9, 64], dtype=dtype) if dtype != torch.uint8 else torch.tensor([0, 8, 9, 64], dtype=dtype)
        check(torch.bitwise_left_shift, a, shifts)
        check(torch.bitwise_right_shift, a, shifts)


@pytest.mark.parametrize("mode", [None, "trunc", "floor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.int8, torch.uint8])
def test_div_rounding_modes(mode, dtype):
    a = sample((5, 6), dtype, -20, 20, seed=4)
    b = sample((5, 6), dtype, -5, 5, seed=5, specials=False)
    if not dtype.is_floating_point:
        b = torch.where(b == 0, 3, b).to(dtype)
    check(torch.div, a, b, rounding_mode=mode)
    check(torch.div, a, 3, rounding_mode=mode)
    check(torch.div, a, -2.5, rounding_mode=mode)


@pytest.mark.parametrize("mode", ["trunc", "floor"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_float_rounding_division_rounds_each_step_like_cpu(mode, dtype):
    """Against a tensor divisor CPU rounds the quotient to the format before truncating or flooring it;
    a lone divisor (number, 0-d or one-element tensor) keeps the whole division in float32."""
    a = sample((40, 50), dtype, -20, 20, seed=4, specials=False)
    b = sample((40, 50), dtype, -2, 2, seed=5, specials=False)
    exact = dict(atol=0, rtol=0)
    check(torch.div, a, b, rounding_mode=mode, **exact)
    check(torch.div, a.t(), b.t(), rounding_mode=mode, **exact)
    check(torch.div, a, b[:1, :1], rounding_mode=mode, **exact)
    check(torch.div, a, b[0, 0], rounding_mode=mode, **exact)
    check(torch.div, a, -0.0559, rounding_mode=mode, **exact)
    expected = torch.div(a, b[:1, :1].expand(40, 50), rounding_mode=mode)
    compare(torch.div(a.to("tpu"), b[:1, :1].to("tpu").expand(40, 50), rounding_mode=mode), expected, **exact)
    if mode == "floor":  # floor_divide and // are the same CPU kernel
        check(torch.floor_divide, a, b, **exact)
        check(lambda x, y: x.clone().floor_divide_(y), a.t(), b.t(), **exact)


def test_true_division_with_a_rounding_mode_argument_accepts_bool():
    x = torch.tensor([True, False, True])
    check(torch.div, x, x, rounding_mode=None)
    check(torch.div, x, x, rounding_mode="trunc")
    check(torch.div, x, x, rounding_mode="floor")


def test_threshold_takes_every_real_dtype_but_bool():
    for dtype in (torch.int64, torch.int32, torch.uint8, torch.bfloat16, torch.bool):
        x = sample((5, 6), dtype, -9, 9, seed=3)
        check(F.threshold, x, 2, -5)
        check(F.threshold, x.t(), 0, 7)
        check(torch.ops.aten.threshold_backward, x, x.t().t(), 1)


@pytest.mark.parametrize("name", ["div", "remainder", "fmod", "floor_divide"])
def test_integer_division_by_zero_raises_like_cpu(name):
    a, b = torch.tensor([4, -3, 7]), torch.tensor([2, 0, 1])
    check(torch_function(name), a, b)
    check(torch.div, a, b, rounding_mode="trunc")
    check(torch.div, a, b, rounding_mode="floor")
    check(torch_function(name), a.float(), b.float())  # floats give inf/nan


def test_pow_overloads():
    x = sample((4, 5), low=-3, high=3, seed=6)
    for exponent in (0, 1, 2, 3, 0.5, -0.5, -1, -2, 1.7, -3.3):
        check(torch.pow, x, exponent)
    check(torch.pow, 2.0, x)
    check(torch.pow, 2, sample((4, 5), torch.int64, -3, 6))
    check(torch.pow, sample((4, 5), torch.int64), sample((5,), torch.int64, 0, 4, seed=1))
    check(torch.pow, torch.tensor([2, 1, -1, 3]), torch.tensor([-1, -2, -3, 0]))  # negative integer powers
    check(torch.pow, torch.tensor([2, 3]), -1)  # raises
    check(torch.pow, sample((3,), torch.bfloat16), 2)
    check(torch.pow, sample((3,), torch.int64), 2.5)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64], ids=str)
def test_integer_pow_to_the_dtypes_extremes_as_cpu(dtype):
    """The most negative power of a dtype is its own negation: the bases +-1 still take CPU's values."""
    info = torch.iinfo(dtype)
    values = torch.tensor([info.min, info.min + 1, -2, -1, 0, 1, 2, info.max]).clamp(info.min, info.max).to(dtype)
    check(torch.pow, values[:, None], values[None, :])


@pytest.mark.parametrize("other", [
    2.5, 3, True, torch.tensor(2.5), torch.tensor(2, dtype=torch.int64), torch.tensor(1.5, dtype=torch.float64),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int32, torch.bool, torch.float16])
def test_type_promotion_with_scalars_and_cpu_scalar_tensors(dtype, other):
    x = sample((3, 4), dtype, seed=7)
    for name in ("add", "mul", "div", "eq", "lt", "maximum", "sub", "pow", "atan2", "remainder"):
        check(torch_function(name), x, other)
        check(torch_function(name), other if isinstance(other, torch.Tensor) else torch.tensor(other), x)


def test_mixed_dtype_tensors():
    pairs = [(torch.int32, torch.float32), (torch.bool, torch.int64), (torch.bfloat16, torch.float16),
             (torch.uint8, torch.int8), (torch.bfloat16, torch.float64), (torch.int64, torch.float64)]
    for first, second in pairs:
        a, b = sample((3, 4), first, seed=8), sample((4,), second, seed=9)
        for name in ("add", "sub", "mul", "div", "maximum", "ge", "hypot", "copysign"):
            check(torch_function(name), a, b)
            check(torch_function(name), b, a)


def test_add_sub_alpha():
    a, b = sample((3, 4)), sample((3, 4), seed=1)
    check(torch.add, a, b, alpha=2.5)
    check(torch.sub, a, b, alpha=-3)
    check(torch.add, a.int(), b.int(), alpha=2)
    check(torch.add, a.int(), b.int(), alpha=2.5)  # raises: float alpha with integers
    check(torch.sub, a > 0, b > 0)  # raises: bool subtraction
    check(torch.sub, a, b > 0)  # raises: bool subtraction
    check(torch.rsub, a, b, alpha=2)
    check(torch.rsub, a, 3)


def test_comparisons_with_nan_and_mixed_types():
    a = sample((4, 5))
    for name in ("eq", "ne", "lt", "le", "gt", "ge"):
        check(torch_function(name), a, a.t().contiguous().t())
        check(torch_function(name), a.int(), 1.5)
        check(torch_function(name), a, float("nan"))


def test_maximum_minimum_nan_rules():
    a = torch.tensor([1.0, float("nan"), 3.0, float("nan"), -0.0])
    b = torch.tensor([float("nan"), 2.0, 1.0, float("nan"), 0.0])
    for name in ("maximum", "minimum", "fmax", "fmin"):
        check(torch_function(name), a, b)
    check(torch.maximum, torch.complex(a, a), torch.complex(b, b))  # raises for complex


# --------------------------------------------------------------------------------------------------
# Ternary


def test_where():
    condition = sample((4, 5), seed=1) > 0
    a, b = sample((4, 5), seed=2), sample((5,), torch.int64, seed=3)
    check(torch.where, condition, a, b)
    check(torch.where, condition, a, 0.0)
    check(torch.where, condition, 2, b)
    check(torch.where, condition[:, :1], a.t().contiguous().t(), b.bfloat16())
    check(torch.where, condition.int(), a, b)  # raises: condition must be bool
    check(lambda c, x, y: x.where(c, y), condition, a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.bfloat16])
def test_clamp(dtype):
    x = sample((4, 5), dtype, -5, 5)
    check(torch.clamp, x, -1, 2)
    check(torch.clamp, x, min=0.5)
    check(torch.clamp, x, max=1)
    check(torch.clamp, x, 3, -3)  # min > max: everything becomes max
    check(torch.clamp, x, sample((5,), dtype, seed=1), sample((4, 1), dtype, seed=2))
    check(torch.clamp, x, min=sample((5,), dtype, seed=1))
    check(torch.clamp_min, x, 0)
    check(torch.clamp_max, x, sample((5,), dtype, seed=2))
    check(torch.clamp_min, x, sample((5,), dtype, seed=2))
    check(torch.clamp_max, x, 1.5)
    check(torch.clip, x, -1, 1)
    check(torch.clamp, x)  # raises: no bound given


def test_clamp_nan_bounds():
    x = torch.tensor([1.0, float("nan"), 5.0])
    check(torch.clamp, x, torch.tensor(float("nan")), torch.tensor(3.0))
    check(torch.clamp, x, min=float("nan"))


def test_addcmul_addcdiv_lerp():
    x, a, b = sample((4, 5)), sample((5,), seed=1), sample((4, 1), seed=2)
    check(torch.addcmul, x, a, b, value=0.5)
    check(torch.addcdiv, x, a, b, value=-2)
    check(torch.addcmul, x.int(), a.int(), b.int(), value=3)
    check(torch.addcdiv, x.int(), a.int(), b.int())  # raises: integer division
    check(torch.lerp, x, a, 0.3)
    check(torch.lerp, x, a, 0.7)
    check(torch.lerp, x, a, sample((4, 5), low=-1, high=2, seed=3))
    check(torch.lerp, x.bfloat16(), a.bfloat16(), 0.25)


@pytest.mark.parametrize("end_shape", [(4, 5), (5,)], ids=["same_shape", "broadcast"])
def test_lerp_takes_no_type_promotion(end_shape):
    x, a = sample((4, 5)), sample(end_shape, seed=1)
    check(torch.lerp, x, a.double(), 0.5)  # raises: `end` of another dtype
    check(torch.lerp, x, a, a.double())  # raises: `weight` of another dtype
    check(torch.lerp, x.half(), a.half(), torch.tensor(0.25, dtype=torch.float64))  # a 0-dim weight is a number
    check(torch.lerp, x, a, torch.tensor(1, dtype=torch.int64))
    check(torch.lerp, x.int(), a.int(), 0.5)  # raises: no integer kernel


# --------------------------------------------------------------------------------------------------
# Activations, forward and backward through autograd

ACTIVATIONS = [
    F.relu, F.relu6, F.gelu, lambda x: F.gelu(x, approximate="tanh"), F.silu, torch.sigmoid, torch.tanh,
    F.softplus, lambda x: F.softplus(x, beta=2, threshold=3), F.elu, lambda x: F.elu(x, alpha=0.5), F.selu,
    F.celu, F.leaky_relu, lambda x: F.leaky_relu(x, 0.2), F.hardtanh, lambda x: F.hardtanh(x, -2, 0.5),
    F.hardsigmoid, F.hardswish, F.mish, F.logsigmoid, lambda x: F.glu(x, 0), lambda x: F.glu(x, -1),
    lambda x: torch.threshold(x, 0.5, -2.0), F.softshrink, F.hardshrink, lambda x: torch.logit(x, 0.1),
    lambda x: torch.logit(x), lambda x: F.prelu(x, torch.tensor([0.25], dtype=x.dtype, device=x.device)),
    torch.erf, torch.exp, torch.log1p, torch.sqrt, torch.atan2, torch.reciprocal,
]


def forward_and_grads(function, x, extra_inputs=()):
    x = x.clone().requires_grad_(True)
    extras = [e.clone().requires_grad_(True) for e in extra_inputs]
    y = function(x, *extras)
    y.backward(torch.ones_like(y))
    return (y.detach(), x.grad, *[e.grad for e in extras])


@pytest.mark.parametrize("index", range(len(ACTIVATIONS)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_activation_forward_and_backward(index, dtype):
    function = ACTIVATIONS[index]
    x = sample((4, 6), dtype, seed=index, specials=False)
    if function is torch.atan2:
        other = sample((4, 6), dtype, seed=index + 1, specials=False)
        expected = forward_and_grads(function, x, [other])
        actual = forward_and_grads(function, x.to("tpu"), [other.to("tpu")])
    else:
        expected = forward_and_grads(function, x)
        actual = forward_and_grads(function, x.to("tpu"))
    # CPU rounds some bf16 intermediates to bf16; the tpu keeps them in float32
    tolerance = 1e-2 if dtype == torch.bfloat16 else None
    compare(actual, expected, atol=tolerance, rtol=tolerance)


SIXTEEN_BIT_EXACT_BACKWARDS = {
    "logsigmoid": F.logsigmoid,  # its backward reads exp(-|x|) as CPU's forward buffer stores it, in the dtype
    "glu_first_dim": lambda x: F.glu(x, 0),  # sigmoid(b) is stored in the dtype before either half uses it
    "glu_last_dim": lambda x: F.glu(x, -1),
    "mish": F.mish,  # one loop in float, not PyTorch's composite of five rounded ops
    "logit": lambda x: torch.logit(x.sigmoid()),  # every operation of the loop rounds to the dtype
    "logit_eps": lambda x: torch.logit(x.sigmoid(), 0.013),
}


@pytest.mark.parametrize("activation", SIXTEEN_BIT_EXACT_BACKWARDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_16_bit_activation_gradients_have_cpus_bits(activation, dtype):
    """Each of these was an ulp off CPU's in 13-60% of the elements."""
    x = (torch.randn(32, 40, generator=torch.Generator().manual_seed(3)) * 3).to(dtype)
    results = []
    for device in ("cpu", "tpu"):
        leaf = x.clone().to(device).requires_grad_()
        y = SIXTEEN_BIT_EXACT_BACKWARDS[activation](leaf)
        y.backward(torch.linspace(-2, 3, y.numel()).view(y.shape).to(dtype).to(device))
        results.append((y.detach().cpu(), leaf.grad.cpu()))
    for cpu, tpu in zip(*results):  # logit's gradient is NaN where the sigmoid rounds to 1
        torch.testing.assert_close(tpu, cpu, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("backward", [torch.ops.aten.hardswish_backward, torch.ops.aten.hardsigmoid_backward])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_piecewise_activation_backwards_give_cpus_bits(backward, dtype):
    """The piecewise backwards select their pieces as bit masks: CPU's bits at the boundaries (-3 and 3 fall
    where CPU puts them), for NaN and inf gradients, and +0.0 where the gradient is cut off; hardsigmoid's
    scales by CPU's float 1/6. (A NaN input takes CPU's SIMD or scalar piece by its position: not checked.)"""
    edges = torch.tensor([-3.0, 3.0, -3.0000002, 3.0000002, -2.9999998, 2.9999998, 0.0, -0.0,
                          float("inf"), float("-inf"), 1e-30], dtype=dtype)
    x = torch.cat([edges, torch.randn(500, dtype=dtype) * 4])
    grad = torch.randn(x.shape, dtype=dtype)
    grad[-4:] = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0], dtype=dtype)
    expected = backward(grad, x)
    actual = backward(grad.to("tpu"), x.to("tpu")).cpu()
    assert torch.equal(actual.view(torch.int64 if dtype == torch.float64 else torch.int32),
                       expected.view(torch.int64 if dtype == torch.float64 else torch.int32))


NAN_GRADIENTS = {"hardswish_backward": lambda g, x: torch.ops.aten.hardswish_backward(g, x),
                 "hardshrink_backward": lambda g, x: torch.ops.aten.hardshrink_backward(g, x, 0.5)}


@pytest.mark.parametrize("grad_layout", ["same", "broadcast"])
@pytest.mark.parametrize("layout", SIMD_LAYOUTS.values(), ids=SIMD_LAYOUTS.keys())
@pytest.mark.parametrize("columns", [3, 40, 70])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("op", NAN_GRADIENTS.keys())
def test_nan_input_gradients_follow_cpus_vector_loop_and_scalar_tail(op, dtype, columns, layout, grad_layout,
                                                                      fresh_dynamo):
    """Bit for bit, eager and (hardswish_backward) compiled: at a NaN input CPU's vector loop gives NaN
    (hardswish_backward, in the 64-byte vectors of its AVX-512 build on an AVX-512 CPU) or 0 (hardshrink_backward),
    its scalar tail the gradient, a broadcast gradient too."""
    x = _shrink_inputs(dtype, columns)
    x[:, 4::9] = 5.0
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    if grad_layout == "broadcast":
        grad = torch.tensor(0.75, dtype=dtype).expand(x.shape)
    function = NAN_GRADIENTS[op]
    bits = BITS[dtype.itemsize]
    expected = function(layout(grad), layout(x)).contiguous().view(bits)
    operands = (layout(grad.to("tpu")), layout(x.to("tpu")))
    assert torch.equal(function(*operands).cpu().contiguous().view(bits), expected)
    if op == "hardswish_backward":  # (Dynamo's fake pass refuses a lone hardshrink_backward: TensorIterator's op)
        compiled = torch.compile(function, backend="tpu", fullgraph=True)(*operands)
        assert torch.equal(compiled.cpu().contiguous().view(bits), expected)


def test_activation_forward_nan_and_inf():
    x = sample((4, 6))
    for function in (F.relu, F.silu, F.elu, F.leaky_relu, F.hardtanh, F.softplus, torch.sigmoid):
        check(function, x)
    # CPU's float32 gelu of +inf depends on its SIMD build (NaN with AVX-512, inf with AVX2): float64 decides
    compare(F.gelu(x.to("tpu")), F.gelu(x.double()).float())
    check(F.relu, sample((4, 6), torch.int64))
    check(F.relu, sample((4, 6), torch.bool))  # raises


def test_prelu_with_channel_weights():
    x, weight = sample((2, 3, 4), specials=False), torch.tensor([0.1, 0.2, 0.3])
    expected = forward_and_grads(lambda t, w: F.prelu(t, w), x, [weight])
    actual = forward_and_grads(lambda t, w: F.prelu(t, w), x.to("tpu"), [weight.to("tpu")])
    compare(actual, expected)


# --------------------------------------------------------------------------------------------------
# In-place, out= and errors


def test_inplace_on_views_mutates_the_base():
    cpu = sample((4, 6), seed=10)
    tpu = cpu.to("tpu")
    for target in (lambda t: t[1], lambda t: t[:, ::2], lambda t: t.t()[2:]):
        target(cpu).mul_(2).add_(1.5).exp_().clamp_(max=3)
        target(tpu).mul_(2).add_(1.5).exp_().clamp_(max=3)
        assert_close(tpu.cpu(), cpu, equal_nan=True)
    check(lambda t: t.clone()[1:].add_(t[:-1]), cpu)  # distinct views of one storage
    check(lambda t: (lambda c: c[1:].add_(c[:-1]))(t.clone()), cpu)  # raises: partial overlap
    check(lambda t: (lambda c: c.mul_(c))(t.clone()), cpu)  # full overlap is fine


def test_inplace_forms():
    x, y = sample((3, 4), seed=11), sample((4,), seed=12)
    for method in ("add_", "sub_", "mul_", "div_", "pow_", "atan2_", "maximum", "fmod_", "remainder_",
                   "floor_divide_", "logical_and_", "eq_", "lt_", "hypot_", "copysign_", "lerp_"):
        args = (y, 0.5) if method == "lerp_" else (y,)
        check(lambda a, *rest: getattr(a.clone(), method)(*rest), x, *args)
    for method in ("sigmoid_", "tanh_", "relu_", "neg_", "abs_", "floor_", "sqrt_", "exp_", "nan_to_num_"):
        check(lambda a: getattr(a.clone(), method)(), x)
    check(lambda a: a.clone().clamp_(-1, 1), x)
    check(lambda a: a.clone().round_(decimals=1), x)
    check(lambda a: a.clone().addcmul_(a, a, value=2), x)
    check(lambda a: F.hardtanh(a.clone(), inplace=True), x)
    check(lambda a: F.hardswish(a.clone(), inplace=True), x)
    check(lambda a: F.leaky_relu(a.clone(), inplace=True), x)
    check(lambda a: F.threshold(a.clone(), 0.1, 20.0, inplace=True), x)


def test_inplace_result_type_and_shape_errors():
    integers, floats = sample((3, 4), torch.int64), sample((3, 4))
    check(lambda a, b: a.clone().add_(b), integers, floats)  # float result can't be cast to int
    check(lambda a, b: a.clone().mul_(b), integers, 2.5)
    check(lambda a, b: a.clone().div_(b), integers, integers)
    check(lambda a, b: a.clone().sub_(b), floats[0], floats)  # broadcast shape bigger than self
    check(lambda a, b: a.clone().add_(b), floats, integers)  # int into float is fine
    check(lambda a, b: a.clone().add_(b), floats.bfloat16(), floats)
    check(lambda a, b: a.clone().logical_or_(b), integers, floats)
    check(lambda a, b: a.clone().floor_divide_(b), integers, floats)
    check(lambda a: a.clone().clamp_(0.5, 1.5), integers)


def test_out_variants():
    a, b = sample((3, 4), seed=13), sample((4,), seed=14)
    for name in ("add", "mul", "div", "atan2", "maximum", "eq", "logical_xor", "floor_divide", "remainder"):
        for out_dtype in (torch.float32, torch.float64, torch.bool):
            def run(x, y, out):
                torch_function(name)(x, y, out=out)
                return out
            check(run, a, b, torch.empty(0, dtype=out_dtype))  # out is resized
            check(run, a, b, torch.empty(4, 3, dtype=out_dtype).t())  # non-contiguous out
    for name in ("exp", "abs", "neg", "sigmoid", "isnan", "logical_not", "nan_to_num", "angle", "logit"):
        def run_unary(x, out):
            torch_function(name)(x, out=out)
            return out
        check(run_unary, a, torch.empty(0))
        check(run_unary, a, torch.empty(0, dtype=torch.float64))
    check(lambda x, y, c, out: (torch.where(c, x, y, out=out), out)[1], a, b, a > 0, torch.empty(0))
    check(lambda x, out: (torch.clamp(x, -1, 1, out=out), out)[1], a, torch.empty(0, dtype=torch.float64))


def test_mixed_device_is_an_error():
    x = torch.ones(3, device="tpu")
    for function in (torch.add, torch.mul, torch.sub, torch.div, torch.maximum, torch.atan2, torch.eq):
        with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
            function(x, torch.ones(3))
        with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
            function(torch.ones(3), x)
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        x.add_(torch.ones(3))
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        torch.where(x > 0, x, torch.ones(3))
    # CPU 0-dim tensors are scalars, allowed on any device
    assert_close((x + torch.tensor(2.0)).cpu(), torch.full((3,), 3.0))
    assert_close((torch.tensor(2.0) * x).cpu(), torch.full((3,), 2.0))


def test_broadcast_error_matches_cpu():
    check(torch.add, sample((3, 4)), sample((5,)))
    check(torch.where, sample((3, 4)) > 0, sample((3, 4)), sample((2, 1, 5)))


def test_large_elementwise_matches():
    a, b = torch.randn(1 << 16), torch.randn(1 << 16)
    check(torch.add, a, b)
    check(lambda x, y: x.clone().mul_(y), a, b)
    assert math.isfinite(float((a.to("tpu") * b.to("tpu")).sum().cpu()))


# --- the VPU's vectorised float32 erf (csrc_py/special.py) ----------------------------------------


def erf_ulp_error(actual, x):
    """|actual - erf(x)| in units in the last place of the correctly rounded float32 result (float64 reference)."""
    exact = torch.erf(x.double())
    ulp = torch.nextafter(exact.abs().float(), torch.tensor(math.inf)).double() - exact.abs().float().double()
    return ((actual.double() - exact).abs() / ulp).max().item()


def erf_arguments():
    """Dense over [-5, 5] (both pieces and the switch at |x| = 1), log-spaced tails down to subnormals."""
    dense = torch.linspace(-5, 5, 400_001)
    magnitudes = torch.logspace(-44, 1.5, 50_001, dtype=torch.float64).float()
    near_switch = torch.nextafter(torch.ones(64), torch.zeros(64)).cumsum(0) - torch.arange(64) * 0.99999994
    return torch.cat([dense, magnitudes, -magnitudes, near_switch, -near_switch, torch.tensor([1.0, -1.0, 4.0, 3.9])])


def test_erf_float32_is_within_one_ulp_and_matches_cpu():
    x = erf_arguments()
    actual = torch.erf(x.to("tpu")).cpu()
    assert erf_ulp_error(actual, x) < 1.0  # torch CPU's own kernel is within about 0.7 ulp
    assert_close(actual, torch.erf(x), rtol=0, atol=1.2e-7)
    assert torch.equal(actual, -torch.erf(-x.to("tpu")).cpu())  # odd, bit for bit


def test_erf_float32_special_values():
    x = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 1e-45, -1e-45, 3.4e38, -3.4e38, 10.0, -10.0])
    actual = torch.erf(x.to("tpu")).cpu()
    assert_close(actual, torch.erf(x), rtol=0, atol=0, equal_nan=True)
    assert torch.equal(torch.signbit(actual[:2]), torch.tensor([False, True]))  # erf(-0) = -0


def test_erf_float32_non_contiguous_and_empty():
    x = sample((64, 48)).t()[::2]
    check(torch.erf, x, rtol=0, atol=1.2e-7)
    check(torch.erf, torch.empty(0, 3))
    check(torch.erf, torch.tensor(0.3))


def test_erf_float32_is_the_same_in_any_block():
    """The float32 erf runs in blocks of elements: an element's result does not depend on its block or neighbours."""
    from torch_tpu._C import special

    x = sample((3 * special.BLOCK + 5,), low=-0.9, high=0.9, specials=False)
    x[-40:] = torch.linspace(-6, 6, 40)  # the tail formula only in the last, short block
    whole = torch.erf(x.to("tpu")).cpu()
    piecewise = torch.cat([torch.erf(piece.to("tpu")).cpu() for piece in x.split(4099)])
    assert torch.equal(whole.view(torch.int32), piecewise.view(torch.int32))
    assert_close(whole, torch.erf(x), rtol=0, atol=1.2e-7)


def test_erf_float32_keeps_round_tens_bits_in_place_and_in_gelu():
    """Round eleven made the float32 erf faster with the same bits for every input (all 2**32 of them:
    tests/sweep_erf.py); here a sample of bit patterns, and erf_arguments, through torch.erf, erf in place and GELU."""
    from erf_round_ten import erf as round_ten_erf
    from torch_tpu._C import special

    patterns = np.random.default_rng(11).integers(0, 2**32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([patterns.view(np.float32), erf_arguments().numpy()])
    expected = round_ten_erf(x)
    in_place = x.copy()
    for actual in (torch.erf(torch.from_numpy(x).to("tpu")).cpu().numpy(), special.erf(in_place, out=in_place)):
        np.testing.assert_array_equal(actual.view(np.uint32)[~np.isnan(x)], expected.view(np.uint32)[~np.isnan(x)])
        assert np.isnan(actual[np.isnan(x)]).all()
    finite = x[np.isfinite(x)]
    with np.errstate(over="ignore"):
        cdf = round_ten_erf(finite * np.float32(math.sqrt(0.5))) + np.float32(1)
    cdf *= np.float32(0.5)
    gelu = F.gelu(torch.from_numpy(finite).to("tpu")).cpu().numpy()
    np.testing.assert_array_equal(gelu.view(np.uint32), (cdf * finite).view(np.uint32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_gelu_and_its_backward_at_edge_values(dtype):
    tiny = torch.finfo(dtype).tiny
    edges = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, tiny / 4, -tiny / 4, tiny, 1.0, -1.0, 4.0, -7.5],
                         dtype=dtype)
    x = torch.cat([edges, sample((300,), low=-6, high=6, specials=False).to(dtype)])
    # The oracle is ATen's own GELU kernel, which tpu replays. With oneDNN on, CPU sends a contiguous float32 or
    # bf16 GELU to oneDNN's JIT code for the host's ISA: on an AVX-512 host its polynomial gives gelu(+inf) = NaN
    # (docs/numerics.md); on AVX2 hosts, and for strided inputs, CPU runs ATen's kernel
    with torch.backends.mkldnn.flags(enabled=False):
        check(F.gelu, x)  # (the sign of gelu(-0) on CPU depends on whether its SIMD or scalar loop ran)
        check(torch.ops.aten.gelu_backward, torch.ones_like(x), x)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gelu_backward_of_a_0_d_tensor(dtype, approximate):
    # NumPy makes the product of 0-d arrays a scalar, which an in-place step cannot write into (nn.GELU on a
    # 0-d input failed its backward; found by test_modules.py's cpu/device parity)
    for value in (0.7, -2.5):
        check_grads(lambda x: F.gelu(x, approximate=approximate), torch.tensor(value, dtype=dtype))


def test_gelu_and_its_backward_use_the_float32_erf():
    x = erf_arguments()[::7] * 2
    grad = sample(x.shape, seed=3, specials=False)
    check(F.gelu, x)
    check(torch.ops.aten.gelu_backward, grad, x)
    tpu_results = torch._foreach_erf([x.to("tpu"), x[:5].to("tpu")])
    for actual, expected in zip(tpu_results, torch._foreach_erf([x, x[:5]])):
        compare(actual, expected, rtol=0, atol=1.2e-7)


# --- regressions from the OpInfo sweep ----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_frexp(dtype):
    x = sample((6, 5), dtype=dtype, low=-1e4, high=1e4)
    check(torch.frexp, x)
    check(torch.frexp, x.t()[::2])
    check(torch.frexp, torch.tensor(3e-39 if dtype == torch.float32 else 0.375, dtype=dtype))
    check(torch.frexp, torch.empty(0, 2, dtype=dtype))
    mantissa, exponent = torch.empty(0, device="tpu", dtype=dtype), torch.empty(0, device="tpu", dtype=torch.int32)
    torch.frexp(x.to("tpu"), out=(mantissa, exponent))
    compare((mantissa, exponent), torch.frexp(x))


def test_frexp_errors_match_cpu():
    check(torch.frexp, torch.arange(3))
    x = torch.randn(3)
    check(lambda t: torch.frexp(t, out=(torch.empty_like(t, dtype=torch.float64), torch.empty_like(t, dtype=torch.int32))), x)
    check(lambda t: torch.frexp(t, out=(torch.empty_like(t), torch.empty_like(t, dtype=torch.int64))), x)


def test_scalar_minus_tensor_reaches_sub_with_a_wrapped_number():
    """rsub.Scalar calls sub with the scalar first, as a number."""
    for x in (sample((4, 3)), torch.arange(5), sample((4, 3), dtype=torch.bfloat16)):
        check(lambda t: 1.5 - t, x)
        check(lambda t: 2 - t, x)
        check(lambda t: torch.rsub(t, 0.5, alpha=3), x)


def test_integer_division_by_zero_of_nothing_is_no_error():
    empty = torch.empty(0, 3, dtype=torch.int64)
    for divide in (lambda a: a // 0, lambda a: torch.div(a, 0, rounding_mode="trunc"),
                   lambda a: torch.remainder(a, 0), lambda a: torch.fmod(a, 0)):
        check(divide, empty)
        check(divide, torch.arange(3))  # something to divide: both raise


@pytest.mark.parametrize("scalar_device", ["cpu", "tpu"])
def test_complex32_results_compute_in_complex64(scalar_device):
    """float16 with a complex 0-d tensor or number promotes to complex32 (float16 pairs, which NumPy cannot
    compute with). PyTorch computes complex32 in complex64 and rounds once; where() once took the pairs apart."""
    half = torch.tensor([3.0, -2.0, 0.5], dtype=torch.float16)
    scalar = torch.tensor(1 - 2j)
    mask = torch.tensor([True, False, True])
    cases = [lambda h, s: h + s, lambda h, s: h * s, lambda h, s: h - 1j, lambda h, s: h == s,
             lambda h, s: torch.where(mask.to(h.device), h, s)]
    for case in cases:
        expected = case(half, scalar)
        actual = case(half.to("tpu"), scalar.to(scalar_device))
        assert actual.device.type == "tpu" and actual.dtype == expected.dtype
        assert_close(actual.cpu().to(torch.complex64), expected.to(torch.complex64))


def test_nan_to_num_of_complex_replaces_each_part():
    """Each part gets the limits of the real dtype; NumPy was handed None for them."""
    z = torch.tensor([complex(float("nan"), float("inf")), complex(-float("inf"), 2), 1 - 1j])
    for options in ({}, {"nan": 1.0, "posinf": 5.0}):
        for dtype in (torch.complex64, torch.complex128):
            check(lambda t: torch.nan_to_num(t, **options), z.to(dtype))
            check(lambda t: torch.nan_to_num(t.conj(), **options), z.to(dtype))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("op", [
    lambda x, g: torch.ops.aten.silu(x),
    lambda x, g: torch.ops.aten.silu_backward(g, x),
    lambda x, g: torch.ops.aten.sigmoid_backward(g, x),  # grad * conj((1 - y) * y)
    lambda x, g: torch.ops.aten.tanh_backward(g, x),  # grad * conj(1 - y * y)
], ids=["silu", "silu_backward", "sigmoid_backward", "tanh_backward"])
def test_activations_with_complex_loops_on_cpu_take_complex_inputs(op, dtype):
    x = torch.tensor([0.5 + 1j, -2 + 0.3j, 3 - 4j, 0j], dtype=dtype)
    check(op, x, torch.tensor([1 + 1j, 2 - 1j, 0.5j, 1], dtype=dtype), atol=1e-6, rtol=1e-6)


def test_complex_sigmoid_and_tanh_train_as_on_cpu():
    check_grads(lambda x: (x.sigmoid() * x.tanh()).abs(), torch.randn(6, dtype=torch.complex64), atol=1e-5, rtol=1e-5)


LAYOUTS = {
    "transposed": lambda: torch.randn(4, 6).t(),
    "channels_last": lambda: torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last),
    "permuted_3d": lambda: torch.randn(3, 4, 5).permute(2, 0, 1),
    "strided_transposed": lambda: torch.randn(6, 8).t()[::2],
    # one pixel: contiguous and channels-last at once; TensorIterator keeps the channels-last strides of
    # the size-1 dims whenever a number or a broadcast operand rules its fast setup out
    "one_pixel_channels_last": lambda: torch.randn(10, 3, 1, 1).to(memory_format=torch.channels_last),
}
LAYOUT_OPS = {
    "add_scalar": lambda t: t + 1, "add_self": lambda t: t + t, "mul_by_contiguous_copy": lambda t: t * t.contiguous(),
    "sub_broadcast": lambda t: t - t[..., :1], "div_int": lambda t: t.long() / 3, "mixed_dtypes": lambda t: t * t.double(),
    "relu": torch.relu, "hardtanh": torch.nn.functional.hardtanh, "where": lambda t: torch.where(t > 0, t, 0.0),
    "bf16_mul": lambda t: t.bfloat16() * t.bfloat16(), "with_a_cpu_scalar": lambda t: t + torch.tensor(2.0),
    # ops whose functional form PyTorch computes into a resized empty ``out`` (abs and its composites)
    "abs": torch.abs, "logical_not": torch.logical_not, "isinf": torch.isinf, "isfinite": torch.isfinite,
    "abs_int": lambda t: torch.abs(t.long()),
    "neg_into_empty_out": lambda t: torch.neg(t, out=t.new_empty(0)),
    "maximum_into_empty_out": lambda t: torch.maximum(t, -t, out=t.new_empty(0)),
    "div_floor_into_empty_out": lambda t: torch.div(t, 3, rounding_mode="floor", out=t.new_empty(0)),
    "where_into_empty_out": lambda t: torch.where(t > 0, t, t, out=t.new_empty(0)),
    "eq_scalar": lambda t: t == 0.5, "pow_scalar": lambda t: t ** 2, "neg": torch.neg,
    "angle": torch.angle,
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("op", LAYOUT_OPS)
def test_elementwise_results_take_cpus_memory_layout(op, layout):
    """TensorIterator lays a new output out in its inputs' memory order (a channels-last input gives a
    channels-last result); code that checks is_contiguous(memory_format=...) or views the result relies on it."""
    x = LAYOUTS[layout]()
    expected = LAYOUT_OPS[op](x)
    actual = LAYOUT_OPS[op](x.to("tpu"))
    assert actual.stride() == expected.stride()
    assert_close(actual.cpu(), expected, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op", [torch.add, torch.mul, torch.true_divide, torch.atan2])
def test_an_out_of_another_dtype_receives_the_result_rounded_to_the_computation_dtype(op, dtype):
    # Reduced floats compute in float32; the result is rounded to the common dtype before it is cast into
    # a wider ``out`` (half 33000 + 33000 overflows to inf even in a float64 out).
    a = torch.tensor([33000.0, 1.5, -2.7, 0.3], dtype=dtype)
    b = torch.tensor([33000.0, 0.666, 1.3, 7.1], dtype=dtype)
    check(lambda x, y, out: op(x, y, out=out), a, b, torch.empty(0, dtype=torch.float64))


def test_large_in_place_ops_on_permuted_views():
    # Above the size where the VPU splits work across threads, an in-place op on a permuted view asked NumPy
    # for an exact overlap answer it refused to compute (TooHardError); overlap now keeps it on one thread
    x = torch.randn(4, 15, 128, 128).contiguous(memory_format=torch.channels_last)
    check(lambda x: x.permute(0, 2, 3, 1).mul_(2), x)
    check(lambda x, y: torch.isclose(x, y), x, x.clone())


@pytest.mark.parametrize("out_dtype", [torch.complex128, torch.complex64, torch.float64, torch.float32, torch.int64])
def test_abs_of_complex_takes_cpus_out_dtypes(out_dtype):
    # a complex out of the input's dtype receives |z| with a zero imaginary part; a real out any dtype |z| casts to
    z = torch.randn(7, dtype=torch.complex128)
    check(lambda z, out: torch.abs(z, out=out), z, torch.empty(0, dtype=out_dtype))
    check(lambda z, out: torch.angle(z, out=out), z, torch.empty(0, dtype=out_dtype))


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.int64])
@pytest.mark.parametrize("op", [torch.signbit, torch.isposinf, torch.isneginf])
def test_predicates_refuse_a_non_boolean_out_in_cpus_words(op, out_dtype):
    check_same_error(lambda device: op(torch.tensor([1.0, -2.0], device=device),
                                       out=torch.empty(2, dtype=out_dtype, device=device)))


@pytest.mark.parametrize("dtypes", [(torch.float16, torch.int8, torch.float16), (torch.complex64,) * 3,
                                    (torch.float32, torch.float64, torch.float32),
                                    (torch.float32, torch.complex64, torch.float32), (torch.float32, torch.float32, torch.float64)],
                         ids=["mixed_operands", "complex", "float32_float64", "complex_values", "out_of_another_dtype"])
def test_heaviside_out_refuses_what_its_meta_function_refuses(dtypes):
    # an out= call reaches the kernel without the meta function, which also checks the output's dtype
    x_dtype, values_dtype, out_dtype = dtypes
    check_same_error(lambda d: torch.heaviside(torch.tensor([-1.0, 0.0, 2.0], device=d).to(x_dtype),
                                               torch.ones(3, dtype=values_dtype, device=d),
                                               out=torch.empty(3, dtype=out_dtype, device=d)))
    if x_dtype != values_dtype or x_dtype.is_complex:  # the functional call too, fast path included
        check_same_error(lambda d: torch.heaviside(torch.tensor([-1.0, 0.0, 2.0], device=d).to(x_dtype),
                                                   torch.ones(3, dtype=values_dtype, device=d)))


@pytest.mark.parametrize("op", [torch.Tensor.__ilshift__, torch.Tensor.__irshift__, torch.Tensor.floor_divide_])
def test_in_place_ops_refuse_a_partly_overlapping_operand_before_checking_dtypes(op):
    # TensorIterator's build checks overlap before the kernel refuses floats for the shifts
    check_same_error(lambda d: (lambda x: op(x[:-1], x[1:]))(torch.rand(3, device=d)))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_angle_of_complex_is_contiguous_as_on_cpu(layout):
    """CPU computes complex-to-real angle into a complex temporary and copies it into a contiguous result."""
    z = LAYOUTS[layout]() * (1 + 1j)
    actual, expected = torch.angle(z.to("tpu")), torch.angle(z)
    assert actual.stride() == expected.stride()
    assert_close(actual.cpu(), expected, atol=1e-6, rtol=1e-6)


# CPU's kernels lack loops for these dtypes; tpu's maths would compute them, so each must refuse as CPU does,
# in CPU's words (its dispatch names: "erf_vml_cpu", "clamp_min_scalar_cpu", ...).
REFUSED_AS_ON_CPU = {
    "erf of complex": lambda d: torch.erf(torch.tensor([1 + 2j], device=d)),
    "erfc_ of complex": lambda d: torch.tensor([1 + 2j], device=d).erfc_(),
    "round of complex": lambda d: torch.round(torch.tensor([1.5 + 2j], device=d)),
    "round with decimals of an integer": lambda d: torch.round(torch.tensor([1, 2], device=d), decimals=1),
    "logit of complex": lambda d: torch.logit(torch.tensor([0.5 + 0j], device=d)),
    "floor of bool": lambda d: torch.floor(torch.tensor([True], device=d)),
    "special.ndtri of half": lambda d: torch.special.ndtri(torch.ones(2, dtype=torch.half, device=d)),
    "pow of bools": lambda d: torch.pow(torch.tensor([True], device=d), torch.tensor([True], device=d)),
    "clamp of bool, number bounds": lambda d: torch.clamp(torch.tensor([True, False], device=d), False, True),
    "clamp of bool, tensor bounds": lambda d: torch.clamp(*[torch.tensor([True, False], device=d)] * 3),
    "clamp_min of bool": lambda d: torch.clamp_min(torch.tensor([True, False], device=d), False),
    "clamp_max of bool": lambda d: torch.clamp(torch.tensor([True, False], device=d), max=True),
    "addcmul of bools": lambda d: torch.addcmul(*[torch.tensor([True, False], device=d)] * 3),
    "sub_ of a bool by a number": lambda d: torch.tensor([True], device=d).sub_(1),
}


@pytest.mark.parametrize("case", sorted(REFUSED_AS_ON_CPU))
def test_dtypes_cpus_kernels_lack_are_refused_in_cpus_words(case):
    check_same_error(REFUSED_AS_ON_CPU[case])


def test_clamp_of_bool_by_one_tensor_bound_is_computed_as_on_cpu():
    """One tensor bound goes through maximum (or minimum), which CPU has for bool."""
    values, bound = torch.tensor([True, False]), torch.tensor([False, True])
    assert_close(torch.clamp(values.to("tpu"), bound.to("tpu")).cpu(), torch.clamp(values, bound))
    assert_close(torch.clamp(values.to("tpu"), max=bound.to("tpu")).cpu(), torch.clamp(values, max=bound))


def test_conj_physical_in_place_conjugates_complex_tensors():
    values = torch.tensor([1 + 2j, -3 - 0.5j])
    on_tpu = values.to("tpu")
    on_tpu.conj_physical_()
    assert_close(on_tpu.cpu(), values.clone().conj_physical_())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("bounds", [(0.0, 6.0), (-0.0, 6.0), (-1.0, 1.0), (0.0, 0.0), (0.0, -0.0), (-0.0, 0.0)])
def test_hardtanh_matches_cpus_clamp_bit_for_bit(dtype, bounds):
    """hardtanh (ReLU6 with bounds 0 and 6) is CPU's clamp: signed zeros, NaNs and infinities give CPU's bits,
    in its vector loop and its scalar tail alike (67 elements). (bf16 without NaNs: the sign of a NaN that
    CPU's bf16 kernel rounds in its scalar tail is not followed.)"""
    special = [-0.0, 0.0, float("nan"), -float("nan"), float("inf"), -float("inf"), 1e-40, -1e-40, 0.5, -0.5, 6.0,
               -1.0, 1.0, 7.0, -7.0, 3e38]
    if dtype == torch.bfloat16:
        special = [value for value in special if value == value]
    x = torch.tensor((special * 5)[:67], dtype=dtype)
    bits = torch.int64 if dtype == torch.float64 else torch.int32 if dtype == torch.float32 else torch.int16
    for call in (lambda t: torch.ops.aten.hardtanh(t, *bounds), lambda t: torch.ops.aten.hardtanh_(t.clone(), *bounds)):
        assert torch.equal(call(x.to("tpu")).cpu().view(bits), call(x).view(bits))


# A bool tensor viewed from uint8 bytes holds 2..255 for True; CPU reads any nonzero byte as True.
NONSTANDARD_BOOL_CALLS = {
    "eq_0d": lambda a, b: torch.eq(a, b[0]),
    "ne_broadcast": lambda a, b: torch.ne(a, b[:1]),
    "lt_0d": lambda a, b: torch.lt(a[0], b),
    "ge_broadcast": lambda a, b: torch.ge(a.view(2, 3)[:, :1], b.view(2, 3)),
    "xor_0d": lambda a, b: torch.bitwise_xor(a, b[1]),
    "rxor": lambda a, b: b[2].__rxor__(a),
    "argsort": lambda a, b: torch.argsort(a, stable=True),
    "sort": lambda a, b: torch.sort(b, stable=True, descending=True)[1],
    "where": lambda a, b: torch.where(a, b[0], b),
}


@pytest.mark.parametrize("name", NONSTANDARD_BOOL_CALLS)
def test_bools_stored_as_other_nonzero_bytes_read_as_true_as_on_cpu(name):
    call = NONSTANDARD_BOOL_CALLS[name]
    bytes_a = torch.tensor([0, 2, 255, 1, 0, 77], dtype=torch.uint8)
    bytes_b = torch.tensor([146, 0, 3, 0, 1, 9], dtype=torch.uint8)
    check(lambda a, b: call(a.view(torch.bool), b.view(torch.bool)), bytes_a, bytes_b)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("call", ["add", "sub", "sub_", "add_real", "add_0d"])
def test_complex_add_and_sub_multiply_by_alpha_one_as_cpu_does(call, dtype):
    """CPU computes ``a + alpha * b`` with alpha = 1 too: an infinite part of a complex ``b`` gives NaN."""
    calls = {"add": lambda a, b: torch.add(a, b), "sub": lambda a, b: a - b, "sub_": lambda a, b: a.sub_(b),
             "add_real": lambda a, b: a + b.real, "add_0d": lambda a, b: a + b[1, 6]}
    special = [complex(re, im) for re in (math.nan, math.inf, -math.inf, 0.0, 1.0) for im in (math.nan, math.inf, 0.0)]
    values = torch.tensor(special, dtype=dtype)
    check(calls[call], values[:, None].repeat(1, len(special)), values[None].repeat(len(special), 1))


BF16_NAN_LAYOUTS = {"contiguous": lambda t: t, "strided": lambda t: torch.stack([t, t], 1)[:, 0],
                    "transposed": lambda t: torch.stack([t, t], 1).t(), "0-dim": lambda t: t[1],
                    "expanded": lambda t: t[1:2].expand(5)}
BF16_NAN_CALLS = {
    "clamp NaN min": lambda x: torch.clamp(x, min=math.nan), "clamp NaN max": lambda x: torch.clamp(x, 0, math.nan),
    "clamp_min NaN": lambda x: torch.clamp_min(x, math.nan), "clamp_max NaN": lambda x: torch.clamp_max(x, math.nan),
    "clamp of NaNs": lambda x: torch.clamp(x, -1, 0.5), "clamp_ of NaNs": lambda x: x.clone().clamp_(-1, 0.5),
    "clamp out=": lambda x: torch.clamp(x, -1, 0.5, out=torch.empty_like(x)),
    "logit": torch.logit, "logit eps": lambda x: torch.logit(x, 1e-3), "logit_": lambda x: x.clone().logit_(),
    "logit out=": lambda x: torch.logit(x, out=torch.empty_like(x)),
    "logit strided out=": lambda x: torch.logit(x, out=torch.empty((2,) + x.shape, dtype=x.dtype, device=x.device)[0]
                                                if x.dim() == 0 else
                                                torch.empty(x.shape[0] * 2, *x.shape[1:], dtype=x.dtype,
                                                            device=x.device)[::2]),
}


NAN_BOUND_CALLS = {
    "clamp_min": lambda x, nan: torch.clamp_min(x, nan), "clamp_max": lambda x, nan: torch.clamp_max(x, nan),
    "clamp_min_": lambda x, nan: x.clone().clamp_min_(nan),
    "clamp_min out=": lambda x, nan: torch.clamp_min(x, nan, out=torch.empty_like(x)),
    "clamp min=": lambda x, nan: torch.clamp(x, min=nan), "clamp max=": lambda x, nan: torch.clamp(x, max=nan),
    "clamp both": lambda x, nan: torch.clamp(x, nan, 2.0),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("sign", [1, -1])
@pytest.mark.parametrize("name", NAN_BOUND_CALLS)
def test_a_nan_bound_fills_the_nan_cpu_fills(name, sign, dtype):
    """clamp_min/clamp_max fill their result with the bound itself (fp16 keeps a -NaN's sign; c10 makes every bf16
    NaN 0x7FC0); clamp fills c10's quiet NaN whichever bounds are given."""
    x = torch.tensor([1.0, -2.0, math.nan, 0.0], dtype=dtype)
    nan = math.copysign(math.nan, sign)
    bits = {torch.float32: torch.int32}.get(dtype, torch.int16)
    expected = NAN_BOUND_CALLS[name](x, nan)
    actual = NAN_BOUND_CALLS[name](x.to("tpu"), nan).cpu()
    assert torch.equal(actual.view(bits), expected.view(bits))


@pytest.mark.parametrize("layout", BF16_NAN_LAYOUTS.values(), ids=BF16_NAN_LAYOUTS.keys())
@pytest.mark.parametrize("columns", [4, 37, 40000])
@pytest.mark.parametrize("name", BF16_NAN_CALLS)
def test_bf16_nan_bits_of_clamp_and_logit_are_cpus(name, columns, layout):
    """Bit for bit: a NaN number bound fills clamp's result with c10's NaN (0x7FC0); NaN inputs come out 0xFFFF from
    CPU's vector lanes and 0x7FC0 from its scalar tail; bf16 logit's NaNs (invalid inputs too) are 0xFFFF where its
    contiguous path runs (one contiguous row, to the last element), 0x7FC0 otherwise."""
    x = (torch.randn(columns, generator=torch.Generator().manual_seed(0)) * 2).to(torch.bfloat16)
    x[::5], x[1::7] = math.nan, -math.nan
    expected = BF16_NAN_CALLS[name](layout(x))
    actual = BF16_NAN_CALLS[name](layout(x.to("tpu"))).cpu()
    assert torch.equal(actual.view(torch.int16), expected.view(torch.int16))


def _bits(tensor):
    return tensor.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("exponent", [2, 3, -2, -1, 0.5, -0.5, 1.7, 4])
def test_pow_with_a_number_rounds_as_cpu(dtype, exponent):
    """bf16 pow(x, 3) and pow(x, -2) multiply in bf16 on CPU (``base * base * base``, ``1 / (base * base)``, each
    product rounded), where tpu rounded once; fp16 takes no shortcut (its loop calls pow: pow(-0.0, 0.5) is +0.0,
    pow(-inf, 0.5) +inf, unlike sqrt)."""
    generator = torch.Generator().manual_seed(5)
    x = torch.cat([torch.randn(1000, generator=generator) * 3, torch.tensor([0.0, -0.0, math.inf, -math.inf])]).to(dtype)
    expected, actual = torch.pow(x, exponent), torch.pow(x.to("tpu"), exponent).cpu()
    assert torch.equal(expected.isnan(), actual.isnan())
    if dtype == torch.bfloat16 and exponent == -0.5:  # CPU's scalar tail rounds the root first: numerics.md
        assert_close(actual, expected, rtol=8e-3, atol=0, equal_nan=True)
        return
    if dtype in (torch.float32, torch.float64) and exponent not in (2, 3, -2, -1, -0.5):
        # CPU's float pow and sqrt are Sleef's, glibc's and MKL's, not correctly rounded: numerics.md
        assert_close(actual, expected, rtol=3e-7 if dtype == torch.float32 else 1e-15, atol=0, equal_nan=True)
        return
    assert torch.equal(_bits(actual)[~expected.isnan()], _bits(expected)[~expected.isnan()])


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("exponent", [torch.tensor(0.5), torch.tensor(-0.5), torch.tensor([0.5]), 0.5, -0.5],
                         ids=["0d", "0d-negative", "broadcast", "number", "negative-number"])
def test_pow_of_negative_zero_and_infinity_by_a_half_is_cs_pow(dtype, exponent):
    """NumPy's power loop computes an exponent of +-0.5 read with stride 0 as a square root: pow(-0.0, 0.5) gave -0.0
    and pow(-inf, 0.5) NaN, where CPU's pow gives +0.0 and +inf (CPU's pow(tensor, number) takes sqrt itself for
    float32 and float64, and agrees with tpu there)."""
    x = torch.tensor([-0.0, -math.inf, 0.0, math.inf, 4.0, -2.0], dtype=dtype)
    on_tpu = exponent.to(dtype).to("tpu") if isinstance(exponent, torch.Tensor) else exponent
    on_cpu = exponent.to(dtype) if isinstance(exponent, torch.Tensor) else exponent
    expected, actual = torch.pow(x, on_cpu), torch.pow(x.to("tpu"), on_tpu).cpu()
    assert torch.equal(expected.isnan(), actual.isnan())
    assert torch.equal(_bits(actual)[~expected.isnan()], _bits(expected)[~expected.isnan()])


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.uint8, torch.bool])
@pytest.mark.parametrize("call", [
    lambda x: torch.clamp_min(x, 1.37, out=x), lambda x: torch.clamp(x, 1.37, 3, out=x),
    lambda x: torch.clamp(x, None, 2.5, out=x), lambda x: torch.clamp(x, 1, 2.5, out=x),
    lambda x: torch.clamp_max(x, 2, out=x), lambda x: torch.clamp_min(x, True, out=x), lambda x: x.clamp_min_(1.37),
    lambda x: torch.ops.aten.clamp.out(x, None, None, out=x),
], ids=["min-float", "both-float", "max-float", "max-float-min-int", "max-int", "min-bool", "in-place", "no-bounds"])
def test_clamp_into_its_own_integer_input_refuses_a_floating_bound_in_cpus_words(dtype, call):
    """clamp's meta function refuses to write an integer input promoted by a floating bound back into itself ("result
    type Float can't be cast to the desired output type int"), before the out's dtype check tpu reported; bounds that
    keep its dtype clamp it."""
    outcomes = []
    for device in ("cpu", "tpu"):
        x = torch.arange(5, device=device).to(dtype)
        try:
            call(x)
            outcomes.append(x.cpu().tolist())
        except (RuntimeError, NotImplementedError) as error:
            outcomes.append((type(error), str(error)))
    assert outcomes[1] == outcomes[0]


@pytest.mark.parametrize("dtype", [torch.complex64, torch.bool, torch.float32, torch.uint8])
@pytest.mark.parametrize("out_dtype", ["same", torch.float64])
def test_hardtanh_checks_its_input_before_an_expanded_out(dtype, out_dtype):
    """hardtanh's own checks (complex, bool, an unsigned input's negative bound) come before its iterator's, whose
    overlap check refuses an expanded out: tpu reported the overlap first."""
    def call(device):
        x = torch.ones(4, 3, device=device).to(dtype)
        out = torch.empty(1, 3, device=device, dtype=dtype if out_dtype == "same" else out_dtype).expand(4, 3)
        torch._C._nn.hardtanh(x, out=out)

    check_same_error(call)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("op", [torch.ops.aten.sigmoid_backward, torch.ops.aten.tanh_backward],
                         ids=["sigmoid_backward", "tanh_backward"])
def test_sigmoid_and_tanh_backward_round_as_cpu(dtype, op):
    """CPU computes sigmoid's backward ``grad * (1 - y) * y`` left to right (fp16 in fp16, each step rounded) and
    contracts tanh's ``1 - y * y`` into one FMA, except in its vector loop over a row along which y is broadcast:
    a third of float32 elements were an ulp off, in every LSTM and GRU gate's gradient."""
    generator = torch.Generator().manual_seed(2)
    for n in (1, 7, 17, 33, 1003):
        y = torch.sigmoid(torch.randn(3, n, generator=generator, dtype=torch.float64)).to(dtype)
        grad = torch.randn(3, n, generator=generator).to(dtype)
        keep, along_rows = (lambda t: t), (lambda t: t.expand(3, n))  # expanded on each device: .to() copies densely
        cases = [(grad, y, keep), (grad[:, ::2], y[:, ::2], keep), (grad[0], y[:1, :1], keep), (grad, y[:, :1], keep),
                 (grad, y[:, :1], along_rows), (grad[:1], y, keep),
                 (grad.t(), y[:1].t(), keep)]  # broadcast along dim 1, not along the rows CPU's loop runs (dim 0)
        if dtype == torch.float64 and n > 16:  # y broadcast along rows: the lane replay misplaces float64's last
            del cases[2:5]  # vector step (left open, docs/testing.md)
        for g, out, layout in cases:
            expected, actual = op(g, layout(out)), op(g.to("tpu"), layout(out.to("tpu"))).cpu()
            assert torch.equal(actual, expected)


COMPLEX_PRODUCT_LAYOUTS = {  # (a, b) from two (13, 37) draws
    "one row": lambda a, b: (a[0], b[0]),
    "broadcast rows": lambda a, b: (a[:5, :13], b[0, :13]),
    "transposed": lambda a, b: (a[:, :7].t(), b[:7, :13].contiguous()),
    "python scalar": lambda a, b: (a, 0.3 - 0.7j),
}


@pytest.mark.parametrize("layout", COMPLEX_PRODUCT_LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_mul_rounds_as_cpus_vector_lanes_and_fused_scalar_tail(dtype, layout):
    """CPU's vector lanes round the four products before adding; its scalar tail fuses them (complex64's in
    pairs, an odd last element unfused; strided elements written in place unfused): NumPy fuses everywhere, and
    40% of the products were an ulp off. Out of place and in place, bit for bit."""
    generator = torch.Generator().manual_seed(4)
    a, b = COMPLEX_PRODUCT_LAYOUTS[layout](*(torch.randn(13, 37, generator=generator, dtype=dtype) for _ in range(2)))
    on_tpu = lambda t: t.to("tpu") if isinstance(t, torch.Tensor) else t
    assert torch.equal((on_tpu(a) * on_tpu(b)).cpu(), a * b)
    expected, got = a.clone(), on_tpu(a.clone())
    expected.mul_(b)
    got.mul_(on_tpu(b))
    assert torch.equal(got.cpu(), expected)


@pytest.mark.parametrize("scalar", ["python", "0-d", "0-d first", "column"])
def test_complex64_mul_by_a_broadcast_value_fuses_as_cpus_scalar_tail(scalar):
    """With a value broadcast along the rows, CPU's compiled scalar loop peels one element, fuses a block of four
    and leaves the rest unfused (pairs were fused: n = 7 got elements 0, 5, 6 wrong). Lengths 1..20 cover every
    tail, out of place and in place, bit for bit."""
    x = torch.randn(20, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    for n in range(1, 21):
        operands = {"python": (x[:n], 0.3 - 0.7j), "0-d": (x[:n], torch.tensor(0.3 - 0.7j)),
                    "0-d first": (torch.tensor(0.3 - 0.7j), x[:n]), "column": (torch.stack([x[:n], x[:n].flip(0)]), x[:2, None])}[scalar]
        on_tpu = [o.to("tpu") if isinstance(o, torch.Tensor) else o for o in operands]
        assert torch.equal((on_tpu[0] * on_tpu[1]).cpu(), operands[0] * operands[1]), n
        if scalar != "0-d first":
            expected, got = operands[0].clone(), on_tpu[0].clone()
            assert torch.equal(got.mul_(on_tpu[1]).cpu(), expected.mul_(operands[1])), n


@pytest.mark.parametrize("shape, threads", [((70001,), 2), ((70001,), 1), ((13, 37), 2), ((300, 5), 3), ((3,), 1)])
@pytest.mark.parametrize("layout", ["dense", "broadcast row", "transposed out"])
def test_kernel_vec_scalar_loop_finds_every_tail_element(shape, threads, layout):
    """The scalar loop's elements, found from the row segments' ends only (complex mul built index arrays over every
    element: 33x slower), are exactly the elements kernel_vec_lanes leaves out of its vectors."""
    from torch_tpu._C import cpu_loops
    a = np.zeros(shape, np.complex64)
    b = a[..., :1] if layout == "broadcast row" else a
    destination = np.zeros(shape[::-1], np.complex64).T if layout == "transposed out" else None
    every = np.nonzero(np.ones(shape, bool))
    in_tail = ~cpu_loops.kernel_vec_lanes(destination, (a, b), every, 8, threads)
    indices, offset, length, _ = cpu_loops.kernel_vec_scalar_loop(destination, (a, b), 8, threads)
    found = np.zeros(shape, bool)
    found[indices] = True
    assert np.array_equal(found[every], in_tail)
    assert (0 <= offset).all() and (offset < length).all()


NAN_LANE_OPS = {
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "clamp_min tensor": lambda a, b: a.clamp_min(b),
    "clamp_max tensor": lambda a, b: a.clamp_max(b),
    "foreach maximum": lambda a, b: torch._foreach_maximum([a, a.reshape(-1)[:7]], [b, b.reshape(-1)[:7]])[0],
    "foreach minimum in place": None,
}


BITS_OF = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
           torch.float64: torch.int64}
NAN_LANE_LAYOUTS = {  # (a, b, out) of a 37-element draw, each with NaNs in both
    "new output": lambda a, b: (a, b, None),
    "all in the scalar tail": lambda a, b: (a[:20], b[:20], None),  # 16-bit lanes take 32 elements a step
    "out= a strided view": lambda a, b: (a, b, lambda device: torch.zeros(74, dtype=a.dtype, device=device)[::2]),
    "0-d": lambda a, b: (a[1], b[1], None),
}


def with_payload_nans(x, where):
    """``x`` with NaNs of a payload no kernel makes itself at ``where``."""
    x[where] = float("nan")
    x.view(BITS_OF[x.dtype])[where] |= 1
    return x


@pytest.mark.parametrize("layout", NAN_LANE_LAYOUTS)
@pytest.mark.parametrize("op", NAN_LANE_OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_maximum_and_minimum_nans_carry_cpus_vector_lane_bits(dtype, op, layout):
    """CPU's vector lanes give a NaN of every bit set (max_ps or'ed with an unordered compare's mask; 16-bit
    values through float), its scalar loop the dtype's quiet NaN whatever the operands' payloads. Lanes of
    the real output's layout and itemsize; bit for bit, foreach lists and 0-d tensors included (16-bit 0-d
    raised, a strided 16-bit out= got 0xffff from float32's lanes)."""
    generator = torch.Generator().manual_seed(6)
    a, b = (torch.randn(37, generator=generator).to(dtype) for _ in range(2))
    a, b, out = NAN_LANE_LAYOUTS[layout](with_payload_nans(a, [1, 5, 20, 33]), with_payload_nans(b, [2, 21, 34]))
    if NAN_LANE_OPS[op] is None:  # the lists updated in place
        expected, got = [a.clone()], [a.clone().to("tpu")]
        torch._foreach_minimum_(expected, [b])
        torch._foreach_minimum_(got, [b.to("tpu")])
        expected, got = expected[0], got[0]
    elif out is not None:
        if not op.startswith(("maximum", "minimum")):
            pytest.skip("out= is maximum's and minimum's")
        expected, got = NAN_LANE_OPS[op](a, b, out=out("cpu")), NAN_LANE_OPS[op](a.to("tpu"), b.to("tpu"), out=out("tpu"))
    else:
        expected, got = NAN_LANE_OPS[op](a, b), NAN_LANE_OPS[op](a.to("tpu"), b.to("tpu"))
    assert torch.equal(got.cpu().view(BITS_OF[dtype]), expected.view(BITS_OF[dtype]))


def test_complex64_abs_is_cpus_hypot():
    """CPU's complex magnitude is hypot's (Sleef's in its lanes); NumPy's complex absolute rounds otherwise and
    put a third of complex64 magnitudes an ulp off. (complex128's Sleef lanes round once: the test below.)"""
    z = torch.randn(16, 37, dtype=torch.complex64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(z.to("tpu").abs().cpu(), z.abs())


@pytest.mark.parametrize("layout", [lambda t: t, lambda t: t.t(), lambda t: t[:, ::3], lambda t: t[:, :13]])
def test_complex128_abs_is_cpus_sleef_lanes_and_hypot_tail(layout):
    """CPU's complex128 abs rounds sqrt(re**2 + im**2) once in its vector lanes (Sleef's hypot_u05) and calls C's
    hypot in its scalar tail (a 13-element row: 12 lanes, 1 tail); tpu's C hypot everywhere was an ulp off in
    about 1 in 160 elements. So is the inf-norm, CPU's maximum of abs(x). Into a new tensor and a transposed out=."""
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(40, 37, dtype=torch.complex128, generator=generator) * torch.randn(
        40, 37, dtype=torch.float64, generator=generator).mul(5).exp()
    source, on_tpu = layout(z), layout(z.to("tpu"))
    assert torch.equal(on_tpu.abs().cpu(), source.abs())
    expected, got = torch.empty(source.shape[::-1], dtype=torch.float64).t(), torch.empty(
        source.shape[::-1], dtype=torch.float64, device="tpu").t()
    assert torch.equal(torch.abs(on_tpu, out=got).cpu(), torch.abs(source, out=expected))
    for ord in (math.inf, -math.inf):
        assert torch.equal(torch.linalg.vector_norm(on_tpu, ord, -1).cpu(), torch.linalg.vector_norm(source, ord, -1))


def _complex_half(device):
    return torch.tensor([1 + 1j, 2 - 1j], dtype=torch.complex64, device=device).to(torch.complex32)


def _half(device):
    return torch.tensor([0.5, 2.0], dtype=torch.float16, device=device)


@pytest.mark.parametrize("call", [
    lambda d: _half(d) / 1j,  # a float16 tensor and a Python complex: a ComplexHalf division
    lambda d: torch.true_divide(_half(d), torch.tensor(1j, device=d)),
    lambda d: _complex_half(d) / 2,
    lambda d: _complex_half(d).div_(_complex_half(d)),
    lambda d: 1j ** _half(d),
    lambda d: _complex_half(d) ** _complex_half(d),
    lambda d: torch.addcdiv(_complex_half(d), _complex_half(d), _complex_half(d)),
    *[(lambda name: lambda d: getattr(torch, name)(_complex_half(d)))(name)
      for name in ("exp", "exp2", "log1p", "sqrt", "rsqrt", "reciprocal", "sigmoid", "sin", "tanh", "asinh", "atanh",
                   "erf", "digamma", "i0")],
    lambda d: torch.special.i0e(_complex_half(d)),
])
def test_complex_half_results_cpu_has_no_loop_for_raise_cpus_error(call):
    """CPU's division, power and floating unary kernels have complex loops but none for ComplexHalf: a complex32
    result (a float16 tensor with a Python complex among others) raises its "not implemented for 'ComplexHalf'"; tpu
    computed one."""
    check_same_error(call)


@pytest.mark.parametrize("call", [
    lambda d: torch.clamp(torch.ones(2, device=d), min=1j),  # a floating input keeps its dtype: 1j overflows double
    lambda d: torch.clamp(torch.ones(2, device=d, dtype=torch.float64), min=0, max=2 + 1j),
    lambda d: torch.clamp(torch.ones(2, device=d, dtype=torch.bfloat16), min=1j),
    lambda d: torch.ones(2, device=d).clamp_(min=1j),
    lambda d: torch.clamp_max(torch.ones(2, device=d), 1j),  # promoted by its bound: refused as complex
    lambda d: torch.clamp_min(torch.ones(2, device=d), 1 + 0j),
    lambda d: torch.clamp(torch.ones(2, device=d), max=torch.tensor(1j, device=d)),  # minimum's dispatch
    lambda d: torch.clamp(torch.ones(2, device=d), min=torch.tensor(0j, device=d), max=torch.tensor(1j, device=d)),
    lambda d: torch.clamp(torch.ones(2, device=d), 0j, out=torch.empty(2, device=d, dtype=torch.complex64)),
    lambda d: torch.clamp(torch.ones(2, device=d, dtype=torch.int64), 0j),  # an integral input promotes: complex
])
def test_clamp_with_complex_bounds_raises_cpus_error(call):
    """CPU's clamp meta keeps a floating input's dtype and converts number bounds to double (checked), clamp_min and
    clamp_max promote and refuse complex, tensor bounds meet maximum/minimum/clamp's dispatch; tpu returned a complex
    result (and wrote one into a complex out, whose dtype is not the input's)."""
    check_same_error(call)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("call", [
    lambda x: torch.clamp(x, 0j),
    lambda x: torch.clamp(x, min=-0.5 + 0j, max=2),
    lambda x: torch.clamp(x, max=0.25 - 0j),
    lambda x: x.clone().clamp_(0j, 1 + 0j),
    lambda x: torch.clamp(x, 0j, out=torch.empty_like(x)),
])
def test_clamp_with_real_complex_bounds_keeps_a_floating_inputs_dtype(call, dtype):
    """CPU's clamp meta makes a floating input's dtype the result's and takes a complex bound whose imaginary part is
    zero as its real part; tpu promoted to complex (float16 raised NumPy's UFuncTypeError, clamp_ and a float out
    were refused)."""
    x = torch.tensor([-1.0, 0.5, 3.0, float("nan")], dtype=dtype)
    assert_identical(call(x.to("tpu")), call(x))
