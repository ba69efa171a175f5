"""``torch.autocast("tpu")``: CUDA's autocast op policy, registered on AutocastPrivateUse1.

PyTorch ships no AutocastPrivateUse1 kernels at all (not even a fallthrough), so without
this module every op fails under ``torch.autocast("tpu")``. The op lists mirror
``aten/src/ATen/autocast_mode.h`` (and ``cross_entropy_loss`` is float32, as in CPU's and torch_xla's
lists); the default lower-precision type is bfloat16, the MXU's native input type.

Policies, as in PyTorch:
- lower precision: cast floating tpu inputs to the autocast dtype (matmul-like ops, recurrent layers);
- float32: cast them to float32 (ops whose range or accuracy needs it);
- float32, set dtype: run in float32 through the op's own ``dtype=`` argument, unless set;
- float32, append dtype: redispatch ``norm`` to its overload that takes a dtype;
- promote: cast to the widest floating type among the inputs.
"""

import functools

import torch

LOWER_PRECISION_OPS = (
    "_convolution.deprecated", "_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc",
    "conv_transpose1d", "conv_transpose2d.input", "conv_transpose3d.input", "convolution", "prelu",
    "addmm", "addmv", "addr", "matmul", "einsum", "mm", "mv", "linalg_vecdot", "linear", "addbmm",
    "baddbmm", "bmm", "chain_matmul", "linalg_multi_dot", "_thnn_fused_lstm_cell",
    "_thnn_fused_gru_cell", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell",
    "_scaled_dot_product_flash_attention", "scaled_dot_product_attention",
)
# CUDA casts its cuDNN RNN (``_cudnn_rnn``: input, states and the flattened weights) to the lower precision
# type; whole-sequence RNNs enter tpu through these composites (ops/rnn.py), so the same rule goes here.
RNN_OPS = (
    "lstm.input", "lstm.data", "gru.input", "gru.data", "rnn_tanh.input", "rnn_tanh.data", "rnn_relu.input",
    "rnn_relu.data",
)
FLOAT32_OPS = (
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal",
    "rsqrt", "sinh", "tan", "pow.Tensor_Scalar", "pow.Tensor_Tensor", "pow.Scalar", "softplus",
    "layer_norm", "native_layer_norm", "group_norm", "frobenius_norm.dim", "nuclear_norm",
    "nuclear_norm.dim", "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss",
    "nll_loss2d", "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss",
    "mse_loss", "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss",
    "triplet_margin_loss", "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist",
    "cdist", "renorm", "logsumexp", "upsample_nearest1d", "_upsample_nearest_exact1d",
    "upsample_nearest2d", "_upsample_nearest_exact2d", "upsample_nearest3d",
    "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d",
    "_upsample_bilinear2d_aa", "upsample_trilinear3d", "upsample_bicubic2d", "_upsample_bicubic2d_aa",
    # not in CUDA's list, whose cross_entropy reaches log_softmax with the input's own dtype given (a bf16
    # log_softmax, the loss then 3e-4 off); torch_xla's TPU list and CPU's have it in float32
    "cross_entropy_loss",
)
FLOAT32_SET_DTYPE_OPS = (
    "prod", "prod.dim_int", "softmax.int", "log_softmax.int", "cumprod", "cumsum",
    "linalg_vector_norm", "linalg_matrix_norm", "linalg_matrix_norm.str_ord", "sum", "sum.dim_IntList",
)
FLOAT32_APPEND_DTYPE_OPS = {"norm.Scalar": "norm.ScalarOpt_dtype", "norm.ScalarOpt_dim": "norm.ScalarOpt_dim_dtype"}
PROMOTE_OPS = (
    "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler", "index_put",
    "tensordot", "scatter_add",
)
BANNED_OPS = {
    "binary_cross_entropy": (
        "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast: "
        "use torch.nn.functional.binary_cross_entropy_with_logits or torch.nn.BCEWithLogitsLoss, "
        "which are safe to autocast."
    ),
}

DEFAULT_DTYPE = torch.bfloat16
_AUTOCAST_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastPrivateUse1)
_LIBRARY = torch.library.Library("aten", "IMPL")
_FALLTHROUGH_LIBRARY = torch.library.Library("_", "IMPL")


def overload(name):
    packet, _, overload_name = name.partition(".")
    return getattr(getattr(torch.ops.aten, packet), overload_name or "default")


def is_eligible(value):
    return (
        isinstance(value, torch.Tensor) and value.device.type == "tpu"
        and value.is_floating_point() and value.dtype != torch.float64
    )


def _cast(value, dtype):
    if is_eligible(value):
        return value.to(dtype)
    if isinstance(value, (list, tuple)) and any(map(is_eligible, value)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _cast_all(args, kwargs, dtype):
    return [_cast(a, dtype) for a in args], {k: _cast(v, dtype) for k, v in kwargs.items()}


def _flat_tensors(args, kwargs):
    for value in (*args, *kwargs.values()):
        yield from (value if isinstance(value, (list, tuple)) else (value,))


def lower_precision(op, args, kwargs):
    args, kwargs = _cast_all(args, kwargs, torch.get_autocast_dtype("tpu"))
    return op(*args, **kwargs)


def float32(op, args, kwargs):
    args, kwargs = _cast_all(args, kwargs, torch.float32)
    return op(*args, **kwargs)


def float32_set_dtype(op, args, kwargs):
    if args and is_eligible(args[0]):
        position = [a.name for a in op._schema.arguments].index("dtype")
        if len(args) > position and args[position] is None:
            args = (*args[:position], torch.float32, *args[position + 1:])
        elif len(args) <= position and kwargs.get("dtype") is None:
            kwargs = {**kwargs, "dtype": torch.float32}
    return op(*args, **kwargs)


def promote(op, args, kwargs):
    dtype = torch.get_autocast_dtype("tpu")
    for value in _flat_tensors(args, kwargs):
        if is_eligible(value):
            dtype = torch.promote_types(dtype, value.dtype)
    args, kwargs = _cast_all(args, kwargs, dtype)
    return op(*args, **kwargs)


def _register(name, policy, target=None):
    target = target or overload(name)

    def kernel(*args, **kwargs):
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST_KEYS):
            return policy(target, args, kwargs)

    _LIBRARY.impl(name, kernel, "AutocastPrivateUse1")


def _append_float32_dtype(op, args, kwargs):
    if args and is_eligible(args[0]):
        return op(*args, **kwargs, dtype=torch.float32)
    return op(*args, **kwargs, dtype=args[0].dtype)


def _banned(message, *args, **kwargs):
    raise RuntimeError(message)


def _register_policies():
    _FALLTHROUGH_LIBRARY.fallback(torch.library.fallthrough_kernel, "AutocastPrivateUse1")
    for name in (*LOWER_PRECISION_OPS, *RNN_OPS):
        _register(name, lower_precision)
    for name in FLOAT32_OPS:
        _register(name, float32)
    for name in FLOAT32_SET_DTYPE_OPS:
        _register(name, float32_set_dtype)
    for name, target in FLOAT32_APPEND_DTYPE_OPS.items():
        _register(name, _append_float32_dtype, overload(target))
    for name in PROMOTE_OPS:
        _register(name, promote)
    for name, message in BANNED_OPS.items():
        _LIBRARY.impl(name, functools.partial(_banned, message), "AutocastPrivateUse1")
    torch.set_autocast_dtype("tpu", DEFAULT_DTYPE)


_register_policies()
