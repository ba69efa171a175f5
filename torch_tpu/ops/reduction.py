"""Reduction kernels: sum, mean, prod, min/max, arg-reductions, var/std, norms, scans.

Functional calls of structured reductions (``sum``, ``amax``, ``cumsum``, ...) reach their ``.out``
kernel with ``out`` shaped and typed by PyTorch's meta function, but ``out=`` calls and unstructured
ops (``var.correction``, ``median.dim_values``, ...) arrive unchecked, so every kernel checks its
dims, empty reductions without an identity and dtype support itself, raising what CPU raises, and
resizes ``out`` (a no-op when PyTorch already did).

Numerics follow torch CPU: the input is first converted to the result dtype, then accumulated in
float32 for bfloat16/float16 (opmath), float64 for float64 and int64 for integer sums, and rounded
once on store. Max/min propagate NaN, and arg-reductions return the first extreme (or first NaN).
"""

import math
import warnings

import numpy as np
import torch

from .. import _C
from .._errors import cannot_cast, failed_check, not_implemented_for, scalar_type_name, shape_mismatch, warn_once
from .._tensor import DTYPE_NAME, numpy_dtype
from .cpu_replay import libstdcxx_order, norm_kernel, reduce_vec, sum_kernel
from ._common import (as_numpy, converted, empty, empty_with_array, exact_dtype, loop_rounding, operand, opmath_dtype,
                      prepare_out, store, wrap_dim, wrap_dims, write)
from ._overlap import check_no_internal_overlap
from ._registry import register
from .pointwise import absolute, c_abs, complex_logaddexp, floating_or_wide_complex

# ---------------------------------------------------------------------------------------------
# Mechanisms shared by every reduction
# ---------------------------------------------------------------------------------------------


def _reduced_axes(self, dim):
    """NumPy axes for a PyTorch ``dim`` argument: None or [] mean every dim; 0-d tensors have none.

    Checked as PyTorch checks it: ``out=`` calls reach the kernels without a meta function.
    """
    dims = () if dim is None else (dim,) if isinstance(dim, int) else tuple(dim)
    axes = wrap_dims(dims, self.dim())
    if self.dim() == 0:
        return ()
    return axes or tuple(range(self.dim()))


def _reduced_shape(shape, axes, keepdim):
    if keepdim:
        return tuple(1 if axis in axes else size for axis, size in enumerate(shape))
    return tuple(size for axis, size in enumerate(shape) if axis not in axes)


def _reduction_out(out, self, axes, keepdim, may_alias=True):
    """``out`` checked and resized to the reduction's result (a no-op when PyTorch allocated it). Most
    reductions let ``out`` alias itself on CPU; the ones with indices do not."""
    return prepare_out(out, _reduced_shape(self.shape, axes, keepdim), may_alias=may_alias)


def _check_nonempty(op_name, self, axes):
    """Reductions without an identity refuse empty reduced dims, with CPU's IndexError."""
    for axis in axes:
        if self.shape[axis] == 0:
            raise IndexError(f"{op_name}(): Expected reduction dim {axis} to have non-zero size.")


def _accumuland(self, dtype=None):
    """``self`` as a reduction into ``dtype`` reads it: converted to dtype, widened to its opmath."""
    dtype = dtype or self.dtype
    array = converted(operand(self), dtype)
    if dtype is torch.complex32:  # stored as float16 pairs; widened as operand() widens them
        return _C.dtypes.complex32_as_complex64(array)
    return array.astype(opmath_dtype(dtype), copy=False)


def reduce_into(target, reduction, array, axes, keepdim, dtype_name):
    """Run a NumPy reduction into the array ``target`` (of torch dtype ``dtype_name``), straight into
    its memory when no cast is needed, else rounded on store. Silent, as CPU's, when inf - inf gives NaN or a
    sum or product overflows."""
    with _C.vpu.ignoring_fp_errors():
        if target.dtype == array.dtype:
            reduction(array, axis=axes, keepdims=keepdim, out=target)
        else:
            _C.dtypes.cast_into(target, np.asarray(reduction(array, axis=axes, keepdims=keepdim)), dtype_name)
    return target


def _reduce_into(out, reduction, array, axes, keepdim):
    reduce_into(as_numpy(out), reduction, array, axes, keepdim, DTYPE_NAME[out.dtype])
    return out


def mean_array(array, axes, keepdim, layout=None, output_strides=None):
    """The mean of ``array`` (already in its accumulation type) over ``axes``: CPU's sum (``sum_array``, of an input
    laid out as ``layout`` says) divided by the count. Like CPU's, silent when the sum overflows or nothing is summed
    (the VPU's quiet state: cheaper than ``np.errstate``, once per global pool)."""
    count = math.prod(array.shape[axis] for axis in axes)
    with _C.vpu.ignoring_fp_errors():
        total = sum_array(array, axes, keepdim, layout, output_strides=output_strides)
        return np.asarray(total / np.asarray(count, total.dtype))


def sum_array(array, axes, keepdim, layout=None, narrow_output=None, widened=True, output_strides=None):
    """The sum of ``array`` (already in its accumulation type) over ``axes``. Floating and complex sums add in CPU's
    sum kernel's order (``cpu_replay.sum_kernel``) for the input CPU iterates, ``layout`` (``iterated_layout``;
    default: ``array`` as laid out); ``narrow_output``: the NumPy dtype of a bf16/fp16 result, which the kernel
    accumulates in (``widened``: ``sum``'s float32 output unless the input is one run); ``output_strides``: those of
    an ``out=`` laid out otherwise than a new output (``out_strides_per_input_dim``). Integer sums are exact in any
    order: NumPy's."""
    if not axes or array.dtype not in _CASCADE_DTYPES or not array.size:
        return np.add.reduce(array, axis=axes, keepdims=keepdim)  # np.sum's reduction, without its wrapper
    strides, itemsize = layout or iterated_layout(array, None)
    total = sum_kernel.cascade_sum(array, axes, strides, itemsize, torch.get_num_threads(), narrow_output, widened,
                                   output_strides)
    return total.reshape(_reduced_shape(array.shape, axes, keepdim))


