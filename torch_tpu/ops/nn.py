"""Neural-network kernels: softmax, normalization, dropout, losses (pooling is in pooling.py).

Attention has its own fused kernel (``attention.py``).

Every kernel computes in PyTorch's opmath dtype (float32 for bf16/fp16) and rounds once on
store; results differ from the CPU's only by summation order (and, for bf16 losses that the
CPU builds from several bf16 ops, by the CPU's intermediate roundings).
"""

import functools
import inspect
import math

import numpy as np
import torch

from .. import _C
from .._cost import charged
from . import _registry, pointwise, random
from . import reduction as reduction_ops
from .._errors import not_implemented_for, raise_cpu_error, scalar_type_name
from .._tensor import is_tpu, numpy_dtype
from ._common import (SIXTEEN_BIT, all_contiguous, as_numpy, castable, channel_sums, channels_last_strides, converted,
                      empty, empty_like_strides, ones, exact_dtype, in_dtype, iterator_strides, loop_rounding, opmath_dtype, opmath_operand, operand,
                      prepare_out, row_maxima, store, store_in_memory_format, stored_with_view, suggested_memory_format,
                      wrap_dim, write)
from .cpu_kernel_dtypes import cpu_dtypes, floating_not_fp8
from .pointwise import common_dtype
from .cpu_replay.cascade_sum import cascade_sum
from .cpu_replay.thread_buffers import per_thread_column_sums

# at::Reduction
REDUCTION_NONE, REDUCTION_MEAN, REDUCTION_SUM = 0, 1, 2


ignore_fp_errors, restore_fp_errors = _C.vpu.ignore_fp_errors, _C.vpu.restore_fp_errors

# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------


def register(*overloads):
    """Register a NumPy kernel that, like the CPU kernels, never warns about NaN, inf or 0/0."""

    def decorate(function):
        @functools.wraps(function)
        def quiet(*args, **kwargs):
            token = ignore_fp_errors()  # the state set and reset inline: a `with` costs two more Python calls
            try:
                return function(*args, **kwargs)
            finally:
                restore_fp_errors(token)

        _registry.register(*overloads)(quiet)
        return function

    return decorate


def at_least_1d(array):
    return array.reshape(1) if array.ndim == 0 else array


def reduce_loss(loss, reduction, dtype=None):
    """``loss`` (an array) reduced as ``reduction`` says. Given the torch ``dtype`` of the loss tensor CPU reduces, a
    float32/float64 mean takes CPU's sum order (``reduction.mean_array``), where NumPy's pairwise mean gave other
    bits for about half of the mse losses."""
    if reduction == REDUCTION_MEAN and dtype in (torch.float32, torch.float64):
        return reduction_ops.mean_array(loss, tuple(range(loss.ndim)), False)
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


def check_kernel_dtype(expected, *tensors):
    """A CPU kernel's ``data_ptr<T>()``: the first given tensor not of ``expected``'s dtype is refused."""
    for tensor in tensors:
        if tensor is not None and tensor.dtype != expected:
            raise RuntimeError(f"expected scalar type {scalar_type_name(expected)} but found "
                               f"{scalar_type_name(tensor.dtype)}")


def check_mixed_type(input, *params):
    """CPU's mixed_data_type.h: whether the parameters' dtype (the first given one's) differs from the input's, in
    which case all of them must be float32 and the input bf16/fp16, the one mixed precision CPU's normalization
    kernels have; they refuse any other mix."""
    first = next((param for param in params if param is not None), None)
    if first is None or first.dtype == input.dtype:
        return False
    if any(param is not None and param.dtype != torch.float32 for param in params):
        raise RuntimeError("mixed dtype (CPU): expect parameter to have scalar type of Float")
    if input.dtype not in (torch.bfloat16, torch.float16):
        raise RuntimeError("mixed dtype (CPU): all inputs must share same datatype.")
    return True


def check_parameter_dtypes(input, *params):
    """CPU's normalization kernels on their parameters' dtypes: a mix only as mixed_data_type.h allows, else the
    input's dtype (their ``data_ptr<T>()``), checked for an empty input too."""
    if not check_mixed_type(input, *params):
        check_kernel_dtype(input.dtype, *params)


def check_parameter_gradients(output_mask, weight, bias):
    """CPU's normalization backwards allocate a requested weight or bias gradient like the parameter: without it,
    that allocation fails."""
    if (output_mask[1] and weight is None) or (output_mask[2] and bias is None):
        raise RuntimeError("tensor does not have a device")


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
    return np.matmul(rows, ones(rows.shape[1], array.dtype)).reshape(array.shape[:-1] + (1,))


def compute_into(out, dtype, compute):
    """Run ``compute(destination)`` in ``out``'s own memory when it has the compute dtype, else via scratch."""
    view = as_numpy(out)
    if view.dtype == dtype:
        compute(view)
        return out
    scratch = np.empty(view.shape, dtype)
    compute(scratch)
    return write(out, scratch)


def softmax_stored_dtype(dtype, dim, ndim, log):
    """The NumPy dtype CPU's bfloat16/float16 (log-)softmax loop stores an intermediate in, or None for the compute
    dtype (a replayed CPU detail: rounded anywhere else, a quarter to a third of the results are one ulp off):
    - log-softmax along the last dim: each row's sum of exponentials and its log, in a buffer of the input's dtype;
    - softmax along another dim: the exponentials of the columns its scalar path takes (``exponentials_stored``),
      written into the output first, then divided there by their (unrounded) float sum."""
    if dtype not in SIXTEEN_BIT or (dim == max(ndim - 1, 0)) != log:
        return None
    return numpy_dtype(dtype)


def softmax_into(destination, x, dim, log=False, stored_dtype=None):
    """(Log-)softmax of ``x`` along ``dim`` into ``destination``; returns the row maxima. ``stored_dtype``: see
    ``softmax_stored_dtype``."""
    if x.size == 0:
        return None
    row_max = row_maxima(x, dim)
    np.subtract(x, row_max, out=destination)
    if log and stored_dtype is not None:
        total = sum_along(np.exp(destination), dim).astype(stored_dtype).astype(x.dtype)
        destination -= np.log(total).astype(stored_dtype).astype(x.dtype)
    elif log:
        destination -= np.log(sum_along(np.exp(destination), dim))
    else:
        np.exp(destination, out=destination)
        total = sum_along(destination, dim)
        if stored_dtype is not None:
            stored = exponentials_stored(x.shape, dim, stored_dtype)
            np.copyto(destination, destination.astype(stored_dtype), where=stored)
        destination /= total
    return row_max


def exponentials_stored(shape, dim, dtype):
    """Where CPU's bf16/fp16 softmax over a dim other than the last stores each exponential in the output before
    dividing it: the columns its scalar path takes (the others, in its 64-byte vectors, divide in float), as a
    boolean array broadcastable to ``shape``."""
    outer, inner = math.prod(shape[:dim]), math.prod(shape[dim + 1:])
    width = pointwise.AVX512_VECTOR_BYTES // np.dtype(dtype).itemsize
    vector = _C.cpu_loops.vector_path_columns(outer, inner, width, torch.get_num_threads())
    return ~vector.reshape(shape[:dim] + (1,) + shape[dim + 1:])


def check_softmax_dtype(self, dim, kernel):
    """CPU's softmax loops (``kernel``: "softmax", "log_softmax_backward", ...) are floating-point only; its error
    names the loop the dim selects."""
    if self.numel() and not self.dtype.is_floating_point:
        loop = "lastdim_kernel_impl" if dim == max(self.dim() - 1, 0) else "kernel_impl"
        raise not_implemented_for(f"{kernel}_{loop}", self.dtype)


def check_half_to_float(self, half_to_float):
    """CUDA's rule (CPU refuses the conversion outright; Meta also takes bfloat16): eager, compiled and
    abstract execution all ask here."""
    if half_to_float and self.dtype != torch.float16:
        raise RuntimeError("conversion is supported for Half type only")


