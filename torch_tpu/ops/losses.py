"""Loss kernels that nn.py does not have: multi-margin, multilabel-margin and CTC, forward and backward.

CTC runs the CPU's alpha/beta recursions (aten/src/ATen/native/LossCTC.cpp) over the time
axis, vectorised over the batch and the extended (blank-interleaved) target positions.
Positions the recursion never reaches hold -inf, where the CPU leaves its log_alpha
uninitialised; nothing reads them.
"""

import numpy as np
import torch

from .._errors import not_implemented_for, scalar_type_name
from ._common import opmath_operand, operand, store
from .nn import REDUCTION_MEAN, REDUCTION_NONE, reduce_loss, register

# ---------------------------------------------------------------------------------------
# multi_margin_loss
# ---------------------------------------------------------------------------------------


def as_batch(x):
    """Inputs may be (C,) or (N, C); the kernels work on (N, C)."""
    return x.reshape(1, -1) if x.ndim <= 1 else x


def check_margin_input(self):
    """CPU's margin losses take a non-empty vector or a matrix of samples (a 0-d input is one score)."""
    if not ((self.dim() == 2 and self.shape[1]) or (self.dim() == 1 and self.shape[0]) or self.dim() == 0):
        raise RuntimeError(f"Expected non-empty vector or matrix with optional 0-dim batch size, but got: "
                           f"{list(self.shape)}")


def check_long_target(target):
    if target.dtype != torch.int64:
        raise RuntimeError(f"expected scalar type Long but found {scalar_type_name(target.dtype)}")


def check_multi_margin_shapes(self, target, weight):
    check_margin_input(self)
    samples, classes = (1, self.shape[0] if self.dim() else 1) if self.dim() <= 1 else self.shape[:2]
    if target.dim() > 1 or target.numel() != samples:
        raise RuntimeError(
            "multi_margin_loss: target tensor should be 1-D with size equal to the number of input samples (batch "
            f"size). Expected target size [{samples}], but got {list(target.shape)}. Input has shape {list(self.shape)}.")
    if weight is not None and (weight.dim() > 1 or weight.numel() != classes):
        raise RuntimeError(f"inconsistent weight size, expected {classes} but got {list(weight.shape)}")
    check_long_target(target)


def margin_target(self, target):
    classes = self.shape[-1] if self.dim() else 1
    labels = operand(target).reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise RuntimeError("target out of range")
    return labels


def check_margin_p(p):
    if p not in (1, 2):
        raise RuntimeError("only p == 1 and p == 2 supported")


def multi_margin_terms(self, target, p, margin, weight):
    """Per element max(0, margin - x[y] + x[j]) for j != y, and its derivative by x[j]."""
    x = as_batch(opmath_operand(self))
    labels = margin_target(self, target)
    rows = np.arange(x.shape[0])
    z = margin - x[rows, labels][:, None] + x
    active = (z > 0) & (np.arange(x.shape[1]) != labels[:, None])
    scale = 1.0 if weight is None else opmath_operand(weight)[labels][:, None]
    terms = np.where(active, z if p == 1 else z * z, 0) * scale / x.shape[1]
    slopes = np.where(active, 1.0 if p == 1 else 2 * z, 0) * scale / x.shape[1]
    return terms, slopes, labels


def per_sample_shape(target, reduction):
    return (target.numel(),) if reduction == REDUCTION_NONE and target.dim() > 0 else ()


def check_float_or_double(kernel_name, dtype):
    """These CPU kernels have loops for float and double only (AT_DISPATCH_FLOATING_TYPES)."""
    if dtype not in (torch.float32, torch.float64):
        raise not_implemented_for(kernel_name, dtype)


@register("multi_margin_loss")
def multi_margin_loss(self, target, p=1, margin=1, weight=None, reduction=REDUCTION_MEAN):
    check_float_or_double("multi_margin_loss_cpu_kernel", self.dtype)
    check_margin_p(p)
    check_multi_margin_shapes(self, target, weight)
    terms, _, _ = multi_margin_terms(self, target, p, margin, weight)
    loss = reduce_loss(terms.sum(axis=1), reduction)
    return store(np.reshape(loss, per_sample_shape(target, reduction)), self.dtype)


def per_sample_gradient(grad_output, samples, reduction):
    """The incoming gradient of each sample's loss, as a column."""
    grad = opmath_operand(grad_output)
    if reduction == REDUCTION_NONE:
        return np.broadcast_to(np.reshape(grad, (-1, 1)), (samples, 1))
    return np.full((samples, 1), grad / samples if reduction == REDUCTION_MEAN else grad)


def scatter_label_gradient(grad, slopes_sum, labels):
    grad[np.arange(grad.shape[0]), labels] -= slopes_sum
    return grad


@register("multi_margin_loss_backward")
def multi_margin_loss_backward(grad_output, self, target, p, margin, weight=None, reduction=REDUCTION_MEAN):
    check_margin_p(p)
    _, slopes, labels = multi_margin_terms(self, target, p, margin, weight)
    grad = slopes * per_sample_gradient(grad_output, slopes.shape[0], reduction)
    grad = scatter_label_gradient(grad, grad.sum(axis=1), labels)
    return store(grad.reshape(self.shape), self.dtype)


