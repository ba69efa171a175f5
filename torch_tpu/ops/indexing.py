"""Indexing kernels: advanced indexing, gather/scatter, masks, embedding.

Every kernel checks its indices the way the CPU kernel of the same op does (some
wrap negative indices, some reject them, each with its own wording), then lets
NumPy move the elements. Accumulating kernels use ``ufunc.at`` in the tensor's own
dtype: like the CPU loops it rounds after every addition, so duplicate indices
accumulate exactly as on CPU.
"""


import numpy as np
import torch
from torch._prims_common import alert_not_deterministic

from .. import _C, _sync_debug
from .._errors import (cpp_type_name, indices_on_another_device, not_implemented_for, scalar_type_name,
                       warn_at_the_users_line)
from ._common import (SIXTEEN_BIT, as_numpy, broadcast_shapes, check_scalar_fits, converted, empty, empty_with_array,
                      exact_dtype, operand, opmath_operand, prepare_out, store, wrap_dim, write)
from ._overlap import check_no_internal_overlap, check_no_overlap, check_no_partial_overlap, warn_if_expanded
from ._registry import register
from .copy import cpu_tensor_as_numpy
from .pointwise import scalar

_INDEX_DTYPES = (torch.int64, torch.int32)


# ---------------------------------------------------------------------------
# index checking


def _dim_error(exception=RuntimeError, prefix=""):
    def error(index, dim, size):
        return exception(f"{prefix}index {index} is out of bounds for dimension {dim} with size {size}")

    return error


def _fixed_error(exception, message):
    return lambda index, dim, size: exception(message)


def _flat_error(index, dim, size):
    return IndexError(f"out of range: tried to access index {index} on a tensor of {size} elements.")


def checked_indices(indices, size, *, wrap, error, dim=0):
    """``indices`` as int64 NumPy, in range for a dimension of ``size``, negatives wrapped if ``wrap``."""
    indices = np.asarray(indices)
    if indices.size == 0:
        return indices.astype(np.int64, copy=False)
    low = -size if wrap else 0
    smallest = indices.min()  # in range when its extremes are: two reductions, not two comparisons and a third pass
    if smallest < low or indices.max() >= size:
        out_of_range = (indices < low) | (indices >= size)  # only to name the first one, as CPU does
        raise error(int(indices[out_of_range].flat[0]), dim, size)
    if wrap and smallest < 0:
        return np.where(indices < 0, indices + size, indices)
    return indices.astype(np.int64, copy=False)


def _index_tensor_as_numpy(index):
    """Indices may live on the CPU for the advanced-indexing ops, as on CUDA."""
    if index.device.type == "tpu":
        return as_numpy(index)
    return cpu_tensor_as_numpy(index)


def _along(dim, index):
    """The NumPy key selecting ``index`` along ``dim`` and everything along the other dims."""
    return (slice(None),) * dim + (index,)


def _at_least_1d(array):
    return array.reshape(1) if array.ndim == 0 else array


# ---------------------------------------------------------------------------
# advanced indexing: x[i, mask, None-as-slice]


def advanced_index_key(self, indices):
    """The NumPy key for aten's ``indices`` list: None is a full slice, bool tensors are masks."""
    if len(indices) > self.dim():
        raise IndexError(f"too many indices for tensor of dimension {self.dim()}")
    if self.device.type != "tpu" and any(index is not None and index.device.type == "tpu" for index in indices):
        raise indices_on_another_device(self.device)
    key, dim = [], 0
    for index in indices:
        if index is None:
            key.append(slice(None))
            dim += 1
            continue
        if index.dtype in (torch.bool, torch.uint8):
            if index.dtype is torch.uint8:
                warn_at_the_users_line(UINT8_INDEX_DEPRECATED)
            mask = _index_tensor_as_numpy(index).astype(bool, copy=False)
            _check_mask_shape(self, mask, dim, len(key))
            key.append(mask)
            dim += max(mask.ndim, 0)
            continue
        if index.dtype not in _INDEX_DTYPES:
            raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
        size = self.shape[dim]
        indexed_before = sum(_index_arrays_in(part) for part in key)
        key.append(checked_indices(_index_tensor_as_numpy(index), size, wrap=True, error=_advanced_index_error,
                                   dim=indexed_before))
        dim += 1
    _check_indices_broadcast(key)
    return tuple(key)


UINT8_INDEX_DEPRECATED = "indexing with dtype torch.uint8 is now deprecated, please use a dtype torch.bool instead."


def _advanced_index_error(index, dim, size):
    """CPU's wording: ``dim`` counts the index tensors before this one (CPU moves indexed dims to the front),
    and a dimension of size 0 is named without the index."""
    if size == 0:
        return IndexError("index is out of bounds for dimension with size 0")
    return IndexError(f"index {index} is out of bounds for dimension {dim} with size {size}")


def _index_arrays_in(part):
    """How many index tensors a key part stands for once masks become their nonzero coordinates."""
    if isinstance(part, slice):
        return 0
    return max(part.ndim, 1) if part.dtype == bool else 1


def _check_indices_broadcast(key):
    """The index tensors (masks as their nonzero coordinates) must broadcast together, as on CPU."""
    if sum(isinstance(part, np.ndarray) for part in key) < 2 and not any(
            isinstance(part, np.ndarray) and part.ndim > 1 and part.dtype == bool for part in key):
        return  # one index tensor broadcasts with itself
    shapes = []
    for part in key:
        if isinstance(part, np.ndarray) and part.dtype == bool:
            shapes += [(int(np.count_nonzero(part)),)] * _index_arrays_in(part)
        elif isinstance(part, np.ndarray):
            shapes.append(part.shape)
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        listed = ", ".join(str(list(shape)) for shape in shapes)
        raise IndexError(f"shape mismatch: indexing tensors could not be broadcast together with shapes {listed}") from None


