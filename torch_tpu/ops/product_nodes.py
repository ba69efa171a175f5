"""The MXU products PyTorch builds from several ops, as one autograd node each: ``F.linear`` (every ``nn.Linear``,
multi-head attention's projections) and ``matmul`` of two batched operands (``q @ k.transpose(-2, -1)``), each one
launch forward and one backward.

``aten::linear`` and ``aten::matmul`` are composites. On a Python backend each op of them is a launch through the
dispatcher and each autograd node a round trip into Python, 5-25 us apiece where torch CPU's cost 1-5. A linear runs
``t``, then ``addmm`` (a 2-d input) or ``view``, ``addmm``, ``view`` (a contiguous one with a bias) or ``clone``,
``_unsafe_view``, ``mm``, ``_unsafe_view``, ``add`` (a strided one, as multi-head attention's batch-first projections
are), and its backward 3-4 nodes and 6-9 ops (``t``, two ``mm``, ``sum``, views); a batched matmul runs two
``expand``s, a reshape of each operand (a ``clone`` and ``_unsafe_view`` where no view fits), ``bmm`` and
``_unsafe_view``, and its backward 4-6 nodes. Here an AutogradPrivateUse1 kernel makes each one node, whose forward
is one charged launch (``linear``, ``matmul``) and whose backward is one (``linear_backward``, ``matmul_backward``).

The bits stay the composite's: each result is computed by the very NumPy calls, on the same operands in the same
layouts, that its kernels make (``linalg``'s matmuls, ``reduction``'s sum in CPU's order), following the formulas
of PyTorch's ``mm`` and ``bmm`` backwards (for a linear: a row-major input and a row-major weight). Calls outside
those cases (other dtypes, broadcast batch dims, 1-d and 2-d matmul operands, a strided weight, a column-major
input, empty ones, bad shapes, tracing, torch.func transforms, forward-mode AD; a frozen linear weight or a product
with one side frozen, where the composite saves less for the backward) take the composite, which has every check
and every case.

What differs from the composite: one launch each way, charged the bytes and FLOPs its parts would have been (a
clone of a strided operand, the product read back by a bias's add, the gradient read by each matmul and sum), so
that eager mode's clock moves the same bytes as before and compiled programs are measured against it as before
(only the per-launch overhead of the parts is saved); and the node saves the operands themselves, not the
composite's contiguous copies of strided ones (no copy's bytes in HBM; changing such an operand in place before the
backward raises autograd's "modified by an inplace operation", as it does on CPU for a contiguous one).
"""

import collections

import torch
from torch._C._functorch import is_functorch_wrapped_tensor, is_legacy_batchedtensor
from torch.autograd import forward_ad

from .. import _C, _abstract_launch
from .._cost import FUSED_COSTS, charged
from .._tensor import DTYPE_NAME, is_tpu
from ._common import empty, empty_with_array, operand
from ._registry import COMPOSITE, PLAIN_TENSORS, guard, register_autograd
from .linalg import mxu_matmul
from .reduction import iterated_layout, sum_into



def plain_float32(*tensors):
    """Whether eager float32 tpu tensors (None for an absent bias) are all this call has: no tracing (fake,
    functional or proxy tensors, dispatch modes: they see the composite's ops), no torch.func transform or
    forward-mode AD (the one node has no rules for them), no sparse layout, no negation bit."""
    if (torch._C._len_torch_dispatch_stack() or forward_ad._current_level >= 0
            or torch._C._are_functorch_transforms_active()):
        return False
    return all(t is None or (type(t) in PLAIN_TENSORS and t.dtype == torch.float32 and t.layout == torch.strided
                             and is_tpu(t) and not t.is_neg())
               for t in tensors)


# --- F.linear -------------------------------------------------------------------------------------------------------