def iterated_layout(source, converted_itemsize):
    """(element strides, element bytes) of the input CPU's sum kernel reads for the NumPy view ``source`` of a
    tensor: the view itself, or converted to a dtype of ``converted_itemsize`` bytes, its copy (``Tensor.to``: the
    same strides where the view is dense, else contiguous)."""
    strides = [step // source.itemsize for step in source.strides]
    if converted_itemsize is None:
        return strides, source.itemsize
    if not _is_dense(source.shape, strides):
        strides = [math.prod(source.shape[axis + 1:]) for axis in range(source.ndim)]
    return strides, converted_itemsize


def _is_dense(shape, strides):
    """Whether elements of ``strides`` fill one run of memory, the dims in some order."""
    run = 1
    for step, size in sorted((step, size) for step, size in zip(strides, shape) if size != 1):
        if step != run:
            return False
        run *= size
    return True


_CASCADE_DTYPES = tuple(map(np.dtype, (np.float32, np.float64, np.complex64, np.complex128)))


def _sum_dtype(self, dtype):
    """Sums and products of integers and bools are int64 unless a dtype is asked for."""
    if dtype is not None:
        return dtype
    return self.dtype if self.dtype.is_floating_point or self.dtype.is_complex else torch.int64


def _check_dtype(self, kernel_name, supported):
    """CPU kernels dispatch on a set of dtypes and raise NotImplementedError for the rest."""
    if not supported(self.dtype):
        raise not_implemented_for(kernel_name, self.dtype)


def _real(dtype):
    return not dtype.is_complex


def _real_not_bool(dtype):
    return not dtype.is_complex and dtype != torch.bool


def _floating(dtype):
    return dtype.is_floating_point or dtype.is_complex


def _not_complex_half(dtype):
    return dtype != torch.complex32


def _along_last(array, axis):
    """``array`` with ``axis`` moved last; 0-d arrays become one-element vectors."""
    return np.moveaxis(array, axis, -1) if array.ndim else array.reshape(1)


def _from_last(array, axis, ndim):
    return np.moveaxis(array, -1, axis) if ndim else array.reshape(())


# ---------------------------------------------------------------------------------------------
# Sums and products
# ---------------------------------------------------------------------------------------------


def sum_into(target, array, axes, keepdim, dtype_name, layout=None, widened=True):
    """CPU's sum (``sum_array``) of ``array``, already in its accumulation type, into the array ``target`` of torch
    dtype ``dtype_name``, rounded on store. Silent, as CPU's, when inf - inf gives NaN or the sum overflows."""
    if _summed_directly(target, array, axes, layout):
        return target
    narrow_output = target.dtype if dtype_name in _NARROW_FLOATS else None
    output_strides = out_strides_per_input_dim(target, array.ndim, axes, keepdim)
    expanded = expanded_kept_axes(target, array.shape, axes, keepdim)
    with _C.vpu.ignoring_fp_errors():
        if expanded:
            total = sum_array(array, tuple(sorted(axes + expanded)), True, layout, narrow_output, widened,
                              output_strides)
            total = np.asarray(_into_expanded(total, array.shape, axes, expanded, keepdim))
        else:
            total = np.asarray(sum_array(array, axes, keepdim, layout, narrow_output, widened, output_strides))
        if target.dtype == total.dtype:
            target[...] = total
        else:
            _C.dtypes.cast_into(target, total, dtype_name)
    return target


def _summed_directly(target, array, axes, layout):
    """The commonest sum (``sum_kernel.summed_directly``: a contiguous input over its leading or trailing dims, in
    its own dtype) straight into a new output ``target``, with none of ``sum_into``'s other checks."""
    if target.dtype != array.dtype or not target.flags.c_contiguous or not axes or not array.size \
            or array.dtype not in _CASCADE_DTYPES:
        return False
    strides, itemsize = layout or iterated_layout(array, None)
    if itemsize != array.itemsize:
        return False
    with _C.vpu.ignoring_fp_errors():
        return sum_kernel.summed_directly(target, array, tuple(axes), tuple(strides), torch.get_num_threads())


def direct_summer(source, axes, dtype):
    """``_summed_directly`` for a compiled program's sum of the tensor ``source`` over ``axes`` into ``dtype``, its
    checks and plan done once when the program is made (dynamo guards the thread count: a new count compiles anew):
    a function of (out, array) returning whether it summed, or None where the direct path never takes the sum."""
    if source.dtype != dtype or numpy_dtype(dtype) not in _CASCADE_DTYPES or not axes or not source.numel():
        return None
    plan = sum_kernel.direct_plan(tuple(source.shape), tuple(axes), tuple(source.stride()), source.element_size(),
                                  torch.get_num_threads())
    if plan is None:
        return None

    def summed_into(out, array):
        if not (out.flags.c_contiguous and array.flags.c_contiguous):  # as planned unless a view came otherwise
            return False
        with _C.vpu.ignoring_fp_errors():
            sum_kernel.direct_sum(array, plan, out.reshape(-1))
        return True

    return summed_into


_NARROW_FLOATS = frozenset({"bfloat16", "float16"})


def expanded_kept_axes(target, shape, axes, keepdim):
    """The kept dims along which the array ``target``, the out= of a reduction of an input of ``shape`` over
    ``axes``, is expanded (stride 0 over more than one element): CPU's iterator reduces over them too, so each of
    its elements takes the reduction over those dims as well (sum, prod, norms, var and std alike)."""
    output_strides = out_strides_per_input_dim(target, len(shape), axes, keepdim)
    return () if output_strides is None else tuple(
        axis for axis, step in enumerate(output_strides) if step == 0 and axis not in axes and shape[axis] > 1)


def _into_expanded(total, shape, axes, expanded, keepdim):
    """A reduction's result over ``axes`` and the ``expanded`` kept dims (kept as 1s) shaped to broadcast into
    its out=."""
    return total if keepdim else total.reshape(
        [1 if axis in expanded else size for axis, size in enumerate(shape) if axis not in axes])


def out_strides_per_input_dim(target, ndim, axes, keepdim):
    """The element strides of the array ``target`` (a reduction's ``out=``) per dim of its ``ndim``-dim input: 0
    along the reduced ``axes`` (and along a kept dim the out= is expanded over), as TensorIterator sees the output;
    None for a C-contiguous one (a new output's)."""
    if target.flags.c_contiguous:
        return None
    kept = iter(step // target.itemsize for axis, step in enumerate(target.strides) if not (keepdim and axis in axes))
    return tuple(0 if axis in axes else next(kept) for axis in range(ndim))


def _sum_layout(self, dtype):
    """The layout CPU's sum kernel iterates for the tensor ``self`` summed in ``dtype`` (``iterated_layout``)."""
    if self.dtype is torch.complex32:  # stored as float16 pairs: summed as NumPy sums (not replayed)
        return None
    if dtype == self.dtype:
        return self.stride(), self.element_size()
    return iterated_layout(as_numpy(self), dtype.itemsize)


def _sum_tensor_into(target, self, axes, keepdim, dtype):
    """``self`` converted to ``dtype``, summed in its opmath in CPU's order into the array ``target``."""
    _refuse_complex_half_loop(self, dtype, "sum_cpu")
    sum_into(target, _accumuland(self, dtype), axes, keepdim, DTYPE_NAME[dtype], _sum_layout(self, dtype))


def _product_into(target, self, axes, keepdim, dtype):
    _refuse_complex_half_loop(self, dtype, "prod_out_cpu")
    array = _accumuland(self, dtype)
    expanded = expanded_kept_axes(target, self.shape, axes, keepdim)
    reduced = tuple(sorted(axes + expanded))
    with _C.vpu.ignoring_fp_errors():  # CPU's products overflow to inf silently
        if dtype in _REPLAYED_PRODUCT_DTYPES and reduced and array.size:
            strides, _ = _sum_layout(self, dtype)
            narrow = numpy_dtype(dtype)  # bf16/fp16 round every product: multiplied in their own dtype
            product = reduce_vec.reduce_vec(np.multiply, array.astype(narrow, copy=False), reduced, tuple(strides),
                                            torch.get_num_threads()).reshape(_reduced_shape(self.shape, reduced, True))
        else:
            product = np.multiply.reduce(array, axis=reduced, keepdims=True)
    _C.dtypes.cast_into(target, _into_expanded(product, self.shape, axes, expanded, keepdim), DTYPE_NAME[dtype])


# complex products are NumPy's (CPU's vector lanes and scalar tail round them otherwise: not replayed)
_REPLAYED_PRODUCT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _refuse_complex_half_loop(self, dtype, kernel_name):
    """CPU's sum and prod loops have none for ComplexHalf (the dtype they accumulate in); an empty input never
    reaches them, its result filled with the identity."""
    if dtype == torch.complex32 and self.numel():
        raise not_implemented_for(kernel_name, dtype)


def _accumulating_kernel(accumulate_into):
    """sum/prod into ``out``: the input converted to out's dtype, accumulated in its opmath."""

    def kernel(self, dim, keepdim=False, *, dtype=None, out):
        axes = _reduced_axes(self, dim)
        out = _reduction_out(out, self, axes, keepdim)
        accumulate_into(as_numpy(out), self, axes, keepdim, out.dtype)
        return out

    return kernel


sum_out = register("sum.IntList_out")(_accumulating_kernel(_sum_tensor_into))
prod_int_out = register("prod.int_out")(_accumulating_kernel(_product_into))


# sum and mean are hot (losses, normalisation): their functional forms skip the structured wrapper.
# Their output is new and of the result's shape and dtype: ``out``'s checks and resizing have nothing to do.
@register("sum.dim_IntList")
def sum_dim(self, dim, keepdim=False, *, dtype=None):
    """Summed straight into the view that comes with the new result (a bias's gradient in every backward)."""
    axes, result_dtype = _reduced_axes(self, dim), _sum_dtype(self, dtype)
    out, target = empty_with_array(_reduced_shape(self.shape, axes, keepdim), result_dtype)
    _sum_tensor_into(target, self, axes, keepdim, result_dtype)
    return out


def _mean_dtype(self, dtype):
    result = dtype or self.dtype
    if not (result.is_floating_point or result.is_complex):
        which = "Optional" if dtype else "Input"
        raise RuntimeError(f"mean(): could not infer output dtype. {which} dtype must be either a floating point "
                           f"or complex dtype. Got: {scalar_type_name(result)}")
    return result


@register("mean.dim")
def mean_dim(self, dim, keepdim=False, *, dtype=None):
    axes, result_dtype = _reduced_axes(self, dim), _mean_dtype(self, dtype)
    out = empty(_reduced_shape(self.shape, axes, keepdim), result_dtype)
    return write(out, _mean_of(self, axes, keepdim, result_dtype))


def _mean_of(self, axes, keepdim, dtype, output_strides=None):
    """CPU's mean into ``dtype``: ``self`` summed in ``dtype`` (bf16/fp16 in float32) and divided by the count
    (``output_strides``: an ``out=``'s, as ``sum_array``'s)."""
    summed_in = _HALF_MEAN_SUM.get(dtype, dtype)
    _refuse_complex_half_loop(self, summed_in, "sum_cpu")
    if summed_in == torch.complex32:  # an empty one's filled sum meets CPU's division, which has no loop for it either
        raise not_implemented_for("div_cpu", summed_in)
    return mean_array(_accumuland(self, summed_in), axes, keepdim, _sum_layout(self, summed_in), output_strides)


_HALF_MEAN_SUM = {torch.bfloat16: torch.float32, torch.float16: torch.float32}


@register("prod")
def prod(self, *, dtype=None):
    return prod_int_out(self, None, out=empty((), _sum_dtype(self, dtype)))


_NO_TRACE_LOOP = frozenset({torch.bool, torch.uint16, torch.uint32, torch.uint64, torch.complex32,
                            torch.float8_e4m3fn, torch.float8_e5m2})


@register("trace")
def trace(self):
    """The sum of the diagonal, integers summed as int64 (CPU's trace refuses anything but a matrix)."""
    if self.dim() != 2:
        raise RuntimeError(f"trace: expected a matrix, but got tensor with dim {self.dim()}")
    _check_dtype(self, "trace", lambda dtype: dtype not in _NO_TRACE_LOOP)
    dtype = _sum_dtype(self, None)
    return store(np.asarray(np.trace(_accumuland(self, dtype))), dtype)


@register("mean.out")
def mean_out(self, dim, keepdim=False, *, dtype=None, out):
    axes = _reduced_axes(self, dim)
    if not torch.can_cast(_mean_dtype(self, dtype), out.dtype):
        raise cannot_cast(_mean_dtype(self, dtype), out.dtype)
    target = as_numpy(_reduction_out(out, self, axes, keepdim))
    check_no_internal_overlap(out)  # CPU divides the sum in place, and ``div_`` refuses an expanded result
    output_strides = out_strides_per_input_dim(target, self.dim(), axes, keepdim)
    return write(out, _mean_of(self, axes, keepdim, out.dtype, output_strides))


_NANSUM_LOOPS = frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16})