def _check_mask_shape(self, mask, first_dim, position):
    for offset, size in enumerate(mask.shape):
        dim = first_dim + offset
        if dim >= self.dim() or self.shape[dim] != size:
            raise IndexError(
                f"The shape of the mask {list(mask.shape)} at index {offset} does not match the shape of the "
                f"indexed tensor {list(self.shape)} at index {dim}"
            )


def _wait_if_masked(indices):
    """A boolean mask among the indices makes the result's size the count of its True elements, which the host must
    read (CUDA's index kernel calls nonzero for it)."""
    if any(index is not None and index.dtype in (torch.bool, torch.uint8) for index in indices):
        _sync_debug.host_waits()


@register("index.Tensor")
def index(self, indices):
    key = advanced_index_key(self, indices)  # first: it checks where the indices are
    _wait_if_masked(indices)
    return store(operand(self, "index")[key], self.dtype)


def _same_dtype_as_self(self_dtype, out_dtype):
    if self_dtype != out_dtype:
        raise RuntimeError(f"index_out: self ({scalar_type_name(self_dtype)}) and result ({scalar_type_name(out_dtype)}) "
                           "must have the same scalar type")


@register("index.Tensor_out")
def index_out(self, indices, *, out):
    key = advanced_index_key(self, indices)
    _wait_if_masked(indices)
    return store(operand(self, "index")[key], self.dtype, out=out,
                 distinct=(self, *(i for i in indices if i is not None)), dtype_rule=_same_dtype_as_self)


@register("_index_put_impl_")
def index_put_impl_(self, indices, values, accumulate=False, unsafe=False):
    warn_if_expanded(self, "index_put_", "tensor[indices] = tensor")
    for read in (values, *indices):  # ATen's checks: what index_put_ reads must not share memory with self
        check_no_overlap(self, read)
    key = advanced_index_key(self, indices)
    target = as_numpy(self)
    if values.dtype != self.dtype:  # checked after the indices and the shapes, as on CPU
        _check_values_broadcast(values.shape, target[key].shape)
        raise RuntimeError(
            "Index put requires the source and destination dtypes match, got "
            f"{scalar_type_name(self.dtype)} for the destination and {scalar_type_name(values.dtype)} for the source."
        )
    source = operand(values, "index_put_")
    try:
        if accumulate:
            _add_at(target, _without_masks(key), source, self.dtype)
        else:
            target[key] = converted(source, self.dtype)  # complex32: float16 pairs, as target holds them
    except ValueError:
        _check_values_broadcast(values.shape, target[key].shape)
        raise
    return self


def _check_values_broadcast(values_shape, indexed_shape):
    """The values must expand to the indexed shape (one-sided, unlike a broadcast of the two)."""
    values_shape, indexed_shape = tuple(values_shape), tuple(indexed_shape)
    trailing = indexed_shape[len(indexed_shape) - len(values_shape):] if values_shape else ()
    if len(values_shape) > len(indexed_shape) or any(v not in (1, i) for v, i in zip(values_shape, trailing)):
        raise RuntimeError(
            f"shape mismatch: value tensor of shape {list(values_shape)} cannot be broadcast to indexing result "
            f"of shape {list(indexed_shape)}"
        ) from None


def _add_at(target, key, values, dtype):
    """``np.add.at`` into ``target``, the elements of a ``dtype`` tensor; complex32 adds as complex64."""
    if dtype is torch.complex32:  # NumPy has no arithmetic on float16 pairs
        widened = _C.dtypes.complex32_as_complex64(target)
        np.add.at(widened, key, values)
        target[...] = converted(widened, dtype)
    else:
        np.add.at(target, key, converted(values, dtype))


def _without_masks(key):
    """``ufunc.at`` takes integer index arrays and slices only: a mask becomes its nonzero coordinates."""
    expanded = []
    for part in key:
        expanded.extend(np.nonzero(part) if isinstance(part, np.ndarray) and part.dtype == bool else (part,))
    return tuple(expanded)


# ---------------------------------------------------------------------------
# gather / scatter


def _gather_source(source, index, dim):
    """``source`` cut to ``index``'s extent in every dim but ``dim``: gather and scatter allow a larger source."""
    return source[tuple(slice(None) if d == dim else slice(0, n) for d, n in enumerate(index.shape))]


@register("gather.out")
def gather_out(self, dim, index, sparse_grad=False, *, out):
    dim = wrap_dim(dim, self.dim())
    prepare_out(out, index.shape, self.dtype, dtype_rule=exact_dtype)
    # CPU's structured gather checks overlap once out is resized: a view grown over the index refuses it too
    check_no_overlap(out, self)
    check_no_partial_overlap(out, index)
    if index.numel() == 0:  # nothing gathered: CPU accepts an empty index of any rank and dtype
        return out
    if index.dtype not in _INDEX_DTYPES:
        raise RuntimeError("gather(): Expected dtype int32/int64 for index")
    source = _at_least_1d(operand(self, "gather"))
    positions = _at_least_1d(checked_indices(operand(index, "gather"), source.shape[dim], wrap=False,
                                             error=_dim_error(), dim=dim))
    result = np.take_along_axis(_gather_source(source, positions, dim), positions, axis=dim)
    return write(out, result.reshape(out.shape))


def _scatter_key(target_shape, index, dim):
    """Full coordinates for every element of ``index``: its own position, with ``index`` along ``dim``."""
    positions = checked_indices(index, target_shape[dim], wrap=False, error=_dim_error(), dim=dim)
    grid = list(np.indices(positions.shape, sparse=True))
    grid[dim] = positions
    return tuple(grid)


