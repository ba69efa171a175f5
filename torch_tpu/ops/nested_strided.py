"""Strided nested tensors (``torch.nested`` with ``layout=torch.strided``) on tpu, as far as nn.TransformerEncoder's
inference fast path and the common entry points need them.

A strided nested tensor is PyTorch's C++ ``NestedTensorImpl``: one flat buffer, here an ordinary tpu tensor (so
HBM counts its bytes and frees them with it), and three CPU tensors of metadata (each component's sizes, strides
and storage offset). Its ops dispatch on the NestedTensorPrivateUse1 key. Four kinds of kernel serve it:

- PyTorch's own NestedTensorCPU kernels, for the ops in ``BUFFER_GENERIC_OPS`` and ``BINARY_OPS``: each reads only
  the metadata and computes with aten ops on the buffer (``get_buffer().copy_``, ``split_with_sizes``,
  ``constant_pad_nd``, ``as_strided``...), which then dispatch to the tpu kernels. They are redispatched to
  NestedTensorCPU. Every one was read in aten/src/ATen/native/nested/ (NestedTensorMath.cpp,
  NestedTensorFactories.cpp, NestedTensorUnaryOps.cpp, NestedTensorBinaryOps.cpp); the NestedTensorCPU kernels
  that loop over the buffer's data pointer (``native_layer_norm``'s ``LayerNormKernel``,
  ``_transform_bias_rescale_qkv``, and through it ``_native_multi_head_attention``) are not listed: on tpu that
  pointer is 0.
- likewise PyTorch's CPU kernels that make a nested tensor from dense tpu tensors (``CONSTRUCTORS``), registered
  on PrivateUse1 and redispatched to CPU: their maths (the lengths from a padding mask, the masked copy into one
  buffer) runs as tpu ops, so the lengths and the buffer are CPU's by construction.
- layer norm: the dense kernel on the buffer's rows.
- the fused encoder layer on a nested input: the dense kernel of ``transformer.py`` on the sequences' packed rows
  (the buffer), padded only around the attention, with the padding as a key padding mask. CPU's nested kernel
  masks the same keys (its softmax over each sequence's own length), so every position gets the same values, and
  the row-wise work (feed-forward, norms) is done for the real rows only, as on CPU.

- the sum over the last dim and its backward: CPU's loop (which reads the data pointer) run on the buffer's bytes.

Every other op on a strided nested tpu tensor reaches ``fallback.nested_fallback`` and its error. Autograd works as
on CPU: ``as_nested_tensor`` of tensors that require grad records the nested tensor's construction, and the ops
above with a backward on CPU have it here (their backward kernels are listed with them).
"""

import numpy as np
import torch

from .. import _C, _tensor
from .._errors import not_implemented_for
from ._common import wrap_dim
from .fallback import unsupported
from ._registry import overload, redispatching, register, registering_at, unseen_by_function_modes
from .transformer import PADDING_MASK, transformer_encoder_layer_fwd

_NESTED_CPU = torch._C.DispatchKeySet(torch._C.DispatchKey.NestedTensorCPU)
_CPU = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
_aten = torch.ops.aten

