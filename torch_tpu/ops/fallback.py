"""The one boxed fallback: what runs when an aten op has no tpu kernel.

In order it tries:
1. view ops (schema returns an alias of an input): redispatch to Meta, which
   only computes sizes and strides over the same storage;
2. a decomposition from ``torch._decomp`` into ops that do have kernels;
3. the CPU, only if the user opted in with ``TORCH_TPU_CPU_FALLBACK=1``
   (warned once per op, counted in ``torch_tpu.fallback_counts()``); in abstract mode, where
   there are no values to send, Meta gives the result's shape instead;
4. otherwise a NotImplementedError naming the op.

Ops of a feature torch_tpu does not have (strided nested tensors beyond ``nested_strided.py``, which also
get their own fallback on the NestedTensorPrivateUse1 key) skip the CPU and say what to use instead.

``torch_tpu._lazy`` registers the boxed fallbacks at import and forwards to these functions once
the kernels are loaded (a fallback cannot be replaced while the process runs).
"""

import collections
import os
import threading
import warnings

import torch
from torch._decomp import decomposition_table
from torch.utils._pytree import tree_flatten, tree_map

from .. import _abstract, _abstract_launch, _tensor
from .._errors import device_mismatch, release_frames

CPU_FALLBACK_VARIABLE = "TORCH_TPU_CPU_FALLBACK"
META_KEYSET = torch._C.DispatchKeySet(torch._C.DispatchKey.Meta)

_counts = collections.Counter()
_warned = set()
_active_decompositions = threading.local()


def fallback_counts():
    """How many times each op ran on the CPU through ``TORCH_TPU_CPU_FALLBACK=1``."""
    return dict(_counts)


def cpu_fallback_enabled():
    return os.environ.get(CPU_FALLBACK_VARIABLE, "0") == "1"


def returns_view(schema):
    return any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)


def _run_decomposition(op, decomposition, args, kwargs):
    active = _active_decompositions.__dict__.setdefault("ops", set())
    active.add(op)
    try:
        return decomposition(*args, **kwargs)
    finally:
        active.discard(op)


def _usable_decomposition(op):
    if op in getattr(_active_decompositions, "ops", ()):
        return None  # the decomposition reached its own op again: it cannot help
    return decomposition_table.get(op)


def _to_cpu(value):
    if _tensor.is_tpu(value):
        return value.cpu()
    if isinstance(value, torch.device) and value.type == "tpu":
        return torch.device("cpu")
    return value


def _to_tpu(value):
    return value.to("tpu") if isinstance(value, torch.Tensor) and value.device.type == "cpu" else value


def _write_back(original, computed):
    if original.shape != computed.shape:
        original.resize_(computed.shape)
    original.copy_(computed)


def op_name(op):
    return f"{op._schema.name}.{op._overloadname}"