@register("nansum.out")
def nansum_out(self, dim=None, keepdim=False, *, dtype=None, out):
    if self.dtype.is_complex:
        raise RuntimeError("nansum does not support complex inputs")
    axes = _reduced_axes(self, dim)
    accumulation_dtype = _reduction_out(out, self, axes, keepdim).dtype
    if self.is_floating_point() and accumulation_dtype not in _NANSUM_LOOPS:
        # CPU sums a floating input in the out's dtype, and its loop has no integer, bool or complex form; but
        # given an integer or bool dtype, it converts the elements, NaNs as zeros, and sums them as sum does
        if dtype is None or accumulation_dtype.is_complex or accumulation_dtype.is_floating_point:
            raise not_implemented_for("nansum_cpu", accumulation_dtype)
        values = operand(self)
        array = converted(np.where(np.isnan(values), values.dtype.type(0), values), accumulation_dtype)
        return _reduce_into(out, np.sum, array.astype(opmath_dtype(accumulation_dtype), copy=False), axes, keepdim)
    array = _accumuland(self, accumulation_dtype)
    if array.dtype.kind == "f":  # CPU's sum kernel, loading each NaN as +0.0
        array = np.where(np.isnan(array), array.dtype.type(0), array)
    sum_into(as_numpy(out), array, axes, keepdim, DTYPE_NAME[out.dtype], _sum_layout(self, accumulation_dtype),
             widened=False)
    return out


@register("nansum")
def nansum(self, dim=None, keepdim=False, *, dtype=None):
    return nansum_out(self, dim, keepdim, dtype=dtype, out=empty((0,), _sum_dtype(self, dtype)))


# ---------------------------------------------------------------------------------------------
# Extremes: amax/amin, max/min, aminmax, argmax/argmin
# ---------------------------------------------------------------------------------------------

# NaN propagates in np.max/np.min and np.argmax/np.argmin pick the first NaN, as PyTorch does.
_EXTREME = {"max": (np.max, np.argmax), "min": (np.min, np.argmin)}


def _extreme_operand(self, kernel_name):
    _check_dtype(self, kernel_name, _real)
    return _accumuland(self)


def _extreme_kernel(kind):
    """amax/amin: the extremes over ``dim`` (every dim if empty), NaN-propagating."""
    reduction, _ = _EXTREME[kind]

    def kernel(self, dim=(), keepdim=False, *, out):
        axes = _reduced_axes(self, dim)
        _check_nonempty(f"a{kind}", self, axes)
        if out.dtype != self.dtype:
            raise RuntimeError(f"Expected the dtype for input and out to match, but got {scalar_type_name(self.dtype)} "
                               f"for input's dtype and {scalar_type_name(out.dtype)} for out's dtype.")
        array = _extreme_operand(self, f"{kind}_values_cpu")
        return _reduce_into(_reduction_out(out, self, axes, keepdim), reduction, array, axes, keepdim)

    return kernel


amax_out = register("amax.out")(_extreme_kernel("max"))
amin_out = register("amin.out")(_extreme_kernel("min"))


def _extreme_all(kind, self, out):
    if self.numel() == 0:
        raise RuntimeError(
            f"{kind}(): Expected reduction dim to be specified for input.numel() == 0. "
            "Specify the reduction dim with the 'dim' argument."
        )
    reduction, _ = _EXTREME[kind]
    return write(out, np.asarray(reduction(_extreme_operand(self, f"{kind}_all"))))


@register("max")
def max_all(self):
    return _extreme_all("max", self, empty((), self.dtype))


@register("min")
def min_all(self):
    return _extreme_all("min", self, empty((), self.dtype))


def _extreme_all_out(kind):
    def kernel(self, *, out):
        if not torch.can_cast(self.dtype, out.dtype):
            raise failed_check("canCast( typeMetaToScalarType(self.dtype()), typeMetaToScalarType(out.dtype()))")
        return _extreme_all(kind, self, _reduction_out(out, self, tuple(range(self.dim())), False))

    return kernel


register("max.unary_out")(_extreme_all_out("max"))
register("min.unary_out")(_extreme_all_out("min"))


def _extreme_with_index_kernel(kind):
    """max.dim/min.dim: values and first-occurrence indices of the extremes along ``dim``."""
    _, arg_reduction = _EXTREME[kind]

    def kernel(self, dim, keepdim=False, **outs):
        values, indices = outs.values()
        axes = _reduced_axes(self, dim)
        _check_nonempty(kind, self, axes)
        exact_dtype(self.dtype, values.dtype)
        exact_dtype(torch.int64, indices.dtype)
        _reduction_out(values, self, axes, keepdim, may_alias=False)
        _reduction_out(indices, self, axes, keepdim, may_alias=False)
        if values.numel() == 0:
            return values, indices
        array = _extreme_operand(self, f"{kind}_cpu").reshape(self.shape or (1,))
        axis = axes[0] if axes else 0
        index = arg_reduction(array, axis=axis, keepdims=True)
        write(values, np.take_along_axis(array, index, axis).reshape(values.shape))
        write(indices, index.reshape(indices.shape))
        return values, indices

    return kernel


register("max.dim_max")(_extreme_with_index_kernel("max"))
register("min.dim_min")(_extreme_with_index_kernel("min"))


