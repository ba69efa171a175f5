"""nn.LSTM / nn.GRU / nn.RNN on tpu: the whole-sequence kernels (one launch per layer and direction, one autograd
node for the layers no dropout separates) against the same modules on CPU, forward and every gradient; the
cases they leave to the composite path."""

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

import torch_tpu
import torch_tpu.ops.rnn as rnn

TOLERANCE = dict(atol=2e-5, rtol=2e-5)


@pytest.fixture
def layer_launches(monkeypatch):
    """How many whole-sequence layers ran forward (the composite path runs none)."""
    launches = []
    forward = rnn.layer_forward

    def counted(cell, reverse, *args):
        launches.append((cell.name, reverse))
        return forward(cell, reverse, *args)

    monkeypatch.setattr(rnn, "layer_forward", counted)
    return launches


def run(module, x, state, device):
    """Output, final states, and the gradients of input, initial states and parameters of a random projection."""
    module = module.to(device)
    x = x.to(device).requires_grad_()
    if state is not None:
        state = tuple(s.to(device).requires_grad_() for s in state)
        output, final = module(x, state if len(state) == 2 else state[0])
    else:
        output, final = module(x)
    results = [output, *(final if isinstance(final, tuple) else (final,))]
    generator = torch.Generator().manual_seed(3)
    loss = sum((r * torch.randn(r.shape, generator=generator).to(device)).sum() for r in results)
    leaves = [x, *(state or ()), *module.parameters()]
    grads = torch.autograd.grad(loss, leaves)
    return [r.detach().cpu() for r in results], [g.cpu() for g in grads]


def check_against_cpu(module, x, state=None):
    expected = run(copy.deepcopy(module), x, state, "cpu")
    actual = run(copy.deepcopy(module), x, state, "tpu")
    assert_close(actual, expected, **TOLERANCE)


def lstm_state(layers, batch, hidden, cell=None):
    return torch.randn(layers, batch, hidden), torch.randn(layers, batch, cell or hidden)


CASES = {
    "lstm": (lambda: nn.LSTM(5, 7, 2), (6, 3, 5), None),
    "lstm_bidirectional_batch_first": (lambda: nn.LSTM(5, 7, 2, bidirectional=True, batch_first=True), (3, 6, 5),
                                       None),
    "lstm_projection": (lambda: nn.LSTM(5, 7, 2, proj_size=4, bidirectional=True), (6, 3, 5),
                        lstm_state(4, 3, 4, 7)),
    "lstm_no_bias_initial_state": (lambda: nn.LSTM(5, 7, 1, bias=False), (6, 3, 5), lstm_state(1, 3, 7)),
    "gru_bidirectional": (lambda: nn.GRU(5, 7, 2, bidirectional=True), (6, 3, 5), None),
    "gru_no_bias_batch_first": (lambda: nn.GRU(5, 7, 1, bias=False, batch_first=True), (3, 6, 5),
                                (torch.randn(1, 3, 7),)),
    "rnn_tanh": (lambda: nn.RNN(5, 7, 2), (6, 3, 5), (torch.randn(2, 3, 7),)),
    "rnn_relu_bidirectional": (lambda: nn.RNN(5, 7, 2, nonlinearity="relu", bidirectional=True), (6, 3, 5), None),
}


@pytest.mark.filterwarnings("ignore:LSTM with projections")
@pytest.mark.parametrize("case", CASES)
def test_recurrent_networks_match_cpu_through_one_launch_per_layer(case, layer_launches):
    make, shape, state = CASES[case]
    torch.manual_seed(0)
    module = make()
    check_against_cpu(module, torch.randn(*shape), state)
    directions = 2 if module.bidirectional else 1
    assert len(layer_launches) == module.num_layers * directions
    assert sorted(reverse for _, reverse in layer_launches) == sorted([False, True][:directions] * module.num_layers)


