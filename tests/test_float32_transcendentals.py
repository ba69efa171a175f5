"""float32 exp, log, sin, tanh, ... and the activations built on them: host-independent, and as close to torch CPU
as CPU's own libraries allow (docs/numerics.md, "What depends on the host's ISA").

NumPy's float32 transcendental loops are chosen by the host (SVML on an AVX-512 CPU, NumPy's own polynomials
elsewhere) and none is correctly rounded; tpu evaluates them in float64 and rounds once (``vpu.rounded_once``).
The oracle for that is Python's ``math`` (the C library's double functions, not NumPy's SIMD loops) rounded to
float32. Against torch CPU, whose float32 ``exp``/``log``/``sin``/... are MKL's VML (high-accuracy mode, not
correctly rounded either) and whose activations are Sleef in vector lanes and glibc in the scalar tail, the
sweep checks every special value exactly, every finite value to within an ulp or two, and how many elements
differ at all.
"""

import math

import numpy as np
import pytest
import torch

import torch_tpu  # noqa: F401

_RNG = np.random.default_rng(11)


def _sweep():
    """Every float32 exponent with random mantissas, subnormals, the specials and a dense band around 0; both signs."""
    exponents = np.arange(1, 255, dtype=np.uint32)
    mantissas = _RNG.integers(0, 2**23, (exponents.size, 24)).astype(np.uint32)
    normal = ((exponents[:, None] << 23) | mantissas).ravel().view(np.float32)
    subnormal = _RNG.integers(1, 2**23, 200).astype(np.uint32).view(np.float32)
    special = np.array([0.0, np.inf, np.nan, 1.0, 0.5, 2.0, 20.0, 88.72284, 89.0, 104.0], np.float32)
    band = _RNG.uniform(-20, 20, 4000).astype(np.float32)
    positive = np.concatenate([normal, subnormal, special, band])
    return np.concatenate([positive, -positive])


_X = _sweep()


def _layouts(x):
    """(cpu, tpu) pairs: the whole sweep contiguous and strided, and short rows whose lengths leave CPU's vector
    loops a scalar tail of every length."""
    yield torch.from_numpy(x), torch.from_numpy(x).to("tpu")
    doubled = torch.from_numpy(np.repeat(x, 2))
    yield doubled[::2], doubled.to("tpu")[::2]
    for length in (*range(1, 8), *range(17, 24)):
        row = torch.from_numpy(x[_RNG.integers(0, x.size, length)])
        yield row, row.to("tpu")


def _real(function):
    def evaluate(value):
        try:
            return function(value)
        except (ValueError, OverflowError):  # outside the domain or past double's range: checked against CPU
            return math.nan

    return evaluate


MATH = {
    torch.exp: math.exp, torch.exp2: lambda v: 2.0**v, torch.expm1: math.expm1, torch.log: math.log,
    torch.log2: math.log2, torch.log10: math.log10, torch.log1p: math.log1p, torch.sin: math.sin,
    torch.cos: math.cos, torch.tan: math.tan, torch.asin: math.asin, torch.acos: math.acos, torch.atan: math.atan,
    torch.sinh: math.sinh, torch.cosh: math.cosh, torch.tanh: math.tanh, torch.asinh: math.asinh,
    torch.acosh: math.acosh, torch.atanh: math.atanh,
}


@pytest.mark.parametrize("op", MATH, ids=lambda op: op.__name__)
def test_float32_transcendentals_are_correctly_rounded_on_every_host(op):
    finite = _X[np.isfinite(_X)]
    with np.errstate(over="ignore"):  # doubles past float32's range become inf, as rounding them does
        expected = np.array([_real(MATH[op])(float(v)) for v in finite]).astype(np.float32)
    actual = op(torch.from_numpy(finite).to("tpu")).cpu().numpy()
    checked = np.isfinite(expected)  # the rest (domain errors, overflow) against CPU below
    assert checked.mean() > 0.3
    assert np.array_equal(actual[checked].view(np.int32), expected[checked].view(np.int32))


def _ulps(a, b):
    """How many float32 steps apart ``a`` and ``b`` are (NaNs aside)."""
    def ordered(v):
        bits = v.view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)

    return np.abs(ordered(a) - ordered(b))


# op: (largest distance from CPU in ulps, largest share of elements that differ from CPU at all). CPU's exp, log,
# sin, ... are MKL's (the same for every layout), its activations Sleef's vector lanes or glibc's scalar tail. Before
# tpu rounded once, NumPy's SVML loops on an AVX-512 host differed from CPU in 26% (exp), 17% (softplus), 18% (mish).
AGAINST_CPU = {
    torch.exp: (1, 0.01), torch.expm1: (1, 0.02), torch.log: (1, 0.02), torch.log2: (1, 0.001),
    torch.log10: (1, 0.001), torch.log1p: (1, 0.015), torch.sin: (1, 0.04), torch.cos: (1, 0.04),
    torch.tan: (1, 0.13), torch.asin: (1, 0.005), torch.acos: (1, 0.005), torch.atan: (1, 0.03),
    torch.tanh: (1, 0.001), torch.atanh: (1, 0.015),
    torch.sigmoid: (4, 0.03), torch.nn.functional.softplus: (2, 0.05), torch.nn.functional.silu: (4, 0.03),
    torch.nn.functional.elu: (1, 0.015), torch.nn.functional.logsigmoid: (2, 0.04),
}


@pytest.mark.parametrize("op", AGAINST_CPU, ids=lambda op: op.__name__)
def test_float32_transcendentals_against_cpu(op):
    largest_distance, largest_share = AGAINST_CPU[op]
    differing = total = 0
    for cpu, tpu in _layouts(_X):
        expected, actual = op(cpu).numpy(), op(tpu).cpu().numpy()
        assert np.array_equal(np.isnan(actual), np.isnan(expected))
        exact = ~np.isfinite(expected) | (expected == 0)  # infinities and signed zeros: CPU's bit for bit
        assert np.array_equal(actual[exact & ~np.isnan(expected)].view(np.int32),
                              expected[exact & ~np.isnan(expected)].view(np.int32))
        finite = ~exact
        assert _ulps(actual[finite], expected[finite]).max(initial=0) <= largest_distance
        differing += int((actual[finite].view(np.int32) != expected[finite].view(np.int32)).sum())
        total += expected.size
    assert differing / total <= largest_share


def test_mish_against_cpu():
    """Below x = -87, exp(x) is subnormal and has few bits left, which mish (x * tanh(log1p(exp(x)))) multiplies by
    x: there the result is checked to an absolute 2^-140; everywhere else within 2 ulps."""
    cpu, tpu = torch.from_numpy(_X), torch.from_numpy(_X).to("tpu")
    expected, actual = torch.nn.functional.mish(cpu).numpy(), torch.nn.functional.mish(tpu).cpu().numpy()
    assert np.array_equal(np.isnan(actual), np.isnan(expected))
    normal = np.isfinite(expected) & (_X > -87)
    assert _ulps(actual[normal], expected[normal]).max() <= 2
    tiny = np.isfinite(expected) & ~normal
    assert np.abs(actual[tiny] - expected[tiny]).max() <= 2.0**-140
    assert (actual.view(np.int32) != expected.view(np.int32)).mean() <= 0.05