def linear_fusable(input, weight, bias=None):
    """Whether the fused linear takes this call: a row-major (out, in) weight, a matching 1-d bias, and an input of
    at least 2 dims whose rows (``input.reshape(-1, in)``) are row-major and more than one."""
    if not plain_float32(input, weight, bias):
        return False
    if weight.dim() != 2 or input.dim() < 2 or (bias is not None and tuple(bias.shape) != (weight.shape[0],)):
        return False
    if (input.dim() > 2 and not _flattened(input, bias is not None) and not weight.requires_grad
            and not _aten_folds(input)):
        return False  # ATen's matmul folds such an input into rows (a copy) only for the weight's gradient, else bmm
    features = weight.shape[1]
    # the composite's mm backward takes another formula for column-major operands: a strided last dim, one
    # feature or one row can make the rows (or the weight) column-major
    return (input.shape[-1] == features > 1 and input.stride(-1) == 1 and input.numel() > features
            and weight.stride() == (features, 1))


def _aten_folds(input):
    """ATen's ``should_fold`` for an input the weight's gradient does not force into rows: each leading dim steps
    over the next whole (size-1 dims included, unlike a reshape's view test), so ``mm`` over its rows, not ``bmm``."""
    sizes, strides = input.shape, input.stride()
    return all(strides[i] == strides[i + 1] * sizes[i + 1] for i in range(input.dim() - 2))


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


def _merges_leading_dims(tensor, kept):
    """Whether ATen's ``reshape(-1, *shape[-kept:])`` of ``tensor`` is a view (each leading dim longer than one steps
    over the next whole); where it is not, the composite's reshape is a copy: a ``clone`` launch."""
    leading = [(size, stride) for size, stride in zip(tensor.shape[:-kept], tensor.stride()[:-kept]) if size != 1]
    return all(outer == inner * size for (_, outer), (size, inner) in zip(leading, leading[1:]))


def _copied_bytes(tensor, kept):
    """The bytes the composite's reshape of ``tensor`` into batches of its last ``kept`` dims reads and writes."""
    return 0 if _merges_leading_dims(tensor, kept) else tensor.nbytes


def _linear_cost(args, kwargs, result):
    """What the composite's launches would charge, summed: ``addmm`` (or ``mm``), and for a strided input the
    rows' ``clone`` and the bias's ``add``. One launch, the parts' bytes: the fusion changes the host's work, not
    the chip's, so eager mode's clock (and what compiled programs are measured against) stays per op."""
    input, weight, *bias = args
    bias = bias[0] if bias else None
    read, written = input.nbytes + weight.nbytes, result.nbytes
    if bias is not None:
        read += bias.nbytes
    if not _flattened(input, bias is not None):
        copied = _copied_bytes(input, 1)
        read, written = read + copied, written + copied
        if bias is not None:  # ``add`` reads the product back
            read, written = read + result.nbytes, written + result.nbytes
    rows = input.numel() // weight.shape[1]
    return {DTYPE_NAME[input.dtype]: 2 * rows * weight.numel()}, read, written


def _linear_backward_cost(args, kwargs, result):
    """The composite's backward launches summed (as ``_linear_cost``): the gradient's rows copied where no view
    fits, one ``mm`` per parameter gradient asked for, the bias's ``sum``."""
    input, grad_output, weight, output_mask = args
    gradient = grad_output.nbytes
    takes_rows = any(output_mask) if _flattened(input, True) else output_mask[0] or output_mask[1]
    copied = _copied_bytes(grad_output, 1) if takes_rows else 0
    read = (copied + (gradient + weight.nbytes if output_mask[0] else 0)
            + (gradient + input.nbytes if output_mask[1] else 0) + (gradient if output_mask[2] else 0))
    written = copied + sum(t.nbytes for t in result if t is not None)
    rows = input.numel() // weight.shape[1]
    return {DTYPE_NAME[input.dtype]: 2 * rows * weight.numel() * (bool(output_mask[0]) + bool(output_mask[1]))}, \
        read, written


FUSED_COSTS["linear"], FUSED_COSTS["linear_backward"] = _linear_cost, _linear_backward_cost
_launch_linear = charged(linear_forward, "linear", guard("linear"))
_launch_linear_backward = charged(linear_backward, "linear_backward", guard("linear_backward"))