@pytest.mark.filterwarnings("ignore:tpu. float64 matmul")
def test_float64_and_eval_mode_under_no_grad(layer_launches):
    torch.manual_seed(0)
    module = nn.GRU(4, 6, 2).double()
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    with torch.no_grad():
        expected = module(x)
        actual = copy.deepcopy(module).to("tpu")(x.to("tpu"))
    assert_close([t.cpu() for t in (actual[0], actual[1])], list(expected), atol=1e-12, rtol=1e-12)
    assert len(layer_launches) == 2


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_saturating_gates_overflow_silently_as_on_cpu(kind, layer_launches, recwarn):
    """Inputs large enough that the gates' exp overflows to inf (the sigmoid is then exactly 0 or 1): CPU says
    nothing and neither does the recurrence (it used to warn "overflow encountered in exp" at every step)."""
    torch.manual_seed(0)
    check_against_cpu(kind(3, 4, 2), torch.randn(5, 2, 3) * 1e4)
    assert len(layer_launches) == 2
    numpy_fp_warnings = [str(w.message) for w in recwarn if "encountered in" in str(w.message)]
    assert not numpy_fp_warnings


def second_derivatives(module, x, state, device):
    """The gradient of the input-and-state gradients' sum with respect to every parameter and the input
    (create_graph=True through the layers' backward)."""
    module = module.to(device)
    x = x.to(device).requires_grad_()
    state = tuple(s.to(device).requires_grad_() for s in state or ())
    output, final = module(x, state if len(state) == 2 else state[0]) if state else module(x)
    results = [output, *(final if isinstance(final, tuple) else (final,))]
    loss = sum((r * r.sin()).sum() for r in results)
    leaves = [x, *state, *module.parameters()]
    grads = torch.autograd.grad(loss, leaves, create_graph=True)
    return [g.cpu() for g in torch.autograd.grad(sum((g * g).sum() for g in grads), leaves, allow_unused=True)]


@pytest.mark.filterwarnings("ignore:LSTM with projections")
@pytest.mark.parametrize("case", ["lstm_projection", "lstm_no_bias_initial_state", "gru_bidirectional",
                                  "rnn_relu_bidirectional"])
def test_second_derivatives_through_fused_layers_match_cpu(case, layer_launches):
    # the fused backward is NumPy: under create_graph it recomputes the layer through PyTorch's composite,
    # whose per-step ops carry the graph a second derivative needs (it was silently zero)
    make, shape, state = CASES[case]
    torch.manual_seed(0)
    module = make()
    x = torch.randn(shape)
    expected = second_derivatives(copy.deepcopy(module), x, state, "cpu")
    actual = second_derivatives(copy.deepcopy(module), x, state, "tpu")
    assert layer_launches, "the fused layers ran forward"
    assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def batched_vector_jacobian_products(module, x, vmap, device):
    """The input's and parameters' gradients for four output gradients at once, under ``vmap`` (gradcheck's
    batched-gradient check and torch.func.jacrev work so)."""
    module = module.to(device)
    x = x.to(device).requires_grad_()
    output, final = module(x)
    leaves = [x, *module.parameters()]
    vectors = torch.randn((4, *output.shape), generator=torch.Generator().manual_seed(5), dtype=x.dtype).to(device)
    products = vmap(lambda v: torch.autograd.grad(output, leaves, v, retain_graph=True))(vectors)
    # without create_graph the gradients carry no graph (which would keep the recomputed layers in HBM)
    return [p.cpu() for p in products], [p.requires_grad for p in products]


@pytest.mark.filterwarnings("ignore:LSTM with projections")
@pytest.mark.parametrize("vmap", [torch.func.vmap, torch._vmap_internals._vmap], ids=["func", "legacy"])
@pytest.mark.parametrize("case", ["lstm_projection", "gru_bidirectional", "rnn_relu_bidirectional"])
def test_batched_gradients_through_fused_layers_match_cpu(case, vmap, layer_launches):
    # the fused backward reads its gradients as arrays, which vmap's batched tensors are not ("Cannot access
    # storage of BatchedTensorImpl"): a batched gradient takes the composite's per-step ops, which vmap batches
    make, shape, _ = CASES[case]
    torch.manual_seed(0)
    module = make().double()
    x = torch.randn(shape, dtype=torch.float64)
    expected = batched_vector_jacobian_products(copy.deepcopy(module), x, vmap, "cpu")
    actual = batched_vector_jacobian_products(copy.deepcopy(module), x, vmap, "tpu")
    assert layer_launches, "the fused layers ran forward"
    assert_close(actual, expected)


