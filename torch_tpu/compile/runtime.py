"""Running a generated program: its helpers, and the callable AOTAutograd receives.

A program takes AOTAutograd's boxed argument list and returns its outputs as tpu tensors. Its
buffers are HBM allocations (its planned buffers and its outputs), so ``memory_allocated``, peaks and OOM
stay exact; its fused kernels are charged on the chip's clock by the generated code itself.
"""

import linecache

import numpy as np
import torch

from .. import _C, _abstract, _tensor

_create_empty_tensor = torch._C._acc.create_empty_tensor
_address = lambda array: array.__array_interface__["data"][0]  # noqa: E731


class BufferHome:
    """The host block a program's planned buffer takes at every call (``HBM.allocate``'s ``home``), so that the
    NumPy views of the buffer's values over it are made once, when the program is generated."""

    __slots__ = ("block", "hbm", "buffer_id")

    def __init__(self, nbytes, hbm):
        self.block, self.hbm = _C.hbm.aligned_block(nbytes), hbm
        self.buffer_id = None  # the allocation of the last call that took the block


def new_buffer(nbytes, home=None):
    """One planned HBM buffer of a program: an allocation, with no tensor around it until one is needed; backed by
    ``home``'s block unless that still backs an earlier call's buffer (a tensor over it outlived its call: an
    output viewing it), which leaves this call a pooled block and its views to build."""
    if home is None or home.hbm.live.get(home.buffer_id) is home.block:
        return _tensor.allocate(nbytes)
    buffer = _tensor.allocate(nbytes, home.block)
    home.buffer_id = buffer.id
    return buffer


def tensor_over(buffer):
    """A tpu byte tensor whose storage holds ``buffer`` (for eager kernels and outputs that view it)."""
    tensor = _create_empty_tensor((0,), torch.uint8)
    storage = tensor.untyped_storage()
    _tensor.set_metadata(tensor, storage, 0, (buffer.nbytes,), (1,))
    setattr(storage, _tensor.BUFFER_ATTRIBUTE, buffer)
    return tensor


def new_output(shape, dtype, strides=None):
    """A graph output: a new tpu tensor and the NumPy view its kernel writes into (with ``strides``: laid out
    as eager lays out that value)."""
    if strides is None:
        return _tensor.empty_with_array(shape, dtype)
    tensor = _tensor.empty(shape, dtype, strides)
    return tensor, _tensor.as_numpy(tensor)


def materialize(array, dtype):
    """A new tpu tensor holding a copy of ``array`` (an output that views a dead buffer)."""
    tensor, view = _tensor.empty_with_array(array.shape, dtype)
    np.copyto(view, array)
    return tensor


