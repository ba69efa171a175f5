"""``x * y + z`` rounded once, as CPU's build computes a product followed by a sum where it fuses them (the
vectorised ``vec::fmadd`` of ``add``/``sub`` with an ``alpha``, and the scalar loops its compiler contracts).

NumPy has no fused multiply-add, so the exact value is rebuilt from error-free transformations:
- float32: the product is exact in float64; the float64 sum is rounded to odd (Boldo and Melquiond: an inexact
  sum with an even last bit moves one ulp towards the exact value), after which rounding to float32 is the
  correctly rounded fused result;
- float64: Dekker's product (Veltkamp's split) and Knuth's sum give the product's and the sum's rounding errors;
  their own sum, rounded to odd, is added back in the last rounding.
Non-finite results (and products whose split overflows) keep the plain sum, which then agrees with the fused one.
"""

import numpy as np

_SPLIT = np.float64(2.0 ** 27 + 1)  # Veltkamp's constant for float64's 53-bit significand


def _two_sum(a, b):
    """(a + b rounded, its rounding error), exactly."""
    total = a + b
    b_part = total - a
    return total, (a - (total - b_part)) + (b - b_part)


def _split(x):
    scaled = _SPLIT * x
    high = scaled - (scaled - x)
    return high, x - high


def _two_product(x, y):
    """(x * y rounded, its rounding error), exactly (barring overflow)."""
    product = x * y
    x_high, x_low = _split(x)
    y_high, y_low = _split(y)
    return product, ((x_high * y_high - product) + x_high * y_low + x_low * y_high) + x_low * y_low


def _rounded_to_odd(total, error):
    """``total + error`` (``total`` its rounding to nearest) rounded to odd instead: an inexact sum with an even last
    bit moves one ulp towards the exact value, so that a second, narrower rounding is the correctly rounded one."""
    total = np.array(total)
    error = np.broadcast_to(error, total.shape)
    even_and_inexact = (error != 0) & np.isfinite(total) & ((total.view(np.int64) & 1) == 0)
    if even_and_inexact.any():
        total[even_and_inexact] = np.nextafter(total[even_and_inexact],
                                               np.where(error[even_and_inexact] > 0, np.inf, -np.inf))
    return total


def _float32(x, y, z):
    product = np.float64(x) * np.asarray(y, np.float64)  # exact: 24 + 24 bits
    return _rounded_to_odd(*_two_sum(np.asarray(z, np.float64), product)).astype(np.float32)


def _float64(x, y, z):
    product, product_error = _two_product(np.float64(x), np.asarray(y, np.float64))
    total, sum_error = _two_sum(np.asarray(z, np.float64), product)
    # the exact value is total + sum_error + product_error: the two small terms summed to odd, then added once
    fused = total + _rounded_to_odd(*_two_sum(sum_error, product_error))
    return np.where(np.isfinite(fused), fused, total)


def fused_multiply_add(x, y, z, out=None):
    """``x * y + z`` rounded once, for a number ``x`` and float32 or float64 arrays ``y`` and ``z``."""
    with np.errstate(all="ignore"):
        result = (_float32 if y.dtype == np.float32 else _float64)(x, y, z)
    if out is None:
        return result
    np.copyto(out, result)
    return out
