"""Element types the chip stores, by name, as NumPy dtypes.

bfloat16 and the FP8 formats come from ml_dtypes, whose casts round to nearest
even and saturate/NaN exactly as the formats define.
"""

import ml_dtypes
import numpy as np

from . import cpu_loops
from .vpu import ignore_fp_errors, restore_fp_errors

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
# bfloat16's NaN is 0xFFFF only where CPU converts in SIMD vectors (from float32 or float64, see
# SIMD_COPIES); c10's scalar rounding, which every other element takes, gives 0x7FC0.
BFLOAT16_SCALAR_NAN = 0x7FC0

# CPU copies whose SIMD loop converts some values differently from their scalar loop:
# (source, destination) -> (vector width, vectorised only when the whole copy is one contiguous
# run, elements a row keeps for its scalar loop at least). Measured on torch 2.13's x86-64 build;
# where each element goes is replayed by cpu_loops.
SIMD_COPIES = {
    ("float16", "float32"): (8, True, 0),
    ("float64", "bfloat16"): (16, True, 0),
    ("float32", "bfloat16"): (1, False, 0),
    ("float32", "uint32"): (4, False, 0),
    ("float64", "uint32"): (4, False, 0),
    ("complex128", "uint32"): (4, False, 0),
    ("complex64", "uint32"): (4, False, 1),
    ("bfloat16", "uint32"): (8, False, 0),
}
# float16 -> float32 in the scalar tail of CPU's contiguous copy loop: every NaN becomes this one
FLOAT16_TAIL_NAN = 0x7FFFFFFF

# The quiet bit of a NaN in each IEEE format, as a mask over its integer view. Converting a float16
# into a wider format (c10's Half -> float, in hardware or in software) sets it, as does rounding
# a float32 NaN to float16.
QUIET_BIT = {np.dtype(np.float16): (np.uint16, 0x0200), np.dtype(np.float32): (np.uint32, 0x00400000)}

# How C++'s static_cast from a float reaches each integer type in x86-64 code: through a 32-bit
# or a 64-bit truncating conversion (cvtt*2si), keeping the low bits. Out of range or NaN, that
# conversion gives the most negative integer. The compiler goes through 64 bits for uint32;
# c10::convert, which copies use, also sends uint8 through int64 (negative floats to unsigned
# types are undefined in C++).
FLOAT_TO_INTEGER_WIDTH = {"int8": 32, "int16": 32, "int32": 32, "uint8": 32, "uint16": 32, "int64": 64, "uint32": 64}
C10_CONVERT_WIDTH = {**FLOAT_TO_INTEGER_WIDTH, "uint8": 64}


def complex32_as_complex64(array):
    """complex32 values as complex64, the type NumPy (and PyTorch's opmath) computes them in."""
    widened = np.empty(array.shape, np.complex64)
    widened.real, widened.imag = _float16_widened(array["real"]), _float16_widened(array["imag"])
    return widened


def _float16_widened(values):
    """float16 values as float32, signalling NaNs quieted as c10's Half -> float conversion does."""
    widened = values.astype(np.float32)
    nans = np.isnan(widened)
    if nans.any():
        widened.view(np.uint32)[nans] |= QUIET_BIT[widened.dtype][1]
    return widened


def _widen(source, destination_name):
    """``source`` as PyTorch reads it before converting: float8 and bfloat16 as float32, complex as real.

    float16 is read as float32 too, NaNs quieted, when it converts into another float format.
    """
    table = FLOAT8_TO_FLOAT32.get(source.dtype.name)
    if table is not None:
        return table[source.view(np.uint8)]
    if source.dtype == COMPLEX32:
        return complex32_as_complex64(source)
    if source.dtype == NUMPY_DTYPES["bfloat16"]:
        return source.astype(np.float32)
    if source.dtype == np.float16 and NUMPY_DTYPES[destination_name].kind in "fcV":
        return _float16_widened(source)
    return source