def softmax_kernel(log):
    def kernel(self, dim, half_to_float, *, out=None):  # None: into a new tensor (launched without the wrapper)
        dim = wrap_dim(dim, self.dim())
        check_softmax_dtype(self, dim, "log_softmax" if log else "softmax")
        check_half_to_float(self, half_to_float)
        dtype = torch.float32 if half_to_float else self.dtype
        if out is None:
            out = empty(self.shape, dtype)
        else:
            prepare_out(out, self.shape, dtype, distinct=(self,), dtype_rule=exact_dtype)
        x = at_least_1d(opmath_operand(self))
        stored_dtype = softmax_stored_dtype(dtype, dim, self.dim(), log)
        return compute_into(out, x.dtype,
                            lambda destination: softmax_into(at_least_1d(destination), x, dim, log, stored_dtype))

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


def softmax_backward_kernel(backward_into, out_name, cpu_kernel):
    def kernel(grad_output, output, dim, input_dtype, **out):  # none: into a new tensor (without the wrapper)
        dim = wrap_dim(dim, output.dim())
        check_softmax_dtype(output, dim, cpu_kernel)
        if out:
            out = prepare_out(out[out_name], output.shape, input_dtype, distinct=(grad_output, output),
                              dtype_rule=exact_dtype)
        else:
            out = empty(output.shape, input_dtype)
        grad, y = at_least_1d(opmath_operand(grad_output)), at_least_1d(opmath_operand(output))
        return compute_into(out, y.dtype, lambda destination: backward_into(at_least_1d(destination), grad, y, dim))

    return kernel


register("_softmax_backward_data.out")(
    softmax_backward_kernel(softmax_backward_into, "grad_input", "softmax_backward"))
register("_log_softmax_backward_data.out")(
    softmax_backward_kernel(log_softmax_backward_into, "out", "log_softmax_backward"))


def without_structured_wrapper(name, outputs, fits, out_overload="out"):
    """The functional overload ``name`` of a structured op, computed by its ``.{out_overload}`` kernel into new
    contiguous tensors (``outputs(*args)`` gives each output argument's (shape, dtype), by name; None: the
    kernel, given no output arguments, stores its results in new contiguous tensors itself) in one launch
    charged under ``name``, when ``fits(*args)``: then the meta function would accept the call and lay its
    results out contiguously, and PyTorch's structured wrapper (that meta function, then ``empty`` for each
    output and the out= kernel through the dispatcher) adds nothing but time. Any other call keeps the
    wrapper, its checks and its errors. The out= launch is charged its output arguments as written, not read
    (``_cost``), so both launches are charged the same bytes."""
    structured_wrapper = _registry.default_kernel(name)  # read before our kernel replaces it
    out_kernel = _registry.KERNELS[f"{name}.{out_overload}"]

    def into_new(*args):
        if outputs is None:
            return out_kernel(*args)
        return out_kernel(*args, **{argument: empty(*result) for argument, result in outputs(*args).items()})

    launch = charged(into_new, name)

    def functional(*args):
        return launch(*args) if fits(*args) else structured_wrapper(*args)

    _registry.register(name, charge=False)(functional)


# softmax and log-softmax (every classifier's cross-entropy, attention written out) and their backwards:
# their meta functions give a contiguous result of the input's shape
# (the kernels, given no output argument, compute into a new tensor themselves)
for _name in ("_softmax", "_log_softmax"):
    without_structured_wrapper(_name, None, lambda self, dim, half_to_float: not half_to_float)
for _name in ("_softmax_backward_data", "_log_softmax_backward_data"):
    without_structured_wrapper(
        _name, None,
        lambda grad_output, output, dim, input_dtype: (grad_output.shape == output.shape
                                                       and grad_output.dtype == output.dtype == input_dtype))


@register("_safe_softmax")
def safe_softmax(self, dim, dtype=None):
    """Softmax whose fully masked rows (all -inf) are 0 instead of NaN: attention's softmax."""
    dtype = dtype or self.dtype
    dim = wrap_dim(dim, self.dim())
    x = at_least_1d(opmath_operand(self)).astype(opmath_dtype(dtype), copy=False)

    def compute(destination):
        destination = at_least_1d(destination)
        row_max = softmax_into(destination, x, dim, stored_dtype=softmax_stored_dtype(dtype, dim, self.dim(), False))
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


def batch_inverse_std(var, eps):
    """A training batch norm's saved inverse std, as CPU's and CUDA's InvStd: 0, not inf, for a constant channel
    without eps, whose normalized values are then 0, not NaN (layer, group and evaluation norms take inf)."""
    if eps:
        return inverse_std(var, eps)
    return np.divide(1, np.sqrt(var), out=np.zeros_like(var), where=var != 0)


def normalized_input_gradient(grad_xhat, xhat, rstd, axes):
    """d loss / d x for xhat = (x - mean(x)) * rstd, with mean and rstd taken over ``axes``."""
    mean_grad = np.mean(grad_xhat, axis=axes, keepdims=True)
    mean_grad_xhat = np.mean(grad_xhat * xhat, axis=axes, keepdims=True)
    return rstd * (grad_xhat - mean_grad - xhat * mean_grad_xhat)


def scaled(x, weight):
    return x if weight is None else x * weight


def shifted(x, bias):
    return x if bias is None else x + bias


def output_if(mask, array, dtype, memory_format=torch.contiguous_format):
    return store_in_memory_format(array, dtype, memory_format) if mask else None


def row_means(rows):
    """The mean of each row of a 2-d array."""
    return sum_along(rows, 1)[:, 0] / rows.shape[1]


def column_sums(rows):
    return np.matmul(ones(rows.shape[0], rows.dtype), rows)


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
@cpu_dtypes(torch.ops.aten.native_layer_norm.default, floating_not_fp8)
def native_layer_norm(input, normalized_shape, weight, bias, eps):
    check_parameter_dtypes(input, weight, bias)
    check_layer_norm_inputs(input, normalized_shape, weight, bias)
    x, stats_shape = layer_norm_rows(input, normalized_shape)
    normalize, mean, rstd = layer_norm_arrays(x, flat_operand(weight), flat_operand(bias), eps)
    out = compute_into(empty(input.shape, input.dtype), x.dtype, normalize)
    stats_dtype = statistics_dtype(input, weight, bias)
    return (out, store(mean.reshape(stats_shape), stats_dtype),
            store(rstd.reshape(stats_shape), stats_dtype))


def layer_norm_backward_arrays(x, dy, mean, rstd, weight_rows, buffer_dtype):
    """The backward of ``layer_norm_arrays`` (all operands opmath rows): ``input_gradient(destination)``
    writes d loss / d x, with d loss / d xhat's weight and bias sums (None without a weight), summed as CPU sums
    them through per-thread buffers of the NumPy ``buffer_dtype`` (the input's)."""
    xhat = x - mean
    xhat *= rstd
    grad_xhat = dy if weight_rows is None else dy * weight_rows

    # CPU's float32/float64 sums are sequential chains with a fused multiply-add per row, too slow to replay for
    # the float32 models (an ulp off in some values); its bf16/fp16 buffers round every step and are replayed
    replayed = buffer_dtype != x.dtype

    def weight_sums():
        if not replayed:
            return column_sums(dy * xhat)
        # dy * (rstd * x - rstd * mean), both multiply-adds fused as CPU's compiled vector code fuses them
        return per_thread_column_sums(_C.vpu.fused_multiply_add(x, rstd, -rstd * mean), buffer_dtype,
                                      torch.get_num_threads(), dy)

    def bias_sums():
        return per_thread_column_sums(dy, buffer_dtype, torch.get_num_threads()) if replayed else column_sums(dy)

    def input_gradient(destination):  # rstd * (grad_xhat - mean(grad_xhat) - xhat * mean(grad_xhat * xhat))
        out = destination.reshape(x.shape)
        np.multiply(xhat, row_means(grad_xhat * xhat)[:, None], out=out)
        np.subtract(grad_xhat, out, out=out)
        out -= row_means(grad_xhat)[:, None]
        out *= rstd

    return input_gradient, weight_sums, bias_sums


def layer_norm_dtypes_refused(input, weight, bias):
    """Whether CPU refuses layer norm's parameter dtypes (compiled programs leave such a call to the eager kernel,
    which raises CPU's error)."""
    try:
        check_parameter_dtypes(input, weight, bias)
    except RuntimeError:
        return True
    return False