# ---------------------------------------------------------------------------------------
# multilabel_margin_loss
# ---------------------------------------------------------------------------------------


def check_multilabel_shapes(self, target):
    check_margin_input(self)
    expected = [self.shape[0] if self.dim() else 1] if self.dim() <= 1 else list(self.shape)
    if (list(target.shape) if self.dim() > 1 else [target.numel()] if target.dim() <= 1 else None) != expected:
        raise RuntimeError(f"inconsistent target size: {list(target.shape)} for input of size: {list(self.shape)}")
    check_long_target(target)


def multilabel_terms(self, target):
    """For each listed label k (up to the first -1) and each non-target class j: 1 - (x[y_k] - x[j])."""
    check_multilabel_shapes(self, target)
    x = as_batch(opmath_operand(self))
    labels = as_batch(operand(target)).astype(np.int64)
    classes = x.shape[1]
    if labels.size and (labels.min() < -1 or labels.max() >= classes):
        raise RuntimeError("argument #2 'target' is out of range")
    listed = np.cumprod(labels >= 0, axis=1).astype(bool)
    safe = np.where(listed, labels, 0)
    rows = np.arange(x.shape[0])[:, None]
    is_target = np.zeros(x.shape, bool)
    is_target[np.broadcast_to(rows, safe.shape)[listed], safe[listed]] = True
    z = 1 - x[rows, safe][:, :, None] + x[:, None, :]
    active = listed[:, :, None] & ~is_target[:, None, :] & (z > 0)
    return np.where(active, z, 0) / classes, active / classes, safe, is_target


@register("multilabel_margin_loss_forward")
def multilabel_margin_loss_forward(self, target, reduction):
    check_float_or_double("multilabel_margin_loss_forward_out_frame", self.dtype)
    terms, _, _, is_target = multilabel_terms(self, target)
    shape = (self.shape[0],) if reduction == REDUCTION_NONE and target.dim() > 1 else ()
    loss = np.reshape(reduce_loss(terms.sum(axis=(1, 2)), reduction), shape)
    return store(loss, self.dtype), store(is_target.reshape(target.shape), self.dtype)


@register("multilabel_margin_loss_backward")
def multilabel_margin_loss_backward(grad_output, self, target, reduction, is_target):
    _, slopes, labels, _ = multilabel_terms(self, target)
    slopes = slopes * per_sample_gradient(grad_output, slopes.shape[0], reduction)[:, :, None]
    grad = slopes.sum(axis=1)
    rows = np.broadcast_to(np.arange(grad.shape[0])[:, None], labels.shape)
    np.subtract.at(grad, (rows, labels), slopes.sum(axis=2))
    return store(grad.reshape(self.shape), self.dtype)


# ---------------------------------------------------------------------------------------
# CTC loss
# ---------------------------------------------------------------------------------------


def lengths(value):
    return np.asarray(operand(value) if isinstance(value, torch.Tensor) else value, dtype=np.int64).reshape(-1)


def extended_targets(targets, target_lengths, blank):
    """l' of the CTC paper: blank, y1, blank, y2, ..., blank (padded with blanks), per batch entry."""
    flat = operand(targets).astype(np.int64)
    longest = int(target_lengths.max(initial=0))
    if flat.ndim == 1:  # concatenated targets
        starts = np.concatenate([[0], np.cumsum(target_lengths)[:-1]])
        positions = starts[:, None] + np.arange(longest)
        padded = flat[np.minimum(positions, max(flat.size - 1, 0))] if flat.size else np.zeros_like(positions)
    else:
        padded = flat[:, :longest]
    padded = np.where(np.arange(longest) < target_lengths[:, None], padded, blank)
    extended = np.full((len(target_lengths), 2 * longest + 1), blank, np.int64)
    extended[:, 1::2] = padded
    return extended


def logsumexp3(a, b, c):
    """log(exp(a) + exp(b) + exp(c)) with the CPU's max shift (0 when all are -inf)."""
    top = np.maximum(np.maximum(a, b), c)
    top = np.where(np.isneginf(top), 0, top)
    return np.log(np.exp(a - top) + np.exp(b - top) + np.exp(c - top)) + top


def shifted(values, by):
    """values[..., s - by] (-inf where that falls outside); a negative ``by`` looks ahead."""
    result = np.full_like(values, -np.inf)
    if by > 0:
        result[:, by:] = values[:, :-by]
    else:
        result[:, :by] = values[:, -by:]
    return result


