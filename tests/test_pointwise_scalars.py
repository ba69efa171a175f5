"""Numbers (Python scalars, 0-dim tensors) and tensors of another dtype combined with bf16/fp16 tensors.

CPU converts every operand to the common dtype before computing in float32, so a number that a 16-bit
format cannot hold is rounded first (``x_fp16 + 0.3`` adds fp16(0.3)); only mul and the divisions read a
lone second operand unrounded. These tests sweep the pointwise ops with such numbers, on either side, and
assert tpu eager, torch.compile(backend="tpu") and the foreach kernels give CPU's bits, and that the table
in torch_tpu/ops/pointwise.py is CPU's rule.
"""

import pytest
import torch
import torch.nn.functional as F

from torch_tpu.ops import pointwise

DTYPES = [torch.bfloat16, torch.float16]
# none of them exactly representable in bf16 or fp16 (257 is an fp16 value, not a bf16 one)
VALUES = [0.3, 1 / 3, -1.7, 2.71828]
FP16_INEXACT = {torch.bfloat16: 257, torch.float16: 2049}


def bits_equal(actual, expected):
    """Bit for bit (signed zeros included), any NaN matching any NaN: NaN signs are libm's business."""
    actual = actual.cpu()
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        return False
    if not expected.is_floating_point():
        return torch.equal(actual, expected)
    nan = expected.isnan()
    if not torch.equal(actual.isnan(), nan):
        return False
    view = {2: torch.int16, 4: torch.int32, 8: torch.int64}[expected.element_size()]
    return torch.equal(actual[~nan].view(view), expected[~nan].view(view))


def operand_tensor(dtype, seed=0, positive=False):
    generator = torch.Generator().manual_seed(seed)
    low, high = (0.25, 4.0) if positive else (-4.0, 4.0)
    values = torch.rand(64, generator=generator, dtype=torch.float64) * (high - low) + low
    values[:4] = torch.tensor([0.0, 1.0, -1.0, 0.5]).abs() if positive else torch.tensor([0.0, 1.0, -1.0, 0.5])
    return values.to(dtype)


def numbers(value, dtype):
    """A number as each kind of operand that CPU converts: (name, make(device))."""
    other_16 = torch.float16 if dtype == torch.bfloat16 else torch.bfloat16
    return [
        ("python", lambda device: value),
        ("0-dim float32", lambda device: torch.tensor(value, dtype=torch.float32, device=device)),
        ("0-dim float64", lambda device: torch.tensor(value, dtype=torch.float64, device=device)),
        ("0-dim other 16-bit", lambda device: torch.tensor(value, dtype=other_16, device=device)),
        ("0-dim float32 on CPU", lambda device: torch.tensor(value, dtype=torch.float32)),
    ]


# op name: (function of (tensor-or-number, tensor-or-number), sides a Python number may take, positive inputs)
BINARY = {
    "add": (torch.add, "both", False),
    "add alpha": (lambda a, b: torch.add(a, b, alpha=0.3), "right", False),
    "sub": (torch.sub, "both", False),
    "rsub": (torch.rsub, "right", False),
    "mul": (torch.mul, "both", False),
    "div": (torch.div, "both", False),
    "div trunc": (lambda a, b: torch.div(a, b, rounding_mode="trunc"), "both", False),
    "div floor": (lambda a, b: torch.div(a, b, rounding_mode="floor"), "both", False),
    "floor_divide": (torch.floor_divide, "both", False),
    "pow": (torch.pow, "both", True),
    "fmod": (torch.fmod, "right", False),
    "remainder": (torch.remainder, "both", False),
    "atan2": (torch.atan2, "none", False),
    "hypot": (torch.hypot, "none", False),
    "copysign": (torch.copysign, "right", False),
    "maximum": (torch.maximum, "none", False),
    "minimum": (torch.minimum, "none", False),
    "fmax": (torch.fmax, "none", False),
    "fmin": (torch.fmin, "none", False),
    "nextafter": (torch.nextafter, "none", False),
    "xlogy": (torch.xlogy, "both", True),
    "xlog1py": (torch.special.xlog1py, "both", True),
    "logaddexp": (torch.logaddexp, "none", False),
    "logaddexp2": (torch.logaddexp2, "none", False),
    "eq": (torch.eq, "right", False),
    "ne": (torch.ne, "right", False),
    "lt": (torch.lt, "right", False),
    "le": (torch.le, "right", False),
    "gt": (torch.gt, "right", False),
    "ge": (torch.ge, "right", False),
    "where": (lambda a, b: _where(a, b), "both", False),
    "clamp_min": (lambda a, b: torch.clamp_min(a, b), "right", False),
    "clamp_max": (lambda a, b: torch.clamp_max(a, b), "right", False),
}


