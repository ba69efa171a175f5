"""What every kernel needs: operands as NumPy, PyTorch's dtype rules, outputs in HBM.

A kernel's result reaches a tensor through ``store``: a new tensor, or an ``out=`` tensor
that ``prepare_out`` has checked and resized by TensorIterator's rules first. ``write`` is
the conversion both end in, and what in-place kernels use on ``self``.
"""

import functools
import math
import warnings

import numpy as np
import torch
from torch._prims_common import (are_strides_like_channels_last_or_false, compute_elementwise_output_strides,
                                 make_channels_last_strides_for)

from .. import _C, _tensor
from .._errors import (broadcast_mismatch, cannot_cast, device_mismatch, dim_out_of_range, resized_output_warning,
                       unexpected_out_dtype, value_overflow)
from ._overlap import check_no_internal_overlap, check_no_overlap, check_no_partial_overlap, is_non_overlapping_and_dense

as_numpy = _tensor.as_numpy
empty = _tensor.empty
empty_with_array = _tensor.empty_with_array


def all_contiguous(operands):
    """Whether TensorIterator lays a new output of ``operands`` out contiguously without weighing their
    strides: all contiguous and of one shape (its fast setup), or all laid out with exactly contiguous
    strides. A number takes part as the 0-dim tensor PyTorch wraps it in. A channels-last tensor with one
    pixel counts as contiguous alone but keeps its strides against a number or a broadcast bias."""
    tensors = [o for o in operands if isinstance(o, torch.Tensor)]
    if not all(t.is_contiguous() for t in tensors):
        return False
    if len(tensors) == len(operands) and all(t.shape == tensors[0].shape for t in tensors):
        return True
    return all(t.stride() == _tensor.contiguous_strides(t.shape) for t in tensors if t.dim())


def iterator_strides(shape, operands):
    """The strides TensorIterator gives a new output of ``shape`` computed from ``operands`` (their memory
    order: channels-last, transposed), or None where that is contiguous. PyTorch's own Python statement
    of TensorIterator's rule decides, once per layout (a model repeats its layouts every step)."""
    layouts = tuple((tuple(o.shape), o.stride()) for o in operands if isinstance(o, torch.Tensor) and o.dim())
    return _iterator_strides(tuple(shape), layouts) if layouts else None


@functools.lru_cache(maxsize=4096)
def _iterator_strides(shape, layouts):
    """``iterator_strides`` for operands of these (sizes, strides), on meta stand-ins broadcast to ``shape``."""
    broadcast = [torch.empty_strided(sizes, strides, device="meta").expand(shape) for sizes, strides in layouts]
    strides = tuple(compute_elementwise_output_strides(*broadcast))
    return None if strides == _tensor.contiguous_strides(shape) else strides


# PyTorch computes reduced-precision floats in float32 ("opmath") and rounds once on store.
_OPMATH = {
    torch.bfloat16: np.dtype(np.float32),
    torch.float16: np.dtype(np.float32),
    torch.float8_e4m3fn: np.dtype(np.float32),
    torch.float8_e5m2: np.dtype(np.float32),
    torch.complex32: np.dtype(np.complex64),
}


def opmath_dtype(dtype):
    """The NumPy dtype PyTorch computes ``dtype`` in."""
    return _OPMATH.get(dtype) or _tensor.numpy_dtype(dtype)


# Two ways to replay CPU's 16-bit loops, which round every operation's result to bf16/fp16: ``in_dtype`` holds the
# operands in the 16-bit NumPy dtype itself, so that NumPy's own arithmetic rounds each step (short formulas: the
# loss loops); ``loop_rounding``/``rounding_through`` round float32 arrays after each step the caller marks (kernels
# whose other steps, or other dtypes, stay in float32).


def in_dtype(dtype, *operands):
    """``operands`` as NumPy arrays of torch ``dtype``: a 16-bit one's every operation then rounds to it."""
    return [np.asarray(operand).astype(_tensor.numpy_dtype(dtype)) for operand in operands]


def rounding_through(held_in, compute_dtype):
    """An array computed in ``compute_dtype`` rounded to the NumPy dtype ``held_in`` and back: one operation of
    CPU's loops over ``c10::BFloat16``/``Half`` values, which round every result they store, replayed on float32
    arrays."""
    return lambda array: np.asarray(array).astype(held_in).astype(compute_dtype)


SIXTEEN_BIT = frozenset({torch.bfloat16, torch.float16})  # the float formats CPU's loops round per operation