def layer_norm_rows_count(input, normalized_shape):
    """CPU's M: how many rows layer norm normalizes (its kernel runs, and checks dtypes, only for some)."""
    return math.prod(input.shape[:max(input.dim() - len(normalized_shape), 0)])


def check_layer_norm_backward_dtypes(grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask):
    """CPU's layer norm backward checks no mix itself: its kernel reads the gradient in the input's dtype, and the
    statistics, the weight and the bias's gradient in float32 beside a bf16/fp16 input with a float32 weight, else
    in the input's dtype."""
    check_parameter_gradients(output_mask, weight, bias)
    if not layer_norm_rows_count(input, normalized_shape):
        return
    check_kernel_dtype(input.dtype, grad_out)
    mixed = weight is not None and weight.dtype == torch.float32 and input.dtype in (torch.bfloat16, torch.float16)
    check_kernel_dtype(torch.float32 if mixed else input.dtype, mean, rstd, weight, bias if output_mask[2] else None)


@register("native_layer_norm_backward")
@cpu_dtypes(torch.ops.aten.native_layer_norm_backward.default, floating_not_fp8)
def native_layer_norm_backward(grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask):
    check_layer_norm_backward_dtypes(grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask)
    x, _ = layer_norm_rows(input, normalized_shape)
    dy = opmath_operand(grad_out).reshape(x.shape)
    mean, rstd = opmath_operand(mean).reshape(-1, 1), opmath_operand(rstd).reshape(-1, 1)
    input_gradient, weight_sums, bias_sums = layer_norm_backward_arrays(x, dy, mean, rstd, flat_operand(weight),
                                                                        numpy_dtype(input.dtype))
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
@cpu_dtypes(torch.ops.aten.native_group_norm.default, floating_not_fp8)
def native_group_norm(input, weight, bias, N, C, HxW, group, eps):
    check_parameter_dtypes(input, weight, bias)
    x = opmath_operand(input)
    mean, var = moments(grouped(x, N, C, HxW, group), (2,))
    rstd = inverse_std(var, eps)
    xhat = ((grouped(x, N, C, HxW, group) - mean) * rstd).reshape(x.shape)
    out = affine_per_channel(xhat, weight, bias)
    stats_dtype = statistics_dtype(input, weight, bias)
    return (store_in_memory_format(out, input.dtype, suggested_memory_format(input)),  # as CPU allocates Y
            store(mean.reshape(N, group), stats_dtype), store(rstd.reshape(N, group), stats_dtype))


def check_group_norm_backward_dtypes(grad_out, input, mean, rstd, weight, output_mask):
    """CPU's group norm backward: the gradient of the input's dtype, the statistics mixed with the input as the
    forward's parameters may be, and the weight read in the statistics' type (its bias gradient is allocated like
    the weight)."""
    if grad_out.dtype != input.dtype:
        raise RuntimeError("Expected scalar types of X and dY are same.")
    mixed = check_mixed_type(input, mean, rstd)
    check_parameter_gradients(output_mask, weight, weight)
    check_kernel_dtype(torch.float32 if mixed else input.dtype, weight)


@register("native_group_norm_backward")
@cpu_dtypes(torch.ops.aten.native_group_norm_backward.default, floating_not_fp8)
def native_group_norm_backward(grad_out, input, mean, rstd, weight, N, C, HxW, group, output_mask):
    check_group_norm_backward_dtypes(grad_out, input, mean, rstd, weight, output_mask)
    x, dy = opmath_operand(input), opmath_operand(grad_out)
    mean, rstd = opmath_operand(mean)[..., None], opmath_operand(rstd)[..., None]
    xhat = (grouped(x, N, C, HxW, group) - mean) * rstd
    grad_xhat = grouped(scaled(dy, per_channel(optional_operand(weight), x.ndim)), N, C, HxW, group)
    reduce_axes = (0,) + tuple(range(2, x.ndim))
    params_dtype = input.dtype if weight is None else weight.dtype
    grad_input = output_if(output_mask[0], normalized_input_gradient(grad_xhat, xhat, rstd, (2,)).reshape(x.shape),
                           input.dtype, suggested_memory_format(input))  # the input's layout, whatever the gradient's
    grad_weight = output_if(output_mask[1], np.sum(dy * xhat.reshape(x.shape), axis=reduce_axes), params_dtype)
    grad_bias = output_if(output_mask[2], np.sum(dy, axis=reduce_axes), params_dtype)
    return grad_input, grad_weight, grad_bias


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
    # (under the kernel's own errstate: see ``register``)
    if running_mean is not None:
        blend_into(running_mean, momentum_ * mean.astype(compute, copy=False), keep, compute)
    if running_var is not None:
        blend_into(running_var, unbiased, keep, compute)


def blend_into(running, update, keep, compute):
    """``running = update + keep * running``, each step rounded in ``compute``, then stored. A running statistic that
    holds ``compute`` values (a float32 model's buffers) is updated in its own memory: no temporary, no store."""
    if numpy_dtype(running.dtype) != compute or running.is_neg() or not is_tpu(running):
        write(running, update + keep * operand(running).astype(compute, copy=False))
        return
    current = as_numpy(running)
    np.multiply(current, keep, out=current)
    np.add(update, current, out=current)


_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def vectorised_layout(input):
    """Whether CPU's batch norm takes its vectorised kernels (contiguous or channels-last input) rather
    than its generic loops; the two round differently."""
    if input.is_contiguous():
        return True
    channels_last = _CHANNELS_LAST.get(input.dim())
    return channels_last is not None and input.is_contiguous(memory_format=channels_last)


def batch_norm_strides(input):
    """The strides of batch norm's output and input gradient, which CPU makes ``empty_like(input,
    input.suggest_memory_format())``: channels-last for an input laid out so, else contiguous (None)."""
    if not input.is_contiguous() and suggested_memory_format(input) is not torch.contiguous_format:
        return channels_last_strides(input.shape)
    return None


def collected_dtype(stats_dtype, vectorised):
    """The dtype CPU's batch norm keeps a batch's mean and sum of squares in until it stores them: the
    statistics' own, except in the vectorised kernels for fp16, which keep float32 (the variance and the running
    averages come from the float sums, as the generic loop's double arithmetic takes them; only the saved mean
    and inverse std round to fp16), where bf16 rounds both sums first."""
    return torch.float32 if vectorised and stats_dtype == torch.float16 else stats_dtype


def batch_statistics(x, stats_dtype, vectorised, kept_dtype=None):
    """Per channel, the saved mean (a tensor in ``stats_dtype``), the mean and the sum of squared
    deviations as CPU's later steps read them, the count, and the biased variance. Sums run in acc_type (double for float32).

    The vectorised kernels take deviations from the mean in opmath and keep the mean and the sum of
    squares in ``kept_dtype`` (``stats_dtype`` unless given; bf16 parameters round both), then work from those
    values; the generic loops take deviations from the stored mean and keep their sum in acc_type.
    """
    accumulator = np.float64 if x.dtype == np.float32 else x.dtype
    count = x.size // max(x.shape[1], 1)
    mean = (channel_sums(x, accumulator) / count).astype(x.dtype)
    save_mean, stored_mean = stored_with_view(mean.ravel(), stats_dtype)
    kept_dtype = kept_dtype or stats_dtype
    if kept_dtype != stats_dtype:  # what the kernel reads back is its unrounded mean
        stored_mean = mean.ravel().astype(numpy_dtype(kept_dtype), copy=False)
    if not vectorised:  # the stored mean read back in opmath, as opmath_operand(save_mean) would give it
        stored_mean = stored_mean.astype(opmath_dtype(stats_dtype), copy=False)
    deviation_from = mean if vectorised else per_channel(stored_mean, x.ndim)
    # squared in acc_type straight from the opmath deviations (the cast is exact): one pass, not a copy and a pass
    squares = channel_sums(np.square(x - deviation_from, dtype=accumulator)).ravel()
    if vectorised:
        squares = converted(squares, kept_dtype)
    biased_var = (squares / np.asarray(count, squares.dtype)).astype(accumulator)
    return save_mean, stored_mean, squares, count, biased_var


