"""Factory kernels: tensors made from nothing but sizes and a value."""

import math
import warnings

import numpy as np
import torch

from .. import _sync_debug, _tensor
from .._C import cpu_loops, vpu
from .._errors import check_device_index, not_implemented_for
from ._common import check_scalar_fits, opmath_dtype, prepare_out, scalar_value
from ._overlap import check_no_internal_overlap
from ._registry import register


def _strides_for(size, memory_format):
    if memory_format in (None, torch.contiguous_format, torch.preserve_format):
        return None
    return torch.empty(size, memory_format=memory_format, device="meta").stride()


def filling_uninitialized_memory():
    """Whether new memory must be filled: torch.use_deterministic_algorithms(True), with
    torch.utils.deterministic.fill_uninitialized_memory (on by default)."""
    return torch._C._get_deterministic_algorithms() and torch._C._get_deterministic_fill_uninitialized_memory()


def fill_uninitialized(tensor):
    """ATen's fill for uninitialised memory in deterministic mode: NaN for floating and complex types (a
    complex NaN + 0j), the largest value for the others (True for bool)."""
    if tensor.is_floating_point() or tensor.is_complex():
        return tensor.fill_(math.nan)
    return tensor.fill_(True if tensor.dtype is torch.bool else torch.iinfo(tensor.dtype).max)


def _allocated(tensor):
    return fill_uninitialized(tensor) if filling_uninitialized_memory() else tensor


def check_concrete_sizes(sizes):
    """ATen's eager wrappers take sizes as integers (C10_AS_INTARRAYREF_SLOW): a symbolic size, such as a jagged
    nested tensor's ragged dim that a backward asks zeros of, is refused as CPU refuses it."""
    if any(isinstance(size, torch.SymInt) and size.node.maybe_as_int() is None for size in sizes):
        raise RuntimeError("SymIntArrayRef expected to contain only concrete integers")


@register("empty.memory_format")
def empty(size, *, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
    check_device_index(device, "torch.empty")
    check_concrete_sizes(size)
    _tensor.check_nonnegative_sizes(size)  # every factory reaches here: refused before anything is allocated
    dtype = dtype or torch.get_default_dtype()
    return _allocated(_tensor.empty(size, dtype, _strides_for(size, memory_format)))


@register("empty_strided")
def empty_strided(size, stride, *, dtype=None, layout=None, device=None, pin_memory=None):
    check_device_index(device, "torch.empty_strided")
    check_concrete_sizes(size)
    return _allocated(_tensor.empty(size, dtype or torch.get_default_dtype(), tuple(stride)))


@register("_efficientzerotensor")
def efficient_zero_tensor(size, *, dtype=None, layout=None, device=None, pin_memory=None):
    """The zeros autograd and torch.func use for absent gradients and tangents (jacfwd, hessian).

    CPU and CUDA return a byteless ZeroTensor, a dispatch key Python cannot set; materialised
    zeros hold the same values and every op accepts them.
    """
    return zero_(empty(size, dtype=dtype, device=device))


# CPU fills a one-element tensor through at::detail::scalar_fill, which converts a number to a 16- or 8-bit float
# unchecked (1e6 gives an fp16 inf, as torch.where(x, y, 1e6) and torch.scalar_tensor need); its fill kernel for
# larger tensors, and scalar_fill for every other dtype, refuse a number out of the dtype's range
_SCALAR_FILL_UNCHECKED = frozenset({torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2})


@register("fill_.Scalar")
def fill_scalar_(self, value):
    if not (self.dtype in _SCALAR_FILL_UNCHECKED and self.numel() == 1):
        check_scalar_fits(value, self.dtype)
    array = _tensor.as_numpy(self)
    _tensor._C.dtypes.cast_into(array, np.asarray(value), _tensor.DTYPE_NAME[self.dtype], scalar_source=True)
    return self


@register("fill_.Tensor")
def fill_tensor_(self, value):
    if value.dim() != 0:
        raise RuntimeError(
            f"fill_ only supports 0-dimension value tensor but got tensor with {value.dim()} dimensions."
        )
    return fill_scalar_(self, scalar_value(value))


@register("zero_")
def zero_(self):
    _tensor.as_numpy(self)[...] = 0
    return self


# torch CPU's arange kernel fills each thread's range two SIMD vectors at a time, each vector
# counted on from its first element, then element by element; the two ways round differently.
# That kernel has no AVX-512 build, so vectors are 32 bytes.
_SIMD_BYTES = 32

_RANGE_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                 torch.float16, torch.bfloat16, torch.float32, torch.float64)
_SPACE_DTYPES = _RANGE_DTYPES + (torch.complex64, torch.complex128)
# at::acc_type on the CPU: what arange counts in
_ACC_TYPE = {torch.float16: torch.float32, torch.bfloat16: torch.float32, torch.float32: torch.float64}


