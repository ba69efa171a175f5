"""Recurrent networks: whole-sequence LSTM, GRU and Elman RNN layers, and the fused cells.

``nn.LSTM``/``GRU``/``RNN`` call aten's ``lstm``/``gru``/``rnn_tanh``/``rnn_relu``. Those are composites
that, on a device without cuDNN, run every time step as several dispatcher ops, each an autograd node:
many times torch CPU's time at small widths. Here they get an AutogradPrivateUse1 kernel instead: each
layer and direction is one launch whose forward and backward (through time) run the recurrence in NumPy,
and the layers that no dropout separates are one autograd node (the final states written straight into
the stacked tensors the op returns, the activations and gradients between layers NumPy arrays in HBM).
The input's projection onto the gates (and, in the backward, the weight gradients and the input's
gradient) are one MXU matmul over the whole sequence; only the recurrent matmul and the gates'
elementwise maths run per step. Between layers, dropout is the ordinary op, so
it draws from the tpu generator exactly as the composite would. In abstract mode the layers allocate and
charge the same, without values. Packed sequences and other dtypes take the composite path.

For a non-CPU device PyTorch's ``lstm_cell``/``gru_cell`` (``nn.LSTMCell``, ``nn.GRUCell``) do the two
gate matmuls themselves and hand the elementwise rest to ``_thnn_fused_lstm_cell`` /
``_thnn_fused_gru_cell``, as on CUDA. Those kernels and the sequence layers share one copy of each
cell's maths. The workspace tensors' layouts are CUDA's, so that the backward kernels can take over from
them: LSTM keeps its four activated gates [i, f, g, o]; GRU keeps [r, z, n, hx, hn] with hn the hidden new
gate incl. its bias. The LSTM cell's maths works on the gates gate-major, (4, B, H), each gate one
contiguous block (a sequence's tape keeps them so; the fused cell views its (B, 4H) tensor that way).
"""

import math

import numpy as np
import torch
from torch._C._functorch import is_functorch_wrapped_tensor, is_legacy_batchedtensor
from torch.autograd import forward_ad

from .. import _C, _abstract
from .._cost import float32_passes
from .._tensor import DTYPE_NAME, allocate, numpy_dtype
from ._common import empty, opmath_operand, store
from ._registry import COMPOSITE, PLAIN_TENSORS, register_autograd
from .linalg import mxu_matmul, mxu_multiplier
from .nn import register


def sigmoid(x, out=None):
    """1 / (1 + exp(-x)), each step in ``out``'s memory when given (the same roundings either way)."""
    return sigmoid_of_negated(np.negative(x, out=out))


def sigmoid_of_negated(negated):
    """``sigmoid``'s steps after the negation, in ``negated``'s memory. ``reciprocal`` is the same IEEE division
    as ``np.divide(1.0, ...)`` without converting the Python number at every call."""
    np.exp(negated, out=negated)
    negated += 1
    return np.reciprocal(negated, out=negated)


def gates_of(array, count):
    """The ``count`` equal column blocks of (B, count * H) gates, as views (np.split costs several times more
    than the slicing it does, in a loop over every time step)."""
    width = array.shape[1] // count
    return [array[:, k * width:(k + 1) * width] for k in range(count)]


# ---------------------------------------------------------------------------------------
# One time step of each cell, on NumPy arrays
# ---------------------------------------------------------------------------------------


def lstm_cell(gates, cx, workspace=None, cy=None, hy=None):
    """The cell on its summed gate pre-activations (B, 4H): (hy, cy, workspace), each written into the array
    given for it (a sequence's output and tape). The workspace is gate-major, (4, B, H) for [i, f, g, o]: every
    gate is then one contiguous block, and NumPy runs a ufunc on contiguous blocks in a fraction of the time it
    takes over the column slices of (B, 4H) (its strided iterator's set-up costs more than a small gate's maths).

    The negation of the sigmoid is the copy into that layout; the sigmoid runs over all four gates at once and
    the cell gate is then overwritten with its tanh: fewer, larger NumPy calls for the step a sequence repeats."""
    batch, hidden = cx.shape[-2], gates.shape[-1] // 4
    if workspace is None:
        workspace = np.empty((4, batch, hidden), gates.dtype)
    by_gate = gates.reshape(batch, 4, hidden).transpose(1, 0, 2)
    sigmoid_of_negated(np.negative(by_gate, out=workspace))
    i, f, g, o = workspace
    np.tanh(by_gate[2], out=g)
    cy = np.multiply(f, cx, out=cy)
    cy += i * g
    return np.multiply(o, np.tanh(cy), out=hy), cy, workspace