def generic_arithmetic(input, stats_dtype):
    """The dtype CPU's generic batch norm loop computes in: the parameters' own (bf16 rounds each
    step), or float32 for a reduced input with float32 parameters."""
    return numpy_dtype(stats_dtype) if stats_dtype == input.dtype else opmath_dtype(input.dtype)


def transformed(input, x, weight, bias, mean, invstd, compute, vectorised):
    """The normalized input (``x``: the input in opmath), a new tensor. The vectorised kernels compute
    ``x * alpha + beta`` in opmath, with alpha = invstd * weight and beta = bias - mean * alpha, written
    straight into the output; the generic loop computes ``((x - mean) * invstd) * weight + bias`` in ``compute``."""
    ndim = input.dim()
    out = empty(input.shape, input.dtype, batch_norm_strides(input))
    if not vectorised:
        x = operand(input).astype(compute, copy=False)
        centered = (x - per_channel(mean.astype(compute), ndim)) * per_channel(invstd.astype(compute), ndim)
        weight, bias = (None if p is None else operand(p).astype(compute, copy=False) for p in (weight, bias))
        return write(out, shifted(scaled(centered, per_channel(weight, ndim)), per_channel(bias, ndim)))
    # in the opmath type: float32 for 16-bit inputs, float64 for float64 (CPU's kernel computes in double there)
    alpha = scaled(per_channel(invstd.astype(np.promote_types(x.dtype, np.float32), copy=False), ndim),
                   per_channel(optional_operand(weight), ndim))
    beta = shifted(-per_channel(mean.astype(alpha.dtype, copy=False), ndim) * alpha,
                   per_channel(optional_operand(bias), ndim))

    def affine(destination):
        if input.dtype in SIXTEEN_BIT:  # CPU's compiled float lanes fuse x * alpha + beta (one rounding before the
            # 16-bit store); float32's fuse too, but an emulated fused multiply-add would cost the models' speed
            _C.vpu.fused_multiply_add(x, alpha, beta, out=destination)
            return
        np.multiply(x, alpha, out=destination)
        destination += beta

    return compute_into(out, x.dtype, affine)


def evaluation_invstd(running_var, eps, compute, vectorised):
    """1 / sqrt(running_var + eps): in opmath for the vectorised kernels; for the generic loop, as
    tensor ops in its dtype (each rounding)."""
    var = opmath_operand(running_var)
    if vectorised:
        return inverse_std(var, eps)
    root = np.sqrt((var + np.asarray(eps, var.dtype)).astype(compute))
    return np.asarray(1, compute) / root


def check_running_statistics(running_mean, running_var):
    """CPU's batch norm kernel's checks of the running statistics: both or neither, each read as 1-d (its
    TensorAccessor; a (C, 1) running mean would otherwise broadcast, or be read as C values)."""
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    for statistic in (running_mean, running_var):
        if statistic is not None and statistic.dim() != 1:
            raise RuntimeError(f"TensorAccessor expected 1 dims but tensor has {statistic.dim()}")


@register("native_batch_norm")
@cpu_dtypes(torch.ops.aten.native_batch_norm.default, floating_not_fp8)
def native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps):
    """Normalized with the statistics as CPU stores and reads them back."""
    check_running_statistics(running_mean, running_var)
    check_parameter_dtypes(input, weight, bias, running_mean, running_var)
    x = opmath_operand(input)
    stats_dtype = statistics_dtype(input, weight, bias, running_mean, running_var)
    vectorised = vectorised_layout(input)
    compute = generic_arithmetic(input, stats_dtype)
    if training:
        kept_dtype = collected_dtype(stats_dtype, vectorised)
        save_mean, mean, squares, count, var = batch_statistics(x, stats_dtype, vectorised, kept_dtype)
        update_running_stats(running_mean, running_var, mean, squares, count, momentum,
                             vectorised and kept_dtype == stats_dtype)
        if kept_dtype != stats_dtype:  # the normalization reads the saved (rounded) mean back
            mean = operand(save_mean)
        # the stored mean as batch_statistics read it back (in opmath for the generic loop, whose own
        # dtype holds it exactly), and the stored inverse std
        save_invstd, invstd = stored_with_view(batch_inverse_std(var, eps), stats_dtype)
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError("running_mean and running_var must be defined in evaluation mode")
        mean, invstd = operand(running_mean), evaluation_invstd(running_var, eps, compute, vectorised)
        save_mean = save_invstd = empty((0,), stats_dtype)
    return transformed(input, x, weight, bias, mean, invstd, compute, vectorised), save_mean, save_invstd


@register("_native_batch_norm_legit")
def native_batch_norm_legit(input, weight, bias, running_mean, running_var, training, momentum, eps):
    return native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps)


@register("_native_batch_norm_legit.no_stats")
def native_batch_norm_legit_no_stats(input, weight, bias, training, momentum, eps):
    return native_batch_norm(input, weight, bias, None, None, training, momentum, eps)


@register("_native_batch_norm_legit_no_training")
def native_batch_norm_legit_no_training(input, weight, bias, running_mean, running_var, momentum, eps):
    return native_batch_norm(input, weight, bias, running_mean, running_var, False, momentum, eps)


def batch_norm_into(results, outs, training):
    """CPU's batch norm out= kernels (``native_batch_norm.out``, ``_native_batch_norm_legit``'s): each out must
    have its result's very dtype (CPU's tensor-argument check words it), is resized as ``resize_output`` does,
    and keeps its own strides. In evaluation there are no batch statistics, and CPU leaves ``save_mean`` and
    ``save_invstd`` as they are."""
    for result, out in zip(results, outs):
        if out.dtype != result.dtype:
            raise RuntimeError(f"expected scalar type {scalar_type_name(result.dtype)} but found "
                               f"{scalar_type_name(out.dtype)}")
    for result, out in zip(results if training else results[:1], outs):
        prepare_out(out, result.shape, result.dtype, dtype_rule=exact_dtype).copy_(result)
    return outs


@register("native_batch_norm.out", "_native_batch_norm_legit.out")
def native_batch_norm_out(input, weight, bias, running_mean, running_var, training, momentum, eps, *,
                          out, save_mean, save_invstd):
    results = native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps)
    return batch_norm_into(results, (out, save_mean, save_invstd), training)


@register("_native_batch_norm_legit.no_stats_out")
def native_batch_norm_legit_no_stats_out(input, weight, bias, training, momentum, eps, *, out, save_mean, save_invstd):
    results = native_batch_norm(input, weight, bias, None, None, training, momentum, eps)
    return batch_norm_into(results, (out, save_mean, save_invstd), training)


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


_NATIVE_BATCH_NORM = torch.ops.aten.native_batch_norm.default
_BATCH_NORM = torch.ops.aten.batch_norm.default


def plain_batch_norm(input, weight, bias, running_mean, running_var, training):
    """Whether ``batch_norm``'s composite would end in ``native_batch_norm`` with these arguments (a non-empty input,
    parameters and statistics of its channel count, statistics given for evaluation) in plain eager mode: no
    dispatch mode, subclass or torch.func transform, which all see the composite's own ops."""
    if (input.dim() < 2 or not input.numel() or torch._C._len_torch_dispatch_stack()
            or torch._C._are_functorch_transforms_active()):
        return False
    if not training and (running_mean is None or running_var is None):
        return False
    channels = input.shape[1]
    given = [t for t in (weight, bias, running_mean, running_var) if t is not None]
    plain = _registry.PLAIN_TENSORS
    return type(input) in plain and all(type(t) in plain and t.numel() == channels for t in given)