def _abstract_results(shapes, output_mask):
    """A fused backward's float32 results in abstract mode: those ``output_mask`` asks for, else None."""
    return tuple(empty(shape, torch.float32) if wanted else None for shape, wanted in zip(shapes, output_mask))


@_abstract_launch.rule(torch.ops.aten.linear_backward.default)
def _abstract_linear_backward(op, args, kwargs):
    """Meta's ``linear_backward`` makes both parameter gradients when either is asked for; the kernel makes those
    asked for."""
    input, grad_output, weight, output_mask = args
    return _abstract_results((tuple(input.shape), tuple(weight.shape), (weight.shape[0],)), output_mask)


def _differentiable_linear_backward(grad_output, input, weight, wanted):
    """The gradients as torch ops (the composite's formulas), for a graph through them or for batched gradients."""
    out_features, in_features = weight.shape
    rows = grad_output.reshape(-1, out_features)
    return (rows.mm(weight).reshape(input.shape) if wanted[0] else None,
            rows.t().mm(input.reshape(-1, in_features)) if wanted[1] else None,
            (rows.sum(0) if _flattened(input, True) else grad_output.sum(tuple(range(grad_output.dim() - 1))))
            if wanted[2] else None)


# --- matmul of two batched operands ---------------------------------------------------------------------------------


def matmul_fusable(self, other):
    """Whether the fused matmul takes this call: both operands of 3 or more dims with the same batch dims (the
    composite's ``bmm`` path, nothing broadcast), none empty."""
    return (plain_float32(self, other) and self.dim() == other.dim() >= 3 and self.shape[:-2] == other.shape[:-2]
            and self.shape[-1] == other.shape[-2] and self.numel() > 0 and other.numel() > 0)


def _batches(array):
    """``tensor.expand(...).reshape(-1, rows, columns)`` as the composite makes it (nothing broadcast: the expand is
    the tensor itself): a view where one exists, else a C-contiguous copy."""
    return array.reshape(-1, *array.shape[-2:])


def matmul_forward(self, other):
    """``bmm`` of the operands' batches into the new result's batches."""
    first, second = _batches(operand(self)), _batches(operand(other))
    result, target = empty_with_array((*self.shape[:-1], other.shape[-1]), torch.float32)
    with _C.vpu.ignoring_fp_errors():
        mxu_matmul(first, second, target.reshape(len(first), first.shape[1], second.shape[2]))
    return result


def matmul_backward(grad, self, other, mask):
    """(grad_self, grad_other), each only when ``mask`` asks for it (else None): ``bmm``'s backward,
    ``grad.bmm(other.transpose(1, 2))`` and ``self.transpose(1, 2).bmm(grad)`` over the batches."""
    gradient = _batches(operand(grad))
    grad_self = grad_other = None
    with _C.vpu.ignoring_fp_errors():
        if mask[0]:
            grad_self, target = empty_with_array(tuple(self.shape), torch.float32)
            mxu_matmul(gradient, _batches(operand(other)).transpose(0, 2, 1), target.reshape(len(gradient), -1,
                                                                                          self.shape[-1]))
        if mask[1]:
            grad_other, target = empty_with_array(tuple(other.shape), torch.float32)
            mxu_matmul(_batches(operand(self)).transpose(0, 2, 1), gradient, target.reshape(len(gradient), -1,
                                                                                         other.shape[-1]))
    return grad_self, grad_other


def _matmul_flops(self, other):
    return {DTYPE_NAME[self.dtype]: 2 * self.numel() * other.shape[-1]}


def _matmul_cost(args, kwargs, result):
    """The composite's launches summed (as ``_linear_cost``): each operand's batches copied where no view fits,
    ``bmm``."""
    self, other = args
    copied = _copied_bytes(self, 2) + _copied_bytes(other, 2)
    return _matmul_flops(self, other), self.nbytes + other.nbytes + copied, result.nbytes + copied