BUFFER_GENERIC_OPS = (
    "_nested_tensor_size", "_nested_tensor_strides", "_nested_tensor_storage_offsets", "values", "unbind.int",
    "to_padded_tensor", "_nested_from_padded_and_nested_example", "_to_copy", "empty_like", "copy_", "clone",
    "detach", "alias", "is_same_size", "zero_", "fill_.Scalar", "fill_.Tensor",
    # NestedTensorUnaryOps.cpp: the op on the whole buffer (map_nt)
    "abs", "abs_", "sgn", "sgn_", "neg", "neg_", "logical_not", "logical_not_", "relu", "relu_", "gelu", "gelu_",
    "tanh", "tanh_", "silu", "silu_", "sin", "cos", "sqrt", "isinf", "isposinf", "isneginf", "isnan",
    # NestedTensorBinaryOps.cpp: the op on the buffer and a scalar, or on a mask's buffer
    "mul.Scalar", "mul_.Scalar", "div.Scalar", "masked_fill.Scalar", "eq.Scalar", "gt.Scalar", "ge.Scalar",
    # NestedTensorMath.cpp: views of one component (as_strided of the buffer), softmax per component (_softmax_out),
    # transpose (the metadata's columns swapped); NestedTensorTransformerFunctions.cpp: linear (one linear of the
    # buffer's rows)
    "_softmax", "transpose.int", "linear",
    # NestedTensorMatmul.cpp: one mm_out per component, into views of one output buffer; matmul of two nested
    # tensors as bmm (or per component for more dims)
    "bmm", "matmul",
    # their backwards (each a map over the buffer, aten ops on its components' views, or matmuls of nested tensors)
    "matmul_backward", "_softmax_backward_data", "threshold_backward",
    "_nested_select_backward", "linear_backward", "gelu_backward", "silu_backward",
    "_test_autograd_multiple_dispatch.fullcoverage",  # PyTorch's test of autograd's per-key formulas
    # NestedTensorMath.cpp and NestedTensorUtils.cpp: views (new metadata over the same buffer: view, hence reshape,
    # unsqueeze, squeeze, chunk and split of the last dim), cat along dim 0 (of the buffers), dropout of the buffer
    "view", "unsqueeze", "squeeze.dim", "chunk", "split_with_sizes", "cat", "native_dropout",
    "squeeze", "squeeze.dims", "narrow",
    # what scaled_dot_product_attention's math path calls on nested tensors (its mask of fully masked rows: all,
    # where), and the like-factories (ones_like; randn_like's normal_ of the buffer)
    "_safe_softmax", "all.dim", "where.self", "where.self_out", "ones_like", "normal_",
)
# NestedTensorBinaryOps.cpp: the op on both buffers, or on one and a 0-d tensor (its nested-with-dense case is CUDA's)
BINARY_OPS = ("add.Tensor", "add_.Tensor", "sub.Tensor", "mul.Tensor", "mul_.Tensor", "div.Tensor", "eq.Tensor")
CONSTRUCTORS = (
    "_nested_tensor_from_mask", "_nested_tensor_from_mask_left_aligned", "_nested_from_padded",
    "_nested_view_from_buffer",
)


nested_kernel = registering_at("NestedTensorPrivateUse1", unseen_by_function_modes)


for _name in BUFFER_GENERIC_OPS:
    nested_kernel(_name)(redispatching(overload(_name), _NESTED_CPU))


def with_buffer(nested, buffer):
    """A nested tensor over ``buffer`` with ``nested``'s components: sizes, strides and offsets."""
    return _aten._nested_view_from_buffer(buffer, nested._nested_tensor_size(), nested._nested_tensor_strides(),
                                          nested._nested_tensor_storage_offsets())


def _binary(op):
    """PyTorch's kernel, except for a Python number: the dispatcher hands a Python kernel the number a wrapped 0-d
    tensor stood for, and a Tensor overload cannot take it back, so the op runs on the buffer here with the number,
    keeping its promotion as a wrapped number (CPU's kernel does the same on its buffer)."""
    generic = redispatching(op, _NESTED_CPU)
    in_place = op._schema.arguments[0].alias_info is not None

    def kernel(self, other, *args, **kwargs):
        if isinstance(other, torch.Tensor):
            return generic(self, other, *args, **kwargs)
        if in_place and not self.is_contiguous():  # CPU's kernel writes into get_buffer(), which refuses
            raise RuntimeError("NestedTensor must be contiguous to get buffer.")
        result = op(self.values(), other, *args, **kwargs)
        return self if in_place else with_buffer(self, result)

    return kernel


for _name in BINARY_OPS:
    nested_kernel(_name)(_binary(overload(_name)))
for _name in CONSTRUCTORS:
    register(_name, charge=False)(redispatching(overload(_name), _CPU))


_composite_select = redispatching(overload("select.int"), _NESTED_CPU)


@nested_kernel("select.int")
def nested_select(self, dim, index):
    """PyTorch's kernel (``nt[i]``: a view of one component; ``nt[..., i]``: a view of each component's slice) with
    ``dim`` made non-negative first. For a negative dim other than 0's, CPU's own kernel (select_nested) never finds
    the dim among the components' and leaves the view's offsets uninitialised: garbage values, or reads outside the
    buffer, in torch 2.13. Wrapped, ``nt.select(-1, i)`` is ``nt.select(nt.dim() - 1, i)``, as for dense tensors."""
    return _composite_select(self, wrap_dim(dim, self.dim()), index)


# AT_DISPATCH_ALL_TYPES_AND2(Half, BFloat16): the types CPU's nested sum has a loop for
SUMMABLE_DTYPES = frozenset({torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float32,
                             torch.float64, torch.float16, torch.bfloat16})


