"""Element types the chip stores, by name, as NumPy dtypes.

bfloat16 and the FP8 formats come from ml_dtypes, whose casts round to nearest
even and saturate/NaN exactly as the formats define.
"""

import ml_dtypes
import numpy as np

NUMPY_DTYPES = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float8_e4m3fn": np.dtype(ml_dtypes.float8_e4m3fn),
    "float8_e5m2": np.dtype(ml_dtypes.float8_e5m2),
    "int8": np.dtype(np.int8),
    "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
    "complex64": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128),
}

# Formats NumPy has no arithmetic loops for: compute in float32, round once on store.
COMPUTE_AS_FLOAT32 = frozenset({"bfloat16", "float8_e4m3fn", "float8_e5m2", "float16"})


def numpy_dtype(name):
    try:
        return NUMPY_DTYPES[name]
    except KeyError:
        raise TypeError(f"the TPU emulator has no storage format for dtype {name}") from None


# How a NaN and an overflow land in each narrow float format. These follow the
# bit patterns PyTorch's CPU casts produce, so a cast is bit-identical to CPU:
# e4m3fn has no infinity and saturates to +-448, while the others overflow to inf.
NARROW_FLOAT_RULES = {
    # name: (NaN bit pattern for + and - NaN, integer view, saturation bound or None)
    "bfloat16": ((0xFFFF, 0xFFFF), np.uint16, None),
    "float8_e4m3fn": ((0x7F, 0xFF), np.uint8, float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)),
    "float8_e5m2": ((0x7F, 0xFF), np.uint8, None),
}


def cast_into(destination, source, destination_name):
    """Convert ``source`` into the preallocated ``destination`` (any shapes NumPy broadcasts)."""
    rule = NARROW_FLOAT_RULES.get(destination_name)
    if rule is None or source.dtype.kind not in "fc" or source.dtype == destination.dtype:
        np.copyto(destination, source, casting="unsafe")
        return
    if source.dtype.kind == "c":
        source = source.real
    (positive_nan, negative_nan), bits_type, bound = rule
    # PyTorch narrows through float32 (c10's constructors take a float), so do we.
    source = source.astype(np.float32, copy=False)
    if bound is not None:
        source = np.clip(source, -bound, bound)
    np.copyto(destination, source, casting="unsafe")
    nans = np.isnan(source)
    if nans.any():
        bits = destination.view(bits_type)
        nans = np.broadcast_to(nans, destination.shape)
        bits[nans] = np.where(np.signbit(np.broadcast_to(source, destination.shape))[nans], negative_nan, positive_nan)