def _prepared_scatter(self, dim, index, src, out, op_name):
    """The out array holding ``self``, the scatter coordinates, and the values scattered (in out's dtype)."""
    dim = wrap_dim(dim, self.dim())
    if index.numel() and index.dtype not in _INDEX_DTYPES:
        raise RuntimeError(f"{op_name}(): Expected dtype int32/int64 for index")
    if out is not self:
        prepare_out(out, self.shape, self.dtype, inputs=(self,), distinct=(index, src), dtype_rule=exact_dtype)
        write(out, operand(self, op_name))
    target = _at_least_1d(as_numpy(out))
    if index.numel() == 0:  # nothing scattered: CPU accepts an empty index of any rank
        nowhere = np.zeros(0, np.intp)
        return target, (nowhere,) * target.ndim, np.zeros(0, target.dtype)
    positions = _at_least_1d(operand(index, op_name))
    key = _scatter_key(target.shape, positions, dim)
    if isinstance(src, torch.Tensor):
        values = _gather_source(_at_least_1d(operand(src, op_name)), positions, dim)
        values = values[tuple(slice(0, n) for n in positions.shape)]
    else:
        values = src
    return target, key, converted(values, out.dtype)


_SCATTER_UFUNCS = {"add": np.add, "sum": np.add, "multiply": np.multiply, "prod": np.multiply,
                   "amax": np.maximum, "amin": np.minimum, "mean": np.add}


def _scatter(self, dim, index, src, reduce, out, op_name="scatter"):
    target, key, values = _prepared_scatter(self, dim, index, src, out, op_name)
    if reduce is None:
        target[key] = values
    else:
        _SCATTER_UFUNCS[reduce].at(target, key, values)
    return out


@register("scatter.src_out")
def scatter_src_out(self, dim, index, src, *, out):
    return _scatter(self, dim, index, src, None, out)


@register("scatter.value_out")
def scatter_value_out(self, dim, index, value, *, out):
    return _scatter(self, dim, index, value, None, out)


@register("scatter.reduce_out")
def scatter_reduce_out(self, dim, index, src, reduce, *, out):
    return _scatter(self, dim, index, src, reduce, out)


@register("scatter.value_reduce_out")
def scatter_value_reduce_out(self, dim, index, value, reduce, *, out):
    return _scatter(self, dim, index, value, reduce, out)


@register("scatter_add.out")
def scatter_add_out(self, dim, index, src, *, out):
    return _scatter(self, dim, index, src, "add", out, "scatter_add")


def _reduction_identity(reduce, dtype):
    if reduce in ("sum", "mean"):
        return 0
    if reduce == "prod":
        return 1
    if dtype.is_floating_point:
        return -np.inf if reduce == "amax" else np.inf
    if dtype == torch.bool:
        return reduce == "amin"
    info = torch.iinfo(dtype)
    return info.min if reduce == "amax" else info.max


def _reduce_into(out, target, key, values, reduce, include_self):
    """scatter_reduce's and index_reduce's shared step: fold ``values`` into ``target[key]`` (a view of ``out``)."""
    if not include_self:
        target[key] = _reduction_identity(reduce, out.dtype)
    _SCATTER_UFUNCS[reduce].at(target, key, values)
    if reduce == "mean":
        _divide_by_counts(out, target, key, include_self)
    return out


@register("scatter_reduce.two_out")
def scatter_reduce_two_out(self, dim, index, src, reduce, *, include_self=True, out):
    target, key, values = _prepared_scatter(self, dim, index, src, out, "scatter_reduce")
    return _reduce_into(out, target, key, values, reduce, include_self)


def _divide_by_counts(out, target, key, include_self):
    """``out`` (whose elements ``target`` views) divided by how many values each element gathered."""
    counts = np.full(target.shape, int(include_self), np.int64)
    np.add.at(counts, key, 1)
    counts = np.maximum(counts, 1)
    if out.dtype.is_floating_point or out.dtype.is_complex:
        quotient = target.astype(np.result_type(target.dtype, np.float32)) / counts
    else:
        quotient = np.floor_divide(target, counts)
    write(out, quotient.reshape(out.shape))


# ---------------------------------------------------------------------------
# index_select / index_add / index_copy / index_fill / index_reduce


# How each index op refuses an index that is not a vector of int32/int64: CPU words (and classes) them differently.
_INDEX_VECTOR_ERRORS = {
    "index_select": (
        lambda index: IndexError("index_select(): Index is supposed to be a vector"),
        lambda index: RuntimeError("index_select(): Expected dtype int32 or int64 for index")),
    "index_add": (
        lambda index: IndexError(f"index_add_(): Index is supposed to be a vector, but got dim: {index.dim()} with type: "
                                 f"{scalar_type_name(index.dtype)} and size: {list(index.shape)}"),
        lambda index: RuntimeError(f"index_add_(): Expected dtype int32/int64 for index but got: "
                                   f"{scalar_type_name(index.dtype)}")),
    "index_reduce": (
        lambda index: IndexError(f"index_reduce_(): Index is supposed to be a vector, but got dim: {index.dim()} with "
                                 f"type: {scalar_type_name(index.dtype)} and size: {list(index.shape)}"),
        lambda index: RuntimeError(f"index_reduce_(): Expected dtype int32/int64 for index but got: "
                                   f"{scalar_type_name(index.dtype)}")),
    "index_copy": (
        lambda index: IndexError("index_copy_(): Index should have dimension 1 or 0 (got 2)".replace("2", str(index.dim()))),
        lambda index: RuntimeError(f"index_copy_(): Expected a long tensor for index, but got "
                                   f"{scalar_type_name(index.dtype)}")),
    "index_fill_": (
        lambda index: RuntimeError("Index has to be a vector/scalar"),
        lambda index: IndexError("index_fill_(): Expected dtype int64 for index.")),
}
_INDEX_VECTOR_DTYPES = {"index_copy": (torch.int64,), "index_fill_": (torch.int64,)}


def _index_vector(index, op_name):
    not_a_vector, wrong_dtype = _INDEX_VECTOR_ERRORS[op_name]
    if index.dim() > 1:
        raise not_a_vector(index)
    if index.dtype not in _INDEX_VECTOR_DTYPES.get(op_name, _INDEX_DTYPES):
        raise wrong_dtype(index)
    return _at_least_1d(operand(index, op_name))


