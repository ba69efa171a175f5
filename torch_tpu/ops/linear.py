"""``F.linear`` (every ``nn.Linear``, multi-head attention's projections): one launch forward, one autograd node
and one launch backward.

``aten::linear`` is a composite. On a Python backend each op of it is a launch through the dispatcher and each
autograd node a round trip into Python, 5-25 us apiece where torch CPU's cost 1-5: a forward runs ``t``, then
``addmm`` (a 2-d input) or ``view``, ``addmm``, ``view`` (a contiguous one with a bias) or ``clone``,
``_unsafe_view``, ``mm``, ``_unsafe_view``, ``add`` (a strided one, as multi-head attention's batch-first
projections are), and the backward 3-4 nodes and 6-9 ops (``t``, two ``mm``, ``sum``, views). Here an
AutogradPrivateUse1 kernel makes it one node, whose forward is one charged launch (``linear``) and whose backward
is one (``linear_backward``).

The bits stay the composite's: each result is computed by the very NumPy calls, on the same operands in the same
layouts, that its kernels make (``linalg``'s matmuls, ``reduction``'s sum in CPU's order), following the formulas
of PyTorch's ``mm`` backward for a row-major input and a row-major weight. Calls outside that case (other dtypes,
a strided weight, a 1-d input or a column-major one, empty ones, bad shapes, tracing, torch.func transforms,
forward-mode AD) take the composite, which has every check and every case.

What differs from the composite: the charge is one fused kernel's (MXU FLOPs of the matmuls, HBM bytes at the
launch's boundary: no ``clone`` of a strided input, no intermediate product written and read again), and the node
saves the input itself, not the composite's contiguous copy of a strided one (no copy's bytes in HBM; changing
such an input in place before the backward raises autograd's "modified by an inplace operation", as it does on
CPU for a contiguous input).
"""

import torch
from torch._C._functorch import is_functorch_wrapped_tensor, is_legacy_batchedtensor
from torch.autograd import forward_ad

from .. import _C, _abstract_launch
from .._cost import FUSED_COSTS, charged
from .._tensor import DTYPE_NAME, is_tpu
from ._common import empty, empty_with_array, operand
from ._registry import guard, register_autograd
from .linalg import mxu_matmul
from .reduction import iterated_layout, sum_into

_LINEAR = torch.ops.aten.linear.default
_BACKWARD = torch.ops.aten.linear_backward.default
_COMPOSITE = torch._C.DispatchKey.CompositeImplicitAutograd
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)  # subclasses (fake, functional tensors) are being traced


def fusable(input, weight, bias):
    """Whether the fused kernels take this call: float32 tpu tensors, a row-major (out, in) weight, a matching 1-d
    bias, and an input of at least 2 dims whose rows (``input.reshape(-1, in)``) are row-major and more than one."""
    if (torch._C._len_torch_dispatch_stack() or forward_ad._current_level >= 0
            or torch._C._are_functorch_transforms_active()):
        return False
    if type(input) not in _PLAIN_TENSORS or type(weight) not in _PLAIN_TENSORS or (
            bias is not None and type(bias) not in _PLAIN_TENSORS):
        return False
    if input.dtype != torch.float32 or weight.dtype != torch.float32 or (
            bias is not None and bias.dtype != torch.float32):
        return False
    if not (is_tpu(input) and is_tpu(weight) and (bias is None or is_tpu(bias))):
        return False
    if input.is_neg() or weight.is_neg() or (bias is not None and bias.is_neg()):
        return False
    if weight.dim() != 2 or input.dim() < 2 or (bias is not None and tuple(bias.shape) != (weight.shape[0],)):
        return False
    features = weight.shape[1]
    # the composite's mm backward takes another formula for column-major operands: a strided last dim, one
    # feature or one row can make the rows (or the weight) column-major
    return (input.shape[-1] == features > 1 and input.stride(-1) == 1 and input.numel() > features
            and weight.stride() == (features, 1))


def _rows(array, features):
    """``input.reshape(-1, features)`` as the composite makes it: a view where one exists, else a C-contiguous copy
    (NumPy's rule is ATen's)."""
    return array.reshape(-1, features)


def _flattened(input, has_bias):
    """Whether the composite computes this call as one ``addmm`` over the input's rows (a 2-d input, or a
    contiguous one, with a bias), rather than as ``mm`` and ``add``: the bias's gradient is then a sum over those
    rows, else over the output's gradient's leading dims as it arrives."""
    return has_bias and (input.dim() == 2 or input.is_contiguous())


def linear_forward(input, weight, bias=None):
    """``input @ weight.T + bias``: the product into the new result's rows, then the bias added in place, as the
    composite's ``addmm`` (and its ``mm`` and ``add``) round it."""
    out_features, in_features = weight.shape
    result, target = empty_with_array((*input.shape[:-1], out_features), torch.float32)
    with _C.vpu.ignoring_fp_errors():
        mxu_matmul(_rows(operand(input), in_features), operand(weight).T, target.reshape(-1, out_features))
        if bias is not None:
            target += operand(bias)
    return result


