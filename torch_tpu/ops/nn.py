"""Neural-network kernels: softmax, normalization, pooling, dropout, losses.

Attention needs no kernel of its own: for tpu tensors ``scaled_dot_product_attention``
takes PyTorch's math path, which is built from ``bmm`` (the MXU), ``_safe_softmax`` and
``native_dropout``, all of which run here or in linalg.

Every kernel computes in PyTorch's opmath dtype (float32 for bf16/fp16) and rounds once on
store; results differ from the CPU's only by summation order (and, for bf16 losses that the
CPU builds from several bf16 ops, by the CPU's intermediate roundings).
"""

import functools
import itertools
import math

import numpy as np
import torch

from .. import _C
from . import _registry
from .._tensor import numpy_dtype
from ._common import (as_numpy, empty, exact_dtype, opmath_dtype, opmath_operand, operand, prepare_out, store, wrap_dim,
                      write)
from .pointwise import require, trunc_divide

# at::Reduction
REDUCTION_NONE, REDUCTION_MEAN, REDUCTION_SUM = 0, 1, 2


# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------


def register(*overloads):
    """Register a NumPy kernel that, like the CPU kernels, never warns about NaN, inf or 0/0."""

    def decorate(function):
        @functools.wraps(function)
        def quiet(*args, **kwargs):
            with np.errstate(all="ignore"):
                return function(*args, **kwargs)

        _registry.register(*overloads)(quiet)
        return function

    return decorate


def at_least_1d(array):
    return array.reshape(1) if array.ndim == 0 else array


def reduce_loss(loss, reduction):
    if reduction == REDUCTION_MEAN:
        return np.mean(loss)
    if reduction == REDUCTION_SUM:
        return np.sum(loss)
    return loss


def loss_gradient_scale(grad_output, numel, reduction):
    """d(reduced loss)/d(elementwise loss): the incoming gradient, divided by N for a mean."""
    return grad_output / numel if reduction == REDUCTION_MEAN else grad_output


def mixed_precision(input, *params):
    """PyTorch's ``is_mixed_type``: reduced-precision input with float32 parameters."""
    return input.dtype in (torch.bfloat16, torch.float16) and any(
        p is not None and p.dtype == torch.float32 for p in params
    )


def statistics_dtype(input, *params):
    """The dtype of saved means and inverse stds (``param_scalar_type`` in PyTorch)."""
    return torch.float32 if mixed_precision(input, *params) else input.dtype


def optional_operand(value):
    return None if value is None else opmath_operand(value)


# ---------------------------------------------------------------------------------------
# Softmax
# ---------------------------------------------------------------------------------------


def sum_along(array, dim):
    """``np.sum(array, axis=dim, keepdims=True)``; along the last axis as one matrix-vector product, several
    times faster than NumPy's reduction over short rows."""
    if dim != array.ndim - 1 or array.size == 0:
        return np.sum(array, axis=dim, keepdims=True)
    rows = array.reshape(-1, array.shape[-1])
    return np.matmul(rows, np.ones(rows.shape[1], array.dtype)).reshape(array.shape[:-1] + (1,))


def compute_into(out, dtype, compute):
    """Run ``compute(destination)`` in ``out``'s own memory when it has the compute dtype, else via scratch."""
    view = as_numpy(out)
    if view.dtype == dtype:
        compute(view)
        return out
    scratch = np.empty(view.shape, dtype)
    compute(scratch)
    return write(out, scratch)


def softmax_into(destination, x, dim, log=False):
    """(Log-)softmax of ``x`` along ``dim`` into ``destination``; returns the row maxima."""
    if x.size == 0:
        return None
    row_max = np.max(x, axis=dim, keepdims=True)
    np.subtract(x, row_max, out=destination)
    if log:
        destination -= np.log(sum_along(np.exp(destination), dim))
    else:
        np.exp(destination, out=destination)
        destination /= sum_along(destination, dim)
    return row_max


def softmax_kernel(log):
    def kernel(self, dim, half_to_float, *, out):
        dim = wrap_dim(dim, self.dim())
        prepare_out(out, self.shape, torch.float32 if half_to_float else self.dtype, distinct=(self,),
                    dtype_rule=exact_dtype)
        x = at_least_1d(opmath_operand(self))
        return compute_into(out, x.dtype, lambda destination: softmax_into(at_least_1d(destination), x, dim, log))

    return kernel


register("_softmax.out")(softmax_kernel(log=False))
register("_log_softmax.out")(softmax_kernel(log=True))


def softmax_backward_into(destination, grad, y, dim):
    np.subtract(grad, sum_along(grad * y, dim), out=destination)
    destination *= y


def log_softmax_backward_into(destination, grad, y, dim):
    np.exp(y, out=destination)
    destination *= -sum_along(grad, dim)
    destination += grad


def softmax_backward_kernel(backward_into, out_name):
    def kernel(grad_output, output, dim, input_dtype, **out):
        dim = wrap_dim(dim, output.dim())
        out = prepare_out(out[out_name], output.shape, input_dtype, distinct=(grad_output, output), dtype_rule=exact_dtype)
        grad, y = at_least_1d(opmath_operand(grad_output)), at_least_1d(opmath_operand(output))
        return compute_into(out, y.dtype, lambda destination: backward_into(at_least_1d(destination), grad, y, dim))

    return kernel


register("_softmax_backward_data.out")(softmax_backward_kernel(softmax_backward_into, "grad_input"))
register("_log_softmax_backward_data.out")(softmax_backward_kernel(log_softmax_backward_into, "out"))


@register("_safe_softmax")
def safe_softmax(self, dim, dtype=None):
    """Softmax whose fully masked rows (all -inf) are 0 instead of NaN: attention's softmax."""
    dtype = dtype or self.dtype
    dim = wrap_dim(dim, self.dim())
    x = at_least_1d(opmath_operand(self)).astype(opmath_dtype(dtype), copy=False)

    def compute(destination):
        destination = at_least_1d(destination)
        row_max = softmax_into(destination, x, dim)
        masked = None if row_max is None else np.isneginf(row_max)  # fully masked exactly when its maximum is -inf
        if masked is not None and masked.any():
            np.copyto(destination, 0, where=masked)

    return compute_into(empty(self.shape, dtype), x.dtype, compute)


# ---------------------------------------------------------------------------------------
# Normalization. Each is "normalize over some axes, then scale and shift"; the backward
# of that normalization is shared.
# ---------------------------------------------------------------------------------------


def moments(x, axes):
    """Mean and biased variance over ``axes`` (kept), two-pass for accuracy."""
    mean = np.mean(x, axis=axes, keepdims=True)
    return mean, np.mean(np.square(x - mean), axis=axes, keepdims=True)


def inverse_std(var, eps):
    return 1 / np.sqrt(var + eps)


def normalized_input_gradient(grad_xhat, xhat, rstd, axes):
    """d loss / d x for xhat = (x - mean(x)) * rstd, with mean and rstd taken over ``axes``."""
    mean_grad = np.mean(grad_xhat, axis=axes, keepdims=True)
    mean_grad_xhat = np.mean(grad_xhat * xhat, axis=axes, keepdims=True)
    return rstd * (grad_xhat - mean_grad - xhat * mean_grad_xhat)


def scaled(x, weight):
    return x if weight is None else x * weight


def shifted(x, bias):
    return x if bias is None else x + bias


def output_if(mask, array, dtype):
    return store(array, dtype) if mask else None


def row_means(rows):
    """The mean of each row of a 2-d array."""
    return sum_along(rows, 1)[:, 0] / rows.shape[1]


def column_sums(rows):
    return np.matmul(np.ones(rows.shape[0], rows.dtype), rows)