def by_gate_blocks(array):
    """(..., B, 4H) gates as their (..., B, 4, H) view."""
    return array.reshape(*array.shape[:-1], 4, array.shape[-1] // 4)


def gate_major(workspace):
    """A (B, 4H) workspace (CUDA's layout, the fused cells' tensors) as the (4, B, H) view ``lstm_cell`` takes."""
    return by_gate_blocks(workspace).transpose(1, 0, 2)


class LSTMBackwardFactors:
    """What the LSTM cell's backward multiplies the incoming gradients by, computed from the saved
    ``cx``, ``cy`` (..., B, H) and gate-major gates (..., 4, B, H) for every time step at once (any leading
    dims): the recurrence through time is then a few multiplications per step.

    With t = tanh(cy): d cy = d hy * o (1 - t^2) + d cy_next; d[i, f, g] = d cy * [g i (1 - i), cx f (1 - f),
    i (1 - g^2)]; d o = d hy * t o (1 - o); d cx = d cy * f."""

    def __init__(self, cx, cy, workspace):
        i, f, g, o = (workspace[..., k, :, :] for k in range(4))
        tanh_cy = np.tanh(cy)
        self.cell = o * (1 - tanh_cy * tanh_cy)
        self.output_gate = tanh_cy * (o * (1 - o))
        self.forget = f
        self.cell_gates = np.stack([g * (i * (1 - i)), cx * (f * (1 - f)), i * (1 - g * g)], axis=-2)  # (..., 3, H)

    def step(self, t, grad_h, grad_c, blocks):
        """Step ``t``'s (an index into the leading dims, () for none) gate gradient, written into ``blocks``
        (the (B, 4, H) view of a (B, 4H) gradient), from the hidden and cell states' gradients; returns the
        previous cell state's gradient."""
        grad_c = grad_h * self.cell[t] + grad_c
        np.multiply(grad_c[:, None, :], self.cell_gates[t], out=blocks[:, :3])
        np.multiply(grad_h, self.output_gate[t], out=blocks[:, 3])
        return grad_c * self.forget[t]


def lstm_cell_backward(grad_h, grad_c, cx, cy, workspace):
    """From a (B, 4H) workspace, the gates' pre-activation gradient and the previous cell state's."""
    grad_gates = np.empty(workspace.shape, grad_c.dtype)
    return grad_gates, LSTMBackwardFactors(cx, cy, gate_major(workspace)).step((), grad_h, grad_c,
                                                                              by_gate_blocks(grad_gates))


def gru_cell(input_gates, hidden_gates, hx):
    """The cell on its input and hidden gate pre-activations, each with its bias: (hy, workspace)."""
    x_r, x_z, x_n = gates_of(input_gates, 3)
    h_r, h_z, h_n = gates_of(hidden_gates, 3)
    r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
    n = np.tanh(x_n + r * h_n)
    hy = n + z * (hx - n)
    return hy, np.concatenate([r, z, n, np.broadcast_to(hx, n.shape), h_n], axis=1)


def gru_cell_backward(grad, workspace):
    """The input gates', the hidden gates' and the previous hidden state's gradients."""
    r, z, n, hx, h_n = gates_of(workspace, 5)
    grad_n = grad * (1 - z) * (1 - n * n)
    grad_r = grad_n * h_n * r * (1 - r)
    grad_z = grad * (hx - n) * z * (1 - z)
    grad_input_gates = np.concatenate([grad_r, grad_z, grad_n], axis=1)
    grad_hidden_gates = np.concatenate([grad_r, grad_z, grad_n * r], axis=1)
    return grad_input_gates, grad_hidden_gates, grad * z


# ---------------------------------------------------------------------------------------
# The fused cells nn.LSTMCell / nn.GRUCell reach
# ---------------------------------------------------------------------------------------


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
    gates = x + h
    workspace = np.empty(gates.shape, gates.dtype)
    hy, cy, _ = lstm_cell(gates, opmath_operand(cx), gate_major(workspace))
    return store(hy, cx.dtype), store(cy, cx.dtype), store(workspace, input_gates.dtype)


@register("_thnn_fused_lstm_cell_backward_impl")
def fused_lstm_cell_backward(grad_hy, grad_cy, cx, cy, workspace, has_bias):
    cy_ = opmath_operand(cy)
    grad_gates, grad_cx = lstm_cell_backward(gradient_or_zero(grad_hy, cy_), gradient_or_zero(grad_cy, cy_),
                                             opmath_operand(cx), cy_, opmath_operand(workspace))
    grad_bias = store(grad_gates.sum(axis=0), workspace.dtype) if has_bias else None
    return store(grad_gates, workspace.dtype), store(grad_cx, cx.dtype), grad_bias


@register("_thnn_fused_gru_cell")
def fused_gru_cell(input_gates, hidden_gates, hx, input_bias=None, hidden_bias=None):
    x, h = gate_sum(input_gates, hidden_gates, input_bias, hidden_bias)
    hy, workspace = gru_cell(x, h, opmath_operand(hx))
    return store(hy, hx.dtype), store(workspace, input_gates.dtype)


@register("_thnn_fused_gru_cell_backward")
def fused_gru_cell_backward(grad_hy, workspace, has_bias):
    grad_input_gates, grad_hidden_gates, grad_hx = gru_cell_backward(opmath_operand(grad_hy),
                                                                     opmath_operand(workspace))
    biases = (
        (store(grad_input_gates.sum(axis=0), workspace.dtype), store(grad_hidden_gates.sum(axis=0), workspace.dtype))
        if has_bias else (None, None)
    )
    return (store(grad_input_gates, workspace.dtype), store(grad_hidden_gates, workspace.dtype),
            store(grad_hx, grad_hy.dtype), *biases)


# ---------------------------------------------------------------------------------------
# Whole-sequence layers: the recurrence of one layer and direction, forward and backward
# ---------------------------------------------------------------------------------------


def rows(array):
    """(T, B, F) -> (T*B, F): the whole sequence as one matmul operand."""
    return array.reshape(-1, array.shape[-1])


class Weights:
    """One layer and direction's parameters as NumPy arrays (biases and projection may be None)."""

    def __init__(self, w_ih, w_hh, b_ih, b_hh, w_hr):
        self.w_ih, self.w_hh, self.b_ih, self.b_hh, self.w_hr = w_ih, w_hh, b_ih, b_hh, w_hr

    def recurrent(self, dtype):
        """``h -> h w_hh^T``, the matmul every forward step repeats, checked once for the sequence."""
        return mxu_multiplier(dtype, self.w_hh.T)

    def recurrent_adjoint(self, dtype):
        """``grad_gates -> grad_gates w_hh``, the matmul every backward step repeats."""
        return mxu_multiplier(dtype, self.w_hh)

    def input_gates(self, x, hidden_bias_too):
        """The input's projection onto the gates for every step at once (T, B, G*H), with its bias."""
        gates = mxu_matmul(rows(x), self.w_ih.T).reshape(x.shape[:2] + self.w_ih.shape[:1])
        if self.b_ih is not None:
            gates += self.b_ih + self.b_hh if hidden_bias_too else self.b_ih
        return gates


class LSTM:
    """State (h, c); with a projection (proj_size) h is ``w_hr`` times the cell's output."""

    name = "lstm"
    gates = 4
    states = 2

    @staticmethod
    def forward(x, state, weights, steps, tape_array):
        x_gates = weights.input_gates(x, hidden_bias_too=True)
        (h, c), recurrent = state, weights.recurrent(x.dtype)
        length, batch = x.shape[:2]
        tape = {"cy": tape_array((length, batch, c.shape[-1]), c.dtype),
                "workspace": tape_array((length, 4, batch, c.shape[-1]), x_gates.dtype, 2)}  # gate-major steps
        if weights.w_hr is not None:
            tape["full"] = tape_array(tape["cy"].shape, c.dtype)
        output = np.empty((length, batch, h.shape[-1]), h.dtype)
        # the cell writes its output straight into the sequence's output (or the projection's input), its
        # state and gates into the tape
        workspaces, cell_states = tape["workspace"], tape["cy"]
        cell_outputs = tape.get("full", output)
        for t in steps:
            gates = recurrent(h)
            gates += x_gates[t]
            h, c, _ = lstm_cell(gates, c, workspaces[t], cell_states[t], cell_outputs[t])
            if weights.w_hr is not None:
                h = output[t] = mxu_matmul(h, weights.w_hr.T)
        # each step's incoming states are the previous step's outputs: gathered once, not copied every step
        tape["h"], tape["c"] = (previous_states(initial, outputs, steps, tape_array)
                                for initial, outputs in ((state[0], output), (state[1], tape["cy"])))
        return output, (h, c), tape

    @staticmethod
    def backward(grad_output, grad_state, tape, weights, steps):
        """The gates' gradient for every step, the initial state's, and the projection's weight gradient."""
        grad_h, grad_c = grad_state
        grad_gates = np.empty(tape["cy"].shape[:2] + (4 * tape["cy"].shape[2],), grad_output.dtype)
        factors = LSTMBackwardFactors(tape["c"], tape["cy"], tape["workspace"])
        recurrent_adjoint = weights.recurrent_adjoint(grad_output.dtype)
        projected = weights.w_hr is not None
        grad_outputs = np.empty(grad_output.shape, grad_output.dtype) if projected else None
        blocks = by_gate_blocks(grad_gates)  # viewed once, not once a step
        for t in reversed(steps):
            grad_h = grad_h + grad_output[t]
            if projected:
                grad_outputs[t] = grad_h
                grad_h = mxu_matmul(grad_h, weights.w_hr)
            grad_c = factors.step(t, grad_h, grad_c, blocks[t])
            grad_h = recurrent_adjoint(grad_gates[t])
        grad_w_hr = mxu_matmul(rows(grad_outputs).T, rows(tape["full"])) if projected else None
        return grad_gates, grad_gates, (grad_h, grad_c), grad_w_hr


def previous_states(initial, outputs, steps, tape_array):
    """(T, B, F), in a new ``tape_array``: the state each step of ``steps`` started from: ``initial`` for the
    first, the step before's output for the others."""
    states = tape_array(outputs.shape, outputs.dtype)
    if not steps:
        return states
    states[steps[0]] = initial
    if steps.step > 0:
        states[1:] = outputs[:-1]
    else:
        states[:-1] = outputs[1:]
    return states


class GRU:
    name = "gru"
    gates = 3
    states = 1

    @staticmethod
    def forward(x, state, weights, steps, tape_array):
        x_gates = weights.input_gates(x, hidden_bias_too=False)
        (h,), recurrent = state, weights.recurrent(x.dtype)
        tape = {"h": tape_array(x.shape[:2] + h.shape[-1:], h.dtype),
                "workspace": tape_array(x.shape[:2] + (5 * h.shape[-1],), h.dtype)}
        output = np.empty(tape["h"].shape, h.dtype)
        for t in steps:
            tape["h"][t] = h
            hidden_gates = recurrent(h)
            if weights.b_hh is not None:
                hidden_gates += weights.b_hh
            h, tape["workspace"][t] = gru_cell(x_gates[t], hidden_gates, h)
            output[t] = h
        return output, (h,), tape

    @staticmethod
    def backward(grad_output, grad_state, tape, weights, steps):
        (grad_h,) = grad_state
        grad_input_gates = np.empty(tape["h"].shape[:2] + (3 * grad_h.shape[-1],), grad_output.dtype)
        grad_hidden_gates = np.empty(grad_input_gates.shape, grad_output.dtype)
        recurrent_adjoint = weights.recurrent_adjoint(grad_output.dtype)
        for t in reversed(steps):
            grad_input_gates[t], grad_hidden_gates[t], direct = gru_cell_backward(grad_h + grad_output[t],
                                                                                 tape["workspace"][t])
            grad_h = direct + recurrent_adjoint(grad_hidden_gates[t])
        return grad_input_gates, grad_hidden_gates, (grad_h,), None


class Elman:
    """``h = activation(x w_ih^T + b_ih + h w_hh^T + b_hh)``, with tanh or ReLU."""

    gates = 1
    states = 1

    def __init__(self, name, activation, derivative):
        self.name, self.activation, self.derivative = name, activation, derivative

    def forward(self, x, state, weights, steps, tape_array):
        x_gates = weights.input_gates(x, hidden_bias_too=True)
        (h,), recurrent = state, weights.recurrent(x.dtype)
        tape = {"h": tape_array(x.shape[:2] + h.shape[-1:], h.dtype)}
        tape["output"] = output = tape_array(tape["h"].shape, h.dtype)  # the derivative's operand, and the result's
        for t in steps:
            tape["h"][t] = h
            output[t] = h = self.activation(x_gates[t] + recurrent(h))
        return output, (h,), tape

    def backward(self, grad_output, grad_state, tape, weights, steps):
        (grad_h,) = grad_state
        grad_gates = np.empty(grad_output.shape, grad_output.dtype)
        recurrent_adjoint = weights.recurrent_adjoint(grad_output.dtype)
        for t in reversed(steps):
            grad_gates[t] = (grad_h + grad_output[t]) * self.derivative(tape["output"][t])
            grad_h = recurrent_adjoint(grad_gates[t])
        return grad_gates, grad_gates, (grad_h,), None


CELLS = {
    "lstm": LSTM(),
    "gru": GRU(),
    "rnn_tanh": Elman("rnn_tanh", np.tanh, lambda y: 1 - y * y),
    "rnn_relu": Elman("rnn_relu", lambda x: np.maximum(x, 0), lambda y: (y > 0).astype(y.dtype)),
}


def matmul_flops(*shapes):
    """2 M N K of each (M, K) x (K, N), given as (M, K, N)."""
    return sum(2 * m * k * n for m, k, n in shapes)


def charge_layer(name, flops, dtype, read, written):
    """One launch for a layer's whole recurrence: its MXU FLOPs and the HBM bytes at its boundary (read and
    written given in bytes). Outside a profile no KernelCost is built: ``advance_mxu`` charges the same."""
    clock = _C.current_chip().clock
    if not clock.recorders:
        clock.advance_mxu(name, read + written, {DTYPE_NAME[dtype]: flops}, float32_passes(), clock.current_stream)
        return
    cost = _C.clock.KernelCost(name, {DTYPE_NAME[dtype]: flops}, 0, read, written)
    cost.float32_passes = float32_passes()
    clock.charge(cost, clock.current_stream)


def layer_flops(cell, x_shape, hidden, output_size, projected, backward):
    """The forward's matmuls (input projection, recurrent, projection); the backward has two of each."""
    length, batch, features = x_shape
    gates = cell.gates * hidden
    steps = length * batch
    flops = matmul_flops((steps, features, gates), (steps, output_size, gates))
    if projected:
        flops += matmul_flops((steps, hidden, output_size))
    return 2 * flops if backward else flops


SEQUENCE, BATCH = 1, 0  # the batch axis of (T, B, F) arrays and of (B, F) states


class Values:
    """Tensors as the arrays the recurrence runs on, and its arrays back as tensors.

    In abstract mode (shapes, no values) the recurrence runs on stand-ins whose batch is 0, which gives
    every result's shape at no cost, and the results are allocated with the real batch, uncomputed: the
    launch allocates and is charged exactly as in eager mode. ``batch_axis`` names an array's batch dim
    (None for the weights and their gradients)."""

    def __init__(self, batch):
        self.batch = batch
        self.abstract = _abstract.MODE.depth > 0
        self.tape_buffers = []

    def tape_array(self, shape, dtype, batch_axis=SEQUENCE):
        """A (T, B, F) array (or another layout whose batch dim is ``batch_axis``) in an HBM buffer of its own,
        kept in ``tape_buffers``: the tape stays in HBM between forward and backward, as it would on the chip, in
        the bytes a tensor would take, but with no tensor (nor its copy and view) around it. In abstract mode a
        stand-in, with the real batch's bytes allocated."""
        nbytes = math.prod(self.at_real_batch(shape, batch_axis) if self.abstract else shape) * dtype.itemsize
        buffer = allocate(nbytes)
        self.tape_buffers.append(buffer)
        if self.abstract or not buffer.nbytes:
            return np.empty(shape, dtype)
        return np.ndarray(shape, dtype, buffer.array, 0)

    def at_real_batch(self, shape, batch_axis):
        return (*shape[:batch_axis], self.batch, *shape[batch_axis + 1:])

    def shape(self, array, batch_axis):
        """The shape of ``array`` at the real batch (a stand-in's batch is 0)."""
        return self.at_real_batch(array.shape, batch_axis) if self.abstract else array.shape

    def nbytes(self, array, batch_axis):
        return array.nbytes if not self.abstract else math.prod(self.shape(array, batch_axis)) * array.itemsize

    def array(self, tensor, batch_axis=None):
        if tensor is None or not self.abstract:
            return None if tensor is None else opmath_operand(tensor)
        shape = list(tensor.shape)
        if batch_axis is not None:
            shape[batch_axis] = 0
        return np.broadcast_to(np.zeros((), numpy_dtype(tensor.dtype)), shape)

    def tensor(self, array, dtype, batch_axis=None):
        if array is None or not self.abstract:
            return None if array is None else store(array, dtype)
        shape = list(array.shape)
        if batch_axis is not None:
            shape[batch_axis] = self.batch
        return empty(tuple(shape), dtype)


def composite_run(kind, directions, x, states, parameters):
    """Layers through PyTorch's composite, a differentiable op per time step: what a second derivative
    differentiates (the fused kernels' backward is NumPy, a graph of nothing). The same results as
    ``RecurrentLayers``: the output and the final states stacked."""
    params = [p for p in parameters if p is not None]
    hx = list(states) if kind == "lstm" else states[0]
    layers = len(parameters) // 5 // directions
    return getattr(torch.ops.aten, kind).input._op_dk(COMPOSITE, x, hx, params, parameters[2] is not None, layers,
                                                      0.0, True, directions == 2, False)


def batched(gradient):
    """Whether ``gradient`` is one of vmap's batched tensors (torch.func's or gradcheck's legacy ``_vmap``'s)."""
    return gradient is not None and (is_functorch_wrapped_tensor(gradient) or is_legacy_batchedtensor(gradient))


def composite_backward(kind, directions, x, tensors, grad_output, grad_states, create_graph):
    """The gradients of fused layers' inputs (``x``, then ``tensors``: initial states and parameters) from the
    layers recomputed through the composite; differentiable tensors when ``create_graph``."""
    inputs = (x, *tensors)
    wanted = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad]
    count = CELLS[kind].states
    outputs = composite_run(kind, directions, x, tensors[:count], tensors[count:])
    pairs = [(output, grad) for output, grad in zip(outputs, (grad_output, *grad_states)) if grad is not None]
    gradients = torch.autograd.grad([output for output, _ in pairs], [inputs[i] for i in wanted],
                                    [grad for _, grad in pairs], create_graph=create_graph, allow_unused=True)
    by_position = dict(zip(wanted, gradients))
    return [by_position.get(i) for i in range(len(inputs))]