@register("index_select")
def index_select(self, dim, index):
    """Into a new contiguous tensor: the out= kernel's checks of ``out`` are the ones a new tensor always passes
    (embedding's forward, once a step)."""
    dim = wrap_dim(dim, self.dim())
    positions = _index_vector(index, "index_select")
    source, positions = _index_select_operands(self, dim, positions)
    out, view = empty_with_array(_index_select_shape(self, dim, index), self.dtype)
    return _take_into(out, view, source, positions, dim)


def _index_select_shape(self, dim, index):
    shape = list(self.shape)
    if shape:
        shape[wrap_dim(dim, self.dim())] = index.numel()
    return shape


def _index_select_dtype(self_dtype, out_dtype):
    if self_dtype != out_dtype:
        raise RuntimeError("index_select(): self and result must have the same scalar type")


@register("index_select.out")
def index_select_out(self, dim, index, *, out):
    dim = wrap_dim(dim, self.dim())
    positions = _index_vector(index, "index_select")
    prepare_out(out, _index_select_shape(self, dim, index), self.dtype, distinct=(self, index),
                dtype_rule=_index_select_dtype)
    source, positions = _index_select_operands(self, dim, positions)
    return _take_into(out, as_numpy(out) if out.is_contiguous() else None, source, positions, dim)


_OUT_OF_RANGE_IN_SELF = _fixed_error(IndexError, "index out of range in self")


def _indices_range_error(index, dim, size):
    """CPU's index_select of a tensor of two or more dimensions along its second one, or of an empty one (loops of
    their own), names the index."""
    return RuntimeError(f"INDICES element is out of DATA bounds, id={index} axis_dim={size}")


def _index_select_operands(self, dim, positions):
    """``self`` as NumPy (at least 1-d) and ``positions`` checked against its size along ``dim``."""
    return index_select_arrays(operand(self, "index_select"), dim, positions)


def index_select_arrays(source, dim, positions):
    """``source`` (at least 1-d) and ``positions`` (a vector) checked against its size along ``dim``, as CPU
    checks them (compiled programs call it on their arrays)."""
    source, positions = _at_least_1d(source), _at_least_1d(positions)
    several_dims = source.ndim > 1
    if several_dims and positions.size and source.shape[dim] == 0:
        raise RuntimeError("index_select(): self indexing axis dim should be positive")
    error = _indices_range_error if several_dims and (dim == 1 or source.size == 0) else _OUT_OF_RANGE_IN_SELF
    return source, checked_indices(positions, source.shape[dim], wrap=False, error=error)


def _take_into(out, view, source, positions, dim):
    """index_select's maths: ``source``'s ``positions`` along ``dim`` into ``out``, straight into ``view`` (its
    NumPy view, None when it is not contiguous) when that holds ``source``'s dtype (not complex32's, read as
    complex64)."""
    if view is not None and view.dtype == source.dtype:
        taken_shape = source.shape[:dim] + (positions.size,) + source.shape[dim + 1:]
        np.take(source, positions, axis=dim, out=view.reshape(taken_shape))
        return out
    return write(out, np.take(source, positions, axis=dim).reshape(out.shape))


def _prepared_index_op(self, dim, index, out, op_name, error, source=None):
    """out holding ``self`` and the NumPy key for ``index`` along ``dim`` (checked unless ``error`` is None)."""
    dim = wrap_dim(dim, self.dim())
    positions = _index_vector(index, op_name)
    if out is not self:
        prepare_out(out, self.shape, self.dtype, inputs=(self,), distinct=(index, source), dtype_rule=exact_dtype)
        write(out, operand(self, op_name))
    target = _at_least_1d(as_numpy(out))
    if error is not None:
        positions = checked_indices(positions, target.shape[dim], wrap=False, error=error, dim=dim)
    return target, _along(dim, positions)


def _index_source(source, target, key, op_name):
    """``source`` shaped like ``target[key]`` (a 0-d self takes a 0-d or 1-element source)."""
    dim = len(key) - 1
    shape = target.shape[:dim] + (key[-1].size,) + target.shape[dim + 1:]
    return operand(source, op_name).reshape(shape)


def _index_add_range_error(self, dim, alpha):
    """CPU's index_add of a tensor of two or more dims returns before reading the indices when it is empty (None:
    no check), and along its first or last dim with alpha 1 goes through scatter_add, whose error names the index;
    every other call loops over slices: "index out of range in self"."""
    if self.dim() > 1 and self.numel() == 0:
        return None
    if self.dim() > 1 and wrap_dim(dim, self.dim()) in (0, self.dim() - 1) and alpha == 1:
        return _dim_error()
    return _OUT_OF_RANGE_IN_SELF


@register("index_add.out")
def index_add_out(self, dim, index, source, *, alpha=1, out):
    target, key = _prepared_index_op(self, dim, index, out, "index_add", _index_add_range_error(self, dim, alpha),
                                     source)
    if target.size == 0:
        return out
    values = _index_source(source, target, key, "index_add")
    if alpha != 1:
        values = opmath_operand(source, "index_add").reshape(values.shape)
        values = values * scalar(alpha, values)  # alpha cast as C++ casts it: -1 wraps for unsigned types
    _add_at(target, key, values, out.dtype)
    return out


@register("index_copy.out")
def index_copy_out(self, dim, index, source, *, out):
    target, key = _prepared_index_op(self, dim, index, out, "index_copy", _dim_error(IndexError, "index_copy_(): "),
                                     source)
    target[key] = converted(_index_source(source, target, key, "index_copy"), out.dtype)  # complex32 as stored
    return out


def _index_reduce_fill_error(index, dim, size):
    """Without self, CPU first fills the indexed slices by index_fill_, which wraps a negative index and names any
    other bad one (an IndexError); its own loop then refuses the wrapped ones as "index out of range in self"."""
    return (_OUT_OF_RANGE_IN_SELF if -size <= index < 0 else _dim_error(IndexError))(index, dim, size)