@_registry.register_autograd("batch_norm")
def batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn_enabled):
    """``F.batch_norm`` (every ``nn.BatchNorm``) straight to ``native_batch_norm`` through autograd, which makes the
    node CPU's composite makes (NativeBatchNormBackward0). The composite goes there through
    ``_batch_norm_impl_index``, whose ``empty`` launch (cuDNN's reserve, unused off CUDA) and extra hops cost a tpu
    batch norm about 8 us a call. Anything else (an empty input, wrong sizes, tracing) takes the composite, with its
    checks and errors."""
    if not plain_batch_norm(input, weight, bias, running_mean, running_var, training):
        return _BATCH_NORM._op_dk(_registry.COMPOSITE, input, weight, bias, running_mean,
                                  running_var, training, momentum, eps, cudnn_enabled)
    return _NATIVE_BATCH_NORM(input, weight, bias, running_mean, running_var, training, momentum, eps)[0]


def subtract_batch_means(grad_x, centered, scale, invstd, sum_dy, dot, count, scratch):
    """A training batch norm's input gradient from ``grad_x`` = dy * scale: minus scale * (mean(dy) + (x - mean) *
    invstd^2 * mean(dy * (x - mean))), the means over ``count`` elements per channel from their sums ``sum_dy`` and
    ``dot``. ``scratch``, shaped like ``centered`` (x - mean), is overwritten."""
    grad_x -= np.multiply(centered, scale * invstd * invstd * dot / count, out=scratch)
    grad_x -= scale * sum_dy / count