@register("aminmax.out")
def aminmax_out(self, *, dim=None, keepdim=False, min, max):
    axes = _reduced_axes(self, dim)
    if any(self.shape[axis] == 0 for axis in axes) or (dim is None and self.numel() == 0):
        raise RuntimeError("aminmax(): cannot compute aminmax over an empty dimension as the operation has no "
                           "identity.")
    dims = () if dim is None else [dim]
    return amin_out(self, dims, keepdim, out=min), amax_out(self, dims, keepdim, out=max)


@register("_aminmax", "_aminmax.dim")
def deprecated_aminmax(self, dim=None, keepdim=False):
    warn_once("_aminmax is deprecated as of PyTorch 1.11 and will be removed in a future release. Use aminmax "
              "instead. This warning will only appear once per process.", stacklevel=4)
    return torch.aminmax(self, dim=dim, keepdim=keepdim)


def _arg_extreme(kind, self, dim, keepdim, out):
    if self.dtype.is_complex:
        raise RuntimeError(f"arg{kind}(): does not support complex input")
    if dim is None:
        if self.numel() == 0:
            raise IndexError(f"arg{kind}(): Expected reduction dim to be specified for input.numel() == 0.")
        exact_dtype(torch.int64, out.dtype)
        prepare_out(out, (1,) * self.dim() if keepdim else (), may_alias=True)
        return write(out, np.asarray(_EXTREME[kind][1](_accumuland(self).reshape(-1))).reshape(out.shape))
    axes = _reduced_axes(self, dim)
    _check_nonempty(f"arg{kind}", self, axes)
    exact_dtype(torch.int64, out.dtype)
    _reduction_out(out, self, axes, keepdim)
    if out.numel() == 0:
        return out
    array = _accumuland(self).reshape(self.shape or (1,))
    return write(out, _EXTREME[kind][1](array, axis=axes[0] if axes else 0, keepdims=True).reshape(out.shape))


@register("argmax.out")
def argmax_out(self, dim=None, keepdim=False, *, out):
    return _arg_extreme("max", self, dim, keepdim, out)


@register("argmin.out")
def argmin_out(self, dim=None, keepdim=False, *, out):
    return _arg_extreme("min", self, dim, keepdim, out)


# ---------------------------------------------------------------------------------------------
# Moments: var, std and their *_mean pairs
# ---------------------------------------------------------------------------------------------


def _moments(op_name, self, axes, correction, keepdim, outputs):
    """(variance, mean) as CPU forms them, with Bessel-style ``correction`` (default 1): in double for a real input
    (rounded on store), in the real dtype for a complex one. ``outputs``: the element count of CPU's result, which
    picks its kernel (an out= expanded over a kept dim widens ``axes``, not the result)."""
    if not _floating(self.dtype):
        raise RuntimeError("std and var only support floating point and complex dtypes")
    count = math.prod(self.shape[axis] for axis in axes)
    correction = 1 if correction is None else correction
    if count - correction <= 0:
        warnings.warn(
            f"{op_name}(): degrees of freedom is <= 0. Correction should be strictly less than the "
            "reduction factor (input numel divided by output numel).",
            stacklevel=3,
        )
    if self.dtype.is_complex:
        return _complex_moments(op_name, self, axes, correction, keepdim, outputs)
    return _real_moments(op_name, self, axes, correction, keepdim, outputs)


def _complex_moments(op_name, self, axes, correction, keepdim, outputs):
    """CPU's complex var: the real part's var plus the imaginary part's, each the real kernel's of that strided
    part rounded to the real dtype (std: the sum's square root, in it); the mean: the parts' means."""
    real = numpy_dtype(self.dtype.to_real())
    (real_variance, real_mean), (imaginary_variance, imaginary_mean) = (
        _real_moments(op_name, part, axes, correction, keepdim, outputs)
        for part in (torch.real(self), torch.imag(self)))
    mean = np.empty(real_mean.shape, np.complex128)
    mean.real, mean.imag = real_mean.astype(real), imaginary_mean.astype(real)
    return real_variance.astype(real) + imaginary_variance.astype(real), mean


def _real_moments(op_name, self, axes, correction, keepdim, outputs):
    array = _accumuland(self)
    count = math.prod(self.shape[axis] for axis in axes)
    with np.errstate(invalid="ignore", divide="ignore"):
        if op_name in ("var", "std") and array.dtype in _ALL_DEVIATIONS_DTYPES and outputs == 1:
            mean, m2 = _all_deviations(self, array)
        elif array.dtype != np.float64 or count >= _C.cpu_loops.GRAIN_SIZE:
            mean, m2 = _two_pass_in_double(array.astype(np.float64, copy=False), axes)
        else:
            mean, m2 = _welford(self, array, axes)
        variance = m2 / m2.dtype.type(max(count - correction, 0))
        if not keepdim:
            shape = _reduced_shape(self.shape, axes, False)
            variance, mean = variance.reshape(shape), mean.reshape(shape)
    return variance, mean


def _two_pass_in_double(array, axes):
    """(mean, m2) in double, vectorised: CPU's Welford sums are double too, so a float32 or 16-bit result rounds
    from either alike (every case measured; only a double rounding that lands on a float32 tie could differ). A
    float64 output of GRAIN_SIZE elements or more takes it too, within 1e-13 relative of CPU's Welford (per
    thread chunk, the states combined): replaying Welford is a Python step per element, a cliff past that size."""
    mean = np.add.reduce(array, axis=axes, keepdims=True) / math.prod(array.shape[axis] for axis in axes)
    deviation = array - mean
    return mean, np.add.reduce(deviation * deviation, axis=axes, keepdims=True)


def _welford(self, array, axes):
    """(mean, m2) of a float64 input of fewer than GRAIN_SIZE elements per output as CPU's WelfordOps form them
    (binary_kernel_reduce): each output's elements in TensorIterator's order, ``delta = x - mean; mean += delta / n;
    m2 += delta * (x - mean)``, step by step (not fused: measured), every output at once; 0 / 0 for an empty
    reduction. Keeps the reduced dims."""
    order, _, _, _ = _C.cpu_loops.reduction_iteration(self.shape, axes, self.stride())
    rows = _C.cpu_loops.reduced_rows(array, axes, order)
    mean = np.zeros(len(rows)) if rows.shape[1] else np.full(len(rows), np.nan)
    m2 = np.zeros(len(rows))
    for count, value in enumerate(rows.T, 1):
        delta = value - mean
        mean = mean + delta / count
        m2 = m2 + delta * (value - mean)
    kept_shape = _reduced_shape(self.shape, axes, True)
    return mean.reshape(kept_shape), m2.reshape(kept_shape)


_ALL_DEVIATIONS_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _all_deviations(self, array):
    """(mean, m2) of a float32/float64 ``var``/``std`` whose output is one element (every dim longer than 1 reduced:
    TensorIterator drops the others) as CPU's std_var_all_cpu forms them: the tensor's own ``mean()`` (the sum
    kernel's, in its dtype) taken as a double, then the squared deviations in double in the order a one-input
    TensorIterator walks the tensor: at::parallel_reduce's chunk per thread past GRAIN_SIZE, each 2-d loop call's
    added from +0.0 into its chunk's sum, the chunks' sums added in thread order."""
    axes = tuple(range(array.ndim))
    mean = mean_array(array, axes, True, _sum_layout(self, self.dtype)).astype(np.float64)
    walk, sizes = _C.cpu_loops.input_iteration(tuple(self.shape), tuple(self.stride()))  # innermost first
    deviation = (array.astype(np.float64, copy=False) - mean).transpose(walk[::-1]).reshape(-1)
    squares = deviation * deviation
    chunk = _C.cpu_loops.parallel_chunk_length(len(squares), torch.get_num_threads())
    total = 0.0
    for begin in range(0, len(squares), chunk):
        total += _calls_summed(squares, sizes, begin, min(begin + chunk, len(squares)))
    return mean, np.full(mean.shape, total)