def loop_rounding(dtype, compute_dtype):
    """What CPU's loops do to each operation's result over torch ``dtype`` values, for maths on ``compute_dtype``
    (float32) arrays: over bf16/fp16 they round it to the 16-bit format (``rounding_through``); over float and
    double the arithmetic already is in the dtype."""
    if dtype not in SIXTEEN_BIT:
        return np.asarray
    return rounding_through(_tensor.numpy_dtype(dtype), compute_dtype)


def opmath_scalar_type(dtype):
    """The torch dtype PyTorch computes ``dtype`` in (``opmath_type``), which checked Scalar conversions
    (``alpha.to<opmath_t>()``) target."""
    return _tensor.TORCH_DTYPE[_OPMATH[dtype]] if dtype in _OPMATH else dtype


# The dtypes whose tpu tensors NumPy reads as they are stored: no conjugate bit (real), no bool bytes to normalise,
# no complex32 pairs, no opmath upcast. With no negation bit such an operand is its ``as_numpy`` view, which ``operand``
# and ``opmath_operand`` give after one test of the dtype and the storage (every operand of most kernels).
_AS_STORED = frozenset(dtype for dtype in _tensor.NUMPY_DTYPE
                       if not dtype.is_complex and dtype is not torch.bool and dtype not in _OPMATH)
_BUFFER_ATTRIBUTE = _tensor.BUFFER_ATTRIBUTE


def operand(value, op_name=None):
    """A kernel argument as NumPy: tpu tensors as views, CPU scalars and numbers as NumPy scalars.

    A CPU tensor with dimensions is an error, worded as CUDA words it.
    """
    if isinstance(value, torch.Tensor):
        if (value.dtype in _AS_STORED and hasattr(value.untyped_storage(), _BUFFER_ATTRIBUTE)
                and not value.is_neg()):
            return as_numpy(value)
        if _tensor.is_tpu(value):
            array = as_numpy(value)
            if value.dtype is torch.complex32:  # stored as float16 pairs, which NumPy cannot compute with
                array = _C.dtypes.complex32_as_complex64(array)
            if value.is_conj():
                array = np.conj(array)
            if value.is_neg():
                array = np.negative(array)
            if value.dtype is torch.bool:
                # A bool tensor viewed from other bytes (``uint8_tensor.view(torch.bool)``) holds 2..255 for
                # True. CPU reads any nonzero byte as True; NumPy's comparisons of a broadcast operand compare
                # the bytes themselves.
                array = np.not_equal(array.view(np.uint8), 0)
            return array
        if value.dim() == 0:
            # complex32 is read as the complex64 it computes in, as on the tpu side above
            scalar_dtype = _OPMATH[value.dtype] if value.dtype is torch.complex32 else _tensor.numpy_dtype(value.dtype)
            return np.asarray(value.item(), dtype=scalar_dtype)
        raise device_mismatch("tpu:0", value.device, op_name)
    return value


def scalar_value(tensor):
    """The Python number a 0-d tensor holds, read as a kernel on the chip reads it: not through ``.item()``, so
    torch.tpu's sync debug mode does not take a kernel's own read for the host waiting."""
    return operand(tensor).reshape(()).item()  # operand: complex32's float16 pairs become one complex


def opmath_operand(value, op_name=None):
    """Like ``operand``, upcast to the dtype PyTorch would compute in."""
    array = operand(value, op_name)
    if isinstance(value, torch.Tensor) and value.dtype in _OPMATH:
        return array.astype(_OPMATH[value.dtype])
    return array


def wrap_dim(dim, ndim, scalar_has_dim=True):
    """A dim index made non-negative, raising the IndexError PyTorch raises. A 0-d tensor takes dims 0
    and -1, unless ``scalar_has_dim`` is False (c10's maybe_wrap_dim with wrap_scalar=false)."""
    if ndim == 0 and not scalar_has_dim:
        raise IndexError(f"Dimension specified as {dim} but tensor has no dimensions")
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise dim_out_of_range(dim, ndim)
    return dim % rank


def wrap_dims(dims, ndim):
    """Several dims wrapped, each at most once (at::dim_list_to_bitset)."""
    rank, wrapped = max(ndim, 1), []
    for dim in dims:
        if not -rank <= dim < rank:
            raise dim_out_of_range(dim, ndim)
        dim %= rank
        if dim in wrapped:
            raise RuntimeError(f"dim {dim} appears multiple times in the list of dims")
        wrapped.append(dim)
    return tuple(wrapped)


