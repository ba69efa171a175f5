"""Special functions the VPU evaluates with polynomials, as vector math libraries do.

``scipy.special.erf`` runs a scalar routine per element (about 13 ns each), fifteen times slower
than PyTorch's vectorised float32 ``erf``. For float32 we evaluate the function with whole-array
NumPy operations instead: a polynomial for most of the work in float32, and only the few steps
where float32 rounding would cost accuracy in float64. The result is within 0.9 ulp of the true
value (checked for every float32 in [2**-24, 4]; PyTorch's CPU kernel is within about 0.7 ulp).
Other dtypes keep scipy's routines, which are accurate in float64.

The coefficients are weighted least-squares fits iterated towards minimax (Lawson's algorithm)
of erf's relative error, computed once offline against ``scipy.special`` in float64:

- ``|x| < 1``: ``erf(x) = x * (2/sqrt(pi) + u * S(u))`` with ``u = x*x`` and ``S`` of degree 5
  (fit error 1.5e-9 relative);
- ``1 <= |x| < 4``: ``erf(x) = 1 - exp(-x*x) * R(t)``, ``R`` of degree 9 approximating
  ``erfcx`` in ``t = (|x| - 2.5) / 1.5`` (error 5e-10 relative to erf). Beyond 4, erf rounds to
  +-1 in float32.

Every float32 input's bits are fixed: tests/sweep_erf.py checks all 2**32 against the first version
(tests/erf_round_ten.py), so a faster evaluation may reorder buffers and casts (round thirteen rounds the tail
to float32 before copying its sign) but not the arithmetic.
"""

import threading

import numpy as np
import scipy.special

_TWO_OVER_SQRT_PI = 2 / np.sqrt(np.pi)
_SMALL_S = (-0.37612629256553937, 0.11283608557701932, -0.02685448206446113,
            0.005189242937502482, -0.0008016053049471408, 7.867801452573348e-05)
_TAIL_R = (0.21080630800481695, -0.11152468042598024, 0.056089489180129286, -0.026994446557891582,
           0.012801035146498468, -0.004871096060912239, 0.0025339497511972925, -0.0024400420580403884,
           -0.0015844375416660186, -0.0011069658491685494)
_SMALL_S32 = np.array(_SMALL_S, np.float32)
_TAIL_R32 = np.array(_TAIL_R, np.float32)
_TAIL_START, _TAIL_END = np.float32(1), np.float32(4)
_TAIL_CENTRE, _TAIL_INVERSE_HALF_WIDTH = np.float32(2.5), np.float32(1 / 1.5)


def _horner_tail(coefficients, x, out=None):
    """``x * (c[1] + x * (c[2] + ...))``: the polynomial without its constant term, in x's dtype (into ``out``,
    which must not overlap ``x``)."""
    total = np.multiply(x, coefficients[-1], out=out)
    for coefficient in coefficients[-2:0:-1]:
        total += coefficient
        total *= x
    return total


BLOCK = 65536  # elements evaluated together: their temporaries (float64: 512 KiB each) stay in the caches


class _Scratch(threading.local):
    """One block's temporaries, made once per thread (kernels run on the autograd thread and in worker threads):
    fresh float64 temporaries above glibc's mmap threshold page-fault on every call."""

    def __init__(self):
        self.square = np.empty(BLOCK, np.float32)
        self.polynomial = np.empty(BLOCK, np.float32)
        self.correction = np.empty(BLOCK, np.float64)
        self.exact_square = np.empty(BLOCK, np.float64)
        self.argument = np.empty(BLOCK, np.float32)


_SCRATCH = _Scratch()


def _erf_small(x, square, result, scratch):
    """``erf(x)`` for ``|x| < 1`` (and any value elsewhere, to be overwritten) into ``result``, odd by
    construction; ``square`` is ``x * x`` in float32. ``result`` must not overlap ``x``.

    The leading coefficient 2/sqrt(pi) is not a float32, so the result is formed as ``x + x*w``
    with the small correction ``w`` from float64; the polynomial's higher terms are small enough
    for float32.
    """
    size = x.size
    polynomial = _horner_tail(_SMALL_S32, square, scratch.polynomial[:size])
    correction, exact_square = scratch.correction[:size], scratch.exact_square[:size]
    np.copyto(correction, polynomial)  # explicit casts: a ufunc casting its operands in buffers takes twice as long
    correction += _SMALL_S[0]
    np.copyto(exact_square, x)
    exact_square *= exact_square  # float32 squares are exact in float64
    correction *= exact_square
    correction += _TWO_OVER_SQRT_PI - 1
    np.copyto(result, correction, casting="same_kind")  # w rounded to float32, then x * w in float32
    result *= x
    result += x


def _erf_tail(x):
    """``erf(x)`` for ``|x| >= 1`` (x of any magnitude, NaN-free), in float32: ``sign(x) * (1 - exp(-x*x) * R)``.
    The float64 magnitude is rounded to float32 before its sign is copied, which gives the same bits the other way
    round (rounding to nearest is symmetric) in a float32 pass, and float32 values to scatter."""
    magnitude = np.minimum(np.abs(x), _TAIL_END)
    t = magnitude - _TAIL_CENTRE
    t *= _TAIL_INVERSE_HALF_WIDTH
    scaled_erfc = np.add(_horner_tail(_TAIL_R32, t), _TAIL_R[0], dtype=np.float64)
    gaussian = np.square(magnitude, dtype=np.float64)
    np.negative(gaussian, out=gaussian)
    np.exp(gaussian, out=gaussian)  # float64: exp(-x*x) of the exact square
    scaled_erfc *= gaussian
    np.subtract(1, scaled_erfc, out=magnitude, dtype=np.float64, casting="same_kind")
    return np.copysign(magnitude, x, out=magnitude)


def _erf_block(x, result, scratch):
    """The float32 erf of a flat contiguous block ``x`` into ``result`` (which may be ``x`` itself): the
    small-argument formula everywhere, then the tail's over the elements with ``|x| >= 1`` (exactly those whose
    float32 square is >= 1)."""
    if np.may_share_memory(x, result):  # in place: the small-argument formula reads x after writing result
        argument = scratch.argument[:x.size]
        np.copyto(argument, x)
        x = argument
    square = np.multiply(x, x, out=scratch.square[:x.size])
    tail = np.flatnonzero(square >= _TAIL_START)
    _erf_small(x, square, result, scratch)
    if tail.size:
        result[tail] = _erf_tail(x.take(tail))


def _writable_directly(out, x):
    """Whether erf can write its blocks straight into ``out``: a contiguous float32 array of ``x``'s shape that
    is either ``x`` itself (erf in place, block by block) or apart from it."""
    if out.dtype != np.float32 or not out.flags.c_contiguous or out.shape != x.shape:
        return False
    return out is x or not np.may_share_memory(out, x)


def erf(x, out=None):
    """``scipy.special.erf(x, out=out)``; float32 arrays take the fast vectorised path (within 1 ulp). ``out``
    may be ``x`` itself."""
    if x.dtype != np.float32:
        return scipy.special.erf(x, out=out)
    flat = np.ascontiguousarray(x).reshape(-1)
    in_place = out is not None and _writable_directly(out, x)
    result = out if in_place else np.empty(x.shape, np.float32)
    flat_result = result.reshape(-1)
    scratch = _SCRATCH
    with np.errstate(all="ignore"):  # squares of huge |x| overflow in values the tail overwrites
        for start in range(0, flat.size, BLOCK):
            _erf_block(flat[start:start + BLOCK], flat_result[start:start + BLOCK], scratch)
    if out is None or in_place:
        return result
    out[...] = result
    return out
