"""The vector unit: elementwise work, spread over the host's cores when it is big enough.

NumPy runs a ufunc on one core but releases the GIL inside it, so a large elementwise op is
split into row blocks run by a thread pool. Floating-point exceptions are ignored, as on a
TPU (and in PyTorch): overflow gives inf and invalid operations give NaN, silently. Small ops run inline (a thread hand-off costs
more than they do), and so do ops whose output overlaps an input in any way other than
exactly (``x += y`` splits safely; ``x[1:] += x[:-1]`` does not).

The pool starts on the first big op. A forked child does not inherit its threads (only the
forking thread survives fork), so the child drops the parent's pool and starts its own:
otherwise its first big op would queue work for threads that do not exist and wait forever.
"""

import concurrent.futures
import functools
import os

import numpy as np

try:  # NumPy 2 keeps the error state in a context variable: setting a prebuilt state costs
    # ~0.1 us, where `with np.errstate(...)` rebuilds it on every call (~1 us, a tenth of a small op).
    # Both are C callables (a partial, a bound method), not Python functions: no frame on every kernel's way.
    from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj

    _IGNORE_ALL = _make_extobj(all="ignore")
    ignore_fp_errors = functools.partial(_extobj_contextvar.set, _IGNORE_ALL)
    restore_fp_errors = _extobj_contextvar.reset

except ImportError:  # another NumPy layout: the public, slower way
    def ignore_fp_errors():
        state = np.errstate(all="ignore")
        state.__enter__()
        return state

    def restore_fp_errors(state):
        state.__exit__(None, None, None)



class ignoring_fp_errors:
    """``with np.errstate(all="ignore")`` for kernels' hot paths, at a quarter of its cost."""

    __slots__ = ("token",)

    def __enter__(self):
        self.token = ignore_fp_errors()

    def __exit__(self, *exception):
        restore_fp_errors(self.token)


PARALLEL_MIN_ELEMENTS = 1 << 18
WORKERS = max(1, min(os.cpu_count() or 1, 8))
_pool = None


def _worker_pool():
    global _pool
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="tpu-vpu")
    return _pool


def _forget_parent_pool():
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_parent_pool)


def _splittable(inputs, out):
    if WORKERS == 1 or out.size < PARALLEL_MIN_ELEMENTS or out.ndim == 0 or out.shape[0] < WORKERS:
        return False
    for value in inputs:
        if isinstance(value, np.ndarray) and value is not out and np.may_share_memory(value, out):
            return False  # bounds overlap (shares_memory would raise TooHardError on odd strides): one thread
    return True


def _ignoring_fp_errors(ufunc, *inputs, out):
    token = ignore_fp_errors()  # NumPy's error state is per thread (per context)
    try:
        return ufunc(*inputs, out=out)
    finally:
        restore_fp_errors(token)


def apply(ufunc, *inputs, out):
    """``ufunc(*inputs, out=out)``, in parallel row blocks when ``out`` is large."""
    if out.size < PARALLEL_MIN_ELEMENTS or not _splittable(inputs, out):
        token = ignore_fp_errors()
        try:
            return ufunc(*inputs, out=out)
        finally:
            restore_fp_errors(token)
    shaped = [np.broadcast_to(v, out.shape) if isinstance(v, np.ndarray) and v.ndim else v for v in inputs]
    bounds = np.linspace(0, out.shape[0], WORKERS + 1, dtype=np.int64)
    pool = _worker_pool()
    blocks = [
        pool.submit(_ignoring_fp_errors, ufunc, *(v[start:stop] if isinstance(v, np.ndarray) and v.ndim else v for v in shaped),
                     out=out[start:stop])
        for start, stop in zip(bounds[:-1], bounds[1:])
    ]
    for block in blocks:
        block.result()
    return out


# --- float32 transcendentals, rounded once ----------------------------------------------------------------------
# NumPy's float32 exp, log, sin, tanh, ... are chosen by the host: its own AVX2/AVX512F polynomials or Intel's SVML on
# an AVX-512 CPU, none of them correctly rounded, so one program gave other bits on another machine. Evaluated in
# float64 and rounded once, a float32 result is the correctly rounded value on every host (float64's own error, a
# few ulps of 2^-52, moves a float32 rounding only within that distance of a float32 midpoint).


def rounded_once(ufunc):
    """``ufunc`` that, for float32 operands, computes in float64 and rounds the result once to float32 (other
    dtypes as ``ufunc`` computes them). Takes ``out=`` as the ufunc does; large calls split over the cores."""
    wide = functools.partial(ufunc, dtype=np.float64, casting="same_kind")

    def evaluate(*operands, out=None):
        if np.result_type(*operands) != np.float32:
            return ufunc(*operands, out=out)
        if out is None:
            out = np.empty(np.broadcast_shapes(*map(np.shape, operands)), np.float32)
        return apply(wide, *operands, out=out)

    evaluate.__name__ = evaluate.__qualname__ = ufunc.__name__
    evaluate.writes_out = True  # (pointwise's marker) it writes ``out`` once, after reading its operands
    return evaluate