def parameter_bytes(parameters):
    return sum(p.nbytes for p in parameters if p is not None)


def charge_layer_of(cell, suffix, values, source, weights, dtype, backward, read, written):
    """``charge_layer`` for one layer and direction whose input is the array ``source``: its FLOPs at the real batch."""
    flops = layer_flops(cell, values.shape(source, SEQUENCE), weights.w_hh.shape[0] // cell.gates,
                        weights.w_hh.shape[1], weights.w_hr is not None, backward)
    charge_layer(f"{cell.name}_{suffix}", flops, dtype, read, written)


def layer_forward(cell, reverse, x, states, weights, tape_array):
    """One layer and direction over the whole sequence, on arrays: (output, final states, tape). Like the VPU and
    the MXU, the recurrence overflows to inf and NaN without a word (one error state for all its steps)."""
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    with _C.vpu.ignoring_fp_errors():
        return cell.forward(x, states, weights, steps, tape_array), steps


class RecurrentLayers(torch.autograd.Function):
    """Consecutive layers, every direction of each, with nothing between them (no dropout): one launch per layer
    and direction, and one autograd node for them all. (T, B, I) -> the output (T, B, D * H_out) and each final
    state stacked as the aten op returns it, (layers * D, B, H), written straight into one tensor. The output of a
    layer below the top one is bare HBM (tape: the layer above reads it again in the backward), and the gradient
    that flows down between layers NumPy arrays in HBM buffers, never tensors."""

    @staticmethod
    def forward(ctx, cell, directions, x, *tensors):
        states, parameters = tensors[:cell.states], tensors[cell.states:]
        values = Values(x.shape[1])
        dtype = x.dtype
        initial = [values.array(s, SEQUENCE) for s in states]
        finals = [np.empty(s.shape, s.dtype) for s in initial]
        layers = len(parameters) // 5 // directions
        inputs, layer_tapes = [values.array(x, SEQUENCE)], []
        for layer in range(layers):
            outputs = []
            for direction in range(directions):
                index = layer * directions + direction
                first_buffer = len(values.tape_buffers)
                own_parameters = parameters[5 * index:5 * index + 5]
                weights = Weights(*(values.array(p) for p in own_parameters))
                (output, final, tape), steps = layer_forward(cell, direction == 1, inputs[-1],
                                                             tuple(s[index] for s in initial), weights,
                                                             values.tape_array)
                for stacked, state in zip(finals, final):
                    stacked[index] = state
                layer_tapes.append((steps, tape, values.tape_buffers[first_buffer:]))
                outputs.append(output)
                charge_layer_of(cell, "layer", values, inputs[-1], weights, dtype, False,
                                values.nbytes(inputs[-1], SEQUENCE) + parameter_bytes(own_parameters)
                                + sum(values.nbytes(s[index], BATCH) for s in initial),
                                values.nbytes(output, SEQUENCE) + sum(values.nbytes(s, BATCH) for s in final)
                                + sum(b.nbytes for b in values.tape_buffers[first_buffer:]))
            joined = outputs[0] if directions == 1 else np.concatenate(outputs, axis=-1)
            if layer < layers - 1:  # the next layer's input, which its backward reads again
                kept = values.tape_array(joined.shape, joined.dtype)
                kept[...] = joined
                joined = kept
            inputs.append(joined)
        ctx.cell, ctx.directions, ctx.has_bias = cell, directions, parameters[2] is not None
        ctx.inputs, ctx.tapes = inputs[:-1], layer_tapes
        ctx.tape_buffers = values.tape_buffers  # the buffers live as long as the arrays are read
        ctx.save_for_backward(x, *tensors)  # the initial states too: a second derivative recomputes the layers
        ctx.set_materialize_grads(False)  # an unread final state's gradient stays None, not a zeros launch
        return (values.tensor(inputs[-1], dtype, SEQUENCE), *(values.tensor(s, dtype, SEQUENCE) for s in finals))

    @staticmethod
    def backward(ctx, grad_output, *grad_finals):
        x, *tensors = ctx.saved_tensors
        cell, directions = ctx.cell, ctx.directions
        # create_graph=True: the gradients must carry a graph of their own. A batched gradient (vmap's, as
        # gradcheck's batched check and torch.func.jacrev make) is no array to read: the composite's torch ops
        # are batched one by one, as CPU's composite RNN is.
        # Without create_graph the batched gradients must not keep the recomputed layers alive.
        create_graph = torch.is_grad_enabled()
        if create_graph or any(map(batched, (grad_output, *grad_finals))):
            with torch.enable_grad():
                return (None, None, *composite_backward(cell.name, directions, x, tensors, grad_output, grad_finals,
                                                        create_graph))
        states, parameters = tensors[:cell.states], tensors[cell.states:]
        values = Values(x.shape[1])
        dtype = x.dtype
        top_tape = ctx.tapes[-1][1]
        # autograd passes None for an output that got no gradient; the output is (T, B, D * H_out) like h's tape
        grad_above = (np.zeros(top_tape["h"].shape[:2] + (top_tape["h"].shape[2] * directions,), top_tape["h"].dtype)
                      if grad_output is None else values.array(grad_output, SEQUENCE))
        grad_above_given = grad_output is not None
        grad_finals = [None if g is None else values.array(g, SEQUENCE) for g in grad_finals]
        grad_initial = [np.empty(s.shape, s.dtype) for s in (values.array(s, SEQUENCE) for s in states)]
        grad_parameters = [None] * len(parameters)
        for layer in reversed(range(len(ctx.inputs))):
            source, grad_below = ctx.inputs[layer], None
            width = grad_above.shape[-1] // directions
            for direction in range(directions):
                index = layer * directions + direction
                steps, tape, buffers = ctx.tapes[index]
                own_parameters = parameters[5 * index:5 * index + 5]
                weights = Weights(*(values.array(p) for p in own_parameters))
                # contiguous, so that each step's (B, H) slice is a contiguous block for the ufuncs (the output's
                # gradient usually arrives batch-first, and a direction's is a slice of both)
                gradient = np.ascontiguousarray(grad_above[..., direction * width:(direction + 1) * width])
                incoming = [np.zeros_like(s[0]) if g is None else g[index]
                            for g, s in zip(grad_finals, (tape["h"], tape.get("c", tape["h"])))]
                with _C.vpu.ignoring_fp_errors():
                    grad_input_gates, grad_hidden_gates, grad_states, grad_w_hr = cell.backward(
                        gradient, incoming, tape, weights, steps)
                grad_x = mxu_matmul(rows(grad_input_gates), weights.w_ih).reshape(source.shape)
                grad_below = grad_x if grad_below is None else grad_below + grad_x
                for stacked, state in zip(grad_initial, grad_states):
                    stacked[index] = state
                grads = (mxu_matmul(rows(grad_input_gates).T, rows(source)),
                         mxu_matmul(rows(grad_hidden_gates).T, rows(tape["h"])),
                         rows(grad_input_gates).sum(axis=0) if ctx.has_bias else None,
                         rows(grad_hidden_gates).sum(axis=0) if ctx.has_bias else None, grad_w_hr)
                grad_parameters[5 * index:5 * index + 5] = [values.tensor(g, dtype) for g in grads]
                charge_layer_of(cell, "layer_backward", values, source, weights, dtype, True,
                                values.nbytes(source, SEQUENCE)
                                + (values.nbytes(gradient, SEQUENCE) if grad_above_given else 0)
                                + sum(values.nbytes(g[index], BATCH) for g in grad_finals if g is not None)
                                + parameter_bytes(own_parameters) + sum(b.nbytes for b in buffers),
                                values.nbytes(grad_x, SEQUENCE) + sum(values.nbytes(s, BATCH) for s in grad_states)
                                + parameter_bytes(grad_parameters[5 * index:5 * index + 5]))
            if layer:  # the gradient of the layer below's output, in HBM as that output is
                grad_above = values.tape_array(grad_below.shape, grad_below.dtype)
                grad_above[...] = grad_below
                grad_above_given = True
        return (None, None, values.tensor(grad_below, dtype, SEQUENCE),
                *(values.tensor(g, dtype, SEQUENCE) for g in grad_initial), *grad_parameters)