@register("native_batch_norm_backward")
@cpu_dtypes(torch.ops.aten.native_batch_norm_backward.default, floating_not_fp8)
def native_batch_norm_backward(
    grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train, eps, output_mask
):
    x, dy = opmath_operand(input), opmath_operand(grad_out)
    if train:
        mean = per_channel(opmath_operand(save_mean), x.ndim)
        invstd = per_channel(opmath_operand(save_invstd), x.ndim)
    else:
        mean = per_channel(opmath_operand(running_mean), x.ndim)
        invstd = inverse_std(per_channel(opmath_operand(running_var), x.ndim), eps)
    centered = x - mean
    # two per-channel sums serve every gradient: sum(dy) and sum(dy * (x - mean)); the input's gradient is
    # then one fused expression over the batch, not a chain of full-size temporaries
    sum_dy = channel_sums(dy)
    products = dy * centered
    dot = channel_sums(products)
    scale = scaled(invstd, per_channel(optional_operand(weight), x.ndim))

    def input_gradient(grad_x):  # written in the output's memory when it has the compute dtype
        np.multiply(dy, scale, out=grad_x)
        if train:  # dy * centered is summed: its memory is free
            subtract_batch_means(grad_x, centered, scale, invstd, sum_dy, dot, x.size // max(x.shape[1], 1), products)

    params_dtype = input.dtype if weight is None else weight.dtype
    return (
        compute_into(empty(input.shape, input.dtype, batch_norm_strides(input)), np.result_type(dy, scale),
                     input_gradient)
        if output_mask[0] else None,
        output_if(output_mask[1], (dot * invstd).reshape(-1), params_dtype),
        output_if(output_mask[2], sum_dy.reshape(-1), params_dtype),
    )


# ---------------------------------------------------------------------------------------
# Batch norm over the ranks of a process group (nn.SyncBatchNorm): CUDA-only kernels in PyTorch. Each rank
# computes its batch's statistics, SyncBatchNorm gathers them, they combine into the whole batch's, and the
# normalization and its gradient are the batch norm's above (the gradient's sums all-reduced in between).
# ---------------------------------------------------------------------------------------


def synced_statistics_dtype(input):
    """CUDA's statistics dtype for these kernels, its accumulate type: float64 for float64 input, else float32."""
    return torch.float64 if input.dtype == torch.float64 else torch.float32


def synced_params_dtype(mean, weight):
    """The dtype of the weight's and bias's gradients from ``batch_norm_backward_reduce``: the weight's, else mean's."""
    return mean.dtype if weight is None else weight.dtype


SYNCED_DTYPE_CHECKS = {}  # op name -> check(arguments by schema name), asked by eager and abstract execution


def synced_dtypes(cuda_kernel, dispatched, same_statistics_dtypes=False):
    """Decorator for a SyncBatchNorm kernel, named and with parameters named as its op's schema: refuse what CUDA's
    kernel ``cuda_kernel`` refuses. It is compiled for floating types with half and bfloat16 only
    (AT_DISPATCH_FLOATING_TYPES_AND2), dispatching on the first of the arguments named in ``dispatched`` that is
    given; the gradient's kernels also want mean and invstd in one dtype."""

    def check(call):
        dtype = next(call[argument] for argument in dispatched if call[argument] is not None).dtype
        if not floating_not_fp8(dtype):
            raise not_implemented_for(cuda_kernel, dtype)
        if same_statistics_dtypes and call["mean"].dtype != call["invstd"].dtype:
            raise RuntimeError("mean and invstd need to have the same data types")

    def decorate(kernel):
        parameters = tuple(inspect.signature(kernel).parameters)

        @functools.wraps(kernel)
        def checked(*args, **kwargs):
            check({**dict(zip(parameters, args)), **kwargs})
            return kernel(*args, **kwargs)

        SYNCED_DTYPE_CHECKS[kernel.__name__] = check
        return checked

    return decorate


@register("batch_norm_stats")
@synced_dtypes("batch_norm_stats_cuda", ("input",))
def batch_norm_stats(input, eps):
    """This rank's mean and inverse standard deviation per channel."""
    dtype = synced_statistics_dtype(input)
    mean, _, _, _, var = batch_statistics(opmath_operand(input), dtype, vectorised=True)
    return mean, stored_with_view(batch_inverse_std(var, eps), dtype)[0]


def combined_statistics(means, invstds, counts, eps):
    """The whole batch's mean and sum of squared deviations per channel from each part's mean, inverse std
    (biased, with ``eps``) and count (rows of ``means`` and ``invstds``), in float64 (Chan et al.'s combination)."""
    means, invstds = means.astype(np.float64), invstds.astype(np.float64)
    counts = counts.astype(np.float64).reshape(-1, 1)
    total = counts.sum()
    mean = (counts * means).sum(axis=0) / total
    squares = (counts * (1 / np.square(invstds) - eps)).sum(axis=0) + (counts * np.square(means - mean)).sum(axis=0)
    return mean, squares, total


def gathered_statistics(mean, invstd, running_mean, running_var, momentum, eps, counts):
    """The whole batch's mean and inverse std (in ``mean``'s dtype), the running statistics updated as CUDA does:
    ``(1 - momentum) * running + momentum * batch``, the variance unbiased over the whole batch's count."""
    whole_mean, squares, total = combined_statistics(operand(mean), operand(invstd), counts, eps)
    update_running_stats(running_mean, running_var, whole_mean, squares, total, momentum, vectorised=True)
    return (stored_with_view(whole_mean, mean.dtype)[0],
            stored_with_view(inverse_std(squares / total, eps), mean.dtype)[0])


@register("batch_norm_gather_stats_with_counts")
@synced_dtypes("batch_norm_update_stats_cuda", ("running_mean", "input"))
def batch_norm_gather_stats_with_counts(input, mean, invstd, running_mean, running_var, momentum, eps, counts):
    return gathered_statistics(mean, invstd, running_mean, running_var, momentum, eps, operand(counts))


@register("batch_norm_gather_stats")
@synced_dtypes("batch_norm_update_stats_cuda", ("running_mean", "input"))
def batch_norm_gather_stats(input, mean, invstd, running_mean, running_var, momentum, eps, count):
    """As with counts, every rank's batch of ``count`` elements per channel."""
    return gathered_statistics(mean, invstd, running_mean, running_var, momentum, eps, np.full(mean.shape[0], count))


@register("batch_norm_elemt")
@synced_dtypes("batch_norm_elementwise_cuda", ("input",))
def batch_norm_elemt(input, weight, bias, mean, invstd, eps):
    """The input normalized with given statistics, then scaled and shifted."""
    return transformed(input, opmath_operand(input), weight, bias, operand(mean), operand(invstd),
                       opmath_dtype(input.dtype), vectorised=True)


@register("batch_norm_backward_reduce")
@synced_dtypes("batch_norm_backward_reduce", ("grad_out",), same_statistics_dtypes=True)
def batch_norm_backward_reduce(grad_out, input, mean, invstd, weight, input_g, weight_g, bias_g):
    """This rank's sums of dy and dy * (x - mean) per channel (in ``mean``'s dtype, for the input's gradient,
    all-reduced by SyncBatchNorm), and its share of the weight's and bias's gradients (in the weight's dtype)."""
    x, dy = opmath_operand(input), opmath_operand(grad_out)
    sum_dy = channel_sums(dy).reshape(-1)
    dot = channel_sums(dy * (x - per_channel(opmath_operand(mean), x.ndim))).reshape(-1)
    params_dtype = synced_params_dtype(mean, weight)
    return (output_if(input_g, sum_dy, mean.dtype), output_if(input_g, dot, mean.dtype),
            output_if(weight_g, dot * opmath_operand(invstd), params_dtype), output_if(bias_g, sum_dy, params_dtype))


@register("batch_norm_backward_elemt")
@synced_dtypes("batch_norm_backward_elemt", ("grad_out",), same_statistics_dtypes=True)
def batch_norm_backward_elemt(grad_out, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count):
    """The input's gradient from the whole batch's sums (``count``: each rank's elements per channel)."""
    x, dy = opmath_operand(input), opmath_operand(grad_out)
    centered = x - per_channel(opmath_operand(mean), x.ndim)
    invstd = per_channel(opmath_operand(invstd), x.ndim)
    scale = scaled(invstd, per_channel(optional_operand(weight), x.ndim))
    sums = tuple(per_channel(opmath_operand(t), x.ndim) for t in (sum_dy, sum_dy_xmu))

    def input_gradient(grad_x):
        np.multiply(dy, scale, out=grad_x)
        subtract_batch_means(grad_x, centered, scale, invstd, *sums, int(operand(count).sum()), centered)

    return compute_into(empty(input.shape, input.dtype, batch_norm_strides(input)), np.result_type(dy, scale),
                        input_gradient)


@register("_weight_norm_interface_backward")
def weight_norm_interface_backward(grad_w, saved_v, saved_g, saved_norms, dim):
    """nn.utils.weight_norm's fused backward. PyTorch's differentiable twin (a composite of tpu ops)
    computes the same gradients for v and g from the same saved tensors."""
    return torch.ops.aten._weight_norm_differentiable_backward(grad_w, saved_v, saved_g, saved_norms, dim)


# ---------------------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------------------


def dropout_arrays(x, p, train):
    """Dropout of the opmath array ``x``: (the kept elements scaled by 1 / (1 - p), the keep mask). Training
    draws the chip's next random stream (eager and compiled programs alike, in program order)."""
    if train is not None and not train:
        return x, np.ones(x.shape, np.bool_)
    keep_probability = 1 - p
    keep = random.bernoulli_draw(_C.current_chip().rng.next_stream(), x.shape, keep_probability)
    scale = 0.0 if keep_probability == 0 else 1 / keep_probability
    # multiply rather than select, so NaN and inf inputs propagate exactly as on the CPU
    return x * keep * np.asarray(scale, x.dtype), keep


def dropout_refused(input, p, train):
    """Whether CPU's native_dropout refuses a training call: bernoulli_'s range check of the keep probability, then
    the in-place scaling of an integral or bool product by a float (an empty input it returns as it is)."""
    training = train is None or train
    return training and input.numel() > 0 and (
        not 0 <= 1 - p <= 1 or not (input.dtype.is_floating_point or input.dtype.is_complex))


@register("native_dropout")
def native_dropout(input, p, train):
    if dropout_refused(input, p, train):
        raise_cpu_error(torch.ops.aten.native_dropout.default, input, p, train)
    if not input.numel():  # CPU returns the input itself, and a mask empty_like it (of its dtype, not bool)
        return input, empty(input.shape, input.dtype, empty_like_strides(input))
    result, keep = dropout_arrays(opmath_operand(input), p, train)
    strides = empty_like_strides(input)  # CPU's mask is empty_like(input), and so is its result in evaluation
    mask = write(empty(input.shape, torch.bool, strides), keep)
    if train:  # input * mask * scale, laid out by TensorIterator over the two
        strides = product_strides(input, mask, input.shape)
    return write(empty(input.shape, input.dtype, strides), result), mask


@register("native_dropout_backward", "native_dropout_backward.out")
def native_dropout_backward(grad_output, mask, scale, *, out=None):
    """CPU's ``grad * mask * scale``: two promoting products, so integer and bool gradients give floats."""
    masked_dtype = torch.promote_types(grad_output.dtype, mask.dtype)
    dtype = torch.result_type(torch.empty((), dtype=masked_dtype), scale)
    result = dropout_backward_arrays(opmath_operand(grad_output), operand(mask), scale, opmath_dtype(dtype))
    if out is None:
        return write(empty(result.shape, dtype, product_strides(grad_output, mask, result.shape)), result)
    return store(result, dtype, out=out, dtype_rule=exact_dtype)


def product_strides(a, b, shape):
    """The layout CPU's TensorIterator gives the product of two tensors (None: contiguous): dropout's result and
    gradient; abstract mode asks too."""
    operands = (a, b)
    return None if all_contiguous(operands) else iterator_strides(shape, operands)


def dropout_backward_arrays(grad, mask, scale, compute):
    """``grad * mask * scale`` in the ``compute`` dtype (``grad`` in its opmath dtype)."""
    masked = (grad * mask).astype(compute, copy=False)  # exact: mask is 0 or 1
    return masked * np.asarray(scale, compute)


# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------


def nll_targets(target, classes, ignore_index):
    """(ignored, any ignored, the class each sample reads: its target, 0 where ignored) of 1-d ``target``,
    refusing a target outside [0, classes) that is not ignored, as CPU does."""
    ignored = target == ignore_index
    any_ignored = bool(ignored.any())
    if target.size and (any_ignored or target.min() < 0 or target.max() >= classes):
        out_of_bounds = ~ignored & ((target < 0) | (target >= classes))
        if out_of_bounds.any():
            raise IndexError(f"Target {target[out_of_bounds][0]} is out of bounds.")
    return ignored, any_ignored, np.where(ignored, 0, target) if any_ignored else target


def nll_sample_weights(safe_target, ignored, any_ignored, weight, dtype):
    """weight[t] per sample (1 without class weights), 0 where ignored, in ``dtype``."""
    sample_weight = np.ones(safe_target.shape, dtype) if weight is None else weight[safe_target]
    return (np.where(ignored, 0, sample_weight) if any_ignored else sample_weight).astype(dtype, copy=False)


def nll_terms(log_probs, target, weight, ignore_index):
    """Per-sample -weight[t] * log_probs[t] and weight[t] (0 where ignored), for (M, C) log_probs."""
    ignored, any_ignored, safe_target = nll_targets(target, log_probs.shape[-1], ignore_index)
    sample_weight = nll_sample_weights(safe_target, ignored, any_ignored, weight, log_probs.dtype)
    terms = -sample_weight * log_probs[np.arange(len(safe_target)), safe_target]
    return (np.where(ignored, 0, terms) if any_ignored else terms), sample_weight, ignored


def class_last(x, n_spatial):
    """(N, C, *spatial) -> (N * prod(spatial), C) so every NLL variant is one (M, C) problem."""
    return np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]) if n_spatial else x.reshape(-1, x.shape[-1])


def nll_forward_arrays(self, target, weight, reduction, ignore_index, n_spatial):
    return nll_forward_maths(class_last(opmath_operand(self), n_spatial), operand(target), optional_operand(weight),
                             reduction, ignore_index, numpy_dtype(self.dtype))


def nll_forward_maths(log_probs, target_array, weight_array, reduction, ignore_index, dtype):
    """(loss, total weight) of (M, C) opmath ``log_probs``, summed in the input's ``dtype`` as CPU sums them."""
    terms, sample_weight, ignored = nll_terms(log_probs, target_array.reshape(-1), weight_array, ignore_index)
    if reduction == REDUCTION_NONE:
        return terms.reshape(target_array.shape), np.zeros((), log_probs.dtype)
    if not terms.size:
        return np.asarray(np.nan if reduction == REDUCTION_MEAN else 0.0), np.zeros(())
    return nll_reduction(terms, sample_weight, ignored, weight_array is not None, reduction, dtype)