def _overflows(value, dtype):
    """c10::overflows: whether a Scalar does not fit ``dtype`` (unsigned types take negatives that wrap)."""
    if dtype == torch.bool or isinstance(value, bool):
        return False
    if isinstance(value, complex):
        if not dtype.is_complex and value.imag != 0:
            return True
        value = value.real
    if dtype.is_floating_point or dtype.is_complex:
        limits = torch.finfo(dtype)
        if math.isinf(value) and dtype != torch.float8_e4m3fn:  # every other float format has inf
            return False
        if math.isnan(value):
            return False
        return value < limits.min or value > limits.max
    limits = torch.iinfo(dtype)
    if isinstance(value, float):
        # C++ compares a double with the limits converted to double
        return math.isnan(value) or value < float(limits.min) or value > float(limits.max)
    if limits.min == 0 and value < 0:  # unsigned types accept negatives that wrap, like -1 -> 255
        return -value > limits.max
    return value < limits.min or value > limits.max


# A model passes the same few Scalars on every launch (ReLU6's 0.0 and 6.0, an optimizer's alpha), and ``torch.finfo``
# alone costs more than the rest of a small kernel's checks: plain Python numbers are answered from a cache. ``typed``
# keeps the value's type in the key: 2**63 overflows int64 where the equal float 2.0**63 does not (C++ compares doubles).
# Other Scalars (a symbolic SymInt cannot be hashed; hashing a SymFloat would guard on it) are checked every time.
_cached_overflows = functools.lru_cache(maxsize=1024, typed=True)(_overflows)
_PLAIN_NUMBERS = frozenset({bool, int, float, complex})


def check_scalar_fits(value, dtype):
    """The check c10 makes before storing a Scalar into a ``dtype`` tensor (fill_, masked_fill_, full, ...)."""
    if (_cached_overflows if value.__class__ in _PLAIN_NUMBERS else _overflows)(value, dtype):
        raise value_overflow(dtype)


def broadcast_shapes(*shapes):
    """The shape ``shapes`` broadcast to, or at::infer_size's error (torch.broadcast_shapes words its own)."""
    try:  # NumPy's rule is PyTorch's, and costs a few us where torch.broadcast_shapes costs tens
        return np.broadcast_shapes(*shapes)
    except ValueError:
        raise broadcast_mismatch(shapes) from None


def converted(array, dtype):
    """``array`` as a NumPy array of the torch ``dtype``, converted as a PyTorch CPU cast converts it."""
    target = _tensor.numpy_dtype(dtype)
    array = np.asarray(array)
    if array.dtype == target:
        return array
    result = np.empty(array.shape, target)
    _C.dtypes.cast_into(result, array, _tensor.DTYPE_NAME[dtype])
    return result


def write(tensor, array):
    """Convert ``array`` into the existing tpu tensor ``tensor`` (shapes broadcast), rounding as PyTorch does."""
    _C.dtypes.cast_into(as_numpy(tensor), array, _tensor.DTYPE_NAME[tensor.dtype])
    return tensor


def through_math_bits(out, compute):
    """``compute(target)``, its result reaching ``out`` even when ``out`` is a lazy conjugate or negation.

    PyTorch's conjugate and negative fallbacks resolve such an output before most kernels run, but let
    through the ops whose CPU kernels take the bits themselves (``mm``, ``addmm_``, ``bmm``, ``baddbmm_``,
    ``dot``, ``vdot``, ``conj_physical_``, ``linalg_solve_triangular``: ConjugateFallback.cpp). Writing
    values into such an output's bytes would store their conjugate; they go through a plain tensor and
    ``copy_``, which writes through the bits.
    """
    if not (out.is_conj() or out.is_neg()):
        return compute(out)
    out.copy_(compute(empty(tuple(out.shape), out.dtype)))
    return out


def castable(result_dtype, out_dtype):
    """TensorIterator's rule for an output's dtype: it must be able to hold the result type."""
    if not torch.can_cast(result_dtype, out_dtype):
        raise cannot_cast(result_dtype, out_dtype)


def exact_dtype(result_dtype, out_dtype):
    """Structured kernels' rule (their resize_out): the output has the result's very dtype."""
    if result_dtype != out_dtype:
        raise unexpected_out_dtype(result_dtype, out_dtype)