# --- fused multiply-add -------------------------------------------------------------------------------------------
# NumPy has no FMA ufunc. Error-free transformations give one in the operands' own format:
# Boldo and Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms using
# rounding to odd" (IEEE Trans. Computers, 2008).

_SPLITTER = {np.dtype(np.float32): np.float32(2**12 + 1), np.dtype(np.float64): np.float64(2**27 + 1)}
_BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def _two_sum(a, b):
    """(s, e) with s = a + b rounded and s + e = a + b exactly."""
    s = a + b
    b_part = s - a
    return s, (a - (s - b_part)) + (b - b_part)


def _two_product(a, b, splitter):
    """(p, e) with p = a * b rounded and p + e = a * b exactly (Veltkamp split, Dekker product)."""
    def split(x):
        scaled = splitter * x
        high = scaled - (scaled - x)
        return high, x - high

    (a_high, a_low), (b_high, b_low) = split(a), split(b)
    p = a * b
    return p, ((a_high * b_high - p) + a_high * b_low + a_low * b_high) + a_low * b_low


def _add_rounded_to_odd(a, b):
    """a + b rounded to odd: truncated, with the last bit set when anything was cut off."""
    s, error = _two_sum(a, b)
    even = (s.view(_BITS[s.dtype]) & 1) == 0
    towards = np.where(error > 0, np.inf, -np.inf).astype(s.dtype)
    return np.where((error != 0) & even, np.nextafter(s, towards), s)


def _error_free_steps(a, b, c):
    """Boldo and Melquiond's emulation in the operands' own format (exact unless a step overflows or underflows)."""
    product_high, product_low = _two_product(a, b, _SPLITTER[a.dtype])
    sum_high, sum_low = _two_sum(c, product_high)
    return sum_high + _add_rounded_to_odd(sum_low, product_low)


_DOWN_SCALE = 2.0 ** -64  # a power of two: scaling by it and back is exact away from the format's ends


def _error_free_fused_multiply_add(a, b, c):
    """float64's fused multiply-add. Where a step overflows for finite operands (a product or a split near the
    format's largest value), the steps again at 2**-64 of the scale, scaled back: infinite only if the result is;
    anything else not finite is the plain ``a * b + c``, infinite or NaN anyway. So is a zero, whose sign the steps'
    error terms lose (-0.0 * 1 + -0.0 is -0.0) and which plain arithmetic gives exactly, but for a nonzero product
    that underflows with nothing (a zero ``c``) to add: the fused result is the rounded product, of its sign, where
    adding +0.0 to -0.0 gave +0.0. Only arrays with a zero result pay for that mask."""
    fused = np.array(_error_free_steps(a, b, c))
    overflowed = ~np.isfinite(fused) & np.isfinite(a) & np.isfinite(b) & np.isfinite(c)
    a, b, c = np.broadcast_arrays(a, b, c)
    if overflowed.any():
        scaled = _error_free_steps(a[overflowed], b[overflowed] * _DOWN_SCALE, c[overflowed] * _DOWN_SCALE)
        fused[overflowed] = scaled / _DOWN_SCALE
    zero = fused == 0
    result = np.where(np.isfinite(fused) & ~zero, fused, a * b + c)
    if zero.any():
        underflowed = zero & (c == 0) & (a != 0) & (b != 0)
        result[underflowed] = a[underflowed] * b[underflowed]
    return result


# float64 sums whose rounding to float32 may differ from the exact sum's: a float32 midpoint (the 29 bits float32
# drops are 1000...0), or a magnitude below float32's smallest normal, where its midpoints sit at other bits
_FLOAT32_DROPPED_BITS = np.uint64(2**29 - 1)
_FLOAT32_MIDPOINT_BITS = np.uint64(2**28)
_FLOAT32_SMALLEST_NORMAL = np.float64(2.0 ** -126)


def _float32_doubtful(total):
    """Where rounding the float64 ``total`` to float32 may not round the exact value: a float32 midpoint, or a
    nonzero magnitude below float32's smallest normal. The magnitudes' minimum screens for the latter, so
    ordinary sums cost three passes and one reduction (``fmin``, which passes over NaNs: a NaN element must
    not hide another element's subnormal sum)."""
    magnitude = np.abs(total)
    subnormal = None
    if magnitude.size and np.fmin.reduce(magnitude, axis=None) < _FLOAT32_SMALLEST_NORMAL:
        subnormal = (magnitude < _FLOAT32_SMALLEST_NORMAL) & (magnitude > 0)
    # the dropped bits go into the magnitudes' memory, read no more: one float64-sized temporary fewer
    scratch = magnitude.view(np.uint64) if isinstance(magnitude, np.ndarray) else None
    doubtful = np.bitwise_and(total.view(np.uint64), _FLOAT32_DROPPED_BITS, out=scratch) == _FLOAT32_MIDPOINT_BITS
    if subnormal is not None:
        doubtful |= subnormal
    return doubtful