def check_layer_norm_inputs(input, normalized_shape, weight, bias):
    """CPU's checks of layer_norm's arguments, in its order."""
    normalized_shape = list(normalized_shape)
    if not normalized_shape:
        raise RuntimeError("Expected normalized_shape to be at least 1-dimensional, i.e., containing at least one "
                           f"element, but got normalized_shape = {normalized_shape}")
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and list(param.shape) != normalized_shape:
            raise RuntimeError(f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                               f"{list(param.shape)} and normalized_shape = {normalized_shape}")
    if list(input.shape[input.dim() - len(normalized_shape):]) != normalized_shape or input.dim() < len(normalized_shape):
        raise RuntimeError(f"Given normalized_shape={normalized_shape}, expected input with shape "
                           f"[*{''.join(f', {size}' for size in normalized_shape)}], but got input of size{list(input.shape)}")


def layer_norm_rows(input, normalized_shape):
    """The input in opmath as a (rows, normalized elements) matrix, and the shape of its per-row statistics."""
    axis = input.dim() - len(normalized_shape)
    x = opmath_operand(input)
    rows, size = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])
    return x.reshape(rows, size), x.shape[:axis] + (1,) * len(normalized_shape)


def flat_operand(param):
    return None if param is None else opmath_operand(param).reshape(-1)


def layer_norm_arrays(x, weight_rows, bias_rows, eps):
    """Layer norm of the rows of ``x`` (opmath): ``normalize(destination)`` writes the result, with the
    row means and inverse standard deviations."""
    mean = row_means(x)
    centered = x - mean[:, None]
    rstd = inverse_std(row_means(np.square(centered)), eps)

    def normalize(destination):
        out = destination.reshape(x.shape)
        np.multiply(centered, rstd[:, None], out=out)
        if weight_rows is not None:
            out *= weight_rows
        if bias_rows is not None:
            out += bias_rows

    return normalize, mean, rstd


@register("native_layer_norm")
def native_layer_norm(input, normalized_shape, weight, bias, eps):
    check_layer_norm_inputs(input, normalized_shape, weight, bias)
    x, stats_shape = layer_norm_rows(input, normalized_shape)
    normalize, mean, rstd = layer_norm_arrays(x, flat_operand(weight), flat_operand(bias), eps)
    out = compute_into(empty(input.shape, input.dtype), x.dtype, normalize)
    stats_dtype = statistics_dtype(input, weight, bias)
    return (out, store(mean.reshape(stats_shape), stats_dtype),
            store(rstd.reshape(stats_shape), stats_dtype))


def layer_norm_backward_arrays(x, dy, mean, rstd, weight_rows):
    """The backward of ``layer_norm_arrays`` (all operands opmath rows): ``input_gradient(destination)``
    writes d loss / d x, with d loss / d xhat's weight and bias sums (None without a weight)."""
    xhat = x - mean
    xhat *= rstd
    grad_xhat = dy if weight_rows is None else dy * weight_rows

    def input_gradient(destination):  # rstd * (grad_xhat - mean(grad_xhat) - xhat * mean(grad_xhat * xhat))
        out = destination.reshape(x.shape)
        np.multiply(xhat, row_means(grad_xhat * xhat)[:, None], out=out)
        np.subtract(grad_xhat, out, out=out)
        out -= row_means(grad_xhat)[:, None]
        out *= rstd

    return input_gradient, lambda: column_sums(dy * xhat), lambda: column_sums(dy)


@register("native_layer_norm_backward")
def native_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask):
    x, _ = layer_norm_rows(input, normalized_shape)
    dy = opmath_operand(grad_out).reshape(x.shape)
    mean, rstd = opmath_operand(mean).reshape(-1, 1), opmath_operand(rstd).reshape(-1, 1)
    input_gradient, weight_sums, bias_sums = layer_norm_backward_arrays(x, dy, mean, rstd, flat_operand(weight))
    grad_input = compute_into(empty(input.shape, input.dtype), x.dtype, input_gradient) if output_mask[0] else None
    grad_weight = grad_bias = None
    if output_mask[1] and weight is not None:
        grad_weight = store(weight_sums().reshape(weight.shape), weight.dtype)
    if output_mask[2] and bias is not None:
        grad_bias = store(bias_sums().reshape(bias.shape), bias.dtype)
    return grad_input, grad_weight, grad_bias