def nll_reduction(terms, sample_weight, ignored, weighted, reduction, dtype):
    """The sum (or weighted mean) of the per-sample losses and the total weight, exactly as CPU's
    cascade sum forms them in ``dtype``."""
    terms, sample_weight, counted = terms.astype(dtype, copy=False), sample_weight.astype(dtype, copy=False), ~ignored
    total = cascade_sum(terms, counted, dtype)
    total_weight = cascade_sum(sample_weight, counted, dtype) if weighted else \
        np.asarray(np.count_nonzero(counted)).astype(dtype)
    if reduction == REDUCTION_MEAN:
        total = (total / total_weight).astype(dtype)
    return total, total_weight




def nll_backward_array(grad_output, self, target, weight, reduction, ignore_index, total_weight, n_spatial):
    return nll_backward_maths(opmath_operand(grad_output), opmath_operand(self), operand(target),
                              optional_operand(weight), reduction, ignore_index, opmath_operand(total_weight), n_spatial)


def nll_backward_maths(grad, x, target_array, weight_array, reduction, ignore_index, total_weight, n_spatial):
    """The gradient of the NLL loss with respect to its (opmath) input ``x``."""
    log_probs = class_last(x, n_spatial)
    ignored, any_ignored, safe_target = nll_targets(target_array.reshape(-1), log_probs.shape[-1], ignore_index)
    sample_weight = nll_sample_weights(safe_target, ignored, any_ignored, weight_array, log_probs.dtype)
    grad = grad.reshape(-1) if reduction == REDUCTION_NONE else grad
    if reduction == REDUCTION_MEAN:
        grad = grad / total_weight
    rows = np.zeros(log_probs.shape, x.dtype)
    values = -sample_weight * grad
    rows[np.arange(len(safe_target)), safe_target] = np.where(ignored, 0, values) if any_ignored else values
    if not n_spatial:
        return rows.reshape(x.shape)
    return np.moveaxis(rows.reshape((x.shape[0],) + x.shape[2:] + (x.shape[1],)), -1, 1)


@register("nll_loss_forward.output")
def nll_loss_forward(self, target, weight, reduction, ignore_index, *, output=None, total_weight=None):
    if not self.dtype.is_floating_point:
        raise not_implemented_for("nll_loss_out_frame", self.dtype)
    check_kernel_dtype(self.dtype, weight)
    loss, weight_sum = nll_forward_arrays(self, target, weight, reduction, ignore_index, 0)
    return (store(loss, self.dtype, out=output, dtype_rule=exact_dtype),
            store(weight_sum, self.dtype, out=total_weight, dtype_rule=exact_dtype))


@register("nll_loss_backward.grad_input")
def nll_loss_backward(grad_output, self, target, weight, reduction, ignore_index, total_weight, *, grad_input=None):
    check_kernel_dtype(self.dtype, grad_output, weight, total_weight)
    return store(nll_backward_array(grad_output, self, target, weight, reduction, ignore_index, total_weight, 0),
                 self.dtype, out=grad_input, dtype_rule=exact_dtype)


def nll_loss_dtypes_refused(self, target, *same_dtype):
    """Whether CPU refuses an NLL loss call's dtypes: an input that is not floating, a target neither int64 nor
    uint8 (the meta function's check), or a weight, gradient or total weight of another dtype than the input
    (compiled programs leave such a call to the eager kernel, which raises CPU's error)."""
    return (not self.dtype.is_floating_point or target.dtype not in (torch.int64, torch.uint8)
            or any(tensor is not None and tensor.dtype != self.dtype for tensor in same_dtype))


def nll_loss_fits(self, target, weight, reduction):
    """A reduced NLL loss over a batch of class scores that the meta functions accept (with the operands on the
    tpu and a class-index target, so that the kernel raises what it raised behind the wrapper)."""
    return (reduction != REDUCTION_NONE and self.dim() == 2 and target.dim() == 1 and target.shape[0] == self.shape[0]
            and self.dtype.is_floating_point and target.dtype == torch.int64 and is_tpu(target)
            and (weight is None or (is_tpu(weight) and weight.numel() == self.shape[1])))


# the loss of every classifier's cross-entropy, and its gradient: the kernels, given no output arguments, store
# their results in new tensors themselves (no output made only to be checked and written through)
without_structured_wrapper(
    "nll_loss_forward", None,
    lambda self, target, weight, reduction, ignore_index: nll_loss_fits(self, target, weight, reduction), "output")
without_structured_wrapper(
    "nll_loss_backward", None,
    lambda grad_output, self, target, weight, reduction, ignore_index, total_weight: (
        nll_loss_fits(self, target, weight, reduction) and grad_output.dim() <= 1 and grad_output.numel() == 1
        and is_tpu(grad_output) and total_weight.numel() == 1 and is_tpu(total_weight)), "grad_input")


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
    if not self.dtype.is_floating_point:
        raise not_implemented_for("nll_loss2d_forward_out_frame", self.dtype)
    loss, weight_sum = nll_forward_arrays(self, target, weight, reduction, ignore_index, 2)
    return (store(loss, self.dtype, out=output, dtype_rule=exact_dtype),
            store(weight_sum, self.dtype, out=total_weight, dtype_rule=exact_dtype))


@register("nll_loss2d_backward", "nll_loss2d_backward.grad_input")
def nll_loss2d_backward(grad_output, self, target, weight, reduction, ignore_index, total_weight, *, grad_input=None):
    result = nll_backward_array(grad_output, self, target, weight, reduction, ignore_index, total_weight, 2)
    return store(result, self.dtype, out=grad_input, dtype_rule=exact_dtype)


def pointwise_loss(loss_function, kernel_name, keeps_input_dtype=False, rounds_each_operation=()):
    """Kernel for a loss that is an elementwise function of (input, target), then reduced. CPU's
    ``kernel_name`` loop computes in the promoted dtype, which must be floating; the loss has that dtype (a
    bf16 prediction against a float32 target gives a float32 loss) or, for ``keeps_input_dtype`` losses, the
    input's, into which the promoted dtype must cast. For the 16-bit dtypes in ``rounds_each_operation`` the
    loop works on ``c10::BFloat16``/``Half`` values, rounding every operation's result (the others convert to
    float once): the loss is evaluated on 16-bit NumPy arrays, whose arithmetic rounds the same way. A 16-bit
    elementwise loss is rounded to its dtype before it is reduced.

    The dispatcher drops trailing arguments equal to their schema default, so ``loss_function``
    carries the schema's defaults for its extra parameters (beta, delta).
    """

    def kernel(self, target, reduction=REDUCTION_MEAN, *args, out=None):
        dtype = torch.result_type(self, target)
        if keeps_input_dtype:
            castable(dtype, self.dtype)
        if not dtype.is_floating_point:
            raise not_implemented_for(kernel_name, dtype)
        x, t = opmath_operand(self), opmath_operand(target)
        if dtype in rounds_each_operation:
            # the loop's parameters (beta, delta) are scalar_t values too
            elementwise = loss_function(*in_dtype(dtype, x, t, *args))
        else:
            elementwise = loss_function(x, t, *args)
        if dtype in SIXTEEN_BIT:  # the reduction reads CPU's elementwise loss tensor, of the dtype
            elementwise = in_dtype(dtype, elementwise)[0].astype(x.dtype)
        loss = reduce_loss(elementwise, reduction, dtype)
        return store(loss, self.dtype if keeps_input_dtype else dtype, out=out, dtype_rule=exact_dtype)

    return kernel