def _where(a, b):
    tensor = a if isinstance(a, torch.Tensor) and a.dim() else b
    return torch.where(torch.arange(64, device=tensor.device) % 3 == 0, a, b)


def _call(function, x, number, side):
    return function(x, number) if side == "right" else function(number, x)


def _mismatches(function, dtype, sides, positive, values):
    """Every (number kind, side, value) where tpu's result is not CPU's, described, and how many were compared."""
    x = operand_tensor(dtype, positive=positive)
    x_tpu = x.to("tpu")
    failures, compared = [], 0
    for value in values:
        for kind, make in numbers(value, dtype):
            for side in ("right", "left"):
                if kind == "python" and sides not in ("both", side):
                    continue
                try:
                    expected = _call(function, x, make("cpu"), side)
                except (RuntimeError, TypeError):
                    continue  # an operand kind CPU refuses (the error tests cover those)
                actual = _call(function, x_tpu, make("tpu"), side)
                compared += 1
                if not bits_equal(actual, expected):
                    failures.append(f"{kind} on the {side}, {value}")
    return failures, compared


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", BINARY)
def test_numbers_as_cpu_rounds_them(name, dtype):
    function, sides, positive = BINARY[name]
    values = VALUES + [FP16_INEXACT[dtype]]
    failures, compared = _mismatches(function, dtype, sides, positive, values)
    assert not failures
    assert compared >= 4 * len(values)  # 0-dim tensors of three dtypes (tpu, CPU) on the right at least


# Ternary ops and Scalar arguments, as functions of (x, y, number). CPU's build contracts a product followed by
# a sum into one FMA in some kernels (addcmul, lerp), so where a product can round the operands are chosen to
# make it exact (y - x and addcmul's second factor are powers of two): then only the number's rounding decides.
TERNARY = {
    "lerp weight": lambda x, y, w: torch.lerp(x, y, w),
    "lerp 0-dim weight": lambda x, y, w: torch.lerp(x, y, torch.tensor(w, device=x.device)),
    "lerp 0-dim CPU weight": lambda x, y, w: torch.lerp(x, y, torch.tensor(w)),
    "addcmul value": lambda x, y, v: torch.addcmul(x, y, y - x, value=v),
    "addcdiv value": lambda x, y, v: torch.addcdiv(x, y, y.abs() + 1, value=v),
    "sub alpha": lambda x, y, a: torch.sub(x, y, alpha=a),
    "add_ alpha": lambda x, y, a: x.clone().add_(y, alpha=a),
    "clamp": lambda x, y, v: torch.clamp(x, v, v + 1),
    "clamp 0-dim": lambda x, y, v: torch.clamp(x, *torch.tensor([v, v + 1], device=x.device)),
    "mul_.Scalar": lambda x, y, v: torch.ops.aten.mul_.Scalar(x.clone(), v),  # the number in mul's first slot
    "div_.Scalar": lambda x, y, v: torch.ops.aten.div_.Scalar(x.clone(), v),
    "add_ number": lambda x, y, v: x.clone().add_(v),
    "mul out=float32": lambda x, y, v: torch.mul(x, v, out=torch.empty(64, device=x.device)),
    "add out=float32": lambda x, y, v: torch.add(x, v, out=torch.empty(64, device=x.device)),
    "python int": lambda x, y, v: x + int(v * 1000 + 257),
    "int16 tensor": lambda x, y, v: x + (y * 100 + v * 1000).to(torch.int16),
    "int16 tensor mul": lambda x, y, v: x * (y * 100 + v * 1000).to(torch.int16),
    "pow number base": lambda x, y, v: torch.pow(abs(v), x),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TERNARY)
def test_scalar_arguments_as_cpu_reads_them(name, dtype):
    # 64 elements: all in CPU's SIMD loop (alpha's product rounds once there, twice in the scalar tail);
    # x holds multiples of 1/8 (a few significant bits) and y = x + 1, so every product below is exact
    x = (operand_tensor(torch.float64, seed=1) * 8).round() / 8
    x, y = x.to(dtype), (x + 1).to(dtype)
    function = TERNARY[name]
    failures = [value for value in VALUES + [0.1]
                if not bits_equal(function(x.to("tpu"), y.to("tpu"), value), function(x, y, value))]
    assert not failures