def grouped(x, n, channels, spatial, group):
    """(N, C, *) viewed as (N, group, C // group * spatial): the axes group norm reduces over."""
    return x.reshape(n, group, channels // group * spatial)


def per_channel(param, ndim):
    """A (C,) parameter shaped to broadcast against (N, C, *spatial)."""
    return None if param is None else param.reshape((-1,) + (1,) * (ndim - 2))


def affine_per_channel(xhat, weight, bias):
    return shifted(scaled(xhat, per_channel(optional_operand(weight), xhat.ndim)),
                   per_channel(optional_operand(bias), xhat.ndim))


@register("native_group_norm")
def native_group_norm(input, weight, bias, N, C, HxW, group, eps):
    x = opmath_operand(input)
    mean, var = moments(grouped(x, N, C, HxW, group), (2,))
    rstd = inverse_std(var, eps)
    xhat = ((grouped(x, N, C, HxW, group) - mean) * rstd).reshape(x.shape)
    out = affine_per_channel(xhat, weight, bias)
    stats_dtype = statistics_dtype(input, weight, bias)
    return (store(out, input.dtype), store(mean.reshape(N, group), stats_dtype),
            store(rstd.reshape(N, group), stats_dtype))


@register("native_group_norm_backward")
def native_group_norm_backward(grad_out, input, mean, rstd, weight, N, C, HxW, group, output_mask):
    x, dy = opmath_operand(input), opmath_operand(grad_out)
    mean, rstd = opmath_operand(mean)[..., None], opmath_operand(rstd)[..., None]
    xhat = (grouped(x, N, C, HxW, group) - mean) * rstd
    grad_xhat = grouped(scaled(dy, per_channel(optional_operand(weight), x.ndim)), N, C, HxW, group)
    reduce_axes = (0,) + tuple(range(2, x.ndim))
    params_dtype = input.dtype if weight is None else weight.dtype
    grad_input = output_if(
        output_mask[0], normalized_input_gradient(grad_xhat, xhat, rstd, (2,)).reshape(x.shape), input.dtype
    )
    grad_weight = output_if(output_mask[1], np.sum(dy * xhat.reshape(x.shape), axis=reduce_axes), params_dtype)
    grad_bias = output_if(output_mask[2], np.sum(dy, axis=reduce_axes), params_dtype)
    return grad_input, grad_weight, grad_bias


def batch_norm_axes(ndim):
    return (0,) + tuple(range(2, ndim))


def update_running_stats(running_mean, running_var, mean, squares, count, momentum, vectorised):
    """The running averages, updated in place with CPU's arithmetic (batch_norm_cpu_update_stats_template).

    Its vectorised path computes ``m * mean + (1 - m) * running`` and ``m * squares / (n - 1) + (1 - m) *
    running`` in the parameters' own dtype, from the stored mean and sum of squares, each operation
    rounded (bf16 parameters round every step, ``n - 1`` included); its generic loop computes in double
    from the accumulated sums and rounds once on store.
    """
    if vectorised:
        compute = mean.dtype
        momentum_ = np.asarray(momentum, compute)
        keep = np.asarray(1, compute) - momentum_
        unbiased = momentum_ * squares / np.asarray(count - 1, compute)
    else:
        compute = np.float64
        momentum_, keep = momentum, 1 - momentum
        unbiased = momentum_ * (squares / np.asarray(count - 1, squares.dtype)).astype(compute)
    with np.errstate(all="ignore"):
        if running_mean is not None:
            write(running_mean, momentum_ * mean.astype(compute) + keep * operand(running_mean).astype(compute))
        if running_var is not None:
            write(running_var, unbiased + keep * operand(running_var).astype(compute))


def vectorised_layout(input):
    """Whether CPU's batch norm takes its vectorised kernels (contiguous or channels-last input) rather
    than its generic loops; the two round differently."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    channels_last = formats.get(input.dim())
    return input.is_contiguous() or (channels_last is not None and input.is_contiguous(memory_format=channels_last))


def batch_statistics(x, axes, stats_dtype, vectorised):
    """Per channel, the saved mean (a tensor in ``stats_dtype``), the mean and the sum of squared
    deviations as CPU's later steps read them, the count, and the biased variance. Sums run in acc_type (double for float32).

    The vectorised kernels take deviations from the mean in opmath and store the mean and the sum of
    squares in ``stats_dtype`` (bf16 parameters round both), then work from those stored values; the
    generic loops take deviations from the stored mean and keep their sum in acc_type.
    """
    accumulator = np.float64 if x.dtype == np.float32 else x.dtype
    count = x.size // max(x.shape[1], 1)
    mean = (np.sum(x, axis=axes, dtype=accumulator, keepdims=True) / count).astype(x.dtype)
    save_mean = store(mean.ravel(), stats_dtype)
    deviation_from = mean if vectorised else per_channel(opmath_operand(save_mean), x.ndim)
    squares = np.sum(np.square((x - deviation_from).astype(accumulator)), axis=axes, dtype=accumulator)
    if vectorised:
        mean, squares = as_numpy(save_mean), as_numpy(store(squares, stats_dtype))
    else:
        mean = opmath_operand(save_mean)
    biased_var = (squares / np.asarray(count, squares.dtype)).astype(accumulator)
    return save_mean, mean, squares, count, biased_var


def generic_arithmetic(input, stats_dtype):
    """The dtype CPU's generic batch norm loop computes in: the parameters' own (bf16 rounds each
    step), or float32 for a reduced input with float32 parameters."""
    return numpy_dtype(stats_dtype) if stats_dtype == input.dtype else opmath_dtype(input.dtype)


def transformed(input, weight, bias, mean, invstd, compute, vectorised):
    """The normalized input. The vectorised kernels compute ``x * alpha + beta`` in opmath, with alpha =
    invstd * weight and beta = bias - mean * alpha; the generic loop computes ``((x - mean) * invstd) *
    weight + bias`` in ``compute``."""
    ndim = input.dim()
    if not vectorised:
        x = operand(input).astype(compute, copy=False)
        centered = (x - per_channel(mean.astype(compute), ndim)) * per_channel(invstd.astype(compute), ndim)
        weight, bias = (None if p is None else operand(p).astype(compute, copy=False) for p in (weight, bias))
        return shifted(scaled(centered, per_channel(weight, ndim)), per_channel(bias, ndim))
    alpha = scaled(per_channel(invstd.astype(np.float32), ndim), per_channel(optional_operand(weight), ndim))
    beta = shifted(-per_channel(mean.astype(alpha.dtype), ndim) * alpha, per_channel(optional_operand(bias), ndim))
    return opmath_operand(input) * alpha + beta


def evaluation_invstd(running_var, eps, compute, vectorised):
    """1 / sqrt(running_var + eps): in opmath for the vectorised kernels; for the generic loop, as
    tensor ops in its dtype (each rounding)."""
    var = opmath_operand(running_var)
    if vectorised:
        return inverse_std(var, eps)
    root = np.sqrt((var + np.asarray(eps, var.dtype)).astype(compute))
    return np.asarray(1, compute) / root


@register("native_batch_norm")
def native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps):
    """Normalized with the statistics as CPU stores and reads them back."""
    x = opmath_operand(input)
    stats_dtype = statistics_dtype(input, weight, bias, running_mean, running_var)
    vectorised = vectorised_layout(input)
    compute = generic_arithmetic(input, stats_dtype)
    if training:
        save_mean, mean, squares, count, var = batch_statistics(x, batch_norm_axes(x.ndim), stats_dtype, vectorised)
        update_running_stats(running_mean, running_var, mean, squares, count, momentum, vectorised)
        save_invstd = store(inverse_std(var, eps), stats_dtype)
        mean, invstd = as_numpy(save_mean), as_numpy(save_invstd)
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError("running_mean and running_var must be defined in evaluation mode")
        mean, invstd = operand(running_mean), evaluation_invstd(running_var, eps, compute, vectorised)
        save_mean = save_invstd = empty((0,), stats_dtype)
    out = transformed(input, weight, bias, mean, invstd, compute, vectorised)
    return store(out, input.dtype), save_mean, save_invstd


@register("_native_batch_norm_legit")
def native_batch_norm_legit(input, weight, bias, running_mean, running_var, training, momentum, eps):
    return native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps)


@register("_native_batch_norm_legit.no_stats")
def native_batch_norm_legit_no_stats(input, weight, bias, training, momentum, eps):
    return native_batch_norm(input, weight, bias, None, None, training, momentum, eps)


@register("_native_batch_norm_legit_no_training")
def native_batch_norm_legit_no_training(input, weight, bias, running_mean, running_var, momentum, eps):
    return native_batch_norm(input, weight, bias, running_mean, running_var, False, momentum, eps)


def cudnn_reserve():
    """The reserve buffer of the export-friendly batch norms: cuDNN's workspace, empty everywhere else."""
    return empty((0,), torch.uint8)


@register("_batch_norm_with_update")
def batch_norm_with_update(input, weight, bias, running_mean, running_var, momentum, eps):
    outputs = native_batch_norm(input, weight, bias, running_mean, running_var, True, momentum, eps)
    return (*outputs, cudnn_reserve())


@register("_batch_norm_no_update")
def batch_norm_no_update(input, weight, bias, running_mean, running_var, momentum, eps):
    outputs = native_batch_norm(input, weight, bias, running_mean, running_var, False, momentum, eps)
    return (*outputs, cudnn_reserve())


@register("native_batch_norm_backward")
def native_batch_norm_backward(
    grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train, eps, output_mask
):
    x, dy = opmath_operand(input), opmath_operand(grad_out)
    axes = batch_norm_axes(x.ndim)
    if train:
        mean = per_channel(opmath_operand(save_mean), x.ndim)
        invstd = per_channel(opmath_operand(save_invstd), x.ndim)
    else:
        mean = per_channel(opmath_operand(running_mean), x.ndim)
        invstd = inverse_std(per_channel(opmath_operand(running_var), x.ndim), eps)
    xhat = (x - mean) * invstd
    grad_xhat = scaled(dy, per_channel(optional_operand(weight), x.ndim))
    grad_x = normalized_input_gradient(grad_xhat, xhat, invstd, axes) if train else grad_xhat * invstd
    params_dtype = input.dtype if weight is None else weight.dtype
    return (
        output_if(output_mask[0], grad_x, input.dtype),
        output_if(output_mask[1], np.sum(dy * xhat, axis=axes), params_dtype),
        output_if(output_mask[2], np.sum(dy, axis=axes), params_dtype),
    )


@register("_weight_norm_interface_backward")
def weight_norm_interface_backward(grad_w, saved_v, saved_g, saved_norms, dim):
    """nn.utils.weight_norm's fused backward. PyTorch's differentiable twin (a composite of tpu ops)
    computes the same gradients for v and g from the same saved tensors."""
    return torch.ops.aten._weight_norm_differentiable_backward(grad_w, saved_v, saved_g, saved_norms, dim)


# ---------------------------------------------------------------------------------------
# Pooling over the last ``n`` dims of any (batch..., *spatial) array.
#
# Fixed-window pools pad the input once, then visit each kernel offset as one strided view:
# a loop over the kernel's k**n offsets, each step vectorised over every output element.
# Adaptive pools have windows of varying size and gather instead.
# ---------------------------------------------------------------------------------------


def expand_param(value, n, default=None):
    value = list(value) if isinstance(value, (list, tuple)) else [value]
    if not value and default is not None:
        return list(default)
    return value * n if len(value) == 1 else value


def pooling_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """at::pooling_output_shape."""
    numerator = size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


class Window:
    """The geometry of a fixed-window pool over ``n`` spatial dims."""

    def __init__(self, in_sizes, kernel, stride, padding, dilation, ceil_mode, planes=1):
        n = len(in_sizes)
        self.in_sizes = tuple(in_sizes)
        self.planes = planes
        self.kernel = expand_param(kernel, n)
        self.stride = expand_param(stride, n, default=self.kernel)
        self.padding = expand_param(padding, n)
        self.dilation = expand_param(dilation, n)
        self.out_sizes = tuple(
            pooling_output_size(*args, ceil_mode)
            for args in zip(in_sizes, self.kernel, self.stride, self.padding, self.dilation)
        )
        self.check_padding()
        # padding after the input that the last (ceil_mode) window may reach into
        self.pad_after = tuple(
            max(0, (o - 1) * s + d * (k - 1) + 1 - i - p)
            for i, o, k, s, p, d in zip(
                in_sizes, self.out_sizes, self.kernel, self.stride, self.padding, self.dilation
            )
        )

    def check_padding(self):
        """The argument errors PyTorch's pooling shape checks raise (only 2-d pools get them from meta)."""
        for k, p, d in zip(self.kernel, self.padding, self.dilation):
            if p > (d * (k - 1) + 1) // 2:
                raise RuntimeError(
                    f"pad should be at most half of effective kernel size, but got pad={p}, kernel_size={k} and "
                    f"dilation={d}"
                )

    def check_output(self):
        if any(o < 1 for o in self.out_sizes):
            raise RuntimeError(
                f"Given input size: ({'x'.join(map(str, (self.planes, *self.in_sizes)))}). Calculated output size: "
                f"({'x'.join(map(str, (self.planes, *self.out_sizes)))}). Output size is too small"
            )

    def pad(self, x, fill):
        widths = [(0, 0)] * (x.ndim - len(self.in_sizes)) + list(zip(self.padding, self.pad_after))
        if not any(lo or hi for lo, hi in widths):
            return x
        return np.pad(x, widths, constant_values=fill)

    def offsets(self):
        return itertools.product(*(range(k) for k in self.kernel))

    def view(self, offset):
        """The index selecting, in the padded input, every window's element at ``offset``."""
        return (Ellipsis,) + tuple(
            slice(j * d, j * d + (o - 1) * s + 1 if o else j * d, s)
            for j, d, o, s in zip(offset, self.dilation, self.out_sizes, self.stride)
        )

    def coordinates(self, offset):
        """Per dim, the input coordinate each output reads at ``offset`` (may lie in padding)."""
        return [
            np.arange(o) * s - p + j * d
            for j, o, s, p, d in zip(offset, self.out_sizes, self.stride, self.padding, self.dilation)
        ]

    def first_valid_coordinates(self):
        """Per dim, each window's first coordinate inside the input (PyTorch's starting argmax)."""
        starts = [np.arange(o) * s - p for o, s, p in zip(self.out_sizes, self.stride, self.padding)]
        return [
            np.where(start < 0, start + (-start + d - 1) // d * d, start) for start, d in zip(starts, self.dilation)
        ]

    def avg_divisors(self, count_include_pad):
        """Per dim, the number of elements each window averages over."""
        divisors = []
        for i, o, k, s, p in zip(self.in_sizes, self.out_sizes, self.kernel, self.stride, self.padding):
            start = np.arange(o) * s - p
            end = np.minimum(start + k, i + p)
            if not count_include_pad:
                start, end = np.maximum(start, 0), np.minimum(end, i)
            divisors.append(end - start)
        return divisors


def grids(per_dim):
    """Per-dim 1-d arrays reshaped to broadcast against each other (np.ix_, but booleans stay values)."""
    n = len(per_dim)
    return [np.asarray(a).reshape((1,) * d + (-1,) + (1,) * (n - d - 1)) for d, a in enumerate(per_dim)]


def flat_index(coordinates, in_sizes):
    """Row-major flat indices of the outer product of per-dim coordinates."""
    return sum(grid * math.prod(in_sizes[d + 1:]) for d, grid in enumerate(grids(coordinates)))


def outer_product(per_dim):
    return math.prod(grids(per_dim))


def lowest(dtype):
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def running_max(best, best_label, values, label, check_nan):
    """PyTorch's update rule: take a strictly greater value, or any NaN (so the last NaN wins)."""
    take = values > best
    if check_nan:
        take |= np.isnan(values)
    np.maximum(best, values, out=best)  # same values as a masked copy (NaN included), several times faster
    best_label += take * (label - best_label)


def has_nan(x):
    return x.dtype.kind == "f" and bool(np.isnan(x).any())


def max_pool_arrays(x, window):
    """Max and flat argmax of every window.

    The loop only records which kernel offset won (a small integer); the flat input index
    is computed once at the end from that offset and the window's position.
    """
    padded = window.pad(x, lowest(x.dtype))
    out_shape = x.shape[: x.ndim - len(window.in_sizes)] + window.out_sizes
    best = np.full(out_shape, lowest(x.dtype), x.dtype)
    winner = np.full(out_shape, -1, np.int32)
    check_nan = has_nan(x)
    offsets = list(window.offsets())
    for number, offset in enumerate(offsets):
        running_max(best, winner, padded[window.view(offset)], number, check_nan)
    window_origin = flat_index(window.coordinates((0,) * len(window.in_sizes)), window.in_sizes)
    offset_delta = np.array([flat_index([[j * d] for j, d in zip(offset, window.dilation)], window.in_sizes).item()
                             for offset in offsets])
    index = window_origin + offset_delta[winner]
    # a window with no value above -inf points at its first element inside the input, as on the CPU
    np.copyto(index, flat_index(window.first_valid_coordinates(), window.in_sizes), where=winner < 0)
    return best, index


def max_pool_backward_array(grad, indices, in_shape, n_spatial):
    """Scatter-add each output gradient to the input element its max came from."""
    lead = in_shape[: len(in_shape) - n_spatial]
    rows, inner = math.prod(lead), math.prod(in_shape[len(lead):])
    flat = indices.reshape(rows, -1) + (np.arange(rows) * inner)[:, None]
    summed = np.bincount(flat.ravel(), weights=grad.reshape(rows, -1).ravel(), minlength=rows * inner)
    return summed.reshape(in_shape)


def avg_pool_arrays(x, window, count_include_pad, divisor_override):
    padded = window.pad(x, 0)
    views = (padded[window.view(offset)] for offset in window.offsets())
    total = next(views).copy()
    for view in views:
        total += view
    divisor = divisor_override or outer_product(window.avg_divisors(count_include_pad))
    if total.dtype.kind in "iu":  # integer averages truncate toward zero, as C++ division does
        return trunc_divide(total, np.asarray(divisor, total.dtype))
    total /= divisor
    return total


def avg_pool_backward_array(grad, in_shape, window, count_include_pad, divisor_override):
    divisor = divisor_override or outer_product(window.avg_divisors(count_include_pad))
    share = grad / divisor
    lead = len(in_shape) - len(window.in_sizes)
    padded_shape = in_shape[:lead] + tuple(
        i + p + hi for i, p, hi in zip(window.in_sizes, window.padding, window.pad_after)
    )
    padded = np.zeros(padded_shape, share.dtype)
    for offset in window.offsets():
        padded[window.view(offset)] += share
    return padded[(Ellipsis,) + tuple(slice(p, p + i) for p, i in zip(window.padding, window.in_sizes))]


# the name 3-d pools' shape checks give themselves in CPU's errors (Meta checks the 2-d pools)
POOL_CHECK_NAMES = {"max": "max_pool3d_with_indices_out_cpu_template()", "avg": "avg_pool3d()"}


def check_pool_input(self, n, kind, kernel_size):
    """CPU's 3-d pool checks of the input, between those of the padding and of the output size: positive
    non-batch sizes and, for average pooling, an input at least as large as the kernel."""
    if n == 3:
        for position, size in enumerate(self.shape):
            if size <= 0 and not (self.dim() == 5 and position == 0):
                raise RuntimeError(
                    f"{POOL_CHECK_NAMES[kind]}: Expected input's non-batch dimensions to have positive length, but "
                    f"input has a shape of {list(self.shape)} and non-batch dimension {size} has length zero!")
        if kind == "avg":
            kernel, sizes = expand_param(kernel_size, n), self.shape[-n:]
            if any(size < k for size, k in zip(sizes, kernel)):
                raise RuntimeError(f"input image (T: {sizes[0]} H: {sizes[1]} W: {sizes[2]}) smaller than kernel size "
                                   f"(kT: {kernel[0]} kH: {kernel[1]} kW: {kernel[2]})")


def pool_window(self, n, kernel_size, stride, padding, dilation, ceil_mode, kind="max"):
    """The window, after CPU's checks of the arguments in CPU's order."""
    for pad in expand_param(padding, n):
        if pad < 0:
            raise RuntimeError(f"pad must be non-negative, but got pad: {pad}")
    planes = self.shape[-n - 1] if self.dim() > n else 1
    window = Window(tuple(self.shape[-n:]), kernel_size, stride, padding, dilation, ceil_mode, planes)
    check_pool_input(self, n, kind, kernel_size)
    window.check_output()
    return window


def max_pool_kernel(n):
    def kernel(self, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False, *, out=None, indices=None):
        window = pool_window(self, n, kernel_size, stride, padding, dilation, ceil_mode)
        values, index = max_pool_arrays(opmath_operand(self), window)
        return (store(values, self.dtype, out=out, distinct=(self,), dtype_rule=exact_dtype),
                store(index, torch.int64, out=indices, distinct=(self,), dtype_rule=exact_dtype))

    return kernel


def max_pool_backward_kernel(n):
    def kernel(grad_output, self, kernel_size, stride, padding, dilation, ceil_mode, indices, *, grad_input=None):
        result = max_pool_backward_array(opmath_operand(grad_output), operand(indices), tuple(self.shape), n)
        return store(result, self.dtype, out=grad_input, distinct=(grad_output, self), dtype_rule=exact_dtype)

    return kernel


register("max_pool2d_with_indices.out")(max_pool_kernel(2))
register("max_pool3d_with_indices", "max_pool3d_with_indices.out")(max_pool_kernel(3))
register("max_pool2d_with_indices_backward.grad_input")(max_pool_backward_kernel(2))
register("max_pool3d_with_indices_backward", "max_pool3d_with_indices_backward.grad_input")(max_pool_backward_kernel(3))


# What CPU's average pooling kernels have loops for, and the name their "not implemented" error gives
AVG_POOL_DTYPES = {
    2: (frozenset({torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64}), "avg_pool2d"),
    3: (frozenset({torch.float32, torch.float64, torch.int64}), "avg_pool3d_out_frame"),
}
ADAPTIVE_AVG_POOL_NAMES = {2: "adaptive_avg_pool2d", 3: "adaptive_avg_pool3d_cpu"}


def avg_pool_kernel(n):
    supported, kernel_name = AVG_POOL_DTYPES[n]

    def kernel(self, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None, *, out):
        require(self.dtype in supported, self.dtype, kernel_name)
        window = pool_window(self, n, kernel_size, stride, padding, 1, ceil_mode, "avg")
        return store(avg_pool_arrays(opmath_operand(self), window, count_include_pad, divisor_override), self.dtype,
                     out=out, distinct=(self,), dtype_rule=exact_dtype)

    return kernel


def avg_pool_backward_kernel(n):
    def kernel(grad_output, self, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
               *, grad_input):
        window = pool_window(self, n, kernel_size, stride, padding, 1, ceil_mode)
        result = avg_pool_backward_array(
            opmath_operand(grad_output), tuple(self.shape), window, count_include_pad, divisor_override
        )
        return store(result, self.dtype, out=grad_input, distinct=(grad_output, self), dtype_rule=exact_dtype)

    return kernel


register("avg_pool2d.out")(avg_pool_kernel(2))
register("avg_pool3d.out")(avg_pool_kernel(3))
register("avg_pool2d_backward.grad_input")(avg_pool_backward_kernel(2))
register("avg_pool3d_backward.grad_input")(avg_pool_backward_kernel(3))


def adaptive_bounds(in_size, out_size):
    """at::native::start_index / end_index for every output position."""
    o = np.arange(out_size)
    return (o * in_size) // out_size, ((o + 1) * in_size + out_size - 1) // out_size


def adaptive_membership(in_size, out_size):
    """(out, in) matrix: 1 where input element i lies in output o's window."""
    start, end = adaptive_bounds(in_size, out_size)
    i = np.arange(in_size)
    return ((i >= start[:, None]) & (i < end[:, None])).astype(np.float32)


def contract_spatial(x, matrices):
    """Apply one small matrix along each trailing spatial dim."""
    n = len(matrices)
    for d, matrix in enumerate(matrices):
        axis = x.ndim - n + d
        x = np.moveaxis(np.tensordot(x, matrix.astype(x.dtype), axes=([axis], [1])), -1, axis)
    return x


def uniform_window(in_sizes, out_sizes):
    """When every size divides evenly, adaptive windows are plain non-overlapping ones: pool them so."""
    if all(o and i % o == 0 for i, o in zip(in_sizes, out_sizes)):
        kernel = [i // o for i, o in zip(in_sizes, out_sizes)]
        return Window(in_sizes, kernel, kernel, 0, 1, False)
    return None


def adaptive_avg_pool_array(x, out_sizes):
    in_sizes = x.shape[-len(out_sizes):]
    if window := uniform_window(in_sizes, out_sizes):
        return avg_pool_arrays(x, window, True, None)
    matrices = [adaptive_membership(i, o) for i, o in zip(in_sizes, out_sizes)]
    counts = outer_product([m.sum(axis=1) for m in matrices])
    return contract_spatial(x, matrices) / counts


def adaptive_avg_pool_backward_array(grad, in_sizes):
    out_sizes = grad.shape[-len(in_sizes):]
    if window := uniform_window(in_sizes, out_sizes):
        return avg_pool_backward_array(grad, grad.shape[: -len(in_sizes)] + tuple(in_sizes), window, True, None)
    matrices = [adaptive_membership(i, o) for i, o in zip(in_sizes, out_sizes)]
    counts = outer_product([m.sum(axis=1) for m in matrices])
    return contract_spatial(grad / counts, [m.T for m in matrices])


def sequential_adaptive_avg_pool_array(x, out_sizes):
    """CPU's 3-d adaptive average: each window summed element by element in ``x``'s own dtype (bf16
    rounds every addition), in (t, h, w) order, then divided by its extent along t, h and w in turn."""
    in_sizes = x.shape[-len(out_sizes):]
    starts, ends = zip(*(adaptive_bounds(i, o) for i, o in zip(in_sizes, out_sizes)))
    extents = [end - start for start, end in zip(starts, ends)]
    total = np.zeros(x.shape[:-len(out_sizes)] + tuple(out_sizes), x.dtype)
    for offset in itertools.product(*(range(int(e.max(initial=0))) for e in extents)):
        inside = functools.reduce(np.logical_and, grids([k < e for k, e in zip(offset, extents)]))
        index = [np.minimum(start + k, size - 1) for start, k, size in zip(starts, offset, in_sizes)]
        total = np.where(inside, total + x[(Ellipsis,) + np.ix_(*index)], total)
    for extent in grids(extents):
        total = total / extent.astype(x.dtype)
    return total


def adaptive_avg_pool_kernel(n):
    """2-d pooling averages in opmath (float32 for bf16); 3-d runs CPU's older loop over the input's dtype."""

    def kernel(self, output_size, *, out=None):
        require(self.dtype.is_floating_point, self.dtype, ADAPTIVE_AVG_POOL_NAMES[n])
        out_sizes = tuple(expand_param(output_size, n))
        if n == 3:
            result = sequential_adaptive_avg_pool_array(operand(self), out_sizes)
        else:
            result = adaptive_avg_pool_array(opmath_operand(self), out_sizes)
        return store(result, self.dtype, out=out, dtype_rule=exact_dtype)

    return kernel


def adaptive_avg_pool_backward_kernel(n):
    def kernel(grad_output, self, *, out=None):
        result = adaptive_avg_pool_backward_array(opmath_operand(grad_output), tuple(self.shape[-n:]))
        return store(result, self.dtype, out=out, dtype_rule=exact_dtype)

    return kernel


register("_adaptive_avg_pool2d", "_adaptive_avg_pool2d.out")(adaptive_avg_pool_kernel(2))
register("_adaptive_avg_pool3d", "_adaptive_avg_pool3d.out")(adaptive_avg_pool_kernel(3))
register("_adaptive_avg_pool2d_backward", "_adaptive_avg_pool2d_backward.out")(adaptive_avg_pool_backward_kernel(2))
register("_adaptive_avg_pool3d_backward", "_adaptive_avg_pool3d_backward.out")(adaptive_avg_pool_backward_kernel(3))


def adaptive_max_pool_arrays(x, out_sizes):
    n = len(out_sizes)
    in_sizes = x.shape[-n:]
    if window := uniform_window(in_sizes, out_sizes):
        return max_pool_arrays(x, window)
    bounds = [adaptive_bounds(i, o) for i, o in zip(in_sizes, out_sizes)]
    lengths = [end - start for start, end in bounds]
    best = np.full(x.shape[:-n] + tuple(out_sizes), lowest(x.dtype), x.dtype)
    best_index = np.empty(best.shape, np.int64)
    best_index[...] = flat_index([start for start, _ in bounds], in_sizes)
    check_nan = has_nan(x)
    for offset in itertools.product(*(range(int(length.max(initial=0))) for length in lengths)):
        coordinates = [np.minimum(start + j, i - 1) for (start, _), j, i in zip(bounds, offset, in_sizes)]
        inside = outer_product([j < length for j, length in zip(offset, lengths)])
        values = x[(Ellipsis,) + tuple(grids(coordinates))]
        running_max(best, best_index, np.where(inside, values, lowest(x.dtype)), flat_index(coordinates, in_sizes),
                    check_nan)
    return best, best_index


def adaptive_max_pool_kernel(n):
    def kernel(self, output_size, *, out, indices):
        values, index = adaptive_max_pool_arrays(opmath_operand(self), tuple(expand_param(output_size, n)))
        return (store(values, self.dtype, out=out, distinct=(self,), dtype_rule=exact_dtype),
                store(index, torch.int64, out=indices, distinct=(self,), dtype_rule=exact_dtype))

    return kernel


def adaptive_max_pool_backward_kernel(n):
    def kernel(grad_output, self, indices, *, grad_input):
        result = max_pool_backward_array(opmath_operand(grad_output), operand(indices), tuple(self.shape), n)
        return store(result, self.dtype, out=grad_input, distinct=(grad_output, self), dtype_rule=exact_dtype)

    return kernel


register("adaptive_max_pool2d.out")(adaptive_max_pool_kernel(2))
register("adaptive_max_pool3d.out")(adaptive_max_pool_kernel(3))
register("adaptive_max_pool2d_backward.grad_input")(adaptive_max_pool_backward_kernel(2))
register("adaptive_max_pool3d_backward.grad_input")(adaptive_max_pool_backward_kernel(3))


# ---------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------


@register("native_dropout")
def native_dropout(input, p, train):
    x = opmath_operand(input)
    if train is not None and not train:
        return store(x, input.dtype), store(np.ones(x.shape, np.bool_), torch.bool)
    keep_probability = 1 - p
    keep = _C.current_chip().rng.next_stream().random(x.shape, dtype=np.float32) < keep_probability
    scale = 0.0 if keep_probability == 0 else 1 / keep_probability
    # multiply rather than select, so NaN and inf inputs propagate exactly as on the CPU
    return store(x * keep * np.asarray(scale, x.dtype), input.dtype), store(keep, torch.bool)


@register("native_dropout_backward", "native_dropout_backward.out")
def native_dropout_backward(grad_output, mask, scale, *, out=None):
    """CPU's ``grad * mask * scale``: two promoting products, so integer and bool gradients give floats."""
    masked_dtype = torch.promote_types(grad_output.dtype, mask.dtype)
    dtype = torch.result_type(torch.empty((), dtype=masked_dtype), scale)
    compute = opmath_dtype(dtype)
    masked = (opmath_operand(grad_output) * operand(mask)).astype(compute, copy=False)  # exact: mask is 0 or 1
    result = masked * np.asarray(scale, compute)
    return store(result, dtype, out=out, dtype_rule=exact_dtype)


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------


def nll_terms(log_probs, target, weight, ignore_index):
    """Per-sample -weight[t] * log_probs[t] and weight[t] (0 where ignored), for (M, C) log_probs."""
    classes = log_probs.shape[-1]
    ignored = target == ignore_index
    out_of_bounds = ~ignored & ((target < 0) | (target >= classes))
    if out_of_bounds.any():
        raise IndexError(f"Target {target[out_of_bounds][0]} is out of bounds.")
    safe_target = np.where(ignored, 0, target)
    sample_weight = np.ones(target.shape, log_probs.dtype) if weight is None else weight[safe_target]
    sample_weight = np.where(ignored, 0, sample_weight).astype(log_probs.dtype)
    picked = np.take_along_axis(log_probs, safe_target[:, None], axis=1)[:, 0]
    return np.where(ignored, 0, -sample_weight * picked), sample_weight, ignored


def class_last(x, n_spatial):
    """(N, C, *spatial) -> (N * prod(spatial), C) so every NLL variant is one (M, C) problem."""
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]) if n_spatial else x.reshape(-1, x.shape[-1])


def nll_forward_arrays(self, target, weight, reduction, ignore_index, n_spatial):
    log_probs = class_last(opmath_operand(self), n_spatial)
    target_array = operand(target)
    terms, sample_weight, ignored = nll_terms(log_probs, target_array.reshape(-1), optional_operand(weight),
                                              ignore_index)
    if reduction == REDUCTION_NONE:
        return terms.reshape(target_array.shape), np.zeros((), log_probs.dtype)
    if not terms.size:
        return np.asarray(np.nan if reduction == REDUCTION_MEAN else 0.0), np.zeros(())
    return nll_reduction(terms, sample_weight, ignored, weight is not None, reduction, numpy_dtype(self.dtype))


# CPU's nll_loss sums in its input's own dtype through 8 partial sums, each flushed into the next every
# ``2 ** level_power`` samples: rounding, in bf16, after every addition
CASCADE_LEVELS = 8


def nll_reduction(terms, sample_weight, ignored, weighted, reduction, dtype):
    """The sum (or weighted mean) of the per-sample losses and the total weight, exactly as CPU's
    cascade sum forms them in ``dtype``."""
    terms, sample_weight = terms.astype(dtype), sample_weight.astype(dtype)
    total = cascade_sum(terms, ~ignored, dtype)
    counted = np.count_nonzero(~ignored)
    total_weight = cascade_sum(sample_weight, ~ignored, dtype) if weighted else np.asarray(counted).astype(dtype)
    if reduction == REDUCTION_MEAN:
        total = (total / total_weight).astype(dtype)
    return total, total_weight


def cascade_sum(values, counted, dtype):
    """sum(values[counted]) as CPU's cascade forms it. Sample ``b`` (if counted) flushes level j into level
    j + 1 when ``b`` is a multiple of ``2 ** (level_power * (j + 1))``; the levels are then added in order."""
    level_power = max(4, (max(len(values), 3) - 1).bit_length() // CASCADE_LEVELS)  # utils::CeilLog2
    samples = np.flatnonzero(counted)
    inputs = values[samples]
    residuals = []
    for level in range(1, CASCADE_LEVELS):
        flushes = samples % (1 << (level_power * level)) == 0
        group = np.cumsum(flushes) - flushes  # a flushing sample closes its group
        sums = sequential_sums(inputs, group, int(flushes.sum()) + 1, dtype)
        residuals.append(sums[-1])
        inputs, samples = sums[:-1], samples[flushes]
    residuals.append(sequential_sums(inputs, np.zeros(len(inputs), np.int64), 1, dtype)[0])
    return sequential_sums(np.array(residuals, dtype), np.zeros(len(residuals), np.int64), 1, dtype)[0]


def sequential_sums(values, group, groups, dtype):
    """Per group, ``((0 + v0) + v1) + ...`` over its values in order, rounding to ``dtype`` at each step."""
    position = np.arange(len(values)) - np.searchsorted(group, group)
    width = int(position.max()) + 1 if len(values) else 0
    table = np.zeros((groups, width), dtype)
    present = np.zeros((groups, width), bool)
    table[group, position], present[group, position] = values, True
    sums = np.zeros(groups, dtype)
    for column, valid in zip(table.T, present.T):
        sums = np.where(valid, (sums + column).astype(dtype), sums)
    return sums


def nll_backward_array(grad_output, self, target, weight, reduction, ignore_index, total_weight, n_spatial):
    x = opmath_operand(self)
    target_array = operand(target).reshape(-1)
    log_probs = class_last(x, n_spatial)
    _, sample_weight, ignored = nll_terms(log_probs, target_array, optional_operand(weight), ignore_index)
    grad = opmath_operand(grad_output).reshape(-1) if reduction == REDUCTION_NONE else opmath_operand(grad_output)
    if reduction == REDUCTION_MEAN:
        grad = grad / opmath_operand(total_weight)
    rows = np.zeros(log_probs.shape, x.dtype)
    values = np.where(ignored, 0, -sample_weight * grad)
    np.put_along_axis(rows, np.where(ignored, 0, target_array)[:, None], values[:, None], axis=1)
    if not n_spatial:
        return rows.reshape(x.shape)
    return np.moveaxis(rows.reshape((x.shape[0],) + x.shape[2:] + (x.shape[1],)), -1, 1)


@register("nll_loss_forward.output")
def nll_loss_forward(self, target, weight, reduction, ignore_index, *, output, total_weight):
    loss, weight_sum = nll_forward_arrays(self, target, weight, reduction, ignore_index, 0)
    return (store(loss, self.dtype, out=output, dtype_rule=exact_dtype),
            store(weight_sum, self.dtype, out=total_weight, dtype_rule=exact_dtype))


@register("nll_loss_backward.grad_input")
def nll_loss_backward(grad_output, self, target, weight, reduction, ignore_index, total_weight, *, grad_input):
    return store(nll_backward_array(grad_output, self, target, weight, reduction, ignore_index, total_weight, 0),
                 self.dtype, out=grad_input, dtype_rule=exact_dtype)


def check_nll2d_shapes(self, target):
    if target.dim() != 3:
        raise RuntimeError(
            f"only batches of spatial targets supported (3D tensors) but got targets of dimension: {target.dim()}"
        )
    if self.dim() != 4:
        raise RuntimeError(f"only batches of spatial inputs supported (4D tensors), but got input of dimension: "
                           f"{self.dim()}")
    if self.shape[0] != target.shape[0] or self.shape[2:] != target.shape[1:]:
        raise RuntimeError(f"input and target batch or spatial sizes don't match: target {list(target.shape)}, "
                           f"input {list(self.shape)}")


@register("nll_loss2d_forward", "nll_loss2d_forward.output")
def nll_loss2d_forward(self, target, weight, reduction, ignore_index, *, output=None, total_weight=None):
    check_nll2d_shapes(self, target)
    loss, weight_sum = nll_forward_arrays(self, target, weight, reduction, ignore_index, 2)
    return (store(loss, self.dtype, out=output, dtype_rule=exact_dtype),
            store(weight_sum, self.dtype, out=total_weight, dtype_rule=exact_dtype))


@register("nll_loss2d_backward", "nll_loss2d_backward.grad_input")
def nll_loss2d_backward(grad_output, self, target, weight, reduction, ignore_index, total_weight, *, grad_input=None):
    result = nll_backward_array(grad_output, self, target, weight, reduction, ignore_index, total_weight, 2)
    return store(result, self.dtype, out=grad_input, dtype_rule=exact_dtype)


def pointwise_loss(loss_function):
    """Kernel for a loss that is an elementwise function of (input, target), then reduced.

    The dispatcher drops trailing arguments equal to their schema default, so ``loss_function``
    carries the schema's defaults for its extra parameters (beta, delta).
    """

    def kernel(self, target, reduction=REDUCTION_MEAN, *args, out=None):
        x, t = opmath_operand(self), opmath_operand(target)
        loss = reduce_loss(loss_function(x, t, *args), reduction)
        return store(loss, self.dtype, out=out, dtype_rule=exact_dtype)

    return kernel


def pointwise_loss_backward(gradient_function):
    """Kernel for d loss / d input = grad * gradient_function(input, target), shaped like input."""

    def kernel(grad_output, self, target, reduction, *args, grad_input=None):
        x, t = opmath_operand(self), opmath_operand(target)
        grad = loss_gradient_scale(opmath_operand(grad_output), x.size, reduction)
        result = np.broadcast_to(grad * gradient_function(x, t, *args), x.shape)
        return store(result, self.dtype, out=grad_input, dtype_rule=exact_dtype)

    return kernel


def squared_error(x, t):
    return np.square(x - t)


def squared_error_gradient(x, t):
    return 2 * (x - t)


def smooth_l1(x, t, beta=1.0):
    d = np.abs(x - t)
    # beta == 0 is the L1 loss; the quadratic branch is never taken then, "or 1" only avoids 0/0
    return np.where(d < beta, 0.5 * d * d / (beta or 1), d - 0.5 * beta)


def smooth_l1_gradient(x, t, beta):
    d = x - t
    if beta == 0:
        return np.sign(d)
    return np.where(d < -beta, -1, np.where(d > beta, 1, d / beta))


def huber(x, t, delta=1.0):
    if delta <= 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    d = np.abs(x - t)
    return np.where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta))