# ---------------------------------------------------------------------------------------
# The aten ops: layers stacked, directions concatenated, dropout between layers
# ---------------------------------------------------------------------------------------

FUSED_DTYPES = frozenset({torch.float32, torch.float64})


def layer_parameters(params, index, has_biases, projected):
    """The (w_ih, w_hh, b_ih, b_hh, w_hr) of layer-direction ``index``; absent ones are None."""
    per = 2 + 2 * has_biases + projected
    chunk = list(params[index * per:(index + 1) * per])
    w_ih, w_hh = chunk[:2]
    b_ih, b_hh = chunk[2:4] if has_biases else (None, None)
    return w_ih, w_hh, b_ih, b_hh, chunk[-1] if projected else None


def transformed():
    """Whether forward-mode AD or a torch.func transform (grad, vmap, jvp, jacrev, ...) is running."""
    return forward_ad._current_level >= 0 or torch._C._are_functorch_transforms_active()


def fusable(input, states, params, num_layers, bidirectional, has_biases, projected):
    """Whether the whole-sequence kernels take this call (``input`` sequence-first); anything else (packed
    or unbatched input, other dtypes, tensors elsewhere, shapes CPU would refuse, tracing, torch.func transforms
    and forward-mode AD, which the one autograd node has no rules for) takes the composite path, which has every
    check and every case."""
    tensors = (input, *states, *params)
    if (torch._C._len_torch_dispatch_stack() or input.dim() != 3 or transformed()
            or input.dtype not in FUSED_DTYPES
            or any(type(t) not in PLAIN_TENSORS or t.dtype != input.dtype or t.device.type != "tpu" for t in tensors)):
        return False  # tracing (fake, functional or proxy tensors, dispatch modes) sees the composite's ops
    directions = 2 if bidirectional else 1
    if len(params) != num_layers * directions * (2 + 2 * has_biases + projected):
        return False
    batch = input.shape[1]
    features = input.shape[2]
    for layer in range(num_layers):
        for direction in range(directions):
            index = layer * directions + direction
            w_ih, w_hh, *_ = layer_parameters(params, index, has_biases, projected)
            if w_ih.dim() != 2 or w_ih.shape[1] != features or w_hh.dim() != 2:
                return False
        features = states[0].shape[-1] * directions
    return all(s.dim() == 3 and s.shape[0] == num_layers * directions and s.shape[1] == batch for s in states)