class CTCProblem:
    """One batch of CTC inputs as NumPy: log_probs (T, N, C), extended targets and masks."""

    def __init__(self, log_probs, targets, input_lengths, target_lengths, blank):
        self.lp = opmath_operand(log_probs)
        self.input_lengths, self.target_lengths = lengths(input_lengths), lengths(target_lengths)
        self.extended = extended_targets(targets, self.target_lengths, blank)
        self.batch = np.arange(self.extended.shape[0])
        width = self.extended.shape[1]
        self.valid = np.arange(width) < 2 * self.target_lengths[:, None] + 1
        self.skip = np.zeros_like(self.valid)  # s may come from s - 2: a label differing from the previous one
        self.skip[:, 2:] = (self.extended[:, 2:] != self.extended[:, :-2]) & (self.extended[:, 2:] != blank)

    def emissions(self, t):
        """log_probs[t, b, l'[b, s]] for every batch entry b and extended position s."""
        return self.lp[t][self.batch[:, None], self.extended]

    def log_alpha(self):
        steps = self.lp.shape[0]
        alpha = np.full((steps, *self.extended.shape), -np.inf, self.lp.dtype)
        if steps == 0:
            return alpha
        alpha[0, :, :2] = self.emissions(0)[:, :2]
        alpha[0] = np.where(self.valid, alpha[0], -np.inf)
        for t in range(1, steps):
            previous = alpha[t - 1]
            two_back = np.where(self.skip, shifted(previous, 2), -np.inf)
            alpha[t] = np.where(self.valid, logsumexp3(previous, shifted(previous, 1), two_back) + self.emissions(t),
                                -np.inf)
        return alpha

    def final_positions(self):
        return 2 * self.target_lengths, 2 * self.target_lengths - 1

    def neg_log_likelihood(self, alpha):
        last = np.maximum(self.input_lengths - 1, 0)
        end, before_end = self.final_positions()
        l1 = alpha[last, self.batch, end]
        l2 = np.where(self.target_lengths > 0, alpha[last, self.batch, np.maximum(before_end, 0)], -np.inf)
        nll = -logsumexp3(l1, l2, np.full_like(l1, -np.inf))
        return np.where(self.input_lengths == 0, np.where(self.target_lengths == 0, 0, np.inf), nll)

    def log_beta(self):
        steps = self.lp.shape[0]
        beta = np.full((steps, *self.extended.shape), -np.inf, self.lp.dtype)
        end, before_end = self.final_positions()
        start = np.zeros_like(self.valid)
        start[self.batch, end] = True
        start[self.batch[self.target_lengths > 0], before_end[self.target_lengths > 0]] = True
        skip_ahead = shifted(self.skip.astype(self.lp.dtype), -2) > 0
        for t in reversed(range(steps)):
            last_step = (t == self.input_lengths - 1)[:, None]
            following = beta[t + 1] if t + 1 < steps else np.full_like(beta[0], -np.inf)
            two_ahead = np.where(skip_ahead, shifted(following, -2), -np.inf)
            recursed = logsumexp3(following, shifted(following, -1), two_ahead) + self.emissions(t)
            beta[t] = np.where(last_step, np.where(start, self.emissions(t), -np.inf),
                               np.where(self.valid & (t < self.input_lengths - 1)[:, None], recursed, -np.inf))
        return beta

    def gradient(self, alpha, beta, nll, grad_out, zero_infinity):
        """Eq. 16 of the CTC paper: exp(lp) - exp(log(sum over s with l'[s] = c of alpha*beta) + nll - lp)."""
        products = alpha + beta
        top = products.max(axis=2, keepdims=True, initial=-np.inf)
        top = np.where(np.isneginf(top), 0, top)
        one_hot = self.extended[:, :, None] == np.arange(self.lp.shape[2])
        sums = np.einsum("tns,nsc->tnc", np.exp(products - top), one_hot.astype(self.lp.dtype))
        log_sums = np.log(sums) + top
        grad = (np.exp(self.lp) - np.exp(log_sums + nll[None, :, None] - self.lp)) * grad_out[None, :, None]
        in_input = np.arange(self.lp.shape[0])[:, None] < self.input_lengths
        keep = in_input[:, :, None] & ~(zero_infinity & np.isinf(nll))[None, :, None]
        return np.where(keep, grad, 0)


@register("_ctc_loss", "_ctc_loss.Tensor")
def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, zero_infinity=False):
    check_float_or_double("ctc_loss_cpu", log_probs.dtype)
    problem = CTCProblem(log_probs, targets, input_lengths, target_lengths, blank)
    alpha = problem.log_alpha()
    nll = problem.neg_log_likelihood(alpha)
    return (store(nll, log_probs.dtype),
            store(alpha.transpose(1, 0, 2), log_probs.dtype))


@register("_ctc_loss_backward", "_ctc_loss_backward.Tensor")
def ctc_loss_backward(grad, log_probs, targets, input_lengths, target_lengths, neg_log_likelihood, log_alpha, blank,
                      zero_infinity=False):
    problem = CTCProblem(log_probs, targets, input_lengths, target_lengths, blank)
    alpha = opmath_operand(log_alpha).transpose(1, 0, 2)
    result = problem.gradient(alpha, problem.log_beta(), opmath_operand(neg_log_likelihood),
                              np.broadcast_to(opmath_operand(grad), problem.input_lengths.shape), zero_infinity)
    return store(result, log_probs.dtype)
