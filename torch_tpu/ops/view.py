"""View kernels: new sizes and strides over the same storage, computed by Meta.

Redispatching to Meta reuses PyTorch's own shape checks and stride arithmetic;
the result shares the input's storage, so views alias exactly as on CPU. The
boxed fallback does the same for every other op whose schema returns a view;
the ones here are registered directly because they are hot.
"""

import torch

from .. import _tensor
from .._errors import invalid_storage_offset
from . import factory
from ._registry import redispatching, register, register_view, register_with_keyset

META = torch._C.DispatchKeySet(torch._C.DispatchKey.Meta)
_set_meta_included = torch._C._set_meta_in_tls_dispatch_include


for _overload in (
    torch.ops.aten.unfold.default,
    torch.ops.aten.view_as_real.default,
    torch.ops.aten.view_as_complex.default,
):
    register_view(_overload)(redispatching(_overload, META))


def _through_meta(method):
    """Meta's kernel of a view on tpu tensors, through the Tensor ``method`` with Meta in the thread-local
    include set, as set_metadata runs set_: the same kernel as a redispatch to Meta, at a third of its cost
    (an OpOverload.redispatch boxes its arguments in Python). A torch function mode never sees the method: a
    mode pops itself before the call it handles reaches a kernel (tests/test_launch_path.py)."""

    def run(*args):
        _set_meta_included(True)  # never already set here: Meta's views do not call back into Python
        try:
            return method(*args)
        finally:
            _set_meta_included(False)

    return run


_meta_reshape_alias = redispatching(torch.ops.aten._reshape_alias.default, META)


@register_with_keyset(torch.ops.aten._reshape_alias.default)
def reshape_alias(keyset, self, size, stride):
    """``reshape``'s view with the strides it computed (in bounds); called directly with any layout, which CPU
    does not check, it marks its storage as one that may hold a tensor past its end (``derived_view``)."""
    view = _meta_reshape_alias(self, size, stride)
    if _tensor.reaches_past(view, _tensor.storage_bytes(view)):
        setattr(view.untyped_storage(), _tensor.OVERRUN_ATTRIBUTE, True)
    return view


def _never_aliases(self, *args, **kwargs):
    return False


def _transpose_aliases(self, dim0, dim1):
    return dim0 % max(self.dim(), 1) == dim1 % max(self.dim(), 1)


def _t_aliases(self):
    return self.dim() < 2


def _expand_geometry(self, size, implicit=False):
    """(sizes, strides) of ``self.expand(size)`` as at::inferExpandGeometry lays them out, before any check of
    their product: a new or broadcast dim gets stride 0."""
    sizes, strides = [0] * len(size), [0] * len(size)
    for i in range(len(size) - 1, -1, -1):
        dim = self.dim() - len(size) + i
        length = self.shape[dim] if dim >= 0 else 1
        stride = self.stride()[dim] if dim >= 0 else (sizes[i + 1] * strides[i + 1] if i + 1 < len(size) else 1)
        target = length if size[i] == -1 else size[i]
        sizes[i], strides[i] = target, stride if target == length else 0
    return sizes, strides


def derived_view(method, aliases=_never_aliases, geometry=None):
    """Meta's kernel of a view whose layout rearranges its input's elements (transpose, permute, select,
    expand, ...), through the Tensor ``method`` as ``_through_meta`` runs it. ATen's composite for these reaches
    ``as_strided``, whose CPU kernel checks the view against the storage (``_checked_as_strided``); a view of a
    tensor in bounds is in bounds, so only a storage that may hold a tensor past its end (``OVERRUN_ATTRIBUTE``)
    pays that check, after the view is made and with CPU's error. Calls for which ATen returns ``alias()``
    instead (``aliases``: a transpose of a dim with itself, ``t`` of fewer than 2 dims) are never checked, as on
    CPU. Every transpose, t, permute, select, squeeze, unsqueeze, expand and diagonal comes here, not to
    as_strided's Python check (``slice`` has no Tensor method, and through its operator it would cost more
    than the check saves)."""

    def kernel(self, *args, **kwargs):
        _set_meta_included(True)  # ``_through_meta``, inlined: a frame fewer on every view of a step
        try:
            view = method(self, *args, **kwargs)
        except RuntimeError:
            # CPU checks the view against the storage before anything else looks at its sizes (an expand whose
            # element count overflows): ``geometry`` gives that view's layout, where the method could not make it
            if geometry is not None and hasattr(self.untyped_storage(), _tensor.OVERRUN_ATTRIBUTE):
                sizes, strides = geometry(self, *args, **kwargs)
                _tensor.check_strided_view(sizes, strides, self.storage_offset(), self.element_size(),
                                           _tensor.storage_bytes(self))
            raise
        finally:
            _set_meta_included(False)
        if hasattr(self.untyped_storage(), _tensor.OVERRUN_ATTRIBUTE) and not aliases(self, *args, **kwargs):
            _tensor.check_strided_view(view.shape, view.stride(), view.storage_offset(), view.element_size(),
                                       _tensor.storage_bytes(self))
        return view

    kernel.__name__ = f"derived_{method.__name__}"
    return kernel