def recurrent_network(kind):
    cell = CELLS[kind]
    op = getattr(torch.ops.aten, kind).input

    def network(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
        states = tuple(hx) if kind == "lstm" else (hx,)
        projected = kind == "lstm" and states[0].shape[-1] != states[1].shape[-1]
        x = input.transpose(0, 1) if batch_first and input.dim() == 3 else input
        if not fusable(x, states, params, num_layers, bidirectional, has_biases, projected):
            if transformed() and not (dropout and train and num_layers > 1):
                # the C++ composite's fused cells (as on CUDA) have no forward-mode formula and no batching
                # rule for their backward (torch.func warns); torch._decomp's layers, made of plain ops, have
                # both (but they never apply dropout between layers)
                return op.decompose(input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
                                    batch_first)
            return op._op_dk(COMPOSITE, input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
                             batch_first)
        directions = 2 if bidirectional else 1
        # dropout between layers is the ordinary op, between runs of one layer; without it the layers are one run
        runs = ([range(layer, layer + 1) for layer in range(num_layers)] if dropout and train and num_layers > 1
                else [range(num_layers)])
        finals = []
        for run in runs:
            if run.start:
                x = torch.dropout(x, dropout, train)
            initial = states if len(runs) == 1 else (s[run.start * directions:run.stop * directions] for s in states)
            x, *final = RecurrentLayers.apply(
                cell, directions, x, *initial, *(p for index in range(run.start * directions, run.stop * directions)
                                                 for p in layer_parameters(params, index, has_biases, projected)))
            finals.append(final)
        output = x.transpose(0, 1) if batch_first else x
        if len(finals) == 1:
            return (output, *finals[0])
        return (output, *(torch.cat([final[i] for final in finals]) for i in range(len(states))))

    return network


for _kind in CELLS:
    register_autograd(f"{_kind}.input")(recurrent_network(_kind))