def _check_sum_dim(self, dims, keepdim, dtype):
    """CPU's checks, in its order and words (NestedTensor_sum_dim_CPU, NestedTensorMath.cpp)."""
    if dims is None or len(dims) != 1:
        raise RuntimeError("NestedTensor only allows reduction of a single dimension for now.")
    dim = wrap_dim(dims[0], self.dim())
    if dim != self.dim() - 1:
        raise RuntimeError(f"NestedTensor can only be reduced across the last dimension for now got dimension {dim} "
                           "instead.")
    if not keepdim:
        raise RuntimeError("NestedTensor always requires keepdim=True for now.")
    if dtype is not None:
        raise RuntimeError("NestedTensor does not support dtype argument for now.")
    if not self.is_contiguous():
        raise RuntimeError("NestedTensor does not support reductions when the input is noncontiguous for now.")


def sequential_row_sums(values, row_lengths, row_counts):
    """Each row's sum, added left to right in the element type (CPU's nested loop, ``scalar_t res += x``: float16
    rounded at every step), of the rows laid one after another in ``values``: ``row_counts[i]`` rows of
    ``row_lengths[i]`` elements for component i."""
    sums, start = [], 0
    for length, count in zip(row_lengths, row_counts):
        rows = values[start:start + length * count].reshape(count, length)
        start += length * count
        sums.append(np.cumsum(rows, axis=1, dtype=rows.dtype)[:, -1] if length else np.zeros(count, values.dtype))
    return np.concatenate(sums)


@nested_kernel("sum.dim_IntList")
def nested_sum_dim(self, dim, keepdim=False, *, dtype=None):
    """The sum over the last dim of each component (CPU's kernel loops over the buffer's data pointer, so the
    loop runs here on its bytes), as one launch: the buffer read, one element per row written."""
    _check_sum_dim(self, dim, keepdim, dtype)
    if self.size(0) == 0:
        return self
    if self.dtype not in SUMMABLE_DTYPES:
        raise not_implemented_for("nested_sum_dim_cpu", self.dtype)
    sizes = self._nested_tensor_size()
    out_sizes = sizes.clone()
    out_sizes[:, -1] = 1
    buffer = self.values()
    row_counts = out_sizes.prod(-1)
    result = _tensor.empty((int(row_counts.sum()),), self.dtype)
    if _tensor.tensor_has_values(buffer):  # in abstract mode, the result's bytes without values
        _tensor.as_numpy(result)[...] = sequential_row_sums(_tensor.as_numpy(buffer), sizes[:, -1].tolist(),
                                                            row_counts.tolist())
    clock = _C.current_chip().clock
    clock.charge(_C.clock.KernelCost("sum.dim_IntList", vpu_ops=buffer.numel(), bytes_read=buffer.nbytes,
                                     bytes_written=result.nbytes), clock.current_stream)
    return packed(result, out_sizes)


@nested_kernel("_nested_sum_backward")
def nested_sum_backward(grad, self, dim, keepdim=False):
    """Each row's gradient repeated along the summed (last) dim: CPU's kernel writes it through the data pointer."""
    sizes = self._nested_tensor_size()
    row_lengths = sizes[:, -1].repeat_interleave(sizes[:, :-1].prod(1))
    return with_buffer(self, grad.contiguous().values().repeat_interleave(row_lengths.to(grad.device)))


def packed(buffer, sizes):
    """A nested tensor of components of ``sizes`` (one row each) laid contiguously one after another in ``buffer``."""
    reversed_sizes = sizes.flip(1)
    strides = torch.cat([reversed_sizes[:, :-1].cumprod(1).flip(1), torch.ones_like(sizes[:, :1])], 1)
    numels = sizes.prod(1)
    offsets = torch.cat([numels.new_zeros(1), numels.cumsum(0)[:-1]])
    return _aten._nested_view_from_buffer(buffer, sizes, strides, offsets)


def _check_rows_of_width(sizes, width):
    """CPU's checks of the layer's first nested linear (NestedTensorTransformerFunctions.cpp): components of two
    dims, one trailing dim among them, equal to the weight's."""
    if sizes.dim() != 2 or sizes.shape[1] != 2:
        raise RuntimeError(f"Linear requires nested_tensor.dim == 3 and dense_matrix.dim == 2. Nested tensor dim: "
                           f"{sizes.shape[1] + 1 if sizes.dim() == 2 else 1}. Dense tensor dim: 2")
    widths = sizes[:, 1]
    if not bool((widths == widths[0]).all()):
        column = max(len(str(int(w))) for w in widths) + 1  # as C++ prints a LongTensor
        listed = "\n".join(f"{int(w):>{column}}" for w in widths)
        raise RuntimeError("Expected all tensors in nested tensor to have the same trailing dimension, instead last "
                           f"dimension equals: {listed}\n[ torch.LongTensor{{{len(widths)}}} ]")
    if int(widths[0]) != width:
        raise RuntimeError("Shape mismatch for NestedTensor Matmul: Expected input's (a nested tensor) 'last_dim' to "
                           f"equal 'weight.size(0), but got: last_dim = {int(widths[0])}, and weight.size(0) = {width}")