register_view(torch.ops.aten.t.default)(derived_view(torch.Tensor.t, aliases=_t_aliases))
register_view(torch.ops.aten.transpose.int)(derived_view(torch.Tensor.transpose, aliases=_transpose_aliases))
for _overload, _method in (
    (torch.ops.aten.permute.default, torch.Tensor.permute),
    (torch.ops.aten.select.int, torch.Tensor.select),
    (torch.ops.aten.unsqueeze.default, torch.Tensor.unsqueeze),
    (torch.ops.aten.squeeze.default, torch.Tensor.squeeze),
    (torch.ops.aten.squeeze.dim, torch.Tensor.squeeze),
    (torch.ops.aten.squeeze.dims, torch.Tensor.squeeze),
    (torch.ops.aten.diagonal.default, torch.Tensor.diagonal),
):
    register_view(_overload)(derived_view(_method))
register_view(torch.ops.aten.expand.default)(derived_view(torch.Tensor.expand, geometry=_expand_geometry))
register_view(torch.ops.aten.view.default)(_through_meta(torch.Tensor.view))


def _checked_as_strided(method):
    """``as_strided`` checks its view against the storage first, as CPU does (Meta's own kernel
    does not: it would hand out views past the end of the HBM buffer)."""
    meta_as_strided = _through_meta(method)

    def kernel(keyset, self, size, stride, storage_offset=None):
        offset = self.storage_offset() if storage_offset is None else storage_offset
        _tensor.check_strided_view(size, stride, offset, self.element_size(), _tensor.storage_bytes(self))
        return meta_as_strided(self, size, stride, storage_offset)

    kernel.__name__ = f"checked_{method.__name__}"
    return kernel


register_with_keyset(torch.ops.aten.as_strided.default)(_checked_as_strided(torch.Tensor.as_strided))
register_with_keyset(torch.ops.aten.as_strided_.default)(_checked_as_strided(torch.Tensor.as_strided_))


def _check_tpu_storage(storage):
    if storage.device.type != "tpu":
        raise RuntimeError(
            f"set_: expected a tpu storage for a tpu tensor, but got a {storage.device.type} storage"
        )


@register("set_.source_Storage_storage_offset")
def set_storage_offset(self, source, storage_offset, size, stride=()):
    """CPU's checks in CPU's order (at::native::checkSetStorage, then resize_impl_cpu_), all before the
    storage grows: nothing is allocated for a layout CPU would refuse."""
    _check_tpu_storage(source)
    size, stride = tuple(size), tuple(stride) or _tensor.contiguous_strides(size)
    if len(size) != len(stride):
        raise RuntimeError(f"unequal size length ({len(size)}) and stride length ({len(stride)})")
    if storage_offset < 0:
        raise invalid_storage_offset(storage_offset)
    if size == tuple(self.shape) and stride == self.stride():  # an unchanged layout is only bounds-checked
        _tensor.check_in_storage_bounds(size, stride, storage_offset, self.element_size(), source.nbytes())
    elif _tensor.checked_numel(size):
        _tensor.ensure_capacity(source, _tensor.storage_nbytes(size, stride, self.element_size(), storage_offset))
    else:
        _tensor.storage_nbytes(size, stride, self.element_size(), storage_offset)  # still refused if it overflows
    return _tensor.set_metadata(self, source, storage_offset, size, stride)


@register("set_.source_Storage")
def set_storage(self, source):
    _check_tpu_storage(source)
    return set_storage_offset(self, source, 0, (source.nbytes() // self.element_size(),))


@register("set_.source_Tensor")
def set_tensor(self, source):
    if self is source:
        return self
    return set_storage_offset(self, source.untyped_storage(), source.storage_offset(), source.shape, source.stride())


@register("is_set_to")
def is_set_to(self, tensor):
    """Whether ``self`` is the very view ``set_(tensor)`` would make: one storage, offset, sizes and strides."""
    return (self.untyped_storage()._cdata == tensor.untyped_storage()._cdata
            and self.storage_offset() == tensor.storage_offset()
            and self.shape == tensor.shape and self.stride() == tensor.stride())


@register("set_")
def set_empty(self):
    return set_storage_offset(self, _tensor.empty((0,), self.dtype).untyped_storage(), 0, (0,))


@register("resize_")
def resize_(self, size, memory_format=None):
    """CPU's resize_: element count and storage size checked (in that order) before the storage grows."""
    size = tuple(size)
    if memory_format == torch.preserve_format:
        raise RuntimeError("Unsupported memory formatPreserve")
    if size == tuple(self.shape) and memory_format is None:
        return self
    numel = _tensor.checked_numel(size)
    nbytes = _tensor.contiguous_nbytes(size, self.element_size(), self.storage_offset())
    if memory_format in (None, torch.contiguous_format):
        strides = _tensor.contiguous_strides(size)
    else:
        strides = torch.empty(size, memory_format=memory_format, device="meta").stride()
    storage = self.untyped_storage()
    old_nbytes = storage.nbytes()
    if numel:
        _tensor.ensure_capacity(storage, nbytes)
    if storage.nbytes() > old_nbytes and factory.filling_uninitialized_memory():
        _fill_grown_elements(storage, old_nbytes, self.dtype)
    return _tensor.set_metadata(self, storage, self.storage_offset(), size, strides)


def _fill_grown_elements(storage, old_nbytes, dtype):
    """Deterministic mode: the elements resize_ added to the storage get the values empty memory gets."""
    itemsize = dtype.itemsize
    first, end = old_nbytes // itemsize, storage.nbytes() // itemsize
    grown = _tensor.set_metadata(_tensor.empty((0,), dtype), storage, first, (end - first,), (1,))
    factory.fill_uninitialized(grown)