# Thresholds compared with the tensor's own values: whether CPU rounds them shows where x holds the rounded number.
THRESHOLDS = {
    "hardshrink": lambda x, g, v: F.hardshrink(x, v),  # lambd rounded
    "hardshrink_backward": lambda x, g, v: torch.ops.aten.hardshrink_backward(g, x, v),  # rounded
    "softshrink": lambda x, g, v: F.softshrink(x, v),  # kept in float32
    "softshrink_backward": lambda x, g, v: torch.ops.aten.softshrink_backward(g, x, v),  # rounded
    "threshold": lambda x, g, v: F.threshold(x, v, 2 * v),
    "threshold_backward": lambda x, g, v: torch.ops.aten.threshold_backward(g, x, v),
    "hardtanh": lambda x, g, v: F.hardtanh(x, -v, v),
    "leaky_relu": lambda x, g, v: F.leaky_relu(x, v),
    "logit eps": lambda x, g, v: torch.logit(x.abs() / 4, v / 4),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", THRESHOLDS)
def test_thresholds_as_cpu_reads_them(name, dtype):
    function = THRESHOLDS[name]
    failures = []
    for value in VALUES[:2]:
        near = torch.tensor(value, dtype=torch.float64).to(dtype)
        x = torch.cat([torch.stack([near, -near, near * 4, -near * 4]), operand_tensor(dtype)])
        grad = torch.cat([torch.ones(4, dtype=dtype), operand_tensor(dtype, seed=5)])
        if not bits_equal(function(x.to("tpu"), grad.to("tpu"), value), function(x, grad, value)):
            failures.append(value)
    assert not failures


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("eps", [None, 0.01, 0.3, float("nan")])
def test_logit_in_16_bits_as_cpu(eps, dtype):
    # CPU's logit computes bf16/fp16 in their own format, each step rounded; a NaN eps clamps nothing
    x = torch.rand(256, generator=torch.Generator().manual_seed(0)).to(dtype)
    x[:3] = torch.tensor([0.0, 1.0, 0.5])
    assert bits_equal(torch.logit(x.to("tpu"), eps), torch.logit(x, eps))


# CPU's rule itself: with a number on the right, an op rounds it first unless READS_ORIGINAL_SCALAR keeps it.
RULE_OPS = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
            "fmod": torch.fmod, "remainder": torch.remainder, "atan2": torch.atan2, "hypot": torch.hypot,
            "floor_divide": torch.floor_divide, "logaddexp": torch.logaddexp, "eq": torch.eq}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", RULE_OPS)
def test_table_is_cpus_rule(name, dtype):
    x = operand_tensor(torch.float64, positive=True) * 100
    x[4:4 + len(VALUES)] = torch.tensor(VALUES)  # for eq: the numbers themselves, as the tensor holds them
    x = x.to(dtype)
    function = RULE_OPS[name]
    same_as_rounded = []
    for value in VALUES:
        rounded = torch.tensor(value).to(dtype).item()
        number, rounded_number = torch.tensor(value), torch.tensor(rounded)
        same_as_rounded.append(bits_equal(function(x, number), function(x, rounded_number)))
    if pointwise.keeps_number(name, 1):
        assert not all(same_as_rounded)
    else:
        assert all(same_as_rounded)


