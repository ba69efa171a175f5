"""Complex logsumexp, logaddexp, logcumsumexp and log1p on tpu against torch CPU, special values included.

CPU orders complex operands by real part, lets a NaN in either part of either operand poison the result,
keeps the imaginary part of the larger term where both real parts are the same infinity, and computes
log1p(z) with c10's digit-restoring formula; these tests hold tpu to each of those rules.
"""

import math

import pytest
import torch

from differential import check, check_grads, check_same_error

COMPLEX = [torch.complex64, torch.complex128]
PARTS = (0.0, 1.5, -2.0, math.inf, -math.inf, math.nan)


def special_values(dtype):
    """Every pairing of ordinary, infinite and NaN real and imaginary parts, as a 6 x 6 matrix."""
    return torch.tensor([[complex(real, imag) for imag in PARTS] for real in PARTS], dtype=dtype)


def ordinary_values(*shape, dtype, seed=0):
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
def test_complex_log1p_keeps_the_digits_of_small_arguments(dtype):
    small = ordinary_values(200, dtype=dtype) * 1e-4
    check(torch.log1p, small)
    check(torch.log1p, ordinary_values(200, dtype=dtype))
    check(torch.log1p, special_values(dtype))


@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
def test_complex_logaddexp(dtype):
    values = special_values(dtype).flatten()
    check(torch.logaddexp, values[:, None], values[None, :])  # every special pairing, both orders
    x = ordinary_values(4, 5, dtype=dtype)
    check(torch.logaddexp, x, x.flip(0))
    check(torch.logaddexp, x, ordinary_values(5, dtype=torch.float32, seed=1))  # real operand promoted
    check(lambda a, b, out: torch.logaddexp(a, b, out=out), x, x.t().flip(1).t(), torch.empty(0, dtype=dtype))


@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
def test_complex_logsumexp(dtype):
    x = ordinary_values(5, 7, dtype=dtype)
    for values in (x, x.t(), x[:, ::2], special_values(dtype), special_values(dtype).t()):
        for dim in ([0], [1], [0, 1], -1):
            check(lambda t: torch.logsumexp(t, dim), values)
            check(lambda t: torch.logsumexp(t, dim, keepdim=True), values)
    check(lambda t: torch.logsumexp(t, 0), torch.tensor(1 + 2j, dtype=dtype))
    check(lambda t: torch.logsumexp(t, 1), torch.empty(3, 0, dtype=dtype))
    check(lambda t, out: torch.logsumexp(t, 1, out=out), x, torch.empty(0, dtype=dtype))


@pytest.mark.filterwarnings("ignore:Casting complex values to real")
def test_complex_logsumexp_into_a_real_out_sums_the_real_parts_like_cpu():
    x = ordinary_values(5, 7, dtype=torch.complex64)
    check(lambda t, out: torch.logsumexp(t, 1, out=out), x, torch.empty(0))  # NaN where that sum is negative


@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
def test_complex_logcumsumexp(dtype):
    x = ordinary_values(4, 3, 6, dtype=dtype)
    for dim in (0, 1, -1):
        check(lambda t: torch.logcumsumexp(t, dim), x)
        check(lambda t: torch.logcumsumexp(t, dim), x.transpose(0, 2))
    for values in (special_values(dtype), special_values(dtype).t(), special_values(dtype).flatten()):
        check(lambda t: torch.logcumsumexp(t, 0), values)
    check(lambda t: torch.logcumsumexp(t, 0), torch.tensor(1 - 2j, dtype=dtype))
    check(lambda t: torch.logcumsumexp(t, 1), torch.empty(3, 0, dtype=dtype))
    check(lambda t, out: torch.logcumsumexp(t, 1, out=out), x, torch.empty(0, dtype=dtype))


@pytest.mark.parametrize("dtype", COMPLEX, ids=str)
def test_complex_log_sum_exp_family_trains_like_cpu(dtype):
    x = ordinary_values(4, 5, dtype=dtype)
    check_grads(lambda t: torch.logsumexp(t, 1), x)
    check_grads(lambda t: torch.logcumsumexp(t, 1), x)
    check_grads(lambda t: torch.logaddexp(t, t.flip(0) * 0.5), x)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("call", [
    lambda d: torch.logsumexp(torch.ones(3, dtype=torch.complex32, device=d), 0),
    lambda d: torch.logaddexp(*[torch.ones(3, dtype=torch.complex32, device=d)] * 2),
    lambda d: torch.logcumsumexp(torch.ones(3, dtype=torch.complex32, device=d), 0),
], ids=["logsumexp", "logaddexp", "logcumsumexp"])
def test_complex32_is_refused_as_on_cpu(call):
    check_same_error(call)
