"""The float32 erf as round ten wrote it (csrc_py/special.py at f390b43), frozen as the oracle of its bits.

Round eleven rewrote the evaluation for speed (scratch buffers, explicit casts, erf in place) and promised the
same bits for every float32 input: tests/sweep_erf.py checks all 2**32 of them against this copy, and
tests/test_pointwise.py a sample. What round eleven changed is frozen here (the small-argument formula, the
blocks); the coefficients, the polynomial and the tail formula, which it left alone, are the module's own. Not used
by torch_tpu. Round thirteen rounded the tail to float32 before copying the sign (same bits, fewer float64 passes):
its round-ten form is frozen here too.
"""

import numpy as np

from torch_tpu._C.special import (BLOCK, _SMALL_S, _SMALL_S32, _TAIL_CENTRE, _TAIL_END, _TAIL_INVERSE_HALF_WIDTH,
                                  _TAIL_R, _TAIL_R32, _TAIL_START, _TWO_OVER_SQRT_PI, _horner_tail)


def _erf_small(x, square, result):
    """``erf(x)`` for ``|x| < 1`` (and any value elsewhere, to be overwritten) into ``result``, odd by
    construction; ``square`` is ``x * x`` in float32.

    The leading coefficient 2/sqrt(pi) is not a float32, so the result is formed as ``x + x*w``
    with the small correction ``w`` from float64; the polynomial's higher terms are small enough
    for float32.
    """
    correction = np.add(_horner_tail(_SMALL_S32, square), _SMALL_S[0], dtype=np.float64)
    correction *= np.square(x, dtype=np.float64)  # float32 squares are exact in float64
    correction += _TWO_OVER_SQRT_PI - 1
    np.multiply(x, correction, out=result, dtype=np.float32, casting="same_kind")  # w rounded to float32 first
    result += x


def _erf_tail(x):
    """``erf(x)`` for ``|x| >= 1`` (x of any magnitude, NaN-free): ``sign(x) * (1 - exp(-x*x) * R)``."""
    magnitude = np.minimum(np.abs(x), _TAIL_END)
    t = magnitude - _TAIL_CENTRE
    t *= _TAIL_INVERSE_HALF_WIDTH
    scaled_erfc = np.add(_horner_tail(_TAIL_R32, t), _TAIL_R[0], dtype=np.float64)
    gaussian = np.square(magnitude, dtype=np.float64)
    np.negative(gaussian, out=gaussian)
    np.exp(gaussian, out=gaussian)  # float64: exp(-x*x) of the exact square
    scaled_erfc *= gaussian
    np.subtract(1, scaled_erfc, out=scaled_erfc)
    return np.copysign(scaled_erfc, x)


def _erf_block(x, result):
    """The float32 erf of a flat block ``x`` into ``result``: the small-argument formula everywhere, then
    the tail's over the elements with ``|x| >= 1`` (exactly those whose float32 square is >= 1)."""
    square = x * x
    tail = np.flatnonzero(square >= _TAIL_START)
    _erf_small(x, square, result)
    if tail.size:
        result[tail] = _erf_tail(x.take(tail))


def erf(x):
    """Round ten's float32 erf of a float32 array."""
    flat = np.ascontiguousarray(x).reshape(-1)
    result = np.empty(x.shape, np.float32)
    flat_result = result.reshape(-1)
    with np.errstate(all="ignore"):  # squares of huge |x| overflow in values the tail overwrites
        for start in range(0, flat.size, BLOCK):
            _erf_block(flat[start:start + BLOCK], flat_result[start:start + BLOCK])
    return result