def resize_output(out, shape, layout_from=()):
    """at::native::resize_output: ``out`` takes the result's shape, with PyTorch's deprecation warning
    when that throws away elements it had. An elementwise op's resized ``out`` then takes the memory
    order TensorIterator gives a new output of the operands ``layout_from`` (a kept ``out`` keeps its own)."""
    shape = tuple(shape)
    if out.shape != shape:
        if out.numel():
            warnings.warn(resized_output_warning(out.shape, shape), UserWarning, stacklevel=2)
        out.resize_(shape)
        strides = None if all_contiguous(layout_from) else iterator_strides(shape, layout_from)
        if strides is not None:
            out.as_strided_(shape, strides)
    return out


def prepare_out(out, shape, dtype=None, inputs=(), distinct=(), dtype_rule=castable, may_alias=False,
                layout_from=()):
    """The checks CPU makes of an ``out=`` tensor before writing the result into it, in TensorIterator's
    order, then the resize. ``out`` may not alias itself (an expanded tensor; reductions, which CPU
    lets do that, pass ``may_alias``), nor partially overlap any of ``inputs``, nor overlap any of
    ``distinct`` at all (ops that read those while writing); it must accept a result of ``dtype``
    under ``dtype_rule`` (None: any dtype, converted on store). Returns ``out``, resized to ``shape``
    (laid out after ``layout_from`` when it had to be resized, as ``resize_output`` says).
    """
    if not _tensor.is_tpu(out):  # checked first: an empty result would never read or write it
        raise device_mismatch("tpu:0", out.device)
    if not may_alias:
        check_no_internal_overlap(out)
    for value in inputs:
        check_no_partial_overlap(out, value)
    for value in distinct:
        check_no_overlap(out, value)
    if dtype is not None and dtype is not out.dtype and dtype_rule is not None:  # a dtype always suits itself
        dtype_rule(dtype, out.dtype)
    return resize_output(out, shape, layout_from)


def store(array, dtype=None, *, out=None, inputs=(), distinct=(), dtype_rule=castable, may_alias=False):
    """Where a kernel's result goes: a new tpu tensor of the result's ``dtype`` (``array``'s own when
    None), or, for an ``out=`` variant, ``out`` once ``prepare_out`` has checked it against a result
    of that dtype. The values are converted to the tensor's dtype as a CPU store converts them."""
    dtype = dtype or _tensor.TORCH_DTYPE[np.asarray(array).dtype]
    if out is None:  # stored_with_view, inlined: this runs for most kernels' results
        tensor, view = empty_with_array(shape_of(array), dtype)
        _C.dtypes.cast_into(view, array, _tensor.DTYPE_NAME[dtype])
        return tensor
    prepare_out(out, shape_of(array), dtype, inputs, distinct, dtype_rule, may_alias)
    return write(out, array)


def shape_of(array):
    """``np.shape(array)``: an array's (or NumPy scalar's) own ``shape`` read first, without ``np.shape``'s two Python
    calls (every stored result asks)."""
    try:
        return array.shape
    except AttributeError:  # a Python number or a list
        return np.shape(array)


def stored_with_view(array, dtype):
    """``array`` converted into a new contiguous tpu tensor of ``dtype``, and that tensor's NumPy view, which
    comes with it: for kernels that read back what they stored, without a second view of the same bytes."""
    tensor, view = empty_with_array(shape_of(array), dtype)
    _C.dtypes.cast_into(view, array, _tensor.DTYPE_NAME[dtype])
    return tensor, view


def suggested_memory_format(tensor):
    """PyTorch's ``suggest_memory_format`` of a strided tensor (channels-last for 4-d and 5-d tensors with such
    strides), asked once per (sizes, strides): its Python rule costs more than a small pooling kernel."""
    return _suggested_memory_format(tuple(tensor.shape), tensor.stride())


@functools.lru_cache(maxsize=1024)
def _suggested_memory_format(shape, strides):
    if not are_strides_like_channels_last_or_false(shape, strides):
        return torch.contiguous_format
    return torch.channels_last if len(shape) == 4 else torch.channels_last_3d


def empty_like_strides(tensor):
    """The strides ``empty_like(tensor)`` (preserve_format) gives: the tensor's own when it is dense and without
    overlap (transposed, channels-last, and a size-1 dim's stride as it is), else its suggested memory format's;
    None for the contiguous strides."""
    if is_non_overlapping_and_dense(tensor):
        strides = tensor.stride()
        return None if strides == _tensor.contiguous_strides(tensor.shape) else strides
    if suggested_memory_format(tensor) is torch.contiguous_format:
        return None
    return channels_last_strides(tensor.shape)


