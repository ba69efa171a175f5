"""The MXU: the chip's matrix unit, with Ironwood's numerics.

Every matmul-like kernel (mm, bmm, addmm, einsum, linear, convolution, ...) reaches the chip
through ``matmul`` below, so the numerics live in this one place. The rules, by operand type:

- **bfloat16, float8_e4m3fn, float8_e5m2.** Every value of these formats is exactly a bf16
  value, and the product of two bf16 values is exact in float32. The MXU multiplies them
  exactly and accumulates in float32; the caller's output rounds once. We upcast once to
  float32 (exact) and run one float32 matmul.
- **float32, ``precision_passes=EXACT`` (None).** A plain float32 matmul, numerically what
  torch CPU computes. PyTorch's default ``float32_matmul_precision="highest"`` maps here so
  that a model trains on tpu as it does on CPU.
- **float32, ``precision_passes`` 1, 3 or 6.** The MXU has no float32 multiplier: a float32
  operand is split into bf16 pieces ``x = hi + mid + lo`` (each the bf16 rounding of what the
  previous pieces left over) and the products of pieces are accumulated in float32, one
  MXU pass per product, the smallest terms first:
  - 1 pass (XLA DEFAULT): ``hi*hi``, inputs rounded to bf16 (8 significant bits);
  - 3 passes (XLA HIGH, "bf16_3x"): ``hi*lo + lo*hi + hi*hi``, about 16 bits;
  - 6 passes (XLA HIGHEST, "bf16_6x"): ``lo*hi + mid*mid + hi*lo + mid*hi + hi*mid + hi*hi``,
    about 22 bits.
  (3 passes use a two-piece split, so there the second piece is called ``lo``.)
  The torch side maps ``"high"`` to 3 passes and ``"medium"`` to 1 pass.
- **float16.** Not an MXU format: computed in float32, rounded once by the caller's output.
- **float64, complex.** A TPU has no float64 MXU; the emulator computes in the operands' own
  precision so float64 programs still run (the torch side warns once).
- **Integers.** Accumulated exactly in int64; storing into a narrower output wraps modulo
  2**bits, which is what wrapping integer accumulation in the narrow type gives.

Mixed operand types follow the same rules per operand (e.g. a bf16 lhs with a float32 rhs
split into passes).
"""

import functools

import numpy as np

from . import dtypes
from .chip import current_chip
from .chips import CHIPS
from .vpu import ignore_fp_errors, restore_fp_errors

EXACT = None  # precision_passes value: a float32 matmul, no bf16 splitting

# torch.set_float32_matmul_precision -> (bf16 passes a float32 matmul is charged, passes its numerics run).
# The one table for cost and numerics alike. "highest" is XLA's HIGHEST (6 passes) on the clock and one
# float32 matmul in the numerics, which agrees with 6 passes to float32 rounding (docs/numerics.md).
FLOAT32_PRECISION = {"highest": (6, EXACT), "high": (3, 3), "medium": (1, 1)}

# passes -> the (lhs piece, rhs piece) products, in the order they are accumulated
PASS_PRODUCTS = {
    1: ((0, 0),),
    3: ((0, 1), (1, 0), (0, 0)),
    6: ((2, 0), (1, 1), (0, 2), (1, 0), (0, 1), (0, 0)),
}

_BF16 = dtypes.numpy_dtype("bfloat16")
_FLOAT32 = np.dtype(np.float32)
_INT64 = np.dtype(np.int64)
_NAME_OF = {dtype: name for name, dtype in dtypes.NUMPY_DTYPES.items()}
_FP8 = frozenset({dtypes.NUMPY_DTYPES["float8_e4m3fn"], dtypes.NUMPY_DTYPES["float8_e5m2"]})


def bf16_pieces(x, count):
    """Split float32 ``x`` into ``count`` bf16-valued float32 arrays, largest first."""
    pieces, rest = [], x
    for _ in range(count):
        piece = rest.astype(_BF16).astype(_FLOAT32)
        pieces.append(piece)
        # An infinite piece would leave inf - inf = nan behind; there is nothing left to split.
        rest = np.where(np.isfinite(piece), rest - piece, np.float32(0))
    return pieces


def _pieces(x, count):
    """Only float32 operands are split; any other MXU operand is one exact piece (the rest are 0)."""
    if x.dtype == _FLOAT32:
        return bf16_pieces(x, count)
    return [x.astype(_FLOAT32)]


def _piece_count(passes):
    return max(max(pair) for pair in PASS_PRODUCTS[passes]) + 1


