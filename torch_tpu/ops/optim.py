"""Fused optimizer steps: what ``torch.optim.Adam/AdamW/SGD/Adagrad(fused=True)`` launch.

PyTorch accepts ``fused=True`` for the PrivateUse1 backend by name
(``torch.utils._foreach_utils._get_fused_kernels_supported_devices`` lists it), so these kernels
are all tpu needs. Each step follows PyTorch's fused CPU kernels (aten/src/ATen/native/cpu/
FusedAdamKernel.cpp, FusedSGDKernel.cpp, FusedAdagradKernel.cpp) operation by operation:
hyperparameters are cast to the parameter's compute dtype before use, reduced-precision parameters
compute in float32 and round once per stored state, and a set ``found_inf`` skips the whole step,
as under ``GradScaler``.
"""

import math

import numpy as np

from ._common import opmath_dtype, opmath_operand, operand, write
from ._registry import register


def _scalar(value):
    """A hyperparameter that may arrive as a (CPU or tpu) 0-dim tensor."""
    return float(operand(value)) if value is not None else None


def _step_skipped(found_inf):
    return found_inf is not None and _scalar(found_inf) == 1.0


def _unscaled_gradient(grad, grad_scale, real):
    """The gradient divided by the loss scale; like CPU, the unscaled gradient is stored back."""
    gradient = opmath_operand(grad)
    if grad_scale is None:
        return gradient
    gradient = gradient / real(_scalar(grad_scale))
    write(grad, gradient)
    return gradient


def _step_operands(param, grad, grad_scale, maximize):
    """(opmath scalar type, weights, gradient) as every fused optimizer starts a step: the gradient
    unscaled, negated to maximize, in the parameter's opmath type."""
    real = opmath_dtype(param.dtype).type
    gradient = _unscaled_gradient(grad, grad_scale, real)
    return real, opmath_operand(param), -gradient if maximize else gradient


def _lerp(start, end, weight, real):
    """``start.lerp(end, weight)`` in PyTorch's two-sided form, exact at both ends."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (real(1) - weight)


def _adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, *, lr, beta1, beta2, weight_decay, eps,
               amsgrad, maximize, grad_scale, decoupled_weight_decay):
    bias_correction1 = 1 - beta1 ** step  # in double, as the non-fused optimizer computes it
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    step_size = lr / bias_correction1
    real, weights, gradient = _step_operands(param, grad, grad_scale, maximize)
    if weight_decay != 0:
        if decoupled_weight_decay:
            weights = weights * real(1 - lr * weight_decay)
        else:
            gradient = gradient + weights * real(weight_decay)
    first = _lerp(opmath_operand(exp_avg), gradient, real(1 - beta1), real)
    second = opmath_operand(exp_avg_sq) * real(beta2) + real(1 - beta2) * gradient * gradient
    write(exp_avg, first)
    write(exp_avg_sq, second)
    if amsgrad:
        second = np.maximum(opmath_operand(max_exp_avg_sq), second)
        write(max_exp_avg_sq, second)
    denominator = np.sqrt(second) / real(bias_correction2_sqrt) + real(eps)
    write(param, weights - real(step_size) * first / denominator)


def _fused_adam(decoupled_weight_decay):
    def kernel(self, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, lr, beta1, beta2, weight_decay,
               eps, amsgrad, maximize, grad_scale=None, found_inf=None):
        if _step_skipped(found_inf):
            return
        maxima = max_exp_avg_sqs if amsgrad else [None] * len(self)
        for param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step in zip(
                self, grads, exp_avgs, exp_avg_sqs, maxima, state_steps, strict=True):
            _adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, _scalar(step), lr=_scalar(lr), beta1=beta1,
                       beta2=beta2, weight_decay=weight_decay, eps=eps, amsgrad=amsgrad, maximize=maximize,
                       grad_scale=grad_scale, decoupled_weight_decay=decoupled_weight_decay)

    return kernel


register("_fused_adam_", "_fused_adam_.tensor_lr")(_fused_adam(decoupled_weight_decay=False))
register("_fused_adamw_", "_fused_adamw_.tensor_lr")(_fused_adam(decoupled_weight_decay=True))


def _sgd_step(param, grad, momentum_buffer, *, weight_decay, momentum, lr, dampening, nesterov, maximize,
              is_first_step, grad_scale):
    real, weights, gradient = _step_operands(param, grad, grad_scale, maximize)
    if weight_decay != 0:
        gradient = gradient + weights * real(weight_decay)
    if momentum != 0:
        if is_first_step:
            velocity = gradient
        else:
            velocity = opmath_operand(momentum_buffer) * real(momentum) + gradient * real(1 - dampening)
        write(momentum_buffer, velocity)
        gradient = gradient + velocity * real(momentum) if nesterov else velocity
    write(param, weights - real(lr) * gradient)


@register("_fused_sgd_", "_fused_sgd_.tensor_lr")
def fused_sgd_(self, grads, momentum_buffer_list, *, weight_decay, momentum, lr, dampening, nesterov, maximize,
               is_first_step, grad_scale=None, found_inf=None):
    if _step_skipped(found_inf):
        return
    buffers = momentum_buffer_list if momentum != 0 else [None] * len(self)
    for param, grad, momentum_buffer in zip(self, grads, buffers, strict=True):
        _sgd_step(param, grad, momentum_buffer, weight_decay=weight_decay, momentum=momentum, lr=_scalar(lr),
                  dampening=dampening, nesterov=nesterov, maximize=maximize, is_first_step=is_first_step,
                  grad_scale=grad_scale)


def _adagrad_step(param, grad, state_sum, step, *, lr, lr_decay, weight_decay, eps, maximize, grad_scale):
    real, weights, gradient = _step_operands(param, grad, grad_scale, maximize)
    if weight_decay != 0:
        gradient = gradient + weights * real(weight_decay)
    squares = opmath_operand(state_sum) + gradient * gradient
    write(state_sum, squares)
    step_size = lr / (1 + (step - 1) * lr_decay)  # the optimizer counted this step already
    write(param, weights - real(step_size) * gradient / (np.sqrt(squares) + real(eps)))


@register("_fused_adagrad_", "_fused_adagrad_.tensor_lr")
def fused_adagrad_(self, grads, state_sums, state_steps, *, lr, lr_decay, weight_decay, eps, maximize,
                   grad_scale=None, found_inf=None):
    if _step_skipped(found_inf):
        return
    for param, grad, state_sum, step in zip(self, grads, state_sums, state_steps, strict=True):
        _adagrad_step(param, grad, state_sum, _scalar(step), lr=_scalar(lr), lr_decay=lr_decay,
                      weight_decay=weight_decay, eps=eps, maximize=maximize, grad_scale=grad_scale)