# torch.compile: the compiled program converts numbers as eager does (one copy of the rule). The number is a
# Python constant of the graph, a 0-dim float32 tensor input (read on every call), or both where the op takes it.
JUST_UNDER_EIGHTH = 0.125 - 2 ** -15  # rounds to 0.125 in bf16 and fp16: hardshrink then zeroes x = 0.125
COMPILED = {  # name: (function of (x, number), kinds of number, the constant)
    "add": (lambda x, s: x + s, "both", 0.3),
    "number left": (lambda x, s: (s - x) * 2, "both", 0.3),
    "alpha": (lambda x, s: torch.add(x, x * 0.5, alpha=s), "constant", 0.3),
    "mul right": (lambda x, s: x * s, "both", 0.3),
    "mul left": (lambda x, s: torch.mul(s, x), "both", 0.3),
    "div": (lambda x, s: x / s, "both", 0.3),
    "pow": (lambda x, s: x.abs() ** s, "both", 0.3),
    "fmod": (lambda x, s: torch.fmod(x, s), "both", 0.3),
    "atan2": (lambda x, s: torch.atan2(x, s), "tensor", 0.3),
    "compare": (lambda x, s: (x >= s).to(x.dtype) + x, "both", 0.3),
    "lerp": (lambda x, s: torch.lerp(x, x + 1, s), "both", 0.3),
    "hardshrink": (lambda x, s: F.hardshrink(x, s) * 2, "constant", JUST_UNDER_EIGHTH),
    "logit": (lambda x, s: torch.logit(x.abs() / 4, s) + 1, "constant", 0.01),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", COMPILED)
def test_compiled_numbers_as_cpu_rounds_them(name, dtype):
    torch._dynamo.reset()
    function, kinds, constant = COMPILED[name]
    x = ((operand_tensor(torch.float64) * 8).round() / 8).to(dtype)  # few bits: lerp's product is exact
    if kinds in ("both", "tensor"):
        compiled = torch.compile(function, backend="tpu", dynamic=False)
        for value in (0.3, 1 / 3):
            number = torch.tensor(value)
            assert bits_equal(compiled(x.to("tpu"), number.to("tpu")), function(x, number))
    if kinds in ("both", "constant"):
        compiled = torch.compile(lambda x: function(x, constant), backend="tpu", dynamic=False)
        assert bits_equal(compiled(x.to("tpu")), function(x, constant))
    torch._dynamo.reset()


# foreach: CPU runs the pointwise op per tensor (in place, mul_ with a number puts it in mul's first slot)
FOREACH = {
    "add": lambda tensors, s: torch._foreach_add(tensors, s),
    "add_": lambda tensors, s: torch._foreach_add_(tensors, s),
    "sub": lambda tensors, s: torch._foreach_sub(tensors, s),
    "mul": lambda tensors, s: torch._foreach_mul(tensors, s),
    "mul_": lambda tensors, s: torch._foreach_mul_(tensors, s),
    "div": lambda tensors, s: torch._foreach_div(tensors, s),
    "div_": lambda tensors, s: torch._foreach_div_(tensors, s),
    "pow": lambda tensors, s: torch._foreach_pow([t.abs() for t in tensors], s),
    "maximum": lambda tensors, s: torch._foreach_maximum(tensors, s),
    "clamp_max_": lambda tensors, s: torch._foreach_clamp_max_(tensors, s),
}
FOREACH_NUMBERS = {
    "Scalar": lambda value, device: value,
    "ScalarList": lambda value, device: [value, -value],
    "Tensor": lambda value, device: torch.tensor(value, device=device),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", FOREACH_NUMBERS)
@pytest.mark.parametrize("name", FOREACH)
def test_foreach_numbers_as_cpu_reads_them(name, kind, dtype):
    function, make = FOREACH[name], FOREACH_NUMBERS[kind]
    for value in VALUES:
        cpu = [operand_tensor(dtype, seed=1), operand_tensor(dtype, seed=2)]
        tpu = [t.to("tpu") for t in cpu]
        try:
            expected = function(cpu, make(value, "cpu"))
        except (RuntimeError, TypeError):
            continue  # an overload aten does not have
        actual = function(tpu, make(value, "tpu"))
        results = zip(actual, expected) if expected is not None else zip(tpu, cpu)
        assert all(bits_equal(a, e) for a, e in results), value


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_foreach_alpha_as_cpu_rounds_it(dtype):
    cpu = [operand_tensor(dtype, seed=1), operand_tensor(dtype, seed=2)]
    others = [operand_tensor(dtype, seed=3), operand_tensor(dtype, seed=4)]
    tpu, tpu_others = [t.to("tpu") for t in cpu], [t.to("tpu") for t in others]
    for value in VALUES:
        expected = torch._foreach_add(cpu, others, alpha=value)
        assert all(bits_equal(a, e) for a, e in zip(torch._foreach_add(tpu, tpu_others, alpha=value), expected))


# A Python number beside 0-d tensors only: it promotes by its category, never by its dtype (a 0-d int8 tensor
# ``& 1`` is int8), where a 0-d tensor of the number's own dtype would promote by that dtype (int64).
ZERO_DIM_WITH_NUMBER = {
    "bitwise_and": torch.bitwise_and, "bitwise_or": torch.bitwise_or, "bitwise_xor": torch.bitwise_xor,
    "bitwise_left_shift": torch.bitwise_left_shift, "bitwise_right_shift": torch.bitwise_right_shift,
    "remainder": torch.remainder, "fmod": torch.fmod, "copysign": torch.copysign,
    "xlog1py": torch.special.xlog1py, "pow": torch.pow, "mul": torch.mul,
}
SMALL_DTYPES = [torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.float16, torch.bfloat16,
                torch.complex64]


def cpu_outcome(function):
    """``function``'s result on the host (the dtype in its own right), or its error's class and words."""
    try:
        return function().cpu()
    except (RuntimeError, NotImplementedError, TypeError) as error:
        return type(error), str(error)


@pytest.mark.parametrize("name", sorted(ZERO_DIM_WITH_NUMBER))
@pytest.mark.parametrize("dtype", SMALL_DTYPES, ids=str)
@pytest.mark.parametrize("number", [3, 2.5, 1 + 2j], ids=["int", "float", "complex"])
def test_a_number_beside_a_0_dim_tensor_promotes_by_its_category_as_on_cpu(name, dtype, number):
    op = ZERO_DIM_WITH_NUMBER[name]
    values = torch.tensor(5).to(dtype)
    expected = cpu_outcome(lambda: op(values, number))
    actual = cpu_outcome(lambda: op(values.to("tpu"), number))
    if isinstance(expected, tuple):
        assert actual == expected
    else:
        assert isinstance(actual, torch.Tensor) and actual.dtype == expected.dtype
        torch.testing.assert_close(actual, expected, equal_nan=True)