def huber_gradient(x, t, delta):
    d = x - t
    return np.where(d < -delta, -delta, np.where(d > delta, delta, d))


# mse_loss and smooth_l1_loss are structured: only their out= overloads, so PyTorch's meta function checks shapes
register("mse_loss.out")(pointwise_loss(squared_error))
register("mse_loss_backward", "mse_loss_backward.grad_input")(pointwise_loss_backward(squared_error_gradient))
register("smooth_l1_loss.out")(pointwise_loss(smooth_l1))
register("smooth_l1_loss_backward", "smooth_l1_loss_backward.grad_input")(pointwise_loss_backward(smooth_l1_gradient))
register("huber_loss", "huber_loss.out")(pointwise_loss(huber))
register("huber_loss_backward", "huber_loss_backward.out")(pointwise_loss_backward(huber_gradient))


# log terms are clamped at -100 so a probability of exactly 0 or 1 gives a finite loss
BCE_LOG_FLOOR = -100
BCE_GRAD_EPSILON = 1e-12


def check_probabilities(x):
    if not np.all((x >= 0) & (x <= 1)):
        raise RuntimeError("all elements of input should be between 0 and 1")


@register("binary_cross_entropy", "binary_cross_entropy.out")
def binary_cross_entropy(self, target, weight=None, reduction=REDUCTION_MEAN, *, out=None):
    x, t = opmath_operand(self), opmath_operand(target)
    check_probabilities(x)
    loss = (t - 1) * np.maximum(np.log1p(-x), BCE_LOG_FLOOR) - t * np.maximum(np.log(x), BCE_LOG_FLOOR)
    loss = reduce_loss(scaled(loss, optional_operand(weight)), reduction)
    return store(loss, self.dtype, out=out, dtype_rule=exact_dtype)