def tensor_view(base, base_array, array):
    """A tpu tensor viewing ``array``, which lies inside ``base``'s memory (``base_array``).

    NumPy copies when a reshape cannot be a view; such an array is copied into a tensor of its own."""
    start = _address(array) - _address(base_array)
    if array.size and not 0 <= start < base_array.nbytes:
        return materialize(array, _tensor.TORCH_DTYPE[array.dtype])
    itemsize = array.dtype.itemsize
    offset = (start + base.storage_offset() * base.element_size()) // itemsize
    strides = tuple(s // itemsize for s in array.strides)
    return _tensor.tensor_on(base.untyped_storage(), _tensor.TORCH_DTYPE[array.dtype], offset, array.shape, strides)


def tensor_at(base, dtype, offset, shape, strides):
    """A tpu tensor over ``base``'s storage with a layout known when the program was generated."""
    return _tensor.tensor_on(base.untyped_storage(), dtype, offset, shape, strides)


CACHED_VIEW_BLOCK_LIMIT = 1 << 20  # bytes: a kept view keeps its host block alive after the tensor dies


def input_view(tensor, views, index):
    """``as_numpy(tensor)`` for the program's input ``index``, reused from an earlier call when the input lies in
    the same host block at the same offset with the same strides. Its dtype and sizes are those the program was
    generated for (guarded by Dynamo, or the key of a shape-specialised program), so these fix the view;
    ``views`` holds one (block, offset, strides, view) per input. A kept view keeps its block's host memory
    (not its HBM, which the tensor's storage accounts) until the next call, so only blocks of up to
    CACHED_VIEW_BLOCK_LIMIT are kept: building a view costs about a microsecond, which only small inputs feel.
    A set_, .data = or resize_ gives the storage another buffer, and abstract mode a block of None: both build
    the view again (or raise as ``as_numpy`` does)."""
    try:
        block = tensor.untyped_storage()._tpu_hbm_buffer.array
    except AttributeError:
        return _tensor.as_numpy(tensor)  # raises as a tpu kernel does
    offset, strides = tensor.storage_offset(), tensor.stride()
    entry = views[index]
    if entry is not None and entry[0] is block and entry[1] == offset and entry[2] == strides:
        return entry[3]
    view = _tensor.as_numpy(tensor)
    if block is not None and block.nbytes <= CACHED_VIEW_BLOCK_LIMIT:
        views[index] = (block, offset, strides, view)
    return view


def arrays_of(result):
    """The NumPy views of an eager kernel's results (CPU tensors stay tensors: they are read as numbers)."""
    if isinstance(result, torch.Tensor):
        if result.device.type != "tpu":
            return result
        if result.is_conj() or result.is_neg():  # a lazy conjugate (``_conj``) or negation: NumPy reads its values
            result = result.resolve_conj().resolve_neg()
        return _tensor.as_numpy(result)
    if isinstance(result, (list, tuple)):
        return tuple(arrays_of(r) for r in result)
    return result


def host_view(value):
    """A CPU tensor input as a NumPy view (writes reach the tensor); anything else as it is."""
    if isinstance(value, torch.Tensor) and value.device.type == "cpu" and value.dtype in _tensor.NUMPY_DTYPE:
        return value.detach().numpy() if value.dtype != torch.bfloat16 else value
    return value


def host_tensor(value):
    """A host value computed by the program as the CPU tensor the graph returns."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    return value


HELPERS = {
    "ignore_fp_errors": _C.vpu.ignore_fp_errors, "restore_fp_errors": _C.vpu.restore_fp_errors,
    "host_view": host_view, "host_tensor": host_tensor,
    "as_numpy": _tensor.as_numpy, "input_view": input_view, "ndarray": np.ndarray, "new_buffer": new_buffer, "tensor_over": tensor_over, "new_output": new_output,
    "materialize": materialize, "tensor_view": tensor_view, "tensor_at": tensor_at, "arrays_of": arrays_of,
}


class Program:
    """One compiled FX graph: generated source, executed on the caller's tensors."""

    def __init__(self, name, generated, constants=()):
        self._boxed_call = True  # AOTAutograd hands over its argument list (an instance attribute: wrappers copy those)
        self.name = name
        self.generated = generated
        self.constants = constants  # the graph's tensor constants, read as its last inputs
        filename = f"<torch_tpu.compile {name}>"
        linecache.cache[filename] = (len(generated.source), None, generated.source.splitlines(True), filename)
        namespace = dict(generated.namespace)
        exec(compile(generated.source, filename, "exec"), namespace)  # noqa: S102 - our own generated source
        self._run = namespace[name]

    @property
    def source(self):
        return self.generated.source

    def __call__(self, *args):
        """Called with AOTAutograd's boxed list, or (where a wrapper hides ``_boxed_call``) unboxed."""
        args = args[0] if len(args) == 1 and type(args[0]) is list else list(args)
        if self.constants:
            args.extend(self.constants)  # into the handed-over list: the program clears it as inputs die
        if _abstract.MODE.depth:
            raise RuntimeError(
                f"torch_tpu.compile: compiled program {self.name} cannot run in abstract mode (torch_tpu.abstract()) "
                "yet; run the model eagerly under torch_tpu.abstract() to plan it")
        return self._run(args)