def channels_last_strides(shape):
    """PyTorch's ``make_channels_last_strides_for(shape)``, computed once per shape: its Python checks (about
    1.5 us) ran for every channels-last result (a convolution's output and gradients, batch norm's), every step."""
    return _channels_last_strides(tuple(shape))


@functools.lru_cache(maxsize=1024)
def _channels_last_strides(shape):
    return tuple(make_channels_last_strides_for(shape))


def store_in_memory_format(array, dtype, memory_format, *, out=None, **out_checks):
    """``store`` into a new tensor laid out in ``memory_format`` (channels-last for kernels that allocate
    with ``at::empty(..., input.suggest_memory_format())``, as upsampling and convolution do). An ``out=``
    tensor, checked as ``store`` checks it, is restrided to ``memory_format`` whatever its own strides: CPU's
    unstructured kernels (3-d max pooling) take it with ``out.resize_(sizes, memory_format)``."""
    if out is not None:
        prepare_out(out, np.shape(array), dtype, **out_checks)
        return write(out.resize_(np.shape(array), memory_format=memory_format), array)
    if memory_format is torch.contiguous_format:
        return store(array, dtype)
    return write(empty(np.shape(array), dtype, channels_last_strides(np.shape(array))), array)


def padded(array, widths, fill=0):
    """``array`` with (before, after) elements of ``fill`` around each dim (``widths``: a tuple of pairs): np.pad's
    constant mode, which costs about 100 us of Python per call, written as one fill and one copy, its geometry
    computed once per shape and widths (a model pads the same shapes every step)."""
    shape, interior = _padded_geometry(array.shape, widths)
    result = np.empty(shape, array.dtype)
    result.fill(fill)
    result[interior] = array
    return result


@functools.lru_cache(maxsize=1024)
def _padded_geometry(shape, widths):
    """The padded array's shape, and the index of the original's place in it."""
    return (tuple([n + lo + hi for n, (lo, hi) in zip(shape, widths)]),
            tuple([slice(lo, lo + n) for n, (lo, _) in zip(shape, widths)]))


@functools.lru_cache(maxsize=256)
def ones(length, dtype):
    """A read-only vector of ``length`` ones, made once per length: row and column sums multiply by it."""
    vector = np.ones(length, dtype)
    vector.flags.writeable = False
    return vector


# Rows at most this long, when there are at least this many, take their maxima as a reduction over the first axis of a
# transposed copy: NumPy's maximum over each short contiguous row costs per row (1,024 rows of 16: 14 us, against
# 2.7 us with the copy; 256 rows of 32: 15.6 against 4.8), by 64 elements a row the two are even, and a few rows cost
# less than the copy
_SHORT_ROW = 32
_MANY_ROWS = 64


def row_maxima(array, axis):
    """``np.max(array, axis=axis, keepdims=True)``, the same values: a maximum is exact whatever the order in which
    it is taken, a NaN propagates either way, and where +0.0 and -0.0 tie for it (either may be returned) a softmax
    shifted by it gives the same results. Many short last-axis rows are reduced along the first axis of their
    transposed copy (the score rows of attention and softmax over a few tokens or a window)."""
    width = array.shape[axis] if array.ndim else 0
    if axis != array.ndim - 1 or not 0 < width <= _SHORT_ROW or array.size < _MANY_ROWS * width:
        return np.max(array, axis=axis, keepdims=True)
    # np.moveaxis(array, -1, 0) as a plain transpose: moveaxis's axis normalisation cost more than the copy
    columns = np.ascontiguousarray(array.transpose((array.ndim - 1, *range(array.ndim - 1))))
    return np.maximum.reduce(columns, axis=0)[..., None]


def channel_sums(x, dtype=None):
    """Per channel (dim 1), the sum over every other dim, shaped (1, C, 1, ...) to broadcast against ``x``.

    Summed as (N, C, rest): the contiguous inner run first, then the batch. NumPy's reduction over the
    scattered axes (0, 2, 3) directly is several times slower, in float64 ten times. Not a BLAS matrix-vector
    product with ones, though faster on short runs: its kernel adds some channels' runs element by element, so
    channels of equal values got unequal sums."""
    rows = x.reshape(x.shape[0], x.shape[1], -1) if x.ndim != 3 else x
    per_image = np.add.reduce(rows, axis=2, dtype=dtype)
    sums = np.add.reduce(per_image, axis=0)
    return sums.reshape((1, -1) + (1,) * (x.ndim - 2))