@register("binary_cross_entropy_backward", "binary_cross_entropy_backward.grad_input")
def binary_cross_entropy_backward(grad_output, self, target, weight=None, reduction=REDUCTION_MEAN, *,
                                  grad_input=None):
    x, t = opmath_operand(self), opmath_operand(target)
    grad = loss_gradient_scale(opmath_operand(grad_output), x.size, reduction)
    result = scaled(grad * (x - t) / np.maximum((1 - x) * x, BCE_GRAD_EPSILON), optional_operand(weight))
    result = np.broadcast_to(result, x.shape)
    return store(result, self.dtype, out=grad_input, dtype_rule=exact_dtype)


# ---------------------------------------------------------------------------------------
# Fractional max pooling
# ---------------------------------------------------------------------------------------

# Which column of random_samples drives which spatial dim (CPU: 2d takes W first, 3d takes T first).
FRACTIONAL_SAMPLE_COLUMN = {2: (1, 0), 3: (0, 1, 2)}


def fractional_window_starts(samples, input_size, output_size, pool_size):
    """CPU's generate_intervals for every plane at once, in the samples' dtype as CPU computes it.

    ``samples`` is (planes,); the result is (planes, output_size) window starts.
    """
    dtype = samples.dtype.type
    starts = np.full(samples.shape + (output_size,), input_size - pool_size, np.int64)
    if output_size > 1:
        alpha = dtype(dtype(input_size - pool_size) / dtype(output_size - 1))
        steps = np.arange(output_size - 1).astype(samples.dtype)
        scaled = ((steps[None, :] + samples[:, None]).astype(samples.dtype) * alpha).astype(samples.dtype)
        offset = (samples * alpha).astype(samples.dtype)
        starts[:, :-1] = scaled.astype(np.int64) - offset.astype(np.int64)[:, None]
    return starts