def _calls_summed(squares, sizes, begin, end):
    """``squares[begin:end]`` summed as one thread's chunk of std_var_all_cpu: each 2-d loop call's elements added
    in order, the calls' sums added in order from +0.0 (``cpu_loops.serial_calls``). Between its first and last
    whole span of the two innermost dims every call is one such span, so those are summed together, in fewer
    Python steps than calls (a non-coalescing view makes a call per few elements)."""
    if len(sizes) <= 1:
        return _in_order(squares[begin:end])
    first, last = _C.cpu_loops.whole_spans(sizes, begin, end)
    spans = _rows_in_order(squares[first:last].reshape(-1, sizes[0] * sizes[1]))
    return _in_order(np.concatenate([_call_sums(squares, sizes, begin, first), spans,
                                     _call_sums(squares, sizes, last, end)]))


def _call_sums(squares, sizes, begin, end):
    """The sum of each 2-d loop call over ``squares[begin:end]``, in order (a span's head or tail: at most two)."""
    sums, offset = [], begin
    for length in _C.cpu_loops.serial_calls(sizes, begin, end):
        sums.append(_in_order(squares[offset:offset + length]))
        offset += length
    return sums


def _in_order(values):
    """The sum of a 1-d array added element by element from +0.0 (0.0 for none)."""
    return float(np.add.accumulate(values)[-1]) + 0.0 if len(values) else 0.0


def _rows_in_order(rows):
    """Each row of a 2-d array summed element by element: column by column or row by row, whichever is fewer."""
    if rows.shape[1] <= len(rows):
        total = np.zeros(len(rows))
        for column in rows.T:
            total += column
        return total
    return np.array([_in_order(row) for row in rows])


def _moment_kernel(op_name, wants_std, wants_mean):
    """A kernel for ``var``/``std`` (and their ``_mean`` pairs) in functional or out= form."""

    def kernel(self, dim=None, *, correction=None, keepdim=False, out=None):
        axes = _reduced_axes(self, dim)
        if out is not None and not torch.can_cast(self.dtype.to_real(), out.dtype):
            raise cannot_cast(self.dtype.to_real(), out.dtype)
        shape = _reduced_shape(self.shape, axes, keepdim)
        expanded = expanded_kept_axes(as_numpy(out), self.shape, axes, keepdim) if out is not None and tuple(
            out.shape) == shape else ()
        variance, mean = _moments(op_name, self, tuple(sorted(axes + expanded)), correction, True, math.prod(shape))
        variance = np.broadcast_to(_into_expanded(variance, self.shape, axes, expanded, keepdim), shape)
        spread = store(np.asarray(np.sqrt(variance) if wants_std else variance), self.dtype.to_real(), out=out,
                       may_alias=True)
        if wants_mean:
            return spread, store(np.asarray(mean).reshape(shape), self.dtype)  # var_mean has no out=: none expanded
        return spread

    return kernel


register("var.correction", "var.correction_out")(_moment_kernel("var", wants_std=False, wants_mean=False))
register("std.correction", "std.correction_out")(_moment_kernel("std", wants_std=True, wants_mean=False))
register("var_mean.correction")(_moment_kernel("var_mean", wants_std=False, wants_mean=True))
register("std_mean.correction")(_moment_kernel("std_mean", wants_std=True, wants_mean=True))


# ---------------------------------------------------------------------------------------------
# Norms
# ---------------------------------------------------------------------------------------------


def _vector_norm(self, array, ord, axes, keepdim, dtype):
    """The ``ord``-norm over ``axes`` of the tensor ``self`` as ``array`` (converted to ``dtype``, which the kernel
    iterates, in its accumulation type), as CPU forms it (``cpu_replay.norm_kernel``)."""
    shape = _reduced_shape(self.shape, axes, keepdim)
    if all(self.shape[axis] == 1 for axis in axes):  # linalg_vector_norm's shortcut: abs(x) (or x != 0) itself
        return (array != 0 if ord == 0 else absolute(array)).reshape(shape)
    if not array.size:  # CPU fills an empty iteration with the identity (a negative ord refused it above)
        return np.zeros(shape, array.real.dtype)
    if ord in (math.inf, -math.inf):  # max/min of abs(x) (measured: complex128's vector lanes), NaN first
        return (np.max if ord > 0 else np.min)(absolute(array), axis=axes, keepdims=keepdim)
    # the norm ops' std::abs (a real square needs none)
    magnitude = array if ord == 2 and array.dtype.kind == "f" else c_abs(array)
    strides, itemsize = _sum_layout(self, dtype) or iterated_layout(array, None)
    order, sizes, output_strides, input_strides = _C.cpu_loops.reduction_iteration(tuple(self.shape), axes,
                                                                                    tuple(strides))
    if ord == 2 and dtype in _LASTDIM_NORM_DTYPES and output_strides.count(0) == 1 and output_strides[0] == 0 and \
            input_strides[0] == 1:
        rows = np.ascontiguousarray(_C.cpu_loops.reduced_rows(magnitude, axes, order))
        norms = norm_kernel.lastdim_norm_two(rows, itemsize)
    else:
        columns = _C.cpu_loops.reduced_rows(magnitude, axes, order, elements_first=True)
        norms = _projected_norm(norm_kernel.sequential_sums(_norm_terms(columns, ord), torch.get_num_threads()), ord)
    return norms.reshape(shape)


_LASTDIM_NORM_DTYPES = (torch.float32, torch.float64, torch.bfloat16)  # binary_kernel_reduce_lastdim's


def _norm_terms(magnitude, ord):
    """What CPU's NormZeroOps/NormOneOps/NormTwoOps/NormOps add per element, in the accumulation type (an ``ord``
    of p rounded to it: ``acc_t(p)``)."""
    if ord == 0:
        return (magnitude != 0).astype(magnitude.dtype)
    if ord == 1:
        return magnitude
    if ord == 2:
        return magnitude * magnitude
    return _C.libm.power(magnitude, ord)  # std::pow, as the kernel calls it


def _projected_norm(total, ord):
    """A sum of ``_norm_terms`` made the norm, in the accumulation type (``1 / p`` too, as CPU's ``acc_t(1.0) /
    norm_``)."""
    if ord in (0, 1):
        return total
    if ord == 2:
        return np.sqrt(total)
    real = total.dtype.type
    return _C.libm.power(total, real(1) / real(ord))


def _norm_into(self, ord, dim, keepdim, dtype, out):
    if not _floating(self.dtype):
        raise RuntimeError(f"linalg.vector_norm: Expected a floating point or complex tensor as input. "
                           f"Got {scalar_type_name(self.dtype)}")
    axes = _reduced_axes(self, dim)
    if (ord < 0 or ord == math.inf) and any(self.shape[axis] == 0 for axis in axes):
        raise RuntimeError(f"linalg.vector_norm cannot compute the {ord} norm on an empty tensor because the "
                           "operation does not have an identity")
    exact_dtype((dtype or self.dtype).to_real(), out.dtype)  # a complex dtype= still gives a real norm
    _reduction_out(out, self, axes, keepdim)
    expanded = expanded_kept_axes(as_numpy(out), self.shape, axes, keepdim)
    with _C.vpu.ignoring_fp_errors():  # silent, as CPU's, when squares or powers overflow to inf
        norm = _vector_norm(self, _accumuland(self, dtype), ord, tuple(sorted(axes + expanded)), True,
                            dtype or self.dtype)
    return write(out, np.asarray(_into_expanded(norm, self.shape, axes, expanded, keepdim)))


@register("linalg_vector_norm.out")
def linalg_vector_norm_out(self, ord=2, dim=None, keepdim=False, *, dtype=None, out):
    return _norm_into(self, ord, dim, keepdim, dtype, out)


@register("norm.out")
def norm_out(self, p, dim, keepdim=False, *, out):
    return _norm_into(self, 2 if p is None else p, dim, keepdim, None, out)


@register("norm.dtype_out")
def norm_dtype_out(self, p, dim, keepdim, *, dtype, out):
    return _norm_into(self, 2 if p is None else p, dim, keepdim, dtype, out)


def _summed_into(out, total):
    """CPU sums into ``out`` itself, so a real ``out`` keeps only the real parts of a complex sum."""
    return total if out.dtype.is_complex else total.real