def test_dropout_between_layers_keeps_the_generator_of_the_composite_path(layer_launches):
    """Dropout between layers is the ordinary op: the fused path draws the same masks as the per-step one."""
    torch.manual_seed(0)
    module = nn.LSTM(4, 6, 3, dropout=0.5).to("tpu")
    x = torch.randn(5, 2, 4).to("tpu")
    torch.manual_seed(7)
    fused = module(x)[0]
    assert len(layer_launches) == 3
    torch.manual_seed(7)
    composite = torch.ops.aten.lstm.input._op_dk(rnn.COMPOSITE, x, [torch.zeros(3, 2, 6, device="tpu")] * 2,
                                                 module._flat_weights, True, 3, 0.5, True, False, False)[0]
    assert_close(fused.cpu(), composite.cpu(), **TOLERANCE)
    assert not torch.equal(fused.cpu(), module.eval()(x)[0].cpu())  # the masks did drop something


def test_packed_and_unbatched_inputs_take_the_composite_path(layer_launches):
    torch.manual_seed(0)
    module = nn.LSTM(3, 4, 1)
    sequences = [torch.randn(5, 3), torch.randn(3, 3)]
    packed = nn.utils.rnn.pack_sequence(sequences)
    expected = nn.utils.rnn.pad_packed_sequence(module(packed)[0])[0]
    tpu_module = copy.deepcopy(module).to("tpu")
    tpu_packed = nn.utils.rnn.pack_sequence([s.to("tpu") for s in sequences])
    actual = nn.utils.rnn.pad_packed_sequence(tpu_module(tpu_packed)[0])[0]
    assert_close(actual.cpu(), expected, **TOLERANCE)
    assert_close(tpu_module(sequences[0].to("tpu"))[0].cpu(), module(sequences[0])[0], **TOLERANCE)  # unbatched: 3-d
    assert len(layer_launches) == 1  # only the unbatched call (nn.LSTM adds its batch dim) was fused


def test_each_layer_is_one_launch_charged_its_matmul_flops_and_bytes():
    torch.manual_seed(0)
    module = nn.GRU(8, 16, 1).to("tpu")
    x, h0 = torch.randn(10, 4, 8).to("tpu"), torch.zeros(1, 4, 16).to("tpu")
    totals = torch_tpu._C.current_chip().clock.op_totals
    before = totals.get("gru_layer", torch_tpu._C.clock.OpTotals()).copy()
    module(x, h0)
    charged = totals["gru_layer"].minus(before)
    steps, gates = 10 * 4, 3 * 16
    assert charged.count == 1
    assert charged.flops == 2 * steps * 8 * gates + 2 * steps * 16 * gates  # input projection + recurrent matmul
    read = x.nbytes + h0.nbytes + sum(p.nbytes for p in module.parameters())
    output, final, tape = steps * 16 * 4, 4 * 16 * 4, steps * (16 + 5 * 16) * 4  # tape: h, [r, z, n, hx, hn]
    assert charged.bytes == read + output + final + tape


