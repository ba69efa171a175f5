"""torch.special polynomials, Bessel and Airy functions on tpu against CPU, including CPU's edge-case rules."""

import math

import pytest
import torch

POLYNOMIALS = [
    "chebyshev_polynomial_t", "chebyshev_polynomial_u", "chebyshev_polynomial_v", "chebyshev_polynomial_w",
    "shifted_chebyshev_polynomial_t", "shifted_chebyshev_polynomial_u", "shifted_chebyshev_polynomial_v",
    "shifted_chebyshev_polynomial_w", "hermite_polynomial_h", "hermite_polynomial_he", "laguerre_polynomial_l",
    "legendre_polynomial_p",
]
FUNCTIONS = [
    "airy_ai", "bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1", "modified_bessel_i0", "modified_bessel_i1",
    "modified_bessel_k0", "modified_bessel_k1", "scaled_modified_bessel_k0", "scaled_modified_bessel_k1",
    "spherical_bessel_j0",
]
# Endpoints, the shifted endpoints 0 and 1, just inside/outside [-1, 1], NaN and infinities.
EDGE_X = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 0.9999999, -0.9999999, 1.0000001, 1e-8, 2.0, -3.0, 5.0, -7.5,
          math.nan, math.inf, -math.inf]
# Negative, fractional, around every closed-form threshold, past the Hermite limits, and not finite.
EDGE_N = [-3.0, -0.5, 0.0, 0.7, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 20.0, 129.0, 513.0,
          math.nan, math.inf, -math.inf, 1e20]
TOLERANCE = {torch.float32: dict(rtol=1.3e-6, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}
# torch CPU's own float64 Bessel J/Y series are accurate to about 1e-6 only; scipy's are exact to 1e-16.
BESSEL_JY_FLOAT64 = dict(rtol=1e-5, atol=2e-6)


def assert_matches(fn, *inputs, **tolerance):
    actual = fn(*(x.to("tpu") if isinstance(x, torch.Tensor) else x for x in inputs))
    expected = fn(*inputs)
    assert actual.device.type == "tpu"
    torch.testing.assert_close(actual.cpu(), expected, equal_nan=True, **tolerance)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", POLYNOMIALS)
def test_polynomial_edge_cases(name, dtype):
    x = torch.tensor(EDGE_X, dtype=dtype)[:, None]
    n = torch.tensor(EDGE_N, dtype=dtype)[None, :]  # broadcasts to every (x, n) pair
    assert_matches(getattr(torch.special, name), x, n, **TOLERANCE[dtype])


@pytest.mark.parametrize("name", POLYNOMIALS)
def test_polynomial_recurrence_and_views(name):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 30, generator=generator) * 1.5
    n = torch.randint(-2, 12, (30, 40), generator=generator)
    # x is a transposed view; n is int64 (promotes with float32 x to float32)
    assert_matches(getattr(torch.special, name), x.t(), n, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["chebyshev_polynomial_t", "hermite_polynomial_h", "legendre_polynomial_p"])
def test_polynomial_promotion_scalars_and_errors(name):
    function = getattr(torch.special, name)
    assert_matches(function, torch.tensor([2, 3]), torch.tensor([3, 4]))  # int x int -> float32
    assert_matches(function, torch.tensor([0.25, 0.5], dtype=torch.float64), 3)
    assert_matches(function, 0.5, torch.tensor([3.0, 5.0]))
    assert_matches(function, torch.tensor(0.5), torch.empty(0))
    out = torch.empty(0, device="tpu")
    function(torch.tensor([0.5, 0.25], device="tpu"), 3, out=out)
    torch.testing.assert_close(out.cpu(), function(torch.tensor([0.5, 0.25]), 3))
    with pytest.raises(NotImplementedError, match="not implemented for 'BFloat16'"):
        function(torch.ones(2, dtype=torch.bfloat16, device="tpu"), torch.ones(2, dtype=torch.bfloat16, device="tpu"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_function(name, dtype):
    generator = torch.Generator().manual_seed(0)
    edges = torch.tensor([0.0, -0.0, 1e-30, 0.3, -0.3, 2.08, 2.09, -2.09, -2.1, 7.9, 8.0, 8.1, -8.1, 25.0, -25.0,
                          100.0, -100.0, 103.8, 104.0, 700.0, math.inf, -math.inf, math.nan])
    x = torch.cat([edges, torch.randn(500, generator=generator) * 6]).to(dtype)
    tolerance = TOLERANCE[dtype] if dtype == torch.float32 else dict(rtol=1e-7, atol=1e-12)
    if dtype == torch.float64 and name in ("bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1"):
        tolerance = BESSEL_JY_FLOAT64
    assert_matches(getattr(torch.special, name), x, **tolerance)


@pytest.mark.parametrize("name", ["bessel_j0", "modified_bessel_k1", "airy_ai"])
def test_function_int_input_views_and_errors(name):
    function = getattr(torch.special, name)
    assert_matches(function, torch.arange(-3, 9).reshape(3, 4).t())
    assert_matches(function, torch.tensor(1.5))
    with pytest.raises(NotImplementedError):
        function(torch.ones(2, dtype=torch.float16, device="tpu"))