@register("index_reduce.out")
def index_reduce_out(self, dim, index, source, reduce, *, include_self=True, out):
    if self.dtype.is_complex or self.dtype == torch.bool:  # CPU's index_reduce has loops for the real numbers
        raise not_implemented_for("index_func_", self.dtype)
    error = _OUT_OF_RANGE_IN_SELF if include_self else _index_reduce_fill_error
    target, key = _prepared_index_op(self, dim, index, out, "index_reduce", error, source)
    values = converted(_index_source(source, target, key, "index_reduce"), out.dtype)
    return _reduce_into(out, target, key, values, reduce, include_self)


@register("index_fill_.int_Scalar")
def index_fill_scalar_(self, dim, index, value):
    warn_if_expanded(self, "index_fill_", "tensor[mask] = scalar")
    check_no_overlap(self, index)
    if isinstance(value, complex) and not self.dtype.is_complex:
        raise RuntimeError("index_fill_(): Converting complex Scalar to non-complex type is not supported")
    check_scalar_fits(value, self.dtype)
    target = _at_least_1d(as_numpy(self))
    dim = wrap_dim(dim, self.dim())
    positions = checked_indices(_index_vector(index, "index_fill_"), target.shape[dim], wrap=True,
                                error=_dim_error(IndexError), dim=dim)
    target[_along(dim, positions)] = converted(value, self.dtype)
    return self


@register("index_fill_.int_Tensor")
def index_fill_tensor_(self, dim, index, value):
    if value.dim() != 0:
        raise RuntimeError(
            f"index_fill_ only supports a 0-dimensional value tensor, but got tensor with {value.dim()} dimension(s)."
        )
    return index_fill_scalar_(self, dim, index, value.item())


# ---------------------------------------------------------------------------
# masks


def _check_bool_mask(mask, op_name, name_dtype=cpp_type_name):
    """Each masked op's own wording of CPU's check, the dtype named as that op names it."""
    if mask.dtype != torch.bool:
        if op_name == "masked_select":
            raise RuntimeError("masked_select: expected BoolTensor for mask")
        raise RuntimeError(f"{op_name} only supports boolean masks, but got mask with dtype {name_dtype(mask.dtype)}")


@register("masked_fill_.Scalar")
def masked_fill_scalar_(self, mask, value):
    _check_bool_mask(mask, "masked_fill_")
    warn_if_expanded(self, "masked_fill_", "tensor[mask] = scalar")
    check_no_partial_overlap(self, mask)
    check_scalar_fits(value, self.dtype)
    target = as_numpy(self)
    np.copyto(target, converted(value, self.dtype), where=np.broadcast_to(operand(mask, "masked_fill_"), target.shape))
    return self


@register("masked_fill_.Tensor")
def masked_fill_tensor_(self, mask, value):
    if value.dim() != 0:
        raise RuntimeError(
            f"masked_fill_ only supports a 0-dimensional value tensor, but got tensor with {value.dim()} dimension(s)."
        )
    return masked_fill_scalar_(self, mask, value.item())


def _masked_selection(self, mask):
    _check_bool_mask(mask, "masked_select")
    shape = broadcast_shapes(mask.shape, self.shape)
    _sync_debug.host_waits()  # the result's size is the mask's count
    return np.broadcast_to(operand(self, "masked_select"), shape)[np.broadcast_to(operand(mask, "masked_select"), shape)]


@register("masked_select")
def masked_select(self, mask):
    return store(_masked_selection(self, mask), self.dtype)


def _masked_select_dtype(self_dtype, out_dtype):
    if self_dtype != out_dtype:
        raise RuntimeError("masked_select(): self and result must have the same scalar type")


@register("masked_select.out")
def masked_select_out(self, mask, *, out):
    check_no_internal_overlap(out)
    return store(_masked_selection(self, mask), self.dtype, out=out, distinct=(self, mask), dtype_rule=_masked_select_dtype)


@register("masked_scatter_")
def masked_scatter_(self, mask, source):
    _check_bool_mask(mask, "masked_scatter_", scalar_type_name)
    check_no_internal_overlap(self)
    target = as_numpy(self)
    selector = np.broadcast_to(operand(mask, "masked_scatter_"), target.shape)
    count = int(np.count_nonzero(selector))
    values = operand(source, "masked_scatter_").reshape(-1)
    if values.size < count:
        raise RuntimeError("Number of elements of source < number of ones in mask")
    target[selector] = converted(values[:count], self.dtype)
    return self


# ---------------------------------------------------------------------------
# nonzero


def _nonzero_tensor(coordinates):
    """(n, ndim) int64 in the column-major layout CPU's nonzero returns."""
    rows, columns = coordinates.shape
    out = empty((rows, columns), torch.int64, strides=(1, max(rows, 1)))
    as_numpy(out)[...] = coordinates
    return out


@register("nonzero")
def nonzero(self):
    _sync_debug.host_waits()
    return _nonzero_tensor(np.argwhere(operand(self, "nonzero")))


def _long_indices_only(op_name):
    """nonzero's and nonzero_static's rule for an ``out=``: int64 and nothing else, in their CPU words."""
    def dtype_rule(result_dtype, out_dtype):
        if out_dtype != torch.int64:
            raise RuntimeError(f"{op_name}: Expected out tensor to have scalar type Long but got scalar type"
                               f"{scalar_type_name(out_dtype)}")
    return dtype_rule


@register("nonzero.out")
def nonzero_out(self, *, out):
    _sync_debug.host_waits()
    return store(np.argwhere(operand(self, "nonzero")), torch.int64, out=out, distinct=(self,),
                 dtype_rule=_long_indices_only("nonzero"))


@register("nonzero_static", "nonzero_static.out")
def nonzero_static(self, *, size, fill_value=-1, out=None):
    if size < 0:
        raise RuntimeError("nonzero_static: 'size' must be an non-negative integer")  # CPU's words
    found = np.argwhere(operand(self, "nonzero_static"))[:size]
    result = np.full((size, self.dim()), fill_value, np.int64)
    result[: len(found)] = found
    return store(result, torch.int64, out=out, distinct=(self,), dtype_rule=_long_indices_only("nonzero_static"))