def _passes_matmul(a, b, passes, out, b_pieces=None):
    """One float32-accumulated matmul per (lhs piece, rhs piece) product, smallest first (``b_pieces``: ``b``
    already split)."""
    count = _piece_count(passes)
    a_pieces, b_pieces = _pieces(a, count), b_pieces or _pieces(b, count)
    products = [(i, j) for i, j in PASS_PRODUCTS[passes] if i < len(a_pieces) and j < len(b_pieces)]
    (i, j), *rest = products
    total = np.matmul(a_pieces[i], b_pieces[j], out=out)
    for i, j in rest:
        total += np.matmul(a_pieces[i], b_pieces[j])
    return total


@functools.cache
def accumulator_dtype(a_dtype, b_dtype):
    """The dtype the MXU (or, off the MXU, the emulator) accumulates these operand types in."""
    if a_dtype.kind in "biu" and b_dtype.kind in "biu":
        return _INT64
    if a_dtype in _FP8 or b_dtype in _FP8:
        return _FLOAT32  # NumPy has no common type for two different fp8 formats
    wide = np.result_type(a_dtype, b_dtype)
    if wide.kind == "c" or wide == np.float64:
        return wide
    return _FLOAT32


def check_chip_supports(a_dtype, b_dtype):
    """FP8 and int8 matmuls exist only on chips whose table lists them."""
    if a_dtype not in _FP8 and b_dtype not in _FP8:  # every other type: nothing to check, on every matmul
        return
    spec = current_chip().spec
    for dtype in (a_dtype, b_dtype):
        name = _NAME_OF.get(dtype)
        if dtype in _FP8 and not spec.supports_mxu_dtype(name):
            raise RuntimeError(
                f"{spec.name} ({spec.generation}) has no {name} MXU path: FP8 matmul needs a chip "
                f"whose table lists it ({', '.join(n for n, c in CHIPS.items() if c.supports_mxu_dtype(name))}); "
                "select one with TORCH_TPU_CHIP"
            )


def _check_passes(precision_passes):
    if precision_passes is not EXACT and precision_passes not in PASS_PRODUCTS:
        raise ValueError(f"precision_passes must be EXACT (None) or one of {sorted(PASS_PRODUCTS)}, got {precision_passes!r}")


def multiplier(a_dtype, b, *, precision_passes=EXACT):
    """``lambda a: matmul(a, b, precision_passes=precision_passes)`` for many ``a`` of ``a_dtype`` and one ``b``
    (a recurrent network's weight, used once per time step): the checks, and ``b``'s bf16 pieces, done once.
    The caller runs the steps under ``vpu.ignoring_fp_errors()``: once for a sequence, not once per product."""
    _check_passes(precision_passes)
    check_chip_supports(a_dtype, b.dtype)
    accumulate = accumulator_dtype(a_dtype, b.dtype)
    if accumulate == _FLOAT32 and precision_passes is not EXACT and _FLOAT32 in (a_dtype, b.dtype):
        b_pieces = _pieces(b, _piece_count(precision_passes))
        return lambda a: _passes_matmul(a, b, precision_passes, None, b_pieces)
    b = b.astype(accumulate, copy=False)
    if a_dtype == accumulate:
        return lambda a: np.matmul(a, b)
    return lambda a: np.matmul(a.astype(accumulate), b)


def matmul(a, b, out=None, *, precision_passes=EXACT):
    """``np.matmul(a, b)`` (batched, broadcast) with the MXU's numerics (see the module rules).

    Returns the accumulator (float32 for MXU formats). With ``out`` (shaped like the result)
    the result is stored there, rounded once to ``out``'s dtype, and ``out`` is returned.
    """
    if (precision_passes is EXACT and a.dtype == _FLOAT32 and b.dtype == _FLOAT32
            and (out is None or out.dtype == _FLOAT32)):
        # the commonest product (a model's float32 layers at PyTorch's default precision), with nothing to
        # check, split or convert: what the general path below computes for it, without its look-ups
        token = ignore_fp_errors()
        try:
            return np.matmul(a, b, out=out)
        finally:
            restore_fp_errors(token)
    _check_passes(precision_passes)
    check_chip_supports(a.dtype, b.dtype)
    accumulate = accumulator_dtype(a.dtype, b.dtype)
    direct = out if out is not None and out.dtype == accumulate else None
    split = accumulate == _FLOAT32 and precision_passes is not EXACT and _FLOAT32 in (a.dtype, b.dtype)
    token = ignore_fp_errors()  # like the VPU, the MXU overflows to inf and NaN without a word
    try:
        if split:
            result = _passes_matmul(a, b, precision_passes, direct)
        else:
            result = np.matmul(a.astype(accumulate, copy=False), b.astype(accumulate, copy=False), out=direct)
    finally:
        restore_fp_errors(token)
    if out is None or direct is not None:
        return result
    dtypes.cast_into(out, result, _NAME_OF[out.dtype])
    return out