def run_on_cpu(op, args, kwargs):
    name = op_name(op)
    if name not in _warned:
        _warned.add(name)
        warnings.warn(
            f"{name} has no tpu kernel; running it on the CPU because {CPU_FALLBACK_VARIABLE}=1. "
            "Its numerics and cost are the CPU's, not the TPU's.",
            stacklevel=2,
        )
    _counts[name] += 1
    cpu_args, cpu_kwargs = tree_map(_to_cpu, (args, kwargs))
    if "device" in kwargs and kwargs["device"] is None and not any(map(_tensor.is_tpu, args)):
        cpu_kwargs["device"] = torch.device("cpu")
    result = op(*cpu_args, **cpu_kwargs)
    written = {}
    for position, argument in enumerate(op._schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        if argument.kwarg_only or position >= len(args):
            original, computed = kwargs.get(argument.name), cpu_kwargs.get(argument.name)
        else:
            original, computed = args[position], cpu_args[position]
        if _tensor.is_tpu(original):
            _write_back(original, computed)
            written[id(computed)] = original
    return tree_map(lambda v: written[id(v)] if id(v) in written else _to_tpu(v), result)


STRIDED_NESTED = (
    "strided nested tensors (torch.nested with layout=torch.strided) support on tpu only their construction "
    "(nested_tensor, as_nested_tensor), .to()/.cpu(), to_padded_tensor, unbind, select and indexing, clone, "
    "copy_, printing, unary pointwise ops, add/sub/mul/div of two alike or with a scalar, ==, > and >= "
    "with a number (CPU has no <, <=, != for them), masked_fill, softmax, layer_norm, linear, bmm, matmul, "
    "sum over the last dim (keepdim=True), all, where, transpose, view/reshape, unsqueeze/squeeze, chunk/split, "
    "narrow, cat, dropout, ones_like/randn_like, scaled_dot_product_attention, the backward of these where CPU has "
    "one, and "
    "nn.TransformerEncoder's inference fast path (torch_tpu/ops/nested_strided.py); "
    "PyTorch's other kernels for them are C++ code that reads memory through data pointers, and tpu bytes live in "
    "emulated HBM. Use layout=torch.jagged, or to_padded_tensor() and dense ops. For nn.TransformerEncoder, "
    "enable_nested_tensor=False (nn.Transformer's encoder: model.encoder.use_nested_tensor = False) gives the same "
    "values at every unpadded position without nested tensors."
)
SPARSE_LAYOUTS = (
    "sparse layouts are not supported on tpu beyond sparse COO tensors' construction, .to(), to_sparse(), "
    "to_dense(), coalesce(), copy_(), mm/addmm with a dense matrix, addition (sparse + sparse, dense + sparse), "
    "multiplication by a scalar and neg (torch_tpu/ops/sparse.py; the compressed layouts "
    "sparse_csr, sparse_csc, sparse_bsr and sparse_bsc not at all: their kernels are C++ code per backend that reads "
    "indices through data pointers); keep sparse tensors on the CPU, or make them dense (to_dense()) on tpu."
)
QUANTIZED = (
    "quantized tensors (torch.quint8, qint8, qint32, quint4x2; quantize_per_tensor and friends) are not supported "
    "on tpu (their kernels are C++ code per backend that reads the scales and zero points through a C++ quantizer); "
    "quantize on the CPU and run quantized models there (torch.ao.quantization's quantize_dynamic and convert make "
    "CPU modules), or use FP8 (torch_tpu.fp8) for low-precision compute on tpu."
)
# Whole features torch_tpu does not have, by their ops' name prefixes. The CPU fallback cannot help with
# these (its results would have to come back to tpu), so the error says what to do instead.
UNSUPPORTED_FEATURES = {
    "aten::_nested_tensor_": STRIDED_NESTED,
    "aten::_nested_from_padded": STRIDED_NESTED,
    "aten::_nested_view_from_buffer": STRIDED_NESTED,
    "aten::_to_sparse": SPARSE_LAYOUTS,  # to_sparse() and its csr/csc/bsr/bsc forms, from a dense tensor
    "aten::sparse_": SPARSE_LAYOUTS,
    "aten::_sparse_": SPARSE_LAYOUTS,
    "aten::quantize_per_": QUANTIZED,
    "aten::_empty_affine_quantized": QUANTIZED,
    "aten::_empty_per_channel_affine_quantized": QUANTIZED,
    "quantized::": QUANTIZED,  # the quantized modules' ops (linear_dynamic, linear_prepack_fp16, conv2d, ...)
}


def unsupported_feature(name):
    return next((why for prefix, why in UNSUPPORTED_FEATURES.items() if name.startswith(prefix)), None)


def unsupported(op, why):
    return NotImplementedError(f"The operator '{op_name(op)}' is not implemented for the tpu device: {why}")


def not_implemented(op):
    why = unsupported_feature(op_name(op))
    if why is not None:
        return unsupported(op, why)
    return NotImplementedError(
        f"The operator '{op_name(op)}' is not implemented for the tpu device (torch_tpu has no kernel or "
        f"decomposition for it). Set {CPU_FALLBACK_VARIABLE}=1 to run it on the CPU instead "
        "(slow, with CPU numerics), and please report it."
    )


def tpu_fallback(keyset, op, *args, **kwargs):
    try:
        return _run(op, args, kwargs)
    except Exception as error:
        release_frames(error)  # a decomposition's intermediate tensors must not outlive a failed op
        del args, kwargs
        raise


def _host_device_beside_tpu(args, kwargs):
    """The device of a non-scalar host tensor passed with tpu tensors, which a device kernel would refuse."""
    tensors = [v for v in tree_flatten((args, kwargs))[0] if isinstance(v, torch.Tensor)]
    if any(map(_tensor.is_tpu, tensors)):
        return next((t.device for t in tensors if t.device.type == "cpu" and t.dim() > 0), None)
    return None


def _run(op, args, kwargs):
    if returns_view(op._schema):
        return op.redispatch(META_KEYSET, *args, **kwargs)
    decomposition = _usable_decomposition(op)
    if decomposition is not None:
        return _run_decomposition(op, decomposition, args, kwargs)
    # A host tensor reached here because a composite op chose its CPU path from its first input (a tpu
    # convolution given a CPU input runs _slow_conv2d_forward): the user's error is the mixed devices,
    # as on CUDA, not a missing kernel, and the opt-in CPU fallback must not hide it either.
    host_device = _host_device_beside_tpu(args, kwargs)
    if host_device is not None:
        raise device_mismatch("tpu:0", host_device, op_name(op))
    if cpu_fallback_enabled() and unsupported_feature(op_name(op)) is None:
        if _abstract.is_abstract():
            return _abstract_launch.run(op, args, kwargs)
        return run_on_cpu(op, args, kwargs)
    raise not_implemented(op)


def nested_fallback(keyset, op, *args, **kwargs):
    """Every op on a strided nested tensor whose buffer would be on tpu, such as ``nested.softmax(-1)``."""
    raise unsupported(op, STRIDED_NESTED)


def quantized_fallback(keyset, op, *args, **kwargs):
    """Every op on a quantized tensor that would be on tpu, such as ``torch._empty_affine_quantized(..., device="tpu")``."""
    raise unsupported(op, QUANTIZED)


def sparse_fallback(keyset, op, *args, **kwargs):
    """Every op on a sparse tensor whose values would be on tpu, such as ``sparse.to("tpu")``."""
    raise unsupported(op, SPARSE_LAYOUTS)