def check_fractional_pool(name, self, kernel_size, output_size, random_samples, n_spatial):
    if self.dim() not in (n_spatial + 1, n_spatial + 2):
        raise RuntimeError(f"{name}(): Expected {n_spatial + 1}D or {n_spatial + 2}D tensor, but got: "
                           f"{list(self.shape)}")
    for size, pool, out_size in zip(self.shape[-n_spatial:], kernel_size, output_size):
        if out_size + pool - 1 > size:
            raise RuntimeError(f"{name}(): pool size {pool} too large relative to input size {size} "
                               f"for output size {out_size}")
    if random_samples.dim() != 3:
        raise RuntimeError(f"{name}(): Expected 3D random_samples, but got {list(random_samples.shape)}")


def fractional_max_pool(name, n_spatial):
    """Max over the pseudo-random windows: the first maximum wins, a NaN anywhere in the window wins
    over it and the last NaN wins over earlier ones; indices are flat positions within the plane."""

    def kernel(self, kernel_size, output_size, random_samples, *, output, indices):
        check_fractional_pool(name, self, kernel_size, output_size, random_samples, n_spatial)
        spatial = tuple(self.shape[-n_spatial:])
        planes_shape = tuple(self.shape[:-n_spatial])
        x = operand(self).reshape((math.prod(planes_shape),) + spatial)
        samples = operand(random_samples).reshape(-1, n_spatial)[:x.shape[0]]
        flat_positions = np.zeros((x.shape[0],) + tuple(output_size) + (1,) * n_spatial, np.int64)
        for d, column in enumerate(FRACTIONAL_SAMPLE_COLUMN[n_spatial]):
            starts = fractional_window_starts(samples[:, column], spatial[d], output_size[d], kernel_size[d])
            grid_shape = [x.shape[0]] + [1] * (2 * n_spatial)
            grid_shape[1 + d] = output_size[d]
            offset_shape = [1] * (1 + 2 * n_spatial)
            offset_shape[1 + n_spatial + d] = kernel_size[d]
            coordinate = starts.reshape(grid_shape) + np.arange(kernel_size[d]).reshape(offset_shape)
            flat_positions = flat_positions * spatial[d] + coordinate
        flat_positions = flat_positions.reshape(flat_positions.shape[:1 + n_spatial] + (math.prod(kernel_size),))
        values = np.take_along_axis(x.reshape(x.shape[0], math.prod(spatial))[(slice(None),) + (None,) * n_spatial],
                                    flat_positions, -1)
        nan = np.isnan(values)
        window = values.shape[-1]
        choice = np.where(nan.any(-1), window - 1 - np.argmax(nan[..., ::-1], -1), np.argmax(values, -1))
        chosen = np.take_along_axis(flat_positions, choice[..., None], -1)[..., 0]
        shape = planes_shape + tuple(output_size)
        return (store(np.take_along_axis(values, choice[..., None], -1).reshape(shape), self.dtype, out=output,
                      distinct=(self,), dtype_rule=exact_dtype),
                store(chosen.reshape(shape), torch.int64, out=indices, distinct=(self,), dtype_rule=exact_dtype))

    return kernel