def _set_nan_bits(destination, nans, bits_type, pattern):
    """Write ``pattern`` (an array over the NaN elements, or one value) into the NaN elements."""
    destination.view(bits_type)[nans] = pattern


def _narrow_into(destination, source, destination_name, scalar_source, simd_lanes):
    source = np.broadcast_to(source.astype(np.float32, copy=False), destination.shape)
    rule = NARROW_FLOAT_RULES.get(destination_name)
    if rule is not None and rule[2] is not None:
        source = np.clip(source, -rule[2], rule[2])
    np.copyto(destination, source, casting="unsafe")
    nans = np.isnan(source)
    if not nans.any():
        return
    nans = np.nonzero(nans)
    signs = np.signbit(source[nans])
    if rule is None:  # float16: the float32 NaN quieted, its payload's top bits kept
        payload = source[nans].view(np.uint32) & 0x007FFFFF
        bits = (signs.astype(np.uint16) << 15) | 0x7E00 | (payload >> 13).astype(np.uint16)
        _set_nan_bits(destination, nans, np.uint16, bits)
        return
    (positive_nan, negative_nan), bits_type, _ = rule
    bits = np.where(signs, negative_nan, positive_nan).astype(bits_type)
    if destination_name == "bfloat16":
        vectorised = None if scalar_source else simd_lanes(nans)
        bits = np.where(vectorised if vectorised is not None else False, bits, BFLOAT16_SCALAR_NAN).astype(bits_type)
    _set_nan_bits(destination, nans, bits_type, bits)


def _truncated(values, bits):
    """x86's truncating conversion to a ``bits``-wide integer: the most negative one when out of range or NaN."""
    limit = 2.0 ** (bits - 1)
    inside = (values >= -limit) & (values < limit)
    result = np.where(inside, values, 0).astype(np.int64 if bits == 64 else np.int32)
    result[~inside] = np.iinfo(result.dtype).min
    return result


def _unsigned_truncated(values, bits):
    """How x86 code converts to an unsigned ``bits``-wide integer: values from 2**(bits-1) on
    are offset by it first (uint64 in scalar code, uint32 in AVX2 vectors)."""
    high = values >= 2.0 ** (bits - 1)
    offset = np.where(high, values - values.dtype.type(2.0 ** (bits - 1)), values)
    return _truncated(offset, bits) ^ np.where(high, np.iinfo(np.int64 if bits == 64 else np.int32).min, 0)


def _float_to_integer_into(destination, source, destination_name, simd_lanes, widths):
    """A float converted to an integer exactly as CPU's compiled code converts it, out-of-range values included."""
    source = np.broadcast_to(source.astype(np.float32) if source.dtype == np.float16 else source, destination.shape)
    if destination_name == "uint64":
        converted = _unsigned_truncated(source, 64)
    else:
        converted = _truncated(source, widths[destination_name])
    if destination_name == "uint32":  # AVX2 vectors convert to uint32 on their own terms
        strange = ~((source >= 0) & (source < 2.0 ** 31))
        if strange.any():
            strange = np.nonzero(strange)
            vectorised = simd_lanes(strange)
            if vectorised is not None and vectorised.any():
                converted[tuple(i[vectorised] for i in strange)] = _unsigned_truncated(
                    source[strange][vectorised], 32)
    np.copyto(destination, converted, casting="unsafe")


_HARDWARE_FLOATS = frozenset({np.dtype(np.float32), np.dtype(np.float64)})


def _no_simd_lanes(indices):
    return None


def _simd_lanes_of(destination, source, destination_name, threads):
    """A function of index arrays (into ``destination``) saying which of those elements CPU's copy
    converts in SIMD vectors; it answers None where the copy has no vector loop for this layout."""
    layout = SIMD_COPIES.get((source.dtype.name, destination_name))
    if layout is None:
        return _no_simd_lanes
    if destination.ndim == 0:  # a 0-d copy is one call of the scalar loop
        return lambda indices: np.zeros(len(indices[0]), bool)
    return lambda indices: cpu_loops.simd_lanes((destination, source), indices, *layout, threads)