def pointwise_loss_backward(gradient_function, one_dtype_op=None, rounded_steps=None):
    """Kernel for d loss / d input = grad * gradient_function(input, target), shaped like input. Ops
    whose CPU kernel takes only operands of one dtype (huber's TensorIterator checks it) name their
    ``one_dtype_op`` packet, whose CPU error a mix of dtypes gets. ``rounded_steps(x, t, grad, reduction,
    dtype, *args)``, where given, replays CPU's loop: its order of operations, and for bfloat16 and float16 its rounding
    after every one."""

    def kernel(grad_output, self, target, reduction, *args, grad_input=None):
        if one_dtype_op is not None and not grad_output.dtype == self.dtype == target.dtype:
            out = {} if grad_input is None else {"grad_input": grad_input}
            raise_cpu_error(one_dtype_op.out if out else one_dtype_op.default, grad_output, self, target, reduction,
                            *args, **out)
        x, t = opmath_operand(self), opmath_operand(target)
        # CPU's TensorIterator computes in the inputs' common dtype (a 0-d tensor is weak), then casts to self's
        compute_dtype = common_dtype(self, target, grad_output)
        if rounded_steps is not None:
            result = rounded_steps(x, t, opmath_operand(grad_output), reduction, compute_dtype, *args)
        else:
            grad = loss_gradient_scale(opmath_operand(grad_output), x.size, reduction)
            result = grad * gradient_function(x, t, *args)
        return store(np.broadcast_to(result, x.shape), self.dtype, out=grad_input, dtype_rule=exact_dtype)

    return kernel


def squared_error(x, t):
    return np.square(x - t)


def squared_error_gradient(x, t):
    return 2 * (x - t)


def squared_error_gradient_rounded(x, t, grad, reduction, dtype):
    """CPU's mse_loss_backward loop: ``alpha * (x - t) * grad`` with alpha = 2 (2 / numel for a mean) held in the
    dtype, in that order (scaling by 2 before 1 / numel overflowed float32 for differences past 1.7e38), the
    iterator having cast every operand to the dtype; bf16/fp16 round every operation. An empty input's 2 / 0
    scales nothing."""
    compute = x.dtype
    alpha = 2 / max(x.size, 1) if reduction == REDUCTION_MEAN else 2
    x, t, grad, alpha = in_dtype(dtype, x, t, grad, alpha)
    return (alpha * (x - t) * grad).astype(compute)


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


def huber_gradient_rounded(x, t, grad, reduction, dtype, delta=1.0):
    """CPU's huber_loss_backward loop in the dtype (bf16/fp16 rounding every operation), norm being 1 / numel for a
    mean. Its vector loop takes ``norm * (+-delta) * grad`` where ``|x - t| >= delta``, ``norm * (x - t) * grad``
    elsewhere, delta held in the dtype; its scalar tail (each row's last elements) compares ``x - t`` with delta as a
    double and multiplies ``+-norm * grad`` by it as a double, rounding once (``_huber_tail_gradient``)."""
    norm = 1 / max(x.size, 1) if reduction == REDUCTION_MEAN else 1
    compute = x.dtype
    shape = np.broadcast_shapes(x.shape, t.shape, grad.shape)
    every = np.ones(shape, bool)  # also the layout of CPU's gradient: contiguous (zeros_like(input, Contiguous))
    lanes = pointwise.in_vector_lanes(every, (x, t, grad), every, itemsize=numpy_dtype(dtype).itemsize)
    x, t, grad, norm, delta_in_dtype = in_dtype(dtype, x, t, grad, norm, delta)
    d = x - t
    bounded = np.where(np.abs(d) >= delta_in_dtype, np.where(d > 0, delta_in_dtype, -delta_in_dtype), d)
    result = np.array(np.broadcast_to(norm * bounded * grad, shape))
    tail = ~lanes
    if tail.any():
        d, grad = (np.broadcast_to(v, shape)[tail] for v in (d, grad))
        result[tail] = _huber_tail_gradient(d, grad, norm, delta, dtype)
    return result.astype(compute)


def _huber_tail_gradient(d, grad, norm, delta, dtype):
    """huber_loss_backward's scalar loop over differences ``d`` held in the dtype: ``norm * grad`` (negated below
    -delta) in the dtype times the double ``delta``, the double stored back in the dtype (through float, as c10's
    16-bit types convert a double) outside the quadratic zone, bounded by the double delta; ``norm * d * grad``
    inside."""
    wide = d.astype(np.float64)
    outside = (norm * grad).astype(np.float64) * delta
    stored = outside.astype(np.float32 if d.itemsize < 8 else np.float64).astype(d.dtype)
    return np.where(wide <= -delta, -stored, np.where(wide >= delta, stored, norm * d * grad))


# mse_loss and smooth_l1_loss are structured: only their out= overloads, so PyTorch's meta function checks shapes
# which 16-bit loops of CPU's loss kernels round every operation (the others compute in float and round once)
register("mse_loss.out")(pointwise_loss(squared_error, "mse_cpu", rounds_each_operation=SIXTEEN_BIT))
register("mse_loss_backward", "mse_loss_backward.grad_input")(
    pointwise_loss_backward(squared_error_gradient, rounded_steps=squared_error_gradient_rounded))
register("smooth_l1_loss.out")(pointwise_loss(smooth_l1, "smooth_l1_cpu", rounds_each_operation={torch.float16}))
register("smooth_l1_loss_backward", "smooth_l1_loss_backward.grad_input")(pointwise_loss_backward(smooth_l1_gradient))
register("huber_loss", "huber_loss.out")(
    pointwise_loss(huber, "huber_cpu", keeps_input_dtype=True, rounds_each_operation={torch.bfloat16}))
register("huber_loss_backward", "huber_loss_backward.out")(
    pointwise_loss_backward(huber_gradient, torch.ops.aten.huber_loss_backward, rounded_steps=huber_gradient_rounded))


# log terms are clamped at -100 so a probability of exactly 0 or 1 gives a finite loss
BCE_LOG_FLOOR = -100
BCE_GRAD_EPSILON = np.float32(1e-12)  # a float constant in CPU's kernel, for double inputs too


def check_probabilities(x):
    if not np.all((x >= 0) & (x <= 1)):
        raise RuntimeError("all elements of input should be between 0 and 1")


def bce_elementwise(x, t, rounded):
    """CPU's binary_cross_entropy loop, ``(t - 1) * max(log1p(-x), -100) - t * max(log(x), -100)``."""
    log_x = np.maximum(rounded(pointwise.log(x)), BCE_LOG_FLOOR)
    log_1mx = np.maximum(rounded(pointwise.real_log1p(-x)), BCE_LOG_FLOOR)
    return rounded(rounded(rounded(t - 1) * log_1mx) - rounded(t * log_x))


@register("binary_cross_entropy", "binary_cross_entropy.out")
def binary_cross_entropy(self, target, weight=None, reduction=REDUCTION_MEAN, *, out=None):
    x, t = opmath_operand(self), opmath_operand(target)
    check_probabilities(x)
    rounded = loop_rounding(self.dtype, x.dtype)
    # CPU multiplies by the weight in a separate op (loss.mul_(weight)), which rounds once more
    loss = reduce_loss(rounded(scaled(bce_elementwise(x, t, rounded), optional_operand(weight))), reduction)
    return store(loss, self.dtype, out=out, dtype_rule=exact_dtype)


def bce_gradient(x, t, grad, weight, reduction, rounded):
    """CPU's binary_cross_entropy_backward: ``grad * (x - t) / max((1 - x) * x, eps)`` in its loop, then times the
    weight and divided by numel for a mean, each a separate op."""
    denominator = np.maximum(rounded(rounded(1 - x) * x), rounded(np.asarray(BCE_GRAD_EPSILON, x.dtype)))
    result = rounded(rounded(grad * rounded(x - t)) / denominator)
    if weight is not None:
        result = rounded(result * weight)
    return rounded(result / np.asarray(x.size, x.dtype)) if reduction == REDUCTION_MEAN else result


@register("binary_cross_entropy_backward", "binary_cross_entropy_backward.grad_input")
def binary_cross_entropy_backward(grad_output, self, target, weight=None, reduction=REDUCTION_MEAN, *,
                                  grad_input=None):
    x, t = opmath_operand(self), opmath_operand(target)
    result = bce_gradient(x, t, opmath_operand(grad_output), optional_operand(weight), reduction,
                          loop_rounding(self.dtype, x.dtype))
    result = np.broadcast_to(result, x.shape)
    return store(result, self.dtype, out=grad_input, dtype_rule=exact_dtype)