def test_tracing_sees_the_composite(layer_launches):
    """Fake tensors (Dynamo, AOTAutograd) and dispatch modes get PyTorch's composite, whose ops they trace."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import TorchDispatchMode

    class SeenOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(func)
            return func(*args, **(kwargs or {}))

    module = nn.GRU(4, 6, 1).to("tpu")
    x = torch.randn(5, 2, 4).to("tpu")
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        output, final = module(mode.from_tensor(x))
    assert output.shape == (5, 2, 6) and final.shape == (1, 2, 6)
    with SeenOps() as seen:
        module(x)
    assert torch.ops.aten._thnn_fused_gru_cell.default in seen.ops
    assert not layer_launches


@pytest.mark.usefixtures("paused_collector")
def test_abstract_mode_allocates_and_charges_as_eager():
    """Without values, the layers make the same tensors (shapes, HBM bytes) and the same launches."""
    torch.manual_seed(0)
    module = nn.LSTM(6, 8, 2, bidirectional=True, batch_first=True).to("tpu")
    x = torch.randn(3, 5, 6).to("tpu")

    def step():
        clock = torch_tpu._C.current_chip().clock
        names = ("lstm_layer", "lstm_layer_backward")
        before = {n: clock.op_totals.get(n, torch_tpu._C.clock.OpTotals()).copy() for n in names}
        torch.tpu.reset_peak_memory_stats()
        start = torch.tpu.memory_allocated()
        output, (h, c) = module(x)
        (output.sum() + h.sum() + c.sum()).backward()
        charged = {n: clock.op_totals[n].minus(before[n]) for n in names}
        shapes = [output.shape, h.shape, c.shape] + [p.grad.shape for p in module.parameters()]
        module.zero_grad(set_to_none=True)
        launches = {n: (t.count, t.flops, t.bytes) for n, t in charged.items()}
        return shapes, torch.tpu.max_memory_allocated() - start, launches

    eager = step()
    with torch_tpu.abstract():
        abstract = step()
    assert abstract == eager


AUTOCAST_CASES = {
    "lstm": lambda: nn.LSTM(4, 6, 2, batch_first=True),
    "gru_bidirectional": lambda: nn.GRU(4, 6, 1, bidirectional=True),
    "rnn_relu": lambda: nn.RNN(4, 6, 2, nonlinearity="relu"),
}


@pytest.mark.parametrize("case", AUTOCAST_CASES)
def test_autocast_runs_recurrent_layers_in_bfloat16_as_cuda_casts_cudnn_rnn(case):
    """CUDA's autocast casts the cuDNN RNN's input, states and weights to the lower precision type: the
    result is the bf16 network's on bf16 inputs, and the float32 parameters get those gradients."""
    torch.manual_seed(0)
    module = AUTOCAST_CASES[case]().to("tpu")
    x = torch.randn(3, 5, 4, device="tpu")
    with torch.autocast("tpu", dtype=torch.bfloat16):
        output, final = module(x)
    cast = copy.deepcopy(module).bfloat16()
    expected_output, expected_final = cast(x.bfloat16())
    assert output.dtype == torch.bfloat16
    assert_close(output.cpu(), expected_output.cpu(), atol=0, rtol=0)
    assert_close(torch.utils._pytree.tree_map(torch.Tensor.cpu, final),
                 torch.utils._pytree.tree_map(torch.Tensor.cpu, expected_final), atol=0, rtol=0)
    output.float().sum().backward()
    expected_output.float().sum().backward()
    for ours, bf16 in zip(module.parameters(), cast.parameters()):
        assert ours.grad.dtype == torch.float32
        assert_close(ours.grad.cpu(), bf16.grad.float().cpu(), atol=0, rtol=0)


def test_autocast_casts_packed_sequences_and_leaves_float64_alone():
    torch.manual_seed(0)
    module = nn.LSTM(3, 4, 1).to("tpu")
    packed = nn.utils.rnn.pack_sequence([torch.randn(5, 3, device="tpu"), torch.randn(3, 3, device="tpu")])
    with torch.autocast("tpu", dtype=torch.bfloat16):
        output = module(packed)[0].data
    assert output.dtype == torch.bfloat16
    expected = copy.deepcopy(module).bfloat16()(
        nn.utils.rnn.PackedSequence(packed.data.bfloat16(), packed.batch_sizes))[0].data
    assert_close(output.cpu(), expected.cpu(), atol=0, rtol=0)
    double = module.double()
    with torch.autocast("tpu", dtype=torch.bfloat16):
        assert double(torch.randn(2, 1, 3, device="tpu", dtype=torch.float64))[0].dtype == torch.float64


@pytest.mark.usefixtures("paused_collector")
@pytest.mark.parametrize("module, tape_floats_per_step", [
    (lambda: nn.LSTM(8, 16, 1), 7 * 16),  # cy, gates [i, f, g, o], and the h and c each step started from
    (lambda: nn.LSTM(8, 16, 1, proj_size=6), 3 * 16 + 4 * 16 + 6),  # + the projection's input; h is 6 wide
    (lambda: nn.GRU(8, 16, 1), 6 * 16),  # h, [r, z, n, hx, hn]
    (lambda: nn.RNN(8, 16, 1), 2 * 16),  # h and the output the derivative reads
])
def test_the_tape_is_bare_hbm_held_by_the_graph(module, tape_floats_per_step):
    """The tape is HBM buffers without tensors around them, in the bytes its arrays take, released with the graph."""
    torch.manual_seed(0)
    module = module().to("tpu")
    x = torch.randn(10, 4, 8).to("tpu")
    start = torch.tpu.memory_allocated()
    output, final = module(x)
    layer = output.grad_fn  # one layer, sequence-first: the output is the layer's own
    (_, tape, buffers), = layer.tapes
    assert all(type(array) is np.ndarray for array in tape.values())
    assert sorted(a.nbytes for a in tape.values()) == sorted(b.nbytes for b in buffers)
    assert buffers == layer.tape_buffers
    assert sum(b.nbytes for b in layer.tape_buffers) == 10 * 4 * tape_floats_per_step * 4
    del layer, output, final, tape, buffers
    assert torch.tpu.memory_allocated() == start