# ---------------------------------------------------------------------------
# flat indexing: take / put_


def _flat_positions(self, index, op_name):
    if index.dtype != torch.int64:
        raise RuntimeError(f"{op_name}(): Expected a long tensor for index, but got {scalar_type_name(index.dtype)}")
    size = self.numel()
    return checked_indices(operand(index, op_name), size, wrap=True, error=_flat_error)


@register("take")
def take(self, index):
    positions = _flat_positions(self, index, "take")
    if positions.size and self.numel() == 0:
        raise IndexError("take(): tried to take from an empty tensor")
    return store(operand(self, "take").reshape(-1)[positions], self.dtype)


def _take_dtype(self_dtype, out_dtype):
    if self_dtype != out_dtype:
        raise RuntimeError(f"take(): self and out expected to have the same dtype, but got self.dtype = "
                           f"{scalar_type_name(self_dtype)} and out.dtype = {scalar_type_name(out_dtype)}")


@register("take.out")
def take_out(self, index, *, out):
    prepare_out(out, index.shape, self.dtype, distinct=(self, index), dtype_rule=_take_dtype)
    return write(out, as_numpy(take(self, index)))


@register("put_")
def put_(self, index, source, accumulate=False):
    if not accumulate:  # which duplicate index wins is unspecified: CPU alerts under use_deterministic_algorithms
        alert_not_deterministic("put_")
    check_no_internal_overlap(self)  # ATen's checks: put_ may not read what it writes
    check_no_overlap(self, index)
    check_no_overlap(self, source)
    positions = _flat_positions(self, index, "put_").reshape(-1)
    values = converted(operand(source, "put_").reshape(-1), self.dtype)
    if values.size != positions.size:
        raise RuntimeError(
            f"put_(): Expected source and index to have the same number of elements, but got source.numel() = "
            f"{values.size}, index.numel() = {positions.size}"
        )
    target = as_numpy(self)
    flat = target.reshape(-1)  # a copy when self is not contiguous: written back below
    if accumulate:
        np.add.at(flat, positions, values)
    else:
        flat[positions] = values
    if not np.shares_memory(flat, target):
        target[...] = flat.reshape(target.shape)
    return self


# ---------------------------------------------------------------------------
# embedding


@register("embedding_dense_backward")
def embedding_dense_backward(grad_output, indices, num_weights, padding_idx, scale_grad_by_freq):
    positions = operand(indices, "embedding_backward").reshape(-1)
    grad = operand(grad_output, "embedding_backward").reshape(positions.size, grad_output.shape[-1])
    if scale_grad_by_freq:
        opmath_grad = opmath_operand(grad_output).reshape(grad.shape)
        scale = (1 / np.bincount(positions, minlength=num_weights)[positions]).astype(opmath_grad.dtype)
        grad = opmath_grad * scale[:, None]  # the CPU adds each row with alpha = 1 / count
    if 0 <= padding_idx < num_weights:  # a negative padding_idx means none
        keep = positions != padding_idx
        positions, grad = positions[keep], grad[keep]
    result = empty((num_weights, grad.shape[-1]), grad_output.dtype)
    target = as_numpy(result)
    target[...] = 0
    _add_rows_in_order(target, positions, grad if grad.dtype == target.dtype else converted(grad, grad_output.dtype))
    return result


_MAX_ROUNDS = 64  # beyond this many repeats of one index, np.add.at's single pass is faster


def _add_rows_in_order(target, positions, rows):
    """``target[positions[i]] += rows[i]`` for each i in order, rounding after every addition as the CPU loop does.

    ``np.add.at`` does exactly that, but slowly. Here round k adds the k-th occurrence of every index at
    once: within a round the indices are distinct, so a plain fancy-indexed ``+=`` is exact.
    """
    order = np.argsort(positions, kind="stable")
    sorted_positions = positions[order]
    # np.diff(sorted_positions, prepend=-1) != 0 and np.diff(group_starts, append=size), without np.diff's
    # concatenations (tens of us at these sizes)
    starts = np.empty(sorted_positions.size, np.bool_)
    starts[:1] = sorted_positions[:1] != -1
    np.not_equal(sorted_positions[1:], sorted_positions[:-1], out=starts[1:])
    group_starts = np.flatnonzero(starts)
    group_sizes = np.empty_like(group_starts)
    np.subtract(group_starts[1:], group_starts[:-1], out=group_sizes[:-1])
    group_sizes[-1:] = positions.size - group_starts[-1:]
    if group_sizes.size == 0 or group_sizes.max() > _MAX_ROUNDS:
        np.add.at(target, positions, rows)
        return
    occurrence = np.arange(positions.size) - np.repeat(group_starts, group_sizes)
    by_round = order[np.argsort(occurrence, kind="stable")]
    positions, rows = positions[by_round], rows[by_round]  # gathered once; each round is then a slice of them
    bounds = np.cumsum(np.bincount(occurrence)).tolist()
    for start, stop in zip([0] + bounds[:-1], bounds):
        target[positions[start:stop]] += rows[start:stop]


# ---------------------------------------------------------------------------
# embedding_bag (mode 0 sum, 1 mean, 2 max)

_BAG_SUM, _BAG_MEAN, _BAG_MAX = 0, 1, 2


def _bags(indices, offsets, include_last_offset):
    """The bag of each index, and how many bags there are."""
    starts = operand(offsets, "embedding_bag").astype(np.int64)
    if include_last_offset:
        starts = starts[:-1]
    positions = np.arange(indices.size)
    return np.searchsorted(starts, positions, side="right") - 1, starts.size