def _check_kernel_dtype(kernel_name, dtype, supported):
    if dtype not in supported:
        raise not_implemented_for(kernel_name, dtype)


def _python_scalar(value):
    return value.item() if isinstance(value, torch.Tensor) else value


def _scalar_to(value, dtype):
    """c10's Scalar::to<scalar_t>: refused on overflow, floats truncated to integers, doubles via float."""
    value = _python_scalar(value)
    check_scalar_fits(value, dtype)
    np_dtype = _tensor.numpy_dtype(dtype)
    if not (dtype.is_floating_point or dtype.is_complex):
        return np.array(math.trunc(value)).astype(np_dtype)[()]
    if np_dtype.itemsize < 4:
        return np.float32(value).astype(np_dtype)
    return np_dtype.type(value)


def _multiply_add(a, b, c):
    """``a * b + c`` as CPU's compiled float32/float64 kernels give it: fused, with one rounding."""
    if np.asarray(a).dtype not in (np.float32, np.float64):
        return a * b + c  # c10's Half and BFloat16 round every operation; integers are exact
    return vpu.fused_multiply_add(a, b, c)


def _number(value):
    """A double as C++ streams it."""
    return f"{value:g}"


def _check_range_bounds(start, end, step):
    """arange's and range's checks of their bounds (as doubles)."""
    if not (step > 0 or step < 0):
        raise RuntimeError("step must be nonzero")
    if not (math.isfinite(start) and math.isfinite(end)):
        raise RuntimeError(f"unsupported range: {_number(start)} -> {_number(end)}")
    if not ((step > 0 and end >= start) or (step < 0 and end <= start)):
        raise RuntimeError("upper bound and lower bound inconsistent with step sign")


def _arange_length(start, end, step, dtype):
    """at::arange_out's size: bounds checked in double, the length counted in double, except for
    int64, which counts in integers (a double cannot hold every int64)."""
    scalars = start, end, step
    start, end, step = (float(_python_scalar(v)) for v in scalars)
    _check_range_bounds(start, end, step)
    if dtype == torch.int64:
        xstart, xend, xstep = (int(_scalar_to(v, torch.int64)) for v in scalars)  # not through double
        if xstep == 0:
            raise ValueError("step must be nonzero")
        numerator = xend - xstart + xstep - (1 if xstep > 0 else -1)
        length = abs(numerator) // abs(xstep) * (1 if (numerator >= 0) == (xstep > 0) else -1)
    else:
        with np.errstate(all="ignore"):
            length = np.ceil((np.float64(end) - np.float64(start)) / np.float64(step))
    if not 0 <= length <= torch.iinfo(torch.int64).max:
        raise RuntimeError("invalid size, possible overflow?")
    return int(length)


def _arange_values(first, step, n, dtype):
    """``first + step * i`` in the accumulate type of ``first``/``step``, rounded to ``dtype`` as
    CPU's vectorised fill gives it: each vector counts on from its own first element."""
    index = np.arange(n)
    lanes = _SIMD_BYTES // dtype.itemsize
    chunk = cpu_loops.parallel_chunk_length(n, torch.get_num_threads())  # each thread's range
    begin = index // chunk * chunk
    offset = index - begin
    in_vectors = offset < np.minimum(chunk, n - begin) // (2 * lanes) * (2 * lanes)
    lane = offset % lanes
    with np.errstate(all="ignore"):
        elementwise = _multiply_add(step, index.astype(step.dtype), first).astype(dtype)
        vector_base = elementwise[index - lane].astype(step.dtype)
        # a double step fuses with the base; c10's BFloat16/Half operators keep a float step apart
        multiply_add = _multiply_add if step.dtype == np.float64 else _unfused_multiply_add
        vectorised = multiply_add(step, lane.astype(step.dtype), vector_base).astype(dtype)
    return np.where(in_vectors, vectorised, elementwise)