@register("logsumexp.out")
def logsumexp_out(self, dim, keepdim=False, *, out):
    if not _floating(out.dtype):
        raise RuntimeError(f"logsumexp(): Expected floating point type for result tensor, but got: "
                           f"{scalar_type_name(out.dtype)}")
    _check_dtype(self, "exp_vml_cpu", _not_complex_half)
    axes = _reduced_axes(self, dim)
    if self.numel() and self.dim() and not keepdim and not dim:
        # CPU adds the keepdim maxes of dim=[] (shaped [1, ...]) into a 0-d result in place.
        raise shape_mismatch((), [1] * self.dim())
    _reduction_out(out, self, axes, keepdim)
    check_no_internal_overlap(out)  # CPU's composite writes its steps into out in place, which refuses overlap
    array = _accumuland(self, self.dtype if _floating(self.dtype) else torch.get_default_dtype())
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if array.size == 0:
            return write(out, np.asarray(np.log(_summed_into(out, np.sum(np.exp(array), axis=axes, keepdims=keepdim)))))
        # Shift by the max (of the real parts: CPU's complex rule) for stability, except where the max is
        # infinite (it would make NaNs).
        shift = np.max(array.real, axis=axes, keepdims=True)
        shift = np.where(np.isinf(shift), 0, shift).astype(array.real.dtype, copy=False)
        # CPU composes it from ops on tensors of the dtype: bf16/fp16 round each one's result
        rounded = loop_rounding(self.dtype, array.dtype)
        total = rounded(_summed_into(out, np.sum(rounded(np.exp(rounded(array - shift))), axis=axes, keepdims=keepdim)))
        result = rounded(rounded(np.log(total)) + (shift if keepdim else shift.reshape(total.shape)))
    return write(out, np.asarray(result))


# ---------------------------------------------------------------------------------------------
# Boolean reductions
# ---------------------------------------------------------------------------------------------


def _truth_kernel(reduction):
    name = reduction.__name__

    def kernel(self, dim=None, keepdim=False, *, out):
        if out.dtype not in (torch.bool, torch.uint8):
            raise RuntimeError(f"{name} only supports bool tensor for result, got: {scalar_type_name(out.dtype)}")
        # Unlike the other reductions, any/all read dim=[] as "reduce nothing".
        axes = () if dim == [] else _reduced_axes(self, dim)
        _reduction_out(out, self, axes, keepdim)
        array = _accumuland(self)
        return _reduce_into(out, reduction, array != 0 if array.dtype != np.bool_ else array, axes, keepdim)

    return kernel


register("any.out", "any.dims_out", "any.all_out")(_truth_kernel(np.any))
register("all.out", "all.dims_out", "all.all_out")(_truth_kernel(np.all))


@register("count_nonzero.dim_IntList")
def count_nonzero(self, dim):
    axes = _reduced_axes(self, dim)
    array = operand(self)
    if array.dtype != np.bool_ and array.dtype.kind not in "iufc":
        array = array.astype(np.float32)  # bfloat16/float8: NumPy compares them through float32
    return store(np.asarray(np.count_nonzero(array, axis=axes)).reshape(_reduced_shape(self.shape, axes, False)),
                 torch.int64)


# ---------------------------------------------------------------------------------------------
# Order statistics: median, nanmedian, mode
# ---------------------------------------------------------------------------------------------


