"""FP8 training and inference: swap ``nn.Linear`` for ``Float8Linear``.

The recipe is the one Ironwood (and torchao's float8 training) uses:

- E4M3 (``float8_e4m3fn``, 3 mantissa bits, max 448) for weights and activations in the
  forward pass; E5M2 (``float8_e5m2``, 2 mantissa bits, max 57344) for gradients, whose
  range matters more than their precision.
- Dynamic scaling: each operand is cast with the scale that maps its absolute maximum (amax)
  onto the format's largest value, just before the matmul. ``"tensorwise"`` takes one amax
  per tensor; ``"rowwise"`` one per row of the left operand and one per column of the right
  operand, i.e. always along the contraction dimension, so the scales factor out of the sum.
- Every matmul is ``torch._scaled_mm``: exact fp8 products accumulated in float32 on the
  MXU, scaled back and rounded once to the high-precision type (bias added before rounding).

``Float8Linear`` keeps ``nn.Linear``'s parameters (the same objects, so tied weights stay
tied) and so its state_dict. The weights themselves stay in high precision: the fp8 casts
are recomputed every step, as the master weights change.
"""

import torch
from torch import nn

E4M3 = torch.float8_e4m3fn
E5M2 = torch.float8_e5m2
RECIPES = ("tensorwise", "rowwise")
_AMAX_FLOOR = 1e-12  # an all-zero tensor still gets a finite scale


def to_float8(tensor, dtype, contraction_dim=None):
    """``(tensor in fp8, dequantisation scale)`` with ``tensor ~= fp8.float() * scale``.

    ``contraction_dim=None`` scales per tensor (a 0-d scale); otherwise the amax is taken along
    that dimension of a matrix, so a (M, K) left operand gets a (M, 1) scale with
    ``contraction_dim=1`` and a (K, N) right operand a (1, N) scale with ``contraction_dim=0``.
    """
    largest = torch.finfo(dtype).max
    magnitude = tensor.detach().abs().float()
    amax = magnitude.amax() if contraction_dim is None else magnitude.amax(dim=contraction_dim, keepdim=True)
    scale = largest / amax.clamp(min=_AMAX_FLOOR)
    return (tensor.detach().float() * scale).to(dtype), scale.reciprocal()


def scaled_matmul(a, b, recipe, a_dtype, b_dtype, out_dtype, bias=None):
    """``a @ b (+ bias)`` for matrices, through fp8 casts of both operands and ``torch._scaled_mm``."""
    rowwise = recipe == "rowwise"
    a8, a_scale = to_float8(a, a_dtype, 1 if rowwise else None)
    b8, b_scale = to_float8(b, b_dtype, 0 if rowwise else None)
    return torch._scaled_mm(a8, b8, a_scale, b_scale, bias=bias, out_dtype=out_dtype)


class _Float8LinearFunction(torch.autograd.Function):
    """``input @ weight.T + bias`` in FP8: E4M3 forward, E5M2 gradients backward."""

    @staticmethod
    def forward(ctx, input, weight, bias, recipe):
        rows = input.reshape(-1, input.shape[-1])
        ctx.save_for_backward(rows, weight)
        ctx.recipe, ctx.input_shape = recipe, input.shape
        ctx.bias_dtype = None if bias is None else bias.dtype
        output = scaled_matmul(rows, weight.t(), recipe, E4M3, E4M3, input.dtype, bias)
        return output.reshape(*input.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_output):
        if torch.is_grad_enabled():  # the FP8 casts have no derivative: a graph of this backward would be wrong
            raise NotImplementedError(
                "Float8Linear: double backward (torch.autograd.grad(..., create_graph=True) through an FP8 "
                "linear) is not supported, since its FP8 casts are not differentiable; keep the layers a "
                "second derivative flows through as nn.Linear (convert_to_float8's module_filter_fn)")
        rows, weight = ctx.saved_tensors
        grad = grad_output.reshape(-1, grad_output.shape[-1])
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = scaled_matmul(grad, weight, ctx.recipe, E5M2, E4M3, rows.dtype).reshape(ctx.input_shape)
        if ctx.needs_input_grad[1]:
            grad_weight = scaled_matmul(grad.t(), rows, ctx.recipe, E5M2, E4M3, weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0).to(ctx.bias_dtype)
        return grad_input, grad_weight, grad_bias, None


class Float8Linear(nn.Linear):
    """An ``nn.Linear`` whose forward and backward matmuls run in FP8 (see the module docstring)."""

    def __init__(self, *args, recipe="tensorwise", **kwargs):
        if recipe not in RECIPES:
            raise ValueError(f"unknown float8 recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
        super().__init__(*args, **kwargs)
        self.recipe = recipe

    @classmethod
    def from_float(cls, linear, recipe="tensorwise"):
        """Wrap ``linear``'s own parameters (shared, not copied)."""
        with torch.device("meta"):
            converted = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, recipe=recipe)
        converted.weight = linear.weight
        converted.bias = linear.bias
        return converted

    def forward(self, input):
        return _Float8LinearFunction.apply(input, self.weight, self.bias, self.recipe)

    def extra_repr(self):
        return f"{super().extra_repr()}, recipe={self.recipe}"


def _convertible(module):
    return isinstance(module, nn.Linear) and not isinstance(module, Float8Linear)


def convert_to_float8(model, recipe="tensorwise", module_filter_fn=None):
    """Replace, in place, every ``nn.Linear`` of ``model`` with a ``Float8Linear``; returns ``model``.

    ``module_filter_fn(module, fully_qualified_name) -> bool`` chooses which linears convert
    (torchao's convention), e.g. to keep a small output head in high precision.
    """
    if recipe not in RECIPES:
        raise ValueError(f"unknown float8 recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if _convertible(model):
        if module_filter_fn is None or module_filter_fn(model, ""):
            return Float8Linear.from_float(model, recipe)
        return model
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            qualified = f"{name}.{child_name}" if name else child_name
            if _convertible(child) and (module_filter_fn is None or module_filter_fn(child, qualified)):
                setattr(module, child_name, Float8Linear.from_float(child, recipe))
    return model