def _float32_fused_multiply_add(a, b, c, out):
    """float32's ``a * b`` is exact in float64 (24 + 24 bits), so the float64 sum is the exact value rounded once;
    rounding it again to float32 gives the fused result except where it lies on a float32 midpoint or in the
    subnormal range: only those few elements are summed again, rounded to odd. The sum is rounded straight into
    a float32 ``out`` of its shape, once the doubtful elements' operands are read (``out`` may be ``c``)."""
    product = np.multiply(a, b, dtype=np.float64)
    # the sum in the product's memory when it has the result's shape (one float64 temporary fewer); the few
    # doubtful elements' products are computed again (exactly, as before). Not for one element: NumPy's add
    # into a one-element operand returns the addend's NaN where both are NaN, and CPU keeps the product's.
    # (equal shapes, an optimizer's, are told without ``np.broadcast_shapes``: a few microseconds a call)
    in_place = (isinstance(product, np.ndarray) and product.size > 1
                and (np.shape(c) == product.shape or product.shape == np.broadcast_shapes(product.shape, np.shape(c))))
    total = np.add(product, c, dtype=np.float64, out=product if in_place else None)
    doubtful = _float32_doubtful(total)
    patched = doubtful.any()
    if patched:  # the float64 sum rounded to odd instead: rounding that to float32 is the fused result
        a, b, c = np.broadcast_arrays(a, b, np.asarray(c, np.float64))
        product = np.multiply(a[doubtful], b[doubtful], dtype=np.float64)
        patch = _add_rounded_to_odd(c[doubtful], product).astype(np.float32)
    if out is not None and out.dtype == np.float32 and out.shape == total.shape:
        result = out
        np.copyto(out, total, casting="same_kind")
    else:
        result = np.array(total, dtype=np.float32)  # an array even for 0-d operands, to patch in place
    if patched:
        result[doubtful] = patch
    return result


def fused_multiply_add(a, b, c, out=None):
    """``a * b + c`` with a single rounding, in float32 or float64, as an FMA instruction gives it (written into
    ``out`` when given)."""
    dtype = np.result_type(a, b, c)
    a, b, c = np.asarray(a, dtype), np.asarray(b, dtype), np.asarray(c, dtype)
    token = ignore_fp_errors()
    try:
        if dtype == np.float32:
            fused = _float32_fused_multiply_add(a, b, c, out)
        else:
            fused = _error_free_fused_multiply_add(a, b, c)
    finally:
        restore_fp_errors(token)
    if out is None or fused is out:
        return fused
    np.copyto(out, fused)
    return out


_FLOAT64_SMALLEST_NORMAL = np.finfo(np.float64).tiny


def rounded_hypot(x, y):
    """``sqrt(x * x + y * y)`` of float64 arrays rounded once, to nearest: what Sleef's ``hypot_u05`` gives in
    CPU's complex128 ``abs`` vector lanes. C's ``hypot`` (NumPy's) is an ulp off in about 0.6% of random inputs:
    it is taken as the guess, and moved an ulp where the exact residual ``x * x + y * y - h * h`` (error-free
    products and sums, the operands first scaled by a power of two to keep the squares normal) passes a midpoint."""
    token = ignore_fp_errors()
    try:
        guess = np.asarray(np.hypot(x, y))
        settled = ~np.isfinite(guess) | (guess < _FLOAT64_SMALLEST_NORMAL)  # a subnormal's ulp is not relative: C's
        exponent = np.frexp(np.where(settled, 1.0, guess))[1]
        scaled_x, scaled_y, scaled = (np.ldexp(np.abs(v), -exponent) for v in (x, y, guess))  # scaled in [0.5, 1)
        splitter = _SPLITTER[np.dtype(np.float64)]
        (x_square, x_error), (y_square, y_error) = (_two_product(v, v, splitter) for v in (scaled_x, scaled_y))
        total, total_error = _two_sum(x_square, y_square)
        square, square_error = _two_product(scaled, scaled, splitter)
        residual = (total - square) + (total_error + x_error + y_error - square_error)  # total - square: Sterbenz
        up, down = np.nextafter(scaled, 2.0) - scaled, scaled - np.nextafter(scaled, 0.0)
        above = residual > scaled * up + up * up / 4  # beyond the midpoint (scaled + up / 2) ** 2
        below = residual < -(scaled * down - down * down / 4)
        rounded = np.where(above, np.nextafter(guess, np.inf), np.where(below, np.nextafter(guess, 0.0), guess))
        return np.where(settled, guess, rounded)
    finally:
        restore_fp_errors(token)