@register("arange.start_out")
def arange_out(start, end, step=1, *, out):
    _check_kernel_dtype("arange_cpu", out.dtype, _RANGE_DTYPES)
    length = _arange_length(start, end, step, out.dtype)
    if out.numel() and out.numel() != length:
        warnings.warn(f"The number of elements in the out tensor of shape {list(out.shape)} is {out.numel()} which does "
                      f"not match the computed number of elements {length}. Note that this may occur as a result of "
                      f"rounding error. The out tensor will be resized to a tensor of shape ({length},).", UserWarning,
                      stacklevel=2)
    _resize_to_count(out, length)
    acc = _ACC_TYPE.get(out.dtype, out.dtype if out.dtype.is_floating_point else torch.int64)
    values = _arange_values(_scalar_to(start, acc), _scalar_to(step, acc), length, _tensor.numpy_dtype(out.dtype))
    _tensor.as_numpy(out)[...] = values.reshape(out.shape)  # an out= of the right count keeps its shape
    return out


@register("range.out")
def range_out(start, end, step=1, *, out):
    """The deprecated inclusive ``torch.range``: bounds and step in the accumulate type, ``start + i * step``."""
    _check_kernel_dtype("range_cpu", out.dtype, _RANGE_DTYPES)
    acc = _ACC_TYPE.get(out.dtype, out.dtype if out.dtype.is_floating_point else torch.int64)
    first, last, stride = (_scalar_to(v, acc) for v in (start, end, step))
    _check_range_bounds(float(first), float(last), float(stride))
    length = int((last - first) // stride if acc == torch.int64 else (last - first) / stride) + 1
    _resize_to_count(out, length)
    with np.errstate(all="ignore"):
        values = first + np.arange(length).astype(stride.dtype) * stride
    _tensor.as_numpy(out)[...] = values.astype(_tensor.numpy_dtype(out.dtype)).reshape(out.shape)
    return out


def _resize_to_count(out, count):
    """CPU's range factories keep an ``out=`` of the right element count as it is (a (2, 3) out takes six
    values) and resize any other to 1-d, without resize_output's warning (arange gives its own)."""
    if out.numel() != count:
        out.resize_(count)


def _prepare_space_out(out, steps):
    if steps < 0:
        raise RuntimeError("number of steps must be non-negative")
    _resize_to_count(out, steps)
    check_no_internal_overlap(out)  # after the resize, as CPU's TensorIterator checks it


def _two_sided(first, last, step, steps, counter_type, multiply_add):
    """CPU's linspace formula: counted up from ``first`` to halfway, down from ``last`` after."""
    index = np.arange(steps)
    with np.errstate(all="ignore"):
        up = multiply_add(step, index.astype(counter_type), first)
        down = multiply_add(-step, (steps - 1 - index).astype(counter_type), last)
    return np.where(index < steps // 2, up, down)


def _unfused_multiply_add(a, b, c):
    return a * b + c


@register("linspace.out")
def linspace_out(start, end, steps, *, out):
    """In the output type for floats (each operation rounded there); for integers the step
    and the values are doubles, truncated on store."""
    _prepare_space_out(out, steps)
    if steps <= 1:
        return out if steps == 0 else fill_scalar_(out, _python_scalar(start))
    _check_kernel_dtype("linspace_cpu", out.dtype, _SPACE_DTYPES)
    first, last = _scalar_to(start, out.dtype), _scalar_to(end, out.dtype)
    if not (out.dtype.is_floating_point or out.dtype.is_complex):
        first, last = np.float64(first), np.float64(last)
    step = (last - first) / first.dtype.type(steps - 1)
    counter_type = step.real.dtype  # c10 multiplies a complex step by a real count
    values = _two_sided(first, last, step, steps, counter_type, _multiply_add)
    _tensor.as_numpy(out)[...] = values.astype(_tensor.numpy_dtype(out.dtype)).reshape(out.shape)
    return out


def _power(base, exponents):
    """``base ** exponents`` as the C library's pow gives it (NumPy's SIMD power differs in the last bit)."""
    if exponents.dtype.kind == "c":
        with np.errstate(all="ignore"):
            return np.power(base, exponents)
    return np.array([_c_pow(float(base), e) for e in exponents.tolist()], np.float64)


def _c_pow(base, exponent):
    try:
        return math.pow(base, exponent)
    except OverflowError:
        return math.inf if base > 0 or exponent.is_integer() and exponent % 2 == 0 else -math.inf
    except ValueError:  # a negative base to a fractional power
        return math.nan


@register("logspace.out")
def logspace_out(start, end, steps, base=10.0, *, out):
    """``base ** e`` in double (complex: in the output type) of linspace's two-sided exponents,
    counted from the start and end rounded to the output type."""
    _prepare_space_out(out, steps)
    if steps == 0:
        return out
    power_type = _tensor.numpy_dtype(out.dtype) if out.dtype.is_complex else np.dtype(np.float64)
    if steps == 1:
        with np.errstate(all="ignore"):
            value = np.power(complex(base) if out.dtype.is_complex else float(base),
                             np.asarray(_python_scalar(start), np.complex128 if out.dtype.is_complex else np.float64))
        return fill_scalar_(out, value.item())
    _check_kernel_dtype("logspace_cpu", out.dtype, _SPACE_DTYPES)
    first, last = _scalar_to(start, out.dtype), _scalar_to(end, out.dtype)
    # the span is rounded to the output type for floats, exact for integers
    span = last - first if out.dtype.is_floating_point or out.dtype.is_complex else int(last) - int(first)
    step = power_type.type(span) / power_type.type(steps - 1)
    exponents = _two_sided(power_type.type(first), power_type.type(last), step, steps, power_type,
                           _unfused_multiply_add)
    values = _power(power_type.type(base), exponents)
    if out.dtype in (torch.float16, torch.bfloat16):
        values = values.astype(np.float32)  # a double reaches c10's Half and BFloat16 through float
    _tensor._C.dtypes.cast_into(_tensor.as_numpy(out), values.reshape(out.shape), _tensor.DTYPE_NAME[out.dtype],
                                static_cast=True)
    return out


@register("eye.m_out")
def eye_m_out(n, m, *, out):
    if n < 0:
        raise RuntimeError(f"n must be greater or equal to 0, got {n}")
    if m < 0:
        raise RuntimeError(f"m must be greater or equal to 0, got {m}")
    prepare_out(out, (n, m))
    array = _tensor.as_numpy(out)
    array[...] = 0
    np.fill_diagonal(array, 1)
    return out


@register("eye.out")
def eye_out(n, *, out):
    return eye_m_out(n, n, out=out)


@register("_local_scalar_dense")
def local_scalar_dense(self):
    _sync_debug.host_waits()
    return scalar_value(self)


# torch._assert_async: a device-side assert on CUDA. The chip answers at once, as CPU does.
@register("_assert_async")
def assert_async(self):
    if not torch.is_nonzero(self):  # also CPU's error for more or fewer than one element
        raise RuntimeError("Expected Tensor with single nonzero value, but got zero")


@register("_assert_async.msg")
def assert_async_msg(self, assert_msg):
    if not torch.is_nonzero(self):
        raise RuntimeError(assert_msg)


_COMPOSITE = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)


# the layouts whose window CPU makes strided: its kernel allocates with them and jagged allocates a strided tensor
_WINDOW_LAYOUTS = (None, torch.strided, torch.jagged)


@register("kaiser_window", "kaiser_window.periodic", "kaiser_window.beta", charge=False)
def kaiser_window(window_length, periodic=True, beta=12.0, *, dtype=None, layout=None, device=None, pin_memory=None):
    """ATen's composite checks its arguments, then computes the window in a kernel of its own (kaiser_window_stub)
    that only CPU and CUDA have ("DispatchStub: missing kernel for tpu"). Its formula here, on tpu's kernels in the
    stub's opmath type: ``i0(beta * sqrt(|1 - ((n - alpha) / alpha) ** 2|)) / i0(beta)`` over an arange in ``dtype``.
    Its shorter overloads call the native function directly, not through the dispatcher: all three are here."""
    dtype = dtype or torch.get_default_dtype()
    if window_length < 0 or layout not in _WINDOW_LAYOUTS or not (dtype.is_floating_point or dtype.is_complex):
        # ATen's own checks and their words (window_function_checks), or the layout's own refusal where the
        # composite allocates (sparse compressed, mkldnn); the composite raises before its stub
        torch.ops.aten.kaiser_window.beta.redispatch(_COMPOSITE, window_length, periodic, beta, dtype=dtype,
                                                     layout=layout, device=device, pin_memory=pin_memory)
    if window_length <= 1:
        return torch.ones(window_length, dtype=dtype, device="tpu")
    length = window_length + 1 if periodic else window_length
    positions = torch.arange(length, dtype=dtype, device="tpu")  # complex: arange's own error, as on CPU
    if dtype.is_complex:
        raise not_implemented_for("kaiser_window_cpu", dtype)
    opmath = _tensor.TORCH_DTYPE[opmath_dtype(dtype)]
    alpha = torch.tensor((length - 1) / 2.0, dtype=opmath, device="tpu")
    scaled_beta = torch.tensor(beta, dtype=opmath, device="tpu")
    ratio = (positions.to(opmath) - alpha) / alpha
    window = torch.i0(scaled_beta * (1 - ratio.pow(2.0)).abs().sqrt()) / torch.i0(scaled_beta)
    return window[:window_length].to(dtype)