def cast_into(destination, source, destination_name, scalar_source=False, threads=1, static_cast=False):
    """Convert ``source`` into the preallocated ``destination`` exactly as a PyTorch CPU copy does.

    Shapes broadcast as in NumPy. Out-of-range and NaN float -> int conversions give what
    x86 gives (and what torch CPU gives), silently. ``scalar_source``: ``source`` is one
    Python number, which c10 converts with its scalar constructors (as in ``fill_``).
    ``threads``: how many threads CPU's copy would split a large copy over; where a value's
    bits depend on its place in CPU's SIMD loops, ours follow the same split. ``static_cast``:
    convert floats to integers as a kernel's plain C++ cast does, not as c10::convert does.
    """
    source = np.asarray(source)
    if source.dtype == destination.dtype:
        np.copyto(destination, source)
        return
    if scalar_source and source.size == 1 and destination.size > 1:
        # one number converts the same wherever it lands: convert it once, not once per element (a float
        # fill of a 2**31-element int8 tensor took 13 bytes of temporaries per element)
        single = np.empty((), destination.dtype)
        cast_into(single, source, destination_name, scalar_source=True)
        np.copyto(destination, single)
        return
    if source.dtype in _HARDWARE_FLOATS and destination.dtype in _HARDWARE_FLOATS:
        # float64 <-> float32 is one hardware conversion on both sides (NaN payloads and all): a kernel's
        # float64 accumulator reaches a float32 tensor without the generic path's Python (tens of us)
        token = ignore_fp_errors()
        try:
            np.copyto(destination, source, casting="unsafe")
        finally:
            restore_fp_errors(token)
        return
    if source.dtype == COMPLEX32 and destination_name == "float16":  # c10 takes the real part's bits as they are
        np.copyto(destination, source["real"])
        return
    simd_lanes = _no_simd_lanes if scalar_source else _simd_lanes_of(destination, source, destination_name, threads)
    if destination.ndim == 0:  # index arrays below need a dimension
        destination = destination.reshape(1)
    float16_to_float32 = source.dtype == np.float16 and destination_name == "float32"
    with np.errstate(invalid="ignore", over="ignore"):
        source = _widen(source, destination_name)
        if destination.dtype == COMPLEX32:  # each part as a float16, through float32 like c10's Half
            for field, part in (("real", source.real), ("imag", source.imag if source.dtype.kind == "c" else 0)):
                _narrow_into(destination[field], np.asarray(part), "float16", scalar_source, _no_simd_lanes)
            return
        if source.dtype.kind == "c" and destination.dtype.kind not in "cb":  # bool: is either part nonzero
            source = source.real
        if destination_name in VIA_FLOAT32:
            _narrow_into(destination, source, destination_name, scalar_source, simd_lanes)
        elif destination.dtype.kind in "iu" and source.dtype.kind == "f":
            widths = FLOAT_TO_INTEGER_WIDTH if static_cast else C10_CONVERT_WIDTH
            _float_to_integer_into(destination, source, destination_name, simd_lanes, widths)
        else:
            np.copyto(destination, source, casting="unsafe")
            if float16_to_float32:
                _float16_tail_nans(destination, source, simd_lanes)


def _float16_tail_nans(destination, source, simd_lanes):
    """CPU's contiguous float16 -> float32 copy leaves its last few elements (those past its last
    vector) to a scalar loop that turns every NaN into 0x7FFFFFFF."""
    nans = np.isnan(np.broadcast_to(source, destination.shape))
    if not nans.any():
        return
    nans = np.nonzero(nans)
    vectorised = simd_lanes(nans)
    if vectorised is not None:
        _set_nan_bits(destination, tuple(i[~vectorised] for i in nans), np.uint32, FLOAT16_TAIL_NAN)
