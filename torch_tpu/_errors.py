"""Error messages shared by kernels, worded like PyTorch's own so users recognise them."""

import os
import sys
import threading
import typing
import warnings

import torch


def device_mismatch(first, second, op_name=None):
    where = f" (when running {op_name} on tpu)" if op_name else ""
    return RuntimeError(
        f"Expected all tensors to be on the same device, but found at least two devices, "
        f"{first} and {second}!{where}"
    )


def indices_on_another_device(indexed_device):
    """Indexing a host tensor with tpu indices: ATen's advanced-indexing device check, as CUDA users meet it."""
    return RuntimeError(f"indices should be either on cpu or on the same device as the indexed tensor ({indexed_device})")


def check_device_index(device, op_name="tensor creation"):
    """One process drives one chip: tpu:1 and above exist only in other processes."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "tpu" and device.index not in (None, 0):
        raise RuntimeError(
            f"{op_name}: {device} is not available in this process. torch_tpu emulates one chip "
            "per process, always tpu:0; run one process per chip with torchrun "
            "(e.g. `torchrun --nproc-per-node 4 train.py`) and use tpu:0 in each."
        )


def unsupported_dtype(dtype):
    """A format the chip does not store (AMD's fnuz FP8, packed FP4, raw bits)."""
    return TypeError(f"dtype {dtype} is not supported on the tpu device")


# ---------------------------------------------------------------- sizes and storage ----


def negative_dimension(size, shape):
    return RuntimeError(f"Trying to create tensor with negative dimension {size}: {list(shape)}")


def storage_size_overflow(shape, strides=None):
    described = f"sizes={list(shape)}" if strides is None else f"sizes={list(shape)} and strides={list(strides)}"
    return RuntimeError(f"Storage size calculation overflowed with {described}")


def numel_overflow():
    return RuntimeError("numel: integer multiplication overflow")


def negative_strides(strides):
    return RuntimeError(f"as_strided: Negative strides are not supported at the moment, got strides: {list(strides)}")


def invalid_storage_offset(offset):
    return RuntimeError(f"Tensor: invalid storage offset {offset}")


def out_of_storage_bounds(shape, strides, offset, itemsize, needed, available):
    return RuntimeError(
        f"setStorage: sizes {list(shape)}, strides {list(strides)}, storage offset {offset}, and itemsize "
        f"{itemsize} requiring a storage size of {needed} are out of bounds for storage of size {available}"
    )


def negative_allocation(nbytes):
    return RuntimeError(f"the tpu allocator was asked for a negative number of bytes: {nbytes}")


# ---------------------------------------------------------------- errors escaping kernels ----
#
# A kernel's own checks raise PyTorch's errors. Anything else that escapes it (NumPy's ValueError,
# IndexError, AxisError, a casting error, a KeyError of a lookup table...) must not reach the user
# as it is: CPU would have refused the same input with its own words. Most such input fails a
# check that PyTorch's Meta kernels share with CPU (shapes, dims, dtypes), so the op is replayed
# on Meta tensors of the same sizes and dtypes, and Meta's error is raised instead.

_LIBRARY_PACKAGES = frozenset({"numpy", "scipy", "ml_dtypes"})
_PYTORCH_RAISED = "_torch_tpu_raised_by_pytorch"  # set on errors a kernel obtained from PyTorch on purpose
_OWN_PACKAGES = frozenset({"torch_tpu"})
_PYTORCH_ERRORS = (RuntimeError, IndexError, ValueError, TypeError)


def _innermost(traceback):
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    return traceback


def _package(frame):
    return frame.f_globals.get("__name__", "").partition(".")[0]


def _cpu_standin(value):
    """A CPU tensor with ``value``'s sizes, strides and dtype (its values unread), so CPU checks the same call."""
    if isinstance(value, torch.Tensor) and value.device.type == "tpu":
        return torch.empty_strided(value.shape, value.stride(), dtype=value.dtype)
    return value


# torch's own Python wrappers (torch.unique, torch.functional's helpers) sit between the user's line and a kernel;
# the separator keeps torchvision's frames (a name that starts like torch's) the user's
_LIBRARY_DIRS = tuple(os.path.join(os.path.dirname(os.path.abspath(module_file)), "")
                      for module_file in (__file__, torch.__file__))


def warn_at_the_users_line(message, category=UserWarning):
    """``warnings.warn`` from the first frame outside torch_tpu and torch, where C++'s TORCH_WARN puts a CPU kernel's
    warning (the Python line that called the op): under Python's default filter each of the user's lines warns
    once, not the whole program once for torch_tpu's line."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


_WARNED_ONCE = set()


def warn_once(message, stacklevel=3):
    """TORCH_WARN_ONCE: a warning given once per process, or every time under ``torch.set_warn_always(True)``."""
    if message not in _WARNED_ONCE or torch.is_warn_always_enabled():
        _WARNED_ONCE.add(message)
        warnings.warn(message, UserWarning, stacklevel=stacklevel)


def raise_cpu_error(op, *args, **kwargs):
    """Raise the error torch CPU raises for ``op(*args, **kwargs)``, for a call a tpu kernel cannot take.

    The op runs on CPU stand-ins of the tpu tensors; its error is PyTorch's own, marked so that the
    kernel's wrapper passes it on unchanged. If CPU takes the call, the error says tpu does not.
    """
    from torch.utils._pytree import tree_map

    try:
        op(*tree_map(_cpu_standin, args), **tree_map(_cpu_standin, kwargs))
    except Exception as error:
        setattr(error, _PYTORCH_RAISED, True)
        raise
    raise RuntimeError(f"{op}: arguments torch CPU accepts but the tpu device does not")


def escaped(error):
    """Whether ``error`` escaped a kernel without being one of its deliberate, PyTorch-worded errors:
    raised inside NumPy, SciPy or ml_dtypes, or by a call (not a ``raise``) in torch_tpu's code."""
    if isinstance(error, (RuntimeError, NotImplementedError)) or error.__traceback__ is None:
        return False
    if getattr(error, _PYTORCH_RAISED, False):
        return False
    if type(error).__module__.partition(".")[0] in _LIBRARY_PACKAGES:
        return True
    innermost = _innermost(error.__traceback__)
    package = _package(innermost.tb_frame)
    if package in _LIBRARY_PACKAGES:
        return True
    if package not in _OWN_PACKAGES:
        return False  # PyTorch's own Python code raised it: already PyTorch's error
    import dis  # only errors come this way

    return innermost.tb_frame.f_code.co_code[innermost.tb_lasti] != dis.opmap["RAISE_VARARGS"]  # a call or lookup failed


_META = torch.device("meta")
_replaying = threading.local()


def _on_meta(value, memo):
    """A tpu tensor as a Meta tensor of the same sizes, strides and dtype; a tpu device as Meta."""
    if isinstance(value, torch.Tensor) and value.device.type == "tpu":
        if id(value) not in memo:  # the same tensor passed twice stays one tensor
            memo[id(value)] = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype, device=_META)
        return memo[id(value)]
    if isinstance(value, (torch.device, str)) and value in ("tpu", "tpu:0", torch.device("tpu", 0)):
        return _META
    return value