@pytest.mark.usefixtures("paused_collector")
def test_stacked_layers_are_one_node_writing_the_final_states_in_place():
    """Layers with no dropout between them are one autograd node: the final states are written into the stacked
    tensors the op returns (no stack or cat launch), the layer between is bare HBM tape, and each layer is still
    one launch charged its own FLOPs and boundary bytes."""
    torch.manual_seed(0)
    module = nn.LSTM(8, 16, 2).to("tpu")
    x, h0, c0 = torch.randn(10, 4, 8).to("tpu"), torch.randn(2, 4, 16).to("tpu"), torch.randn(2, 4, 16).to("tpu")
    clock = torch_tpu._C.current_chip().clock
    before = {name: totals.copy() for name, totals in clock.op_totals.items()}
    start = torch.tpu.memory_allocated()
    output, (h, c) = module(x, (h0, c0))
    launched = {name: totals.minus(before[name]) if name in before else totals
                for name, totals in clock.op_totals.items()}
    launched = {name: totals for name, totals in launched.items() if totals.count}
    assert output.grad_fn is h.grad_fn is c.grad_fn
    assert list(launched) == ["lstm_layer"] and launched["lstm_layer"].count == 2
    floats = 4
    steps, gates = 10 * 4, 4 * 16
    state, layer_output, tape = 4 * 16 * floats, steps * 16 * floats, steps * 7 * 16 * floats
    parameters = sum(p.nbytes for p in module.parameters())
    assert launched["lstm_layer"].flops == 2 * steps * gates * (8 + 16) + 2 * steps * gates * (16 + 16)
    assert launched["lstm_layer"].bytes == (x.nbytes + layer_output + 4 * state + parameters
                                            + 2 * (layer_output + 2 * state + tape))
    # the output, the two stacked final states, each layer's tape and the first layer's output kept for the backward
    assert torch.tpu.memory_allocated() - start == layer_output + 2 * 2 * state + 2 * tape + layer_output
    assert len(output.grad_fn.tape_buffers) == 2 * 4 + 1
    del output, h, c
    assert torch.tpu.memory_allocated() == start


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("transform", ["grad", "jacrev", "jvp", "forward_ad"])
def test_torch_func_transforms_and_forward_ad_through_recurrent_layers_match_cpu(kind, transform, recwarn):
    """The one autograd node of the whole-sequence kernels has no setup_context or jvp: torch.func's grad, jacrev and
    jvp and forward-mode AD raised; they run the plain-op layers (CPU's with oneDNN off: its oneDNN layer has no
    forward-mode formula either), without warnings CPU does not give."""
    import torch.autograd.forward_ad as forward_ad
    import torch.func as func

    torch.manual_seed(0)
    module = kind(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(2, 5, 3)

    def apply(device):
        m, inputs = copy.deepcopy(module).to(device), x.to(device)
        if transform == "grad":
            return func.grad(lambda v: m(v)[0].square().sum())(inputs)
        if transform == "jacrev":
            return func.jacrev(lambda v: m(v)[0][:, -1].sum(0))(inputs)
        if transform == "jvp":
            return func.jvp(lambda v: m(v)[0], (inputs,), (torch.ones_like(inputs),))[1]
        with forward_ad.dual_level():
            return forward_ad.unpack_dual(m(forward_ad.make_dual(inputs, torch.ones_like(inputs)))[0]).tangent

    with torch.backends.mkldnn.flags(enabled=False):
        expected = apply("cpu")
    cpu_warnings = len(recwarn)
    assert_close(apply("tpu").cpu(), expected, **TOLERANCE)
    assert len(recwarn) == cpu_warnings, [str(w.message) for w in recwarn]