def _median_along_last(array, ignore_nan):
    """Values and indices of the lower median of each row, NaN handled the way CPU's median does.

    median returns the first NaN of a row holding one; nanmedian takes the lower median of the
    non-NaN values. A stable sort puts NaNs last in their original order.
    """
    order = np.argsort(array, axis=-1, kind="stable")
    size = array.shape[-1]
    nan_count = np.isnan(array).sum(axis=-1, keepdims=True) if array.dtype.kind == "f" else 0
    if ignore_nan:
        position = np.maximum((size - nan_count - 1) // 2, 0)
    else:
        position = np.where(nan_count > 0, size - nan_count, (size - 1) // 2)
    position = np.broadcast_to(position, array.shape[:-1] + (1,))
    index = np.take_along_axis(order, position, -1)
    return np.take_along_axis(array, index, -1), index


def _median_all(op_name, self, ignore_nan):
    _check_dtype(self, f"{op_name}_cpu", _real_not_bool)
    if self.numel() == 0:
        return store(np.asarray(np.nan), self.dtype)
    value, _ = _median_along_last(_accumuland(self).reshape(-1), ignore_nan)
    return store(value.reshape(()), self.dtype)


@register("median")
def median(self):
    return _median_all("median", self, ignore_nan=False)


@register("nanmedian")
def nanmedian(self):
    return _median_all("nanmedian", self, ignore_nan=True)


def _median_values_error(self, values):
    return (f"Expected tensor for 'values' to have the same type as tensor for argument #2 'self'; but type "
            f"{values.type()} does not equal {torch.empty(0, dtype=self.dtype).type()} (while checking arguments for "
            "median)")  # CPU names self's CPU type; naming it needs no copy of self


def _median_indices_error(indices):
    return (f"Expected tensor for argument #1 'indices' to have scalar type Long; but got {indices.type()} instead "
            "(while checking arguments for median)")


# CPU's errors for a values out= not of self's dtype and an indices out= not int64, each op in its own
# words (nanmedian checks under median's name)
_SELECTION_OUT_ERRORS = {
    "median": (_median_values_error, _median_indices_error),
    "nanmedian": (_median_values_error, _median_indices_error),
    "mode": (lambda self, values: f"expected scalar type '{scalar_type_name(self.dtype)}' but got "
                                  f"'{scalar_type_name(values.dtype)}' for values output",
             lambda indices: f"expected scalar type 'Long' but got '{scalar_type_name(indices.dtype)}' for indices output"),
    "kthvalue": (lambda self, values: "output values must be of same type as input",
                 lambda indices: "output indices must be of scalar type Long"),
}


def _selection_by_dim(op_name, along_last, supported):
    """median/nanmedian/mode along one dim into (values, indices), with CPU's checks."""

    def kernel(self, dim=-1, keepdim=False, **outs):
        _check_dtype(self, f"{op_name}_cpu", supported)
        axes = _reduced_axes(self, dim)
        _check_nonempty(op_name, self, axes)
        shape = _reduced_shape(self.shape, axes, keepdim)
        if outs:
            values, indices = outs.values()
            values_error, indices_error = _SELECTION_OUT_ERRORS[op_name]
            if values.dtype != self.dtype:
                raise RuntimeError(values_error(self, values))
            if indices.dtype != torch.int64:
                raise RuntimeError(indices_error(indices))
            prepare_out(values, shape, distinct=(self,))
            prepare_out(indices, shape, distinct=(self,))
        else:
            values, indices = empty(shape, self.dtype), empty(shape, torch.int64)
        if values.numel() == 0:
            return values, indices
        axis = axes[0] if axes else 0
        value, index = along_last(_along_last(_accumuland(self), axis))
        write(values, _from_last(value, axis, self.dim()).reshape(shape))
        write(indices, _from_last(index, axis, self.dim()).reshape(shape))
        return values, indices

    return kernel


register("median.dim_values")(
    _selection_by_dim("median", lambda rows: _median_along_last(rows, ignore_nan=False), _real_not_bool))
register("nanmedian.dim_values")(
    _selection_by_dim("nanmedian", lambda rows: _median_along_last(rows, ignore_nan=True), _real_not_bool))


def _mode_along_last(array):
    """The most frequent value of each row (the smallest on ties) and the index CPU reports for it.

    CPU std::sorts each row and keeps the first longest run of equal values, reporting the position of
    that run's last element, which is wherever std::sort leaves it among the equal keys.
    """
    rows = array.reshape(math.prod(array.shape[:-1]), array.shape[-1])
    order = libstdcxx_order.sort_order(libstdcxx_order.ranks(rows)).reshape(array.shape)
    ordered = np.take_along_axis(array, order, -1)
    positions = np.arange(array.shape[-1])
    run_starts = np.concatenate(
        [np.ones(array.shape[:-1] + (1,), bool), ordered[..., 1:] != ordered[..., :-1]], axis=-1)
    run_ends = np.concatenate([run_starts[..., 1:], np.ones(array.shape[:-1] + (1,), bool)], axis=-1)
    run_start = np.maximum.accumulate(np.where(run_starts, positions, 0), axis=-1)
    run_length = np.where(run_ends, positions - run_start + 1, 0)
    end = np.argmax(run_length, axis=-1)[..., None]
    return np.take_along_axis(ordered, end, -1), np.take_along_axis(order, end, -1)


register("mode", "mode.values")(_selection_by_dim("mode", _mode_along_last, _real))


# ---------------------------------------------------------------------------------------------
# Scans: cumsum, cumprod, cummax/cummin, logcumsumexp
# ---------------------------------------------------------------------------------------------


# CPU's scans hold their running value in ``acc_type<T, /*is_cuda=*/false>``: double for float32 and complex
# double for complex float (wider than the opmath of the other kernels), so each output rounds once.
_CPU_SCAN_ACCUMULATOR = {torch.float32: np.float64, torch.complex64: np.complex128}


def _scan_accumuland(self, dtype=None):
    """``self`` as CPU's scans read it: converted to ``dtype``, widened to the scan's accumulator."""
    array = _accumuland(self, dtype)
    accumulator = _CPU_SCAN_ACCUMULATOR.get(dtype or self.dtype)
    return array if accumulator is None else array.astype(accumulator, copy=False)


def _scan_kernel(accumulate):
    """cumsum/cumprod: convert to the result dtype, accumulate in CPU's scan accumulator, round each output."""
    kernel_name = f"{accumulate.__name__}_out_cpu"

    def kernel(self, dim, *, dtype=None, out):
        if out.dtype is torch.bool:  # CPU's scan loops have no bool result (a bool input sums into int64)
            raise not_implemented_for(kernel_name, out.dtype)
        axis = wrap_dim(dim, self.dim())
        if prepare_out(out, self.shape, inputs=(self,)).numel() == 0:
            return out
        if out.dtype is torch.complex32:  # nor a ComplexHalf one (an empty result never reaches the loop)
            raise not_implemented_for(kernel_name, out.dtype)
        array = _scan_accumuland(self, out.dtype).reshape(self.shape or (1,))
        target = as_numpy(out).reshape(array.shape)
        with np.errstate(all="ignore"):  # inf - inf and overflow give NaN/inf silently, as on CPU
            if target.dtype == array.dtype and out.is_contiguous():
                accumulate(array, axis=axis, out=target)
                return out
            return write(out, accumulate(array, axis=axis).reshape(out.shape))

    return kernel


register("cumsum.out")(_scan_kernel(np.cumsum))
register("cumprod.out")(_scan_kernel(np.cumprod))


def _running_extreme_kernel(kind, ufunc):
    """cummax/cummin: the running extreme and the index of its latest occurrence.

    CPU takes a new element when it is NaN or ties/passes the running extreme, so the index at
    each position is the last one where the element equals the running extreme there.
    """

    def kernel(self, values, indices, dim):
        _check_dtype(self, f"{kind}_cpu", _real)
        array = _accumuland(self)
        running = ufunc.accumulate(array, axis=dim)
        takes = array == running
        if array.dtype.kind == "f":
            takes |= np.isnan(array)
        shape = [1] * array.ndim
        shape[dim] = array.shape[dim]
        positions = np.arange(array.shape[dim]).reshape(shape)
        write(values, running)
        write(indices, np.maximum.accumulate(np.where(takes, positions, 0), axis=dim))

    return kernel


register("_cummax_helper")(_running_extreme_kernel("cummax", np.maximum))
register("_cummin_helper")(_running_extreme_kernel("cummin", np.minimum))


def _logcumsumexp_into(self, dim, out):
    """CPU's running log-sum-exp is held in its scan accumulator, so each output rounds once."""
    _check_dtype(self, "logcumsumexp_out_cpu", floating_or_wide_complex)
    axis = wrap_dim(dim, self.dim())
    if prepare_out(out, self.shape, self.dtype, inputs=(self,)).numel() == 0:
        return out
    array = _scan_accumuland(self).reshape(self.shape or (1,))
    with np.errstate(all="ignore"):
        if array.dtype.kind == "c":
            return write(out, _complex_running_logaddexp(array, axis).reshape(out.shape))
        return write(out, np.logaddexp.accumulate(array, axis=axis).reshape(out.shape))


def _complex_running_logaddexp(array, axis):
    """CPU's complex scan: from -inf + 0j, each step is ``complex_logaddexp(element, running)``."""
    along = np.moveaxis(array, axis, 0)
    result = np.empty_like(along)
    running = np.full(along.shape[1:], complex(-math.inf, 0), array.dtype)
    for position, element in enumerate(along):
        running = result[position] = complex_logaddexp(element, running)
    return np.moveaxis(result, 0, axis)


@register("_logcumsumexp")
def logcumsumexp(self, dim):
    return _logcumsumexp_into(self, dim, empty(self.shape, self.dtype))


@register("_logcumsumexp.out")
def logcumsumexp_out(self, dim, *, out):
    return _logcumsumexp_into(self, dim, out)


# ---------------------------------------------------------------------------------------------
# equal, kthvalue, hash_tensor
# ---------------------------------------------------------------------------------------------


@register("equal")
def equal(self, other):
    """Same sizes and equal elements after promotion to the common dtype (so NaN is never equal)."""
    for tensor in (self, other):
        if tensor.device.type != "tpu":
            raise RuntimeError(f"Cannot compare two tensors on different devices. Got: {self.device} and "
                               f"{other.device}")
    if self.shape != other.shape:
        return False
    common = torch.result_type(self, other)
    return bool(np.array_equal(converted(operand(self), common), converted(operand(other), common)))


def _quickselect_index(row, k):
    """The index CPU's quick_select_template leaves at position k (median-of-three Hoare partition).

    Only rows where the k-th value is tied need it: elsewhere every selection gives the same index.
    """
    values, indices = list(row), list(range(len(row)))

    def greater_or_nan(a, b):
        return (math.isnan(a) and not math.isnan(b)) or a > b

    def swap(a, b):
        values[a], values[b] = values[b], values[a]
        indices[a], indices[b] = indices[b], indices[a]

    low, high = 0, len(values) - 1
    while high > low:
        if high == low + 1:
            if greater_or_nan(values[low], values[high]):
                swap(low, high)
            break
        swap(low + (high - low) // 2, low + 1)
        for a, b in ((low + 1, high), (low, high), (low + 1, low)):
            if greater_or_nan(values[a], values[b]):
                swap(a, b)
        i, j, pivot = low + 1, high, values[low]
        while True:
            i += 1
            while greater_or_nan(pivot, values[i]):
                i += 1
            j -= 1
            while greater_or_nan(values[j], pivot):
                j -= 1
            if j < i:
                break
            swap(i, j)
        swap(low, j)
        if j <= k:
            low = i
        if j >= k:
            high = j - 1
    return indices[k]


def _kth_along_last(rows, k):
    """The k-th smallest (0-based) of each row, NaN above everything, and the index CPU reports."""
    order = np.argsort(rows, axis=-1, kind="stable")  # NaNs last
    index = order[..., k:k + 1]
    value = np.take_along_axis(rows, index, -1)
    same = (rows == value) | (np.isnan(rows) & np.isnan(value))
    flat_rows, flat_index = rows.reshape(-1, rows.shape[-1]), index.reshape(-1)
    for row in np.flatnonzero(same.reshape(flat_rows.shape).sum(axis=-1) > 1):
        flat_index[row] = _quickselect_index(flat_rows[row].tolist(), k)
    return value, flat_index.reshape(index.shape)


@register("kthvalue.values")
def kthvalue_values(self, k, dim=-1, keepdim=False, *, values, indices):
    axis = wrap_dim(dim, self.dim())
    size = self.shape[axis] if self.dim() else 1
    if self.numel() and not 1 <= k <= size:
        raise RuntimeError(f"kthvalue(): selected number k out of range for dimension {axis}")
    select = _selection_by_dim("kthvalue", lambda rows: _kth_along_last(rows, k - 1), _real_not_bool)
    return select(self, dim, keepdim, values=values, indices=indices)


def _hash_bits(self):
    """Each element widened to 64 bits (float64, int64 or uint64) and read as uint64."""
    array = operand(self)
    if self.dtype.is_floating_point:
        return converted(array, torch.float64).view(np.uint64)
    if self.dtype == torch.bool or not self.is_signed():
        return array.astype(np.uint64)
    return array.astype(np.int64).view(np.uint64)


@register("hash_tensor.out")
def hash_tensor_out(self, dim=(), *, keepdim=False, mode=0, out):
    if mode != 0:
        raise RuntimeError(f"hash_tensor only supports mode=0 (xor_sum) but got mode={mode}")
    if self.numel() == 0 and not dim:
        raise RuntimeError("hash_tensor: Expected reduction dim to be specified for input.numel() == 0. Specify "
                           "the reduction dim with the 'dim' argument.")
    axes = _reduced_axes(self, dim)
    _reduction_out(out, self, axes, keepdim)
    return _reduce_into(out, np.bitwise_xor.reduce, _hash_bits(self).reshape(self.shape), axes, keepdim)


# ---------------------------------------------------------------------------------------------
# segment_reduce: reductions over runs of consecutive slices along one axis
# ---------------------------------------------------------------------------------------------

_SEGMENT_REDUCTIONS = {"sum": "sum", "prod": "prod", "mean": "mean", "max": "max", "amax": "max",
                       "min": "min", "amin": "min"}
_SEGMENT_IDENTITY = {"sum": 0.0, "mean": 0.0, "prod": 1.0, "max": -math.inf, "min": math.inf}
_SEGMENT_COMBINE = {"sum": np.add, "mean": np.add, "prod": np.multiply, "max": np.maximum, "min": np.minimum}


def _segment_reduction(reduce):
    if reduce not in _SEGMENT_REDUCTIONS:
        raise RuntimeError(f"reduce argument must be either sum, prod, mean, amax or amin, got {reduce}")
    return _SEGMENT_REDUCTIONS[reduce]


def _segment_offsets(lengths, offsets, axis, data):
    """(outer, segments + 1) start offsets of each segment and the output's shape."""
    if lengths is not None:
        counts = operand(lengths).astype(np.int64)
        counts = counts.reshape(-1, counts.shape[-1] if counts.ndim else 1)
        starts = np.concatenate([np.zeros((counts.shape[0], 1), np.int64), np.cumsum(counts, axis=-1)], axis=-1)
        segments = lengths.shape[-1] if lengths.dim() else 1
    else:
        starts = operand(offsets).astype(np.int64)
        starts = starts.reshape(-1, starts.shape[-1])
        segments = offsets.shape[-1] - 1
    return starts, tuple(data.shape[:axis]) + (segments,) + tuple(data.shape[axis + 1:])


def _check_segments(data, reduce, lengths, indices, offsets, axis, unsafe):
    if indices is not None:
        raise RuntimeError("segment_reduce(): indices based reduction is not supported yet.")
    if lengths is None and offsets is None:
        raise RuntimeError("segment_reduce(): Either lengths or offsets must be defined.")
    if data.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise not_implemented_for("_segment_reduce_cpu", data.dtype)
    given = lengths if lengths is not None else offsets
    if given.dtype not in (torch.int32, torch.int64):
        raise not_implemented_for("_segment_reduce_lengths_cpu_kernel1", given.dtype)
    if lengths is not None and not unsafe:
        counts = operand(lengths)
        if (counts < 0).any():
            raise RuntimeError("lengths contains negative value!")
        if (counts.sum(axis=-1) != data.shape[axis]).any():
            raise RuntimeError("segment_reduce(): Expected all rows of lengths along axis to sum to "
                               "data.size(lengths.dim()-1) when !unsafe.")


def _segment_ids(starts, size):
    """For each outer row and position along the axis: its segment, or -1 outside every segment."""
    positions = np.arange(size)
    ids = np.stack([np.searchsorted(row, positions, side="right") - 1 for row in starts])
    inside = (positions >= starts[:, :1]) & (positions < starts[:, -1:]) & (ids < starts.shape[1] - 1)
    return np.where(inside, ids, -1)


def _segment_layout(data, axis):
    """``data`` as (outer, axis, inner)."""
    outer = int(np.prod(data.shape[:axis], dtype=np.int64))
    return operand(data).reshape(outer, data.shape[axis], -1)


@register("segment_reduce", "segment_reduce.out")
def segment_reduce(data, reduce, *, lengths=None, indices=None, offsets=None, axis=0, unsafe=False,
                   initial=None, out=None):
    """CPU's loop per segment: start from ``initial`` (or the identity), fold each slice in order in
    the data dtype (NaN sticks in max/min), mean divides non-NaN sums by the length, and an empty
    segment without ``initial`` has mean NaN."""
    reduction = _segment_reduction(reduce)
    axis = wrap_dim(axis, data.dim())
    _check_segments(data, reduce, lengths, indices, offsets, axis, unsafe)
    starts, shape = _segment_offsets(lengths, offsets, axis, data)
    values = _segment_layout(data, axis)
    dtype = values.dtype
    segments = starts.shape[1] - 1
    start_value = _SEGMENT_IDENTITY[reduction] if initial is None else initial
    result = np.full((values.shape[0], segments, values.shape[2]), start_value, dtype)
    ids = _segment_ids(starts, values.shape[1])
    outer, position = np.nonzero(ids >= 0)
    with np.errstate(all="ignore"):
        _SEGMENT_COMBINE[reduction].at(result, (outer, ids[outer, position]), values[outer, position])
        if reduction == "mean":
            counts = np.diff(starts, axis=-1)[..., None]
            divided = (result / counts.astype(dtype)).astype(dtype)
            result = np.where(counts == 0, np.nan if initial is None else result,
                              np.where(np.isnan(result), result, divided))
    return store(result.reshape(shape), data.dtype, out=out, distinct=(data,))


@register("_segment_reduce_backward", "_segment_reduce_backward.out")
def segment_reduce_backward(grad, output, data, reduce, *, lengths=None, offsets=None, axis=0, initial=None,
                            out=None):
    """CPU's gradient: max/min send the gradient to every extreme (or NaN) element and share positive
    gradients among ties; prod divides grad * output by the element, recomputing the product of the
    others where the element is 0 or NaN."""
    reduction = _segment_reduction(reduce)
    axis = wrap_dim(axis, data.dim())
    starts, _ = _segment_offsets(lengths, offsets, axis, data)
    values = _segment_layout(data, axis)
    dtype = values.dtype
    segments = starts.shape[1] - 1
    grads = operand(grad).reshape(values.shape[0], segments, -1)
    results = operand(output).reshape(values.shape[0], segments, -1)
    ids = _segment_ids(starts, values.shape[1])
    inside = (ids >= 0)[..., None]
    segment = np.maximum(ids, 0)[..., None]
    outer = np.arange(values.shape[0])[:, None, None]
    inner = np.arange(values.shape[2])[None, None, :]
    segment_grad = grads[outer, segment, inner]
    segment_result = results[outer, segment, inner]
    with np.errstate(all="ignore"):
        if reduction in ("max", "min"):
            hit = inside & (np.isnan(values) | (values == segment_result))
            gradient = np.where(hit, segment_grad, 0).astype(dtype)
            ties = np.zeros(results.shape, np.int64)
            np.add.at(ties, (outer, segment, inner), hit.astype(np.int64))
            ties = ties[outer, segment, inner]
            gradient = np.where((ties >= 2) & (gradient > 0), gradient / ties.astype(dtype), gradient)
        elif reduction == "mean":
            counts = np.diff(starts, axis=-1)[outer[..., 0], segment[..., 0]][..., None]
            gradient = np.where(inside, segment_grad / counts.astype(dtype), 0)
        elif reduction == "sum":
            gradient = np.where(inside, segment_grad, 0)
        else:
            gradient = np.where(inside, (segment_grad * segment_result).astype(dtype) / values, 0).astype(dtype)
            start = 1.0 if initial is None else initial
            for o, a, i in zip(*np.nonzero(inside & (np.isnan(values) | (values == 0)))):
                s = ids[o, a]
                others = np.delete(values[o, starts[o, s]:starts[o, s + 1], i], a - starts[o, s])
                exclusive = dtype.type(start)
                for value in others:
                    exclusive = dtype.type(exclusive * value)
                gradient[o, a, i] = grads[o, s, i] * exclusive
    return store(gradient.astype(dtype).reshape(data.shape), data.dtype, out=out, distinct=(grad, output, data))
