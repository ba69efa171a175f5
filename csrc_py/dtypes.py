"""Element types the chip stores, by name, as NumPy dtypes.

bfloat16 and the FP8 formats come from ml_dtypes, whose casts round to nearest
even and saturate/NaN exactly as the formats define.
"""

import ml_dtypes
import numpy as np

# complex32 (torch.chalf) has no NumPy type: the chip stores it as (real, imag) float16 pairs,
# which NumPy can copy but not compute with; casts convert it through complex64.
COMPLEX32 = np.dtype([("real", np.float16), ("imag", np.float16)])

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
    "complex32": COMPLEX32,
}


def numpy_dtype(name):
    try:
        return NUMPY_DTYPES[name]
    except KeyError:
        raise TypeError(f"the TPU emulator has no storage format for dtype {name}") from None


# PyTorch converts to and from these formats through float32: c10's Half,
# BFloat16 and Float8 types are built from a float and read back as a float. So
# float64 -> float16 rounds twice, and an int reaches float8 as a float32.
VIA_FLOAT32 = frozenset({"float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"})


def _float8_to_float32_table(name):
    """float32 value of each of the 256 codes, with the NaN payloads c10's bit conversion gives."""
    codes = np.arange(256, dtype=np.uint8)
    if name == "float8_e5m2":  # c10 widens e5m2 as the top byte of a float16, quieting NaNs
        values = (codes.astype(np.uint16) << 8).view(np.float16).astype(np.float32)
        values.view(np.uint32)[np.isnan(values)] |= 0x00400000
        return values
    values = codes.view(NUMPY_DTYPES[name]).astype(np.float32)
    bits = values.view(np.uint32)
    bits[np.isnan(values)] = np.where(codes[np.isnan(values)] & 0x80, 0xFFF00000, 0x7FF00000)
    return values


FLOAT8_TO_FLOAT32 = {name: _float8_to_float32_table(name) for name in ("float8_e4m3fn", "float8_e5m2")}

# How a NaN and an overflow land in each narrow float format. These follow the
# bit patterns PyTorch's CPU casts produce, so a cast is bit-identical to CPU:
# e4m3fn has no infinity and saturates to +-448, while the others overflow to inf.
NARROW_FLOAT_RULES = {
    # name: (NaN bit pattern for + and - NaN, integer view, saturation bound or None)
    "bfloat16": ((0xFFFF, 0xFFFF), np.uint16, None),
    "float8_e4m3fn": ((0x7F, 0xFF), np.uint8, float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)),
    "float8_e5m2": ((0x7F, 0xFF), np.uint8, None),
}
# Only float32 and float64 sources take CPU's vectorised bfloat16 path (NaN -> 0xFFFF); every
# other source goes through c10's scalar rounding, whose NaN is 0x7FC0. (float64 tails shorter
# than a vector also take the scalar path; we follow the vector path.)
BFLOAT16_VECTOR_SOURCES = frozenset({np.dtype(np.float32), np.dtype(np.float64)})
BFLOAT16_SCALAR_NAN = 0x7FC0


def complex32_as_complex64(array):
    """complex32 values as complex64, the type NumPy (and PyTorch's opmath) computes them in."""
    widened = np.empty(array.shape, np.complex64)
    widened.real, widened.imag = array["real"], array["imag"]
    return widened


def _widen(source):
    """``source`` as PyTorch reads it before converting: float8 and bfloat16 as float32, complex as real."""
    table = FLOAT8_TO_FLOAT32.get(source.dtype.name)
    if table is not None:
        return table[source.view(np.uint8)]
    if source.dtype == COMPLEX32:
        return complex32_as_complex64(source)
    if source.dtype == NUMPY_DTYPES["bfloat16"]:
        return source.astype(np.float32)
    return source


def _nan_bits(destination_name, source_dtype, scalar_source):
    (positive_nan, negative_nan), bits_type, _ = NARROW_FLOAT_RULES[destination_name]
    if destination_name == "bfloat16" and (scalar_source or source_dtype not in BFLOAT16_VECTOR_SOURCES):
        positive_nan = negative_nan = BFLOAT16_SCALAR_NAN
    return positive_nan, negative_nan, bits_type


def _narrow_into(destination, source, destination_name, source_dtype, scalar_source):
    source = source.astype(np.float32, copy=False)
    rule = NARROW_FLOAT_RULES.get(destination_name)
    if rule is None:  # float16: NumPy's float32 -> float16 rounding and NaNs match c10's
        np.copyto(destination, source, casting="unsafe")
        return
    bound = rule[2]
    if bound is not None:
        source = np.clip(source, -bound, bound)
    np.copyto(destination, source, casting="unsafe")
    nans = np.isnan(source)
    if nans.any():
        positive_nan, negative_nan, bits_type = _nan_bits(destination_name, source_dtype, scalar_source)
        bits = destination.view(bits_type)
        nans = np.broadcast_to(nans, destination.shape)
        signs = np.signbit(np.broadcast_to(source, destination.shape))[nans]
        bits[nans] = np.where(signs, negative_nan, positive_nan)


def cast_into(destination, source, destination_name, scalar_source=False):
    """Convert ``source`` into the preallocated ``destination`` exactly as a PyTorch CPU copy does.

    Shapes broadcast as in NumPy. Out-of-range and NaN float -> int conversions give what
    x86 gives (and what torch CPU gives), silently. ``scalar_source``: ``source`` is one
    Python number, which c10 converts with its scalar constructors (as in ``fill_``).
    """
    source = np.asarray(source)
    if source.dtype == destination.dtype:
        np.copyto(destination, source)
        return
    source_dtype = source.dtype
    with np.errstate(invalid="ignore", over="ignore"):
        source = _widen(source)
        if destination.dtype == COMPLEX32:  # each part as a float16, through float32 like c10's Half
            for field, part in (("real", source.real), ("imag", source.imag if source.dtype.kind == "c" else 0)):
                _narrow_into(destination[field], np.asarray(part), "float16", source_dtype, scalar_source)
            return
        if source.dtype.kind == "c" and destination.dtype.kind not in "cb":  # bool: is either part nonzero
            source = source.real
        if destination_name in VIA_FLOAT32:
            _narrow_into(destination, source, destination_name, source_dtype, scalar_source)
        else:
            np.copyto(destination, source, casting="unsafe")