def linear_backward(input, grad_output, weight, output_mask):
    """(grad_input, grad_weight, grad_bias), each only when ``output_mask`` asks for it (else None): the rows of
    ``grad_output`` times the weight, its transpose times the input's rows, and its sum over the rows (``mm``'s
    backward for a row-major input and a row-major weight's transpose, and ``sum_to``'s sum)."""
    out_features, in_features = weight.shape
    gradient = operand(grad_output)
    gradient_rows = _rows(gradient, out_features)
    grad_input = grad_weight = grad_bias = None
    with _C.vpu.ignoring_fp_errors():
        if output_mask[0]:
            grad_input, target = empty_with_array(tuple(input.shape), torch.float32)
            mxu_matmul(gradient_rows, operand(weight), target.reshape(-1, in_features))
        if output_mask[1]:
            grad_weight, target = empty_with_array((out_features, in_features), torch.float32)
            mxu_matmul(gradient_rows.T, _rows(operand(input), in_features), target)
        if output_mask[2]:
            grad_bias, target = empty_with_array((out_features,), torch.float32)
            summed = gradient_rows if _flattened(input, True) else gradient
            sum_into(target.reshape((1,) * (summed.ndim - 1) + (out_features,)), summed,
                     tuple(range(summed.ndim - 1)), True, "float32", iterated_layout(summed, None))
    return grad_input, grad_weight, grad_bias


def _forward_cost(args, kwargs, result):
    input, weight, *bias = args
    rows = input.numel() // weight.shape[1]
    read = input.nbytes + weight.nbytes + sum(b.nbytes for b in bias if b is not None)
    return {DTYPE_NAME[input.dtype]: 2 * rows * weight.numel()}, read, result.nbytes


def _backward_cost(args, kwargs, result):
    input, grad_output, weight, output_mask = args
    rows = input.numel() // weight.shape[1]
    read = grad_output.nbytes + (weight.nbytes if output_mask[0] else 0) + (input.nbytes if output_mask[1] else 0)
    written = sum(t.nbytes for t in result if t is not None)
    return {DTYPE_NAME[input.dtype]: 2 * rows * weight.numel() * (bool(output_mask[0]) + bool(output_mask[1]))}, \
        read, written


FUSED_COSTS["linear"], FUSED_COSTS["linear_backward"] = _forward_cost, _backward_cost
_launch_forward = charged(linear_forward, "linear", guard("linear"))
_launch_backward = charged(linear_backward, "linear_backward", guard("linear_backward"))


@_abstract_launch.rule(_BACKWARD)
def _abstract_backward(op, args, kwargs):
    """Meta's ``linear_backward`` makes both parameter gradients when either is asked for; the kernel makes those
    asked for."""
    input, grad_output, weight, output_mask = args
    shapes = (tuple(input.shape), tuple(weight.shape), (weight.shape[0],))
    return tuple(empty(shape, input.dtype) if wanted else None for shape, wanted in zip(shapes, output_mask))


def _batched(gradient):
    """Whether ``gradient`` is one of vmap's batched tensors (torch.func's or gradcheck's legacy ``_vmap``'s)."""
    return is_functorch_wrapped_tensor(gradient) or is_legacy_batchedtensor(gradient)


class Linear(torch.autograd.Function):
    """One node for a whole linear: its backward is one launch."""

    @staticmethod
    def forward(ctx, input, weight, bias):
        ctx.save_for_backward(input, weight)
        ctx.has_bias = bias is not None
        return _launch_forward(input, weight, bias)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        wanted = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2])
        if torch.is_grad_enabled() or _batched(grad_output):
            # create_graph=True (the gradients carry a graph of their own) or vmap's batched gradients: torch ops
            return _differentiable_backward(input, grad_output, weight, wanted)
        return _launch_backward(input, grad_output, weight, wanted)


def _differentiable_backward(input, grad_output, weight, wanted):
    """The gradients as torch ops (the composite's formulas), for a graph through them or for batched gradients."""
    out_features, in_features = weight.shape
    rows = grad_output.reshape(-1, out_features)
    return (rows.mm(weight).reshape(input.shape) if wanted[0] else None,
            rows.t().mm(input.reshape(-1, in_features)) if wanted[1] else None,
            (rows.sum(0) if _flattened(input, True) else grad_output.sum(tuple(range(grad_output.dim() - 1))))
            if wanted[2] else None)


@register_autograd("linear")
def linear(input, weight, bias=None):
    if not fusable(input, weight, bias):
        return _LINEAR._op_dk(_COMPOSITE, input, weight, bias)
    if torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return Linear.apply(input, weight, bias)
    return _launch_forward(input, weight, bias)