@nested_kernel("_transformer_encoder_layer_fwd")
def nested_transformer_encoder_layer_fwd(src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias,
                                         use_gelu, norm_first, eps, norm_weight_1, norm_bias_1, norm_weight_2,
                                         norm_bias_2, ffn_weight_1, ffn_bias_1, ffn_weight_2, ffn_bias_2, mask=None,
                                         mask_type=None):
    """The dense layer on the sequences' packed rows, each attention batch padded to the longest sequence with
    the padding as a key padding mask (CPU's nested kernel masks the same keys)."""
    if mask is not None:  # nn.TransformerEncoderLayer never passes one with a nested input
        raise unsupported(_aten._transformer_encoder_layer_fwd.default,
                          "a mask with a nested input is not supported on tpu; pass the padded tensor and the mask")
    src = src.contiguous()
    sizes = src._nested_tensor_size()
    _check_rows_of_width(sizes, embed_dim)
    lengths = sizes[:, 0]
    in_sequence = torch.arange(int(lengths.max()) if len(lengths) else 0) < lengths[:, None]  # (batch, longest)
    padded_row = in_sequence.flatten().nonzero().squeeze(1).to(src.device)  # of each packed row
    padding = (~in_sequence).to(src.device)

    def attend(rows, attention):
        batch = rows.new_zeros(in_sequence.numel(), embed_dim).index_copy_(0, padded_row, rows)
        attended = attention(batch.view(*in_sequence.shape, embed_dim), padding, PADDING_MASK)
        return attended.view(-1, embed_dim).index_select(0, padded_row)

    rows = transformer_encoder_layer_fwd(
        src.values().view(-1, embed_dim), embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias,
        use_gelu, norm_first, eps, norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2, ffn_weight_1, ffn_bias_1,
        ffn_weight_2, ffn_bias_2, attend=attend)
    return with_buffer(src, rows.view(-1))


def _check_normalized_dims(input, normalized_shape):
    """CPU's reading of the normalized dims as the nested tensor's last ones (its first is the components' count):
    each regular and of the normalized size."""
    sizes = input._nested_tensor_size()  # 0-d when there are no components
    dims = input.dim()
    for i, size in enumerate(normalized_shape):
        dim = i - len(normalized_shape)
        if dim < -dims:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-dims}, {dims - 1}], "
                             f"but got {dim})")
        extents = sizes[:, dims + dim - 1] if dims + dim > 0 else torch.tensor([input.size(0)])
        if not bool((extents == extents[0]).all()):
            raise RuntimeError("normalized_shape extends into irregular dimensions for the nested tensor")
        if extents[0] != size:
            raise RuntimeError(f"The shape at dimension {i}of normalized_shape doesn't match the input")


@nested_kernel("native_layer_norm")
def nested_layer_norm(input, normalized_shape, weight, bias, eps):
    """The dense layer norm of the buffer's rows (CPU's nested kernel loops over the data pointer), under CPU's
    conditions: weight and bias given, the components contiguous and alike in the normalized dims."""
    if weight is None or bias is None:
        raise ValueError("NestedTensor layer_norm requires weight and bias")
    if not input.is_contiguous():
        raise RuntimeError("Expected nested_tensor_impl_is_contiguous(nt_input) to be true, but got false.  (Could "
                           "this error message be improved?  If so, please report an enhancement request to PyTorch.)")
    _check_normalized_dims(input, normalized_shape)
    rows = input.values().view(-1, *normalized_shape)
    output, mean, rstd = _aten.native_layer_norm(rows, normalized_shape, weight, bias, eps)
    return with_buffer(input, output.view(-1)), mean.view(-1), rstd.view(-1)


@nested_kernel("native_layer_norm_backward")
def nested_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask):
    """The dense backward of the buffer's rows, as the forward (CPU's nested kernel loops over the data pointer)."""
    rows = input.values().view(-1, *normalized_shape)
    statistics_shape = (rows.shape[0],) + (1,) * len(normalized_shape)
    grad_input, grad_weight, grad_bias = _aten.native_layer_norm_backward(
        grad_out.contiguous().values().view(rows.shape), rows, normalized_shape, mean.view(statistics_shape),
        rstd.view(statistics_shape), weight, bias, output_mask)
    return None if grad_input is None else with_buffer(input, grad_input.view(-1)), grad_weight, grad_bias