def _matmul_backward_cost(args, kwargs, result):
    """The composite's backward launches summed: the gradient's batches copied where no view fits, one ``bmm`` per
    gradient asked for."""
    grad, self, other, mask = args
    copied = _copied_bytes(grad, 2) if mask[0] or mask[1] else 0
    read = (copied + (grad.nbytes + other.nbytes if mask[0] else 0) + (grad.nbytes + self.nbytes if mask[1] else 0))
    flops = _matmul_flops(self, other)
    return ({dtype: count * (bool(mask[0]) + bool(mask[1])) for dtype, count in flops.items()}, read,
            copied + sum(t.nbytes for t in result if t is not None))


@_abstract_launch.rule(torch.ops.aten.matmul_backward.default)
def _abstract_matmul_backward(op, args, kwargs):
    """``matmul_backward`` has no Meta kernel."""
    grad, self, other, mask = args
    return _abstract_results((tuple(self.shape), tuple(other.shape)), mask)


def _differentiable_matmul_backward(grad, self, other, wanted):
    return (grad.matmul(other.transpose(-2, -1)) if wanted[0] else None,
            self.transpose(-2, -1).matmul(grad) if wanted[1] else None)


FUSED_COSTS["matmul"], FUSED_COSTS["matmul_backward"] = _matmul_cost, _matmul_backward_cost
_launch_matmul = charged(matmul_forward, "matmul", guard("matmul"))
_launch_matmul_backward = charged(matmul_backward, "matmul_backward", guard("matmul_backward"))


# --- one node for each product -------------------------------------------------------------------------------------


# arity: the aten op's operands, an absent optional one (a linear's bias) passed as None; saves_alike: whether the
# node, which saves both operands, holds no more than the composite's nodes would (they save an operand only for the
# other's gradient: a frozen linear's input, or one side of a product, would otherwise be held to the backward)
Product = collections.namedtuple("Product",
                                 "arity fusable saves_alike composite forward backward differentiable_backward")
LINEAR = Product(3, linear_fusable, lambda input, weight, bias: weight.requires_grad, torch.ops.aten.linear.default,
                 _launch_linear,
                 lambda grad, input, weight, wanted: _launch_linear_backward(input, grad, weight, wanted),
                 _differentiable_linear_backward)
MATMUL = Product(2, matmul_fusable, lambda self, other: self.requires_grad and other.requires_grad,
                 torch.ops.aten.matmul.default, _launch_matmul, _launch_matmul_backward,
                 _differentiable_matmul_backward)


def _batched(gradient):
    """Whether ``gradient`` is one of vmap's batched tensors (torch.func's or gradcheck's legacy ``_vmap``'s)."""
    return is_functorch_wrapped_tensor(gradient) or is_legacy_batchedtensor(gradient)


class ProductNode(torch.autograd.Function):
    """One node for a whole product (``product``: LINEAR or MATMUL): its backward is one launch. The first two
    operands are what a backward reads (a linear's bias is not)."""

    @staticmethod
    def forward(ctx, product, *operands):
        ctx.product = product
        ctx.save_for_backward(*operands[:2])
        return product.forward(*operands)

    @staticmethod
    def backward(ctx, grad):
        wanted = ctx.needs_input_grad[1:]
        if torch.is_grad_enabled() or _batched(grad):
            # create_graph=True (the gradients carry a graph of their own) or vmap's batched gradients: torch ops
            return (None, *ctx.product.differentiable_backward(grad, *ctx.saved_tensors, wanted))
        return (None, *ctx.product.backward(grad, *ctx.saved_tensors, wanted))


def _one_node(product):
    """The AutogradPrivateUse1 kernel of ``product``'s aten op."""

    def kernel(*operands):
        operands += (None,) * (product.arity - len(operands))
        if not product.fusable(*operands):
            return product.composite._op_dk(COMPOSITE, *operands)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in operands):
            if not product.saves_alike(*operands):
                return product.composite._op_dk(COMPOSITE, *operands)
            return ProductNode.apply(product, *operands)
        return product.forward(*operands)

    return kernel


register_autograd("linear")(_one_node(LINEAR))
register_autograd("matmul")(_one_node(MATMUL))