def _embedding_bag(weight, indices, offsets, mode, per_sample_weights, include_last_offset, padding_idx):
    table = opmath_operand(weight, "embedding_bag")
    positions = operand(indices, "embedding_bag").reshape(-1)
    checked_indices(positions, table.shape[0], wrap=False, error=_fixed_error(IndexError, "index out of range in self"))
    bag_of, bag_count = _bags(positions, offsets, include_last_offset)
    used = positions != padding_idx
    rows = table[positions]
    bag_size = np.bincount(bag_of[used], minlength=bag_count).astype(np.int64)
    result = np.zeros((bag_count, table.shape[1]), table.dtype)
    max_indices = np.zeros((bag_count, table.shape[1]) if mode == _BAG_MAX else (0,), np.int64)
    scales = None if per_sample_weights is None else opmath_operand(per_sample_weights, "embedding_bag").reshape(-1)
    if mode == _BAG_MAX:
        _bag_max(result, max_indices, rows[used], bag_of[used], positions[used])
    elif scales is not None and _fused_scale_add(weight, per_sample_weights, padding_idx):
        _fused_bag_sums(result, scales, rows, bag_of)
    else:
        rows = rows if scales is None else rows * scales[:, None]
        _bag_sums(result, rows[used], bag_of[used])
    if mode == _BAG_MEAN:
        if weight.dtype in SIXTEEN_BIT:  # CPU divides its sums as stored in the 16-bit output: two roundings
            result = converted(result, weight.dtype).astype(result.dtype)
        result /= np.maximum(bag_size, 1)[:, None]
    return (store(result, weight.dtype), store(bag_of, torch.int64),
            store(bag_size, torch.int64), store(max_indices, torch.int64))


def _fused_scale_add(weight, per_sample_weights, padding_idx):
    """Whether CPU weighs a bag's rows by fbgemm's kernel (its fast path, is_fast_path_index_select_scale), whose
    float32 accumulator takes each row by a fused multiply-add; its other loop rounds each product, then the sum."""
    return (weight.dtype in (torch.float32, torch.float16, torch.bfloat16) and weight.stride(1) == 1
            and per_sample_weights.stride(0) == 1 and padding_idx < 0)


def _fused_bag_sums(result, scales, rows, bag_of):
    """``result[bag] = fma(scale, row, result[bag])`` for each index in its bag's order, as fbgemm accumulates."""
    for taken in _occurrence_rounds(bag_of):
        bags = bag_of[taken]
        result[bags] = _C.vpu.fused_multiply_add(scales[taken, None], rows[taken], result[bags])


def _bag_sums(result, rows, bag_of):
    """Each bag's rows added from zero in their order, as ``np.add.at`` and CPU's loop add them: one fancy-indexed
    add per rank within the bags while bags are short (``np.add.at`` goes element by element: a 4,096-index batch
    took 25x CPU's forward), ``np.add.at`` itself past ``ORDERED_REPLAY_REPEATS`` rows in one bag."""
    if bag_of.size and np.bincount(bag_of).max() > ORDERED_REPLAY_REPEATS:
        np.add.at(result, bag_of, rows)
        return
    for taken in _occurrence_rounds(bag_of):
        result[bag_of[taken]] += rows[taken]


def _occurrence_rounds(keys):
    """The positions of ``keys`` in rounds, round k holding each key's k-th occurrence (in order): within a round
    the keys are distinct, so a fancy-indexed update per round replays a loop over the positions in order."""
    order = np.argsort(keys, kind="stable")
    sorted_keys, steps = keys[order], np.arange(keys.size)
    group_starts = np.where(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]][:keys.size], steps, 0)
    occurrence = np.empty(keys.size, np.int64)
    occurrence[order] = steps - np.maximum.accumulate(group_starts)
    by_round = np.argsort(occurrence, kind="stable")
    bounds = np.cumsum(np.bincount(occurrence)).tolist()
    return [by_round[start:stop] for start, stop in zip([0] + bounds[:-1], bounds)]


def _bag_max(result, max_indices, rows, bag_of, positions):
    """Per bag and column, the largest row value and the weight row it came from (the first on ties)."""
    result[...] = -np.inf
    np.maximum.at(result, bag_of, rows)
    for column in range(result.shape[1]):
        is_max = rows[:, column] == result[bag_of, column]
        first = np.flatnonzero(is_max)[::-1]  # written last wins: reverse so the first maximum stays
        max_indices[bag_of[first], column] = positions[first]
    result[np.isneginf(result) & (max_indices == 0)] = 0  # empty bags are zero, as on CPU


@register("_embedding_bag", "_embedding_bag_forward_only")
def embedding_bag(weight, indices, offsets, scale_grad_by_freq=False, mode=0, sparse=False,
                  per_sample_weights=None, include_last_offset=False, padding_idx=-1):
    if per_sample_weights is not None and mode != _BAG_SUM:
        raise NotImplementedError(
            "embedding_bag: per_sample_weights was not None. per_sample_weights is only supported for mode='sum'"
        )
    return _embedding_bag(weight, indices, offsets, mode, per_sample_weights, include_last_offset, padding_idx)


@register("_embedding_bag_backward", charge=False)
def embedding_bag_backward(grad, indices, offsets, offset2bag, bag_size, maximum_indices, num_weights,
                           scale_grad_by_freq, mode, sparse, per_sample_weights, padding_idx=-1):
    """CPU's choice of backward: PyTorch's composite sparse one (tpu ops) for ``sparse=True``, else the kernel below."""
    if sparse:
        return torch.ops.aten._embedding_bag_sparse_backward(grad, indices, offsets, offset2bag, bag_size, num_weights,
                                                             scale_grad_by_freq, mode, per_sample_weights, padding_idx)
    return torch.ops.aten._embedding_bag_dense_backward(grad, indices, offset2bag, bag_size, maximum_indices,
                                                        num_weights, scale_grad_by_freq, mode, per_sample_weights,
                                                        padding_idx)


