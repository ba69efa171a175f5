"""``torch.UntypedStorage`` for tpu: the parts C++ cannot do for a Python backend.

PyTorch allocates and reads storages in C++ through a device allocator that a
Python backend does not have (``UntypedStorage(n, device="tpu")`` would
segfault). These patches route tpu storages to the HBM buffer; every other
device keeps PyTorch's own code path untouched.

The patches are installed at import; what they call on tpu (``_tensor``) loads on first use.
A tpu storage's size is its HBM buffer's: C++ keeps its own byte count, which only ever grows
(``resize_`` to fewer bytes, as FSDP does with ``resize_(0)``, cannot shrink it from Python), so
``nbytes()``, ``size()`` and every byte view of the storage read the buffer.
"""

import functools

import torch

from ._errors import check_device_index

_Storage = torch.UntypedStorage


def _is_tpu_device(device):
    return device is not None and torch.device(device).type == "tpu"


def new_tpu_storage(nbytes):
    from . import _lazy, _tensor

    _lazy.load()
    return _tensor.empty((int(nbytes),), torch.uint8).untyped_storage()


_cpp_nbytes = _Storage.nbytes


def _buffer_nbytes(storage):
    """The HBM buffer's size; C++'s count for a tpu storage without one (fake and meta tensors on tpu)."""
    from . import _tensor

    buffer = getattr(storage, _tensor.BUFFER_ATTRIBUTE, None)
    return _cpp_nbytes(storage) if buffer is None else buffer.nbytes


def _patch(name):
    def decorate(tpu_method):
        original = getattr(_Storage, name)

        @functools.wraps(original)
        def dispatching(self, *args, **kwargs):
            if self.device.type == "tpu":
                return tpu_method(self, *args, **kwargs)
            return original(self, *args, **kwargs)

        setattr(_Storage, name, dispatching)
        return tpu_method

    return decorate


def _storage_bytes_tensor(storage):
    nbytes = storage.nbytes()  # on tpu, the buffer's size: C++'s count may be larger after a shrink
    return torch.empty((0,), dtype=torch.uint8, device=storage.device).set_(storage, 0, (nbytes,))


def _install_copy():
    """Storage copies in either direction go through tensor copies over the same bytes."""
    original_copy = _Storage.copy_

    @functools.wraps(original_copy)
    def copy_(self, source, non_blocking=None):
        if self.device.type != "tpu" and source.device.type != "tpu":
            return original_copy(self, source, non_blocking)
        if self.nbytes() != source.nbytes():
            raise RuntimeError(f"size mismatch in storage copy_: {self.nbytes()} vs {source.nbytes()} bytes")
        _storage_bytes_tensor(self).copy_(_storage_bytes_tensor(source))
        return self

    _Storage.copy_ = copy_


@_patch("__getitem__")
def _getitem(self, index):
    return _storage_bytes_tensor(self).cpu().untyped_storage()[index]


@_patch("__setitem__")
def _setitem(self, index, value):
    _storage_bytes_tensor(self)[index] = value


@_patch("fill_")
def _fill(self, value):
    _storage_bytes_tensor(self).fill_(value)
    return self


@_patch("tolist")
def _tolist(self):
    return _storage_bytes_tensor(self).tolist()


@_patch("_write_file")
def _write_file(self, *args):
    """pickle and legacy ``torch.save`` write a storage's bytes from host memory: write a CPU copy.

    C++ reads the bytes through the storage's data pointer, which is null for a Python backend.
    """
    return self.cpu()._write_file(*args)


@_patch("_set_from_file")
def _set_from_file(self, *args):
    """Unpickling and legacy ``torch.load`` read the bytes on the host, then copy them to HBM.

    C++ would wrap the storage's null data pointer in a fresh tpu storage that has no HBM buffer.
    """
    host = _Storage(self.nbytes())._set_from_file(*args)
    return self.copy_(host)


@_patch("data_ptr")
def _data_ptr(self):
    """The host address of the emulated HBM bytes: unique per live allocation."""
    from . import _tensor

    return _tensor.buffer_address(_tensor.hbm_buffer(self))


@_patch("nbytes")
def _nbytes(self):
    return _buffer_nbytes(self)


@_patch("size")
def _size(self):
    return _buffer_nbytes(self)


@_patch("resize_")
def _resize(self, nbytes):
    """Grow or shrink the HBM buffer, keeping the bytes both sizes have (new bytes are undefined, as on CUDA)."""
    from . import _tensor

    nbytes = int(nbytes)
    if nbytes < 0:
        raise RuntimeError(f"resize_: the size of a storage must not be negative, got {nbytes}")
    _tensor.replace_buffer(self, nbytes)
    # C++'s byte count grows to fit (tensors set_ on the storage are bounds-checked against it)
    _tensor.set_metadata(torch.empty((0,), dtype=torch.uint8, device="tpu"), self, 0, (nbytes,), (1,))
    return self


def _install_tensor_data_ptr():
    """``Tensor.data_ptr()`` is the storage's address plus the offset, as on every other device.

    C++ would read the storage's own data pointer, which is null for a Python backend, and return
    just ``storage_offset * itemsize``: two unrelated tensors would then compare equal, and libraries
    that detect aliasing by pointer (safetensors, FSDP, Hugging Face's tied-weight checks) would
    be wrong. Tensors without an HBM buffer (fake and meta tensors on "tpu") keep C++'s answer.
    """
    original = torch.Tensor.data_ptr

    @functools.wraps(original)
    def data_ptr(self):
        if self.device.type != "tpu":
            return original(self)
        from . import _tensor

        buffer = getattr(self.untyped_storage(), _tensor.BUFFER_ATTRIBUTE, None)
        if buffer is None:
            return original(self)
        address = _tensor.buffer_address(buffer)
        return address + self.storage_offset() * self.element_size() if address else 0

    torch.Tensor.data_ptr = data_ptr


def _install_constructor():
    original_new = _Storage.__new__

    def __new__(cls, *args, device=None, **kwargs):
        if _is_tpu_device(device):
            check_device_index(device, "torch.UntypedStorage")
            if len(args) > 1 or kwargs:
                raise TypeError("UntypedStorage(size, device='tpu') takes only a byte count")
            return new_tpu_storage(args[0] if args else 0)
        if device is not None:
            kwargs["device"] = device
        return original_new(cls, *args, **kwargs)

    _Storage.__new__ = __new__


_install_constructor()
_install_copy()
_install_tensor_data_ptr()