def tensor_slots(op):
    """The positions of ``op``'s positional Tensor arguments."""
    return frozenset(i for i, argument in enumerate(op._schema.arguments)
                     if isinstance(argument.type, torch.TensorType) and not argument.kwarg_only)


def numbers_as_tensors(args, slots):
    """``args`` with each Python number in a Tensor position (``slots``) as a 0-d CPU tensor: the dispatcher hands
    wrapped numbers to Python kernels as the numbers themselves, and the overload called again takes only tensors
    there."""
    if all(isinstance(args[i], torch.Tensor) for i in slots if i < len(args)):
        return args
    return tuple(torch.tensor(value) if i in slots and not isinstance(value, torch.Tensor) else value
                 for i, value in enumerate(args))


def meta_error(op, args, kwargs):
    """The error PyTorch's Meta kernel of ``op`` raises for arguments shaped like these, or None."""
    from torch.utils._pytree import tree_map

    args = numbers_as_tensors(args, tensor_slots(op))
    if getattr(_replaying, "active", False):
        return None  # a replay that reached a tpu kernel again: no help from here
    memo = {}
    _replaying.active = True
    try:
        meta_args, meta_kwargs = tree_map(lambda v: _on_meta(v, memo), (args, kwargs))
        op(*meta_args, **meta_kwargs)
    except _PYTORCH_ERRORS as error:
        if isinstance(error, NotImplementedError) or "meta" in str(error).lower():
            return None  # no Meta kernel, or one that speaks of Meta tensors: no help
        return type(error)(*error.args)
    except Exception:  # noqa: BLE001 - whatever else Meta raises says nothing about the input
        return None
    finally:
        _replaying.active = False
    return None


_CPU_REPLAY_BYTES = 1 << 28  # the most input bytes copied to ask CPU for its error