@register("_embedding_bag_dense_backward")
def embedding_bag_dense_backward(grad, indices, offset2bag, bag_size, maximum_indices, num_weights, scale_grad_by_freq,
                           mode, per_sample_weights, padding_idx=-1):
    if mode != _BAG_MAX:
        return store(_bag_sum_mean_backward(grad, indices, offset2bag, bag_size, num_weights, scale_grad_by_freq,
                                            mode, per_sample_weights, padding_idx), grad.dtype)
    gradient = opmath_operand(grad, "embedding_bag_backward")
    result = np.zeros((num_weights, gradient.shape[1]), gradient.dtype)
    chosen = operand(maximum_indices, "embedding_bag_backward")
    filled = operand(bag_size, "embedding_bag_backward") > 0
    columns = np.broadcast_to(np.arange(gradient.shape[1]), chosen.shape)
    np.add.at(result, (chosen[filled], columns[filled]), gradient[filled])
    return store(result, grad.dtype)


ORDERED_REPLAY_REPEATS = 64  # repeats of one index up to which the backward replays CPU's fused adds round by round


def _bag_sum_mean_backward(grad, indices, offset2bag, bag_size, num_weights, scale_grad_by_freq, mode,
                           per_sample_weights, padding_idx):
    """CPU's _embedding_bag_dense_backward_cpu_sum_mean: the indices in the order of its (unstable) sort, each
    one's bag gradient scaled by a double (its sample weight, over its count, over its bag's size) rounded to the
    dtype, added into its row by axpy: a fused multiply-add for float32/float64, c10's rounded product and sum for
    16-bit floats. Its count is read at the sorted position of the index's group number, not the index's own."""
    order = operand(indices.reshape(-1).sort()[1], "embedding_bag_backward")
    positions = operand(indices, "embedding_bag_backward").reshape(-1)[order]
    bag_of = operand(offset2bag, "embedding_bag_backward")[order]
    scale = np.ones(positions.size)
    if per_sample_weights is not None:
        scale = operand(per_sample_weights, "embedding_bag_backward").reshape(-1)[order].astype(np.float64)
    if scale_grad_by_freq:
        group = np.cumsum(np.r_[positions[:1] == positions[:1], positions[1:] != positions[:-1]]) - 1
        scale = scale / np.bincount(positions, minlength=num_weights)[positions[group]]
    if mode == _BAG_MEAN:
        sizes = operand(bag_size, "embedding_bag_backward")[bag_of]
        scale = scale / np.where(sizes != 0, sizes, 1)
    gradient = operand(grad, "embedding_bag_backward")
    scale = converted(scale, grad.dtype)
    result = np.zeros((num_weights, gradient.shape[1]), gradient.dtype)
    used = np.flatnonzero(positions != padding_idx)
    if np.all(scale == 1):
        # a multiply-add by 1 is the rounded sum, and np.add.at adds in the order given: CPU's bits in one call
        np.add.at(result, positions[used], gradient[bag_of[used]])
        return result
    if used.size and np.bincount(positions[used]).max() > ORDERED_REPLAY_REPEATS:
        # one round per repeat of the most frequent index would grow with it (text's commonest words): the scaled
        # rows are added in CPU's order, each product rounded apart from its sum (an ulp from CPU's fused one)
        np.add.at(result, positions[used], scale[used, None] * gradient[bag_of[used]])
        return result
    for taken in _occurrence_rounds(positions[used]):
        rows, steps = positions[used[taken]], used[taken]
        if gradient.dtype.itemsize >= 4:
            result[rows] = _C.vpu.fused_multiply_add(scale[steps, None], gradient[bag_of[steps]], result[rows])
        else:
            result[rows] = result[rows] + scale[steps, None] * gradient[bag_of[steps]]
    return result


@register("_embedding_bag_per_sample_weights_backward")
def embedding_bag_per_sample_weights_backward(grad, weight, indices, offsets, offset2bag, mode, padding_idx=-1):
    gradient = opmath_operand(grad, "embedding_bag")
    positions = operand(indices, "embedding_bag").reshape(-1)
    bag_of = operand(offset2bag, "embedding_bag")
    products = np.einsum("ij,ij->i", gradient[bag_of], opmath_operand(weight, "embedding_bag")[positions])
    return store(np.where(positions != padding_idx, products, 0), grad.dtype)


# ---------------------------------------------------------------------------
# embedding_renorm_


def _row_norms(rows, norm_type):
    """Vector p-norms of each row, as torch.norm computes them (inf/-inf/0 included)."""
    magnitude = np.abs(rows.astype(np.float64))
    if norm_type == float("inf"):
        return magnitude.max(axis=-1, initial=0)
    if norm_type == float("-inf"):
        return magnitude.min(axis=-1)
    if norm_type == 0:
        return (magnitude != 0).sum(axis=-1).astype(np.float64)
    return (magnitude ** norm_type).sum(axis=-1) ** (1 / norm_type)


@register("embedding_renorm_")
def embedding_renorm_(self, indices, max_norm, norm_type):
    """Every distinct row named by ``indices`` whose norm exceeds ``max_norm`` is scaled in place by
    max_norm / (norm + 1e-7), the scale rounded to the weight's dtype as CPU's ``row *= scale`` does."""
    if self.dim() != 2:
        raise RuntimeError(f"embedding_renorm_(): argument 'self' (position 1) must be 2-D, but got {self.dim()}-D")
    if indices.dtype not in _INDEX_DTYPES:
        raise RuntimeError(f"embedding_renorm_(): Expected tensor for argument #2 'indices' to have one of the "
                           f"following scalar types: Long, Int; but got {indices.dtype} instead")
    weight = as_numpy(self)
    rows = np.unique(operand(indices).reshape(-1))
    norms = _row_norms(weight[rows], norm_type)
    over = norms > max_norm
    scale = (max_norm / (norms[over] + 1e-7)).astype(weight.dtype)
    weight[rows[over]] = (weight[rows[over]] * scale[:, None]).astype(weight.dtype)
    return self