def fractional_max_pool_backward(n_spatial):
    """Each output's gradient added to the input element its index names, in the tensor's own dtype
    (CPU rounds bf16 after every addition)."""

    def kernel(grad_output, self, kernel_size, output_size, indices, *, grad_input=None):
        spatial_numel = math.prod(self.shape[-n_spatial:])
        gradient = operand(grad_output)
        grad = np.zeros((math.prod(self.shape[:-n_spatial]), spatial_numel), gradient.dtype)
        planes = np.arange(grad.shape[0])[:, None]
        outputs = math.prod(output_size)
        np.add.at(grad, (planes, operand(indices).reshape(grad.shape[0], outputs)),
                  gradient.reshape(grad.shape[0], outputs))
        grad = grad.reshape(self.shape)
        return store(grad, self.dtype, out=grad_input, dtype_rule=exact_dtype)

    return kernel


register("fractional_max_pool2d.output")(fractional_max_pool("fractional_max_pool2d", 2))
register("fractional_max_pool3d.output")(fractional_max_pool("fractional_max_pool3d", 3))
register("fractional_max_pool2d_backward", "fractional_max_pool2d_backward.grad_input")(
    fractional_max_pool_backward(2))
register("fractional_max_pool3d_backward", "fractional_max_pool3d_backward.grad_input")(
    fractional_max_pool_backward(3))