def _on_cpu(value):
    """A tensor as a host copy (same values, so value checks agree; a CPU argument is copied too, so that an
    in-place op replayed for its error never writes the caller's tensor); a tpu device as CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, (torch.device, str)) and value in ("tpu", "tpu:0", torch.device("tpu", 0)):
        return torch.device("cpu")
    return value


def cpu_error(op, args, kwargs):
    """The error torch CPU raises for this call (an input its kernel refuses: a dtype it has no loop for,
    say), from host copies of the tpu tensors; None if CPU takes the call, if the copies would be large, or
    if the op draws random numbers (CPU's generator must not move). Only the error is used, never a result."""
    from torch.utils._pytree import tree_map

    copied_bytes = sum(t.nbytes for t in _tensors_of(args, kwargs))
    if (getattr(_replaying, "active", False) or copied_bytes > _CPU_REPLAY_BYTES
            or torch.Tag.nondeterministic_seeded in getattr(op, "tags", ())):
        return None
    _replaying.active = True
    try:
        args = numbers_as_tensors(args, tensor_slots(op))
        op(*tree_map(_on_cpu, args), **tree_map(_on_cpu, kwargs))
    except (*_PYTORCH_ERRORS, NotImplementedError) as error:
        return type(error)(*error.args)
    except Exception:  # noqa: BLE001 - anything else says nothing about the input
        return None
    finally:
        _replaying.active = False
    return None


def _tensors_of(args, kwargs):
    from torch.utils._pytree import tree_leaves

    return [leaf for leaf in tree_leaves((args, kwargs)) if isinstance(leaf, torch.Tensor)]


def host_out_of_memory(op_name, error):
    return torch.OutOfMemoryError(
        f"{op_name}: host RAM ran out while computing on tpu (the emulated chip computes in this machine's "
        f"memory; HBM itself was not full): {error}"
    )


def kernel_error(error, op, args, kwargs):
    """What the user sees when ``error`` escapes the tpu kernel of ``op`` (an OpOverload)."""
    if isinstance(error, MemoryError):
        return host_out_of_memory(op, error)
    if not escaped(error):
        return error
    if any(isinstance(t, torch.Tensor) and t.dim() > 64 for t in _tensors_of(args, kwargs)):
        return RuntimeError("only tensors with up to 64 dims are supported")  # NumPy's limit, and TensorIterator's
    return meta_error(op, args, kwargs) or cpu_error(op, args, kwargs) or RuntimeError(
        f"{op}: this input is not supported by the tpu kernel ({type(error).__name__}: {error}). "
        "PyTorch's CPU kernel may accept it or refuse it with a clearer message; please report it."
    )


def release_frames(error):
    """Drop the local variables of the frames ``error`` passed through inside a kernel: the
    tensors they hold (a half-built output, say) would stay allocated in HBM for as long as the
    exception lives, as CPU's C++ temporaries do not."""
    import traceback

    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__


# ---------------------------------------------------------------- dtypes in messages ----


class DtypeSpelling(typing.NamedTuple):
    """How PyTorch's messages spell a dtype."""

    scalar_type: str  # c10::ScalarType: "result type Float", "not implemented for 'Float'"
    cpp: str  # caffe2::TypeMeta's C++ name: "Expected out tensor to have dtype float"
    conversion: str  # c10's scalar conversion: "value cannot be converted to type int64_t without overflow"


DTYPE_SPELLINGS = {
    torch.float32: DtypeSpelling("Float", "float", "float"),
    torch.float64: DtypeSpelling("Double", "double", "double"),
    torch.float16: DtypeSpelling("Half", "c10::Half", "c10::Half"),
    torch.bfloat16: DtypeSpelling("BFloat16", "c10::BFloat16", "c10::BFloat16"),
    torch.float8_e4m3fn: DtypeSpelling("Float8_e4m3fn", "c10::Float8_e4m3fn", "c10::Float8_e4m3fn"),
    torch.float8_e5m2: DtypeSpelling("Float8_e5m2", "c10::Float8_e5m2", "c10::Float8_e5m2"),
    torch.int8: DtypeSpelling("Char", "signed char", "int8_t"),
    torch.int16: DtypeSpelling("Short", "short int", "int16_t"),
    torch.int32: DtypeSpelling("Int", "int", "int"),
    torch.int64: DtypeSpelling("Long", "long int", "int64_t"),
    torch.uint8: DtypeSpelling("Byte", "unsigned char", "uint8_t"),
    torch.uint16: DtypeSpelling("UInt16", "short unsigned int", "uint16_t"),
    torch.uint32: DtypeSpelling("UInt32", "unsigned int", "uint32_t"),
    torch.uint64: DtypeSpelling("UInt64", "long unsigned int", "uint64_t"),
    torch.bool: DtypeSpelling("Bool", "bool", "bool"),
    torch.complex32: DtypeSpelling("ComplexHalf", "c10::complex<c10::Half>", "c10::complex<c10::Half>"),
    torch.complex64: DtypeSpelling("ComplexFloat", "c10::complex<float>", "c10::complex<float>"),
    torch.complex128: DtypeSpelling("ComplexDouble", "c10::complex<double>", "c10::complex<double>"),
}


def scalar_type_name(dtype):
    """'Float' for torch.float32, as c10::ScalarType prints."""
    return DTYPE_SPELLINGS[dtype].scalar_type


def cpp_type_name(dtype):
    """'float' for torch.float32, as caffe2::TypeMeta prints."""
    return DTYPE_SPELLINGS[dtype].cpp


def failed_check(condition):
    """A bare TORCH_CHECK(condition)'s error: the condition's source text and c10's plea."""
    return RuntimeError(f"Expected {condition} to be true, but got false.  (Could this error message be improved?  "
                        "If so, please report an enhancement request to PyTorch.)")


def not_implemented_for(kernel_name, dtype):
    """AT_DISPATCH's error for a dtype a CPU kernel has no loop for."""
    return NotImplementedError(f'"{kernel_name}" not implemented for \'{scalar_type_name(dtype)}\'')


def value_overflow(dtype):
    return RuntimeError(f"value cannot be converted to type {DTYPE_SPELLINGS[dtype].conversion} without overflow")


def cannot_cast(result_dtype, out_dtype):
    """TensorIterator's error for an output that cannot hold the result type."""
    return RuntimeError(f"result type {scalar_type_name(result_dtype)} can't be cast to the desired output type "
                        f"{scalar_type_name(out_dtype)}")


def sparse_add_cannot_cast(result_dtype, out_dtype):
    """CPU's sparse add_out's own words for an output that cannot hold the result type."""
    return RuntimeError(f"Can't convert result type {scalar_type_name(result_dtype)} to output "
                        f"{scalar_type_name(out_dtype)} in add operation")


def unexpected_out_dtype(expected, got):
    """Structured kernels' error for an ``out=`` tensor of another dtype than the result's."""
    return RuntimeError(f"Expected out tensor to have dtype {cpp_type_name(expected)}, but got {cpp_type_name(got)} instead")


def found_dtype(got, expected):
    return RuntimeError(f"Found dtype {scalar_type_name(got)} but expected {scalar_type_name(expected)}")


def shape_mismatch(out_shape, broadcast_shape):
    return RuntimeError(f"output with shape {list(out_shape)} doesn't match the broadcast shape {list(broadcast_shape)}")


def dim_out_of_range(dim, ndim):
    rank = max(ndim, 1)  # a 0-d tensor accepts dims 0 and -1
    return IndexError(f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {dim})")


def resized_output_warning(old_shape, new_shape):
    return (f"An output with one or more elements was resized since it had shape {list(old_shape)}, which does not "
            f"match the required output shape {list(new_shape)}. This behavior is deprecated, and in a future PyTorch "
            "release outputs will not be resized unless they have zero elements. You can explicitly reuse an out "
            "tensor t by resizing it, inplace, to zero elements with t.resize_(0).")


def broadcast_mismatch(shapes):
    """at::infer_size's error for the first pair of ``shapes`` (folded left to right) that do not broadcast."""
    result = ()
    for shape in shapes:
        ndim = max(len(result), len(shape))
        a, b = (1,) * (ndim - len(result)) + tuple(result), (1,) * (ndim - len(shape)) + tuple(shape)
        for dim in reversed(range(ndim)):
            if a[dim] != b[dim] and a[dim] != 1 and b[dim] != 1:
                return RuntimeError(f"The size of tensor a ({a[dim]}) must match the size of tensor b ({b[dim]}) "
                                    f"at non-singleton dimension {dim}")
        result = tuple(y if x == 1 else x for x, y in zip(a, b))
    return RuntimeError(f"shapes {[list(s) for s in shapes]} cannot be broadcast together")


class NoValuesError(RuntimeError):
    """What needs a value from a tpu tensor that has none: one made or written in abstract mode.

    ``what`` names the operation; the launch wrapper fills it in when a kernel found out first.
    """

    def __init__(self, what=None):
        self.what = what
        super().__init__(
            f"{what or 'This tpu kernel'} needs tensor values, but this tpu tensor has none: it was created or "
            "written in abstract mode (torch_tpu.abstract() or TORCH_TPU_ABSTRACT=1), which keeps shapes, dtypes "
            "and HBM bytes only."
        )

    def naming(self, what):
        """This error, naming ``what`` if no operation is named yet."""
        return self if self.what is not None else NoValuesError(what)
