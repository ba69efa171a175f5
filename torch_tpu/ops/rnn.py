"""Fused recurrent cells: the kernels nn.LSTM/GRU (and their Cell modules) reach on tpu.

For a non-CPU device PyTorch's ``lstm_cell``/``gru_cell`` do the two gate matmuls
themselves and hand the elementwise rest to ``_thnn_fused_lstm_cell`` /
``_thnn_fused_gru_cell``, as on CUDA. The workspace layouts are CUDA's, so that
the backward kernels can take over from them: LSTM keeps its four activated gates
[i, f, g, o]; GRU keeps [r, z, n, hx, hn] with hn the hidden new gate incl. its bias.
"""

import numpy as np

from ._common import opmath_operand, store
from .nn import register


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def gate_sum(input_gates, hidden_gates, input_bias, hidden_bias):
    """The input and hidden gate pre-activations, each with its bias."""
    x, h = opmath_operand(input_gates), opmath_operand(hidden_gates)
    if input_bias is not None:
        x = x + opmath_operand(input_bias)
        h = h + opmath_operand(hidden_bias)
    return x, h


def gradient_or_zero(grad, like):
    """An output's incoming gradient; autograd passes None for an output that got none."""
    return np.zeros_like(like) if grad is None else opmath_operand(grad)


@register("_thnn_fused_lstm_cell")
def fused_lstm_cell(input_gates, hidden_gates, cx, input_bias=None, hidden_bias=None):
    x, h = gate_sum(input_gates, hidden_gates, input_bias, hidden_bias)
    i, f, g, o = np.split(x + h, 4, axis=1)
    i, f, g, o = sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)
    cy = f * opmath_operand(cx) + i * g
    hy = o * np.tanh(cy)
    workspace = np.concatenate([i, f, g, o], axis=1)
    return store(hy, cx.dtype), store(cy, cx.dtype), store(workspace, input_gates.dtype)


@register("_thnn_fused_lstm_cell_backward_impl")
def fused_lstm_cell_backward(grad_hy, grad_cy, cx, cy, workspace, has_bias):
    i, f, g, o = np.split(opmath_operand(workspace), 4, axis=1)
    tanh_cy = np.tanh(opmath_operand(cy))
    grad_h = gradient_or_zero(grad_hy, tanh_cy)
    grad_c = grad_h * o * (1 - tanh_cy * tanh_cy) + gradient_or_zero(grad_cy, tanh_cy)
    grad_gates = np.concatenate(
        [grad_c * g * i * (1 - i), grad_c * opmath_operand(cx) * f * (1 - f),
         grad_c * i * (1 - g * g), grad_h * tanh_cy * o * (1 - o)],
        axis=1,
    )
    grad_bias = store(grad_gates.sum(axis=0), workspace.dtype) if has_bias else None
    return store(grad_gates, workspace.dtype), store(grad_c * f, cx.dtype), grad_bias


@register("_thnn_fused_gru_cell")
def fused_gru_cell(input_gates, hidden_gates, hx, input_bias=None, hidden_bias=None):
    x, h = gate_sum(input_gates, hidden_gates, input_bias, hidden_bias)
    x_r, x_z, x_n = np.split(x, 3, axis=1)
    h_r, h_z, h_n = np.split(h, 3, axis=1)
    r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    previous = opmath_operand(hx)
    hy = n + z * (previous - n)
    workspace = np.concatenate([r, z, n, np.broadcast_to(previous, n.shape), h_n], axis=1)
    return store(hy, hx.dtype), store(workspace, input_gates.dtype)


@register("_thnn_fused_gru_cell_backward")
def fused_gru_cell_backward(grad_hy, workspace, has_bias):
    r, z, n, hx, h_n = np.split(opmath_operand(workspace), 5, axis=1)
    grad = opmath_operand(grad_hy)
    grad_n = grad * (1 - z) * (1 - n * n)
    grad_r = grad_n * h_n * r * (1 - r)
    grad_z = grad * (hx - n) * z * (1 - z)
    grad_input_gates = np.concatenate([grad_r, grad_z, grad_n], axis=1)
    grad_hidden_gates = np.concatenate([grad_r, grad_z, grad_n * r], axis=1)
    biases = (
        (store(grad_input_gates.sum(axis=0), workspace.dtype), store(grad_hidden_gates.sum(axis=0), workspace.dtype))
        if has_bias else (None, None)
    )
    return (store(grad_input_gates, workspace.dtype), store(grad_hidden_gates, workspace.dtype),
            store(grad * z, grad_hy.dtype), *biases)
