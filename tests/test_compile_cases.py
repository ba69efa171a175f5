"""torch.compile(backend="tpu") in the situations users meet: registration, guards and recompiles,
dynamic shapes, graph breaks, modes, fullgraph, random ops, mutation and views, bf16, eager nodes,
debug output, abstract mode. Each compiled result is checked against tpu eager."""

import copy
import operator
import importlib.util
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import torch_tpu

from conftest import run_python
from differential import assert_identical
from models import MLP

pytestmark = [pytest.mark.filterwarnings("ignore:Profiler record function"), pytest.mark.usefixtures("fresh_dynamo")]


def test_backend_needs_no_import_and_is_listed():
    result = run_python("""
        import sys, torch
        x = torch.arange(6.0).to("tpu")
        print(torch.compile(lambda x: torch.sin(x) * 2, backend="tpu")(x).cpu().tolist() == (torch.sin(x) * 2).cpu().tolist())
        print("tpu" in torch._dynamo.list_backends())
    """)
    assert result.stdout.split() == ["True", "True"]


def test_default_backend_on_tpu_tensors_routes_to_tpu_with_one_warning():
    x = torch.randn(5).to("tpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = torch.compile(lambda x: x * 3 + 1)(x)
        second = torch.compile(lambda x: x - 2)(x)
    routed = [w for w in caught if 'backend="tpu"' in str(w.message)]
    assert len(routed) <= 1 and (routed or _already_warned())
    assert_identical(first, x * 3 + 1)
    assert_identical(second, x - 2)
    assert torch_tpu.compile.last_programs()  # our programs ran, not Inductor's Pallas code


def _already_warned():
    """The routing warning is given once per process: an earlier test may have used it."""
    from torch._inductor import compile_fx

    return compile_fx.compile_fx.__closure__ is not None


def test_dynamo_device_interface_answers_from_torch_tpu():
    from torch._dynamo.device_interface import get_interface_for_device

    interface = get_interface_for_device("tpu")
    assert interface.__module__ == "torch_tpu.compile.device_interface"
    assert interface.device_count() == torch.tpu.device_count() == 1
    assert interface.current_device() == 0 and interface.is_available()
    assert isinstance(interface.current_stream(), torch.tpu.Stream)


def test_guards_hold_for_the_same_shape_and_a_new_shape_recompiles_with_its_reason():
    compiled = torch.compile(lambda x: x.relu() + 1, backend="tpu")
    graphs = []
    for shape in ((4, 3), (4, 3), (5, 3)):
        x = torch.randn(*shape).to("tpu")
        assert_identical(compiled(x), x.relu() + 1)
        graphs.append(len(torch_tpu.compile.last_programs()))
    assert graphs == [1, 1, 2]  # the same shape reuses its program; a new shape recompiles
    last = torch_tpu.compile.last_programs()[-1]
    assert last.dynamo_graph.recompile_reasons, "the recompile's reason is recorded"
    assert "recompiled because" in last.dump(source=False)


def test_dynamic_shapes_compile_once_and_specialise_programs_per_shape():
    compiled = torch.compile(lambda x: torch.tanh(x * 2).sum(0), backend="tpu", dynamic=True)
    for rows in (3, 5, 8):
        x = torch.randn(rows, 4).to("tpu")
        assert_identical(compiled(x), torch.tanh(x * 2).sum(0))
    programs = torch_tpu.compile.last_programs()
    assert len({p.dynamo_graph.index for p in programs}) == 1  # one Dynamo graph with a symbolic size
    assert len(programs) == 3  # lowered once per concrete size


def test_a_range_of_symbolic_length_runs_its_eager_kernel_with_the_concrete_length():
    compiled = torch.compile(lambda x: x + torch.arange(x.shape[0], device="tpu"), backend="tpu", dynamic=True)
    for rows in (5, 7):
        x = torch.randn(rows).to("tpu")
        assert_identical(compiled(x), x + torch.arange(rows, device="tpu"))


def test_slices_and_selects_bounded_by_a_symbolic_length_use_the_programs_concrete_length():
    """A language model's last, shorter chunk: the slice end is a size node, a number in each specialised program."""
    def model(tokens, table):
        length = tokens.shape[0]
        return table[:length] * tokens + table[length - 1] + table.select(0, length // 2)

    table = torch.randn(9, 3).to("tpu")
    compiled = torch.compile(model, backend="tpu", dynamic=True)
    for rows in (7, 4, 2):
        tokens = torch.randn(rows, 3).to("tpu")
        assert_identical(compiled(tokens, table), model(tokens, table))


@pytest.mark.parametrize("dynamic", [True, None])
def test_an_integer_argument_made_symbolic_is_an_operand_of_pointwise_ops(dynamic):
    """A Python int becomes a graph input after it changes (automatic dynamic), or at once with dynamic=True."""
    def scaled(x, n):
        return (x * n + n) / n - x.pow(n) + torch.clamp(x, max=n)

    compiled = torch.compile(scaled, backend="tpu", dynamic=dynamic)
    x = torch.randn(6, 2).to("tpu")
    for n in (1, 2, 3, 5):
        assert_identical(compiled(x, n), scaled(x, n))


SYMBOLIC_NUMBER_USES = {
    "where": lambda x, n: torch.where(x > 0, x, n),
    "full_like": lambda x, n: torch.full_like(x, n) + x,
    "alpha": lambda x, n: torch.add(x, x, alpha=n),
    "lerp_weight": lambda x, n: torch.lerp(x, x * 2, n / 10),
}


@pytest.mark.parametrize("use", SYMBOLIC_NUMBER_USES)
def test_a_symbolic_integer_is_read_as_its_number_by_every_lowering(use):
    """Not only pointwise operands: a number in a where, a fill, an alpha or a weight (these raised TypeError:
    float() of an fx Node)."""
    function = SYMBOLIC_NUMBER_USES[use]
    compiled = torch.compile(function, backend="tpu", dynamic=True)
    x = torch.randn(6, 2)
    for n in (2, 3):
        torch.testing.assert_close(compiled(x.to("tpu"), n).cpu(), function(x, n), rtol=0, atol=0)


def test_a_mask_computed_on_the_cpu_inside_the_model_moves_to_tpu():
    """A causal mask built on the host in forward (``log(tril(ones))``): its where() reads a host scalar."""
    def model(x):
        mask = torch.log(torch.tril(torch.ones(x.shape[0], x.shape[0]))).to(x.device)
        return torch.softmax(x @ x.T + mask, dim=-1)

    x = torch.randn(5, 4).to("tpu")
    assert_identical(torch.compile(model, backend="tpu")(x), model(x))


@pytest.mark.parametrize("dynamic", [False, True])
def test_tensor_constants_made_inside_the_model_are_read_as_inputs(dynamic):
    """``torch.tensor(...)`` inside a model becomes a graph constant (a ``get_attr`` node), on the host or tpu."""
    def model(x):
        scale = torch.tensor(2.5)  # a host scalar
        offsets = torch.tensor([1.0, -2.0, 0.5], device=x.device)
        return (x * scale + offsets).tanh().sum(-1)

    x = torch.randn(4, 3).to("tpu").requires_grad_()
    twin = x.detach().clone().requires_grad_()
    compiled = torch.compile(model, backend="tpu", dynamic=dynamic)
    got, want = compiled(x), model(twin)
    got.sum().backward()
    want.sum().backward()
    assert_identical(got, want)
    assert_identical(x.grad, twin.grad)
    assert_identical(compiled(x[:2]), model(twin[:2]))  # another shape (a new program, or a recompile)


def test_graph_breaks_run_correctly_and_are_listed():
    def f(x):
        y = x * 2
        torch._dynamo.graph_break()
        return y + 1

    x = torch.randn(6).to("tpu")
    assert_identical(torch.compile(f, backend="tpu")(x), x * 2 + 1)
    programs = torch_tpu.compile.last_programs()
    assert len(programs) == 2
    assert sum("graph break: Call to `torch._dynamo.graph_break()`" in p.dump(source=False) for p in programs) == 1


def test_an_rnn_left_to_eager_by_a_graph_break_runs_its_kernels_untraced():
    """Dynamo leaves nn.LSTM/GRU to eager; the kernels the dispatcher then calls are the backend's own code,
    which Dynamo must skip as it skips torch's (tracing them put fake tensors through the kernels' views)."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(6, 5, num_layers=2).to("tpu")
    x = torch.randn(4, 3, 6).to("tpu")
    state = (torch.zeros(2, 3, 5).to("tpu"), torch.zeros(2, 3, 5).to("tpu"))
    compiled, eager = torch.compile(lambda x, s: lstm(x, s), backend="tpu")(x, state), lstm(x, state)
    for got, expected in zip(torch.utils._pytree.tree_leaves(compiled), torch.utils._pytree.tree_leaves(eager)):
        assert_identical(got, expected)


def test_the_kernels_files_are_in_dynamos_skip_list():
    from torch._dynamo import trace_rules
    import torch_tpu.ops.view

    assert trace_rules.check_file(torch_tpu.ops.view.__file__).skipped
    assert trace_rules.check_file(torch_tpu._tensor.__file__).skipped
    assert not trace_rules.check_file(torch_tpu.fp8.__file__).skipped  # user-facing code is still traced


@pytest.mark.parametrize("predicate", [True, False])
def test_torch_cond_runs_the_branch_its_predicate_picks_with_gradients(predicate):
    """The branches are subgraphs (get_attr nodes) that the cond node, run by its eager kernel, is handed."""
    def model(flag, x):
        return torch.cond(flag, lambda a: (a * 2).sin(), lambda a: a.exp() - 1, (x,)).sum()

    x = torch.randn(5).to("tpu").requires_grad_()
    twin = x.detach().clone().requires_grad_()
    flag = torch.tensor(predicate).to("tpu")
    got, want = torch.compile(model, backend="tpu")(flag, x), model(flag, twin)
    got.backward()
    want.backward()
    assert_identical(got, want)
    assert_identical(x.grad, twin.grad)


def test_fullgraph_refuses_a_graph_break():
    def f(x):
        torch._dynamo.graph_break()
        return x

    with pytest.raises(Exception, match="graph_break|Graph break|graph break"):
        torch.compile(f, backend="tpu", fullgraph=True)(torch.randn(2).to("tpu"))


@pytest.mark.parametrize("mode", ["default", "reduce-overhead", "max-autotune"])
def test_modes_are_accepted_and_compile_alike(mode):
    torch.manual_seed(0)
    model = MLP().to("tpu")
    x = torch.randn(4, 12).to("tpu")
    with torch.no_grad():
        assert_identical(torch.compile(model, backend="tpu", mode=mode, fullgraph=True)(x), model(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_dropout_follows_eager_rng_under_manual_seed(dtype, requires_grad):
    x = torch.randn(64, 32, dtype=dtype).to("tpu").requires_grad_(requires_grad)
    compiled = torch.compile(lambda x: F.dropout(x, p=0.5, training=True) * 2, backend="tpu")
    compiled(x)  # compile outside the seeded region
    results = []
    for run in (compiled, lambda x: F.dropout(x, p=0.5, training=True) * 2):
        torch.manual_seed(7)
        x.grad = None
        y = run(x)
        if requires_grad:
            y.sum().backward()
        results.append((y.detach(), torch.rand(3, device="tpu"), x.grad))
    (got, got_next, got_grad), (want, want_next, want_grad) = results
    assert_identical(got, want)
    assert_identical(got_next, want_next)  # the generator advanced as eager's did
    if requires_grad:
        assert_identical(got_grad, want_grad)
    eager_nodes = [op for program in torch_tpu.compile.last_programs() for _, op, _ in program.eager_nodes]
    assert not {"aten.native_dropout.default", "aten.native_dropout_backward.default"} & set(eager_nodes)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_of_probabilities_draws_eagers_mask_under_manual_seed(dtype):
    """bernoulli(p) with a tensor of probabilities: core ATen's decomposition compared float32 uniforms with p, a
    mask other than eager's under the same seed; kept whole, the program draws eager's."""
    p = torch.rand(256, dtype=dtype).to("tpu")
    compiled = torch.compile(lambda p: torch.bernoulli(p) * 3, backend="tpu")
    compiled(p)  # compile outside the seeded region
    results = []
    for run in (compiled, lambda p: torch.bernoulli(p) * 3):
        torch.manual_seed(3)
        results.append((run(p), torch.rand(3, device="tpu")))
    (got, got_next), (want, want_next) = results
    assert_identical(got, want)
    assert_identical(got_next, want_next)  # the generator advanced as eager's did


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_fused_attention_runs_its_numpy_maths_and_matches_eager_with_and_without_dropout(dropout_p):
    q, k, v = (torch.randn(2, 4, 8, 16, device="tpu", requires_grad=True) for _ in range(3))
    bias = torch.randn(8, 8, device="tpu", requires_grad=True)  # broadcast: its gradient is summed back

    def attend(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p).square().sum()

    compiled = torch.compile(attend, backend="tpu", fullgraph=True)
    compiled(q, k, v).backward()  # compile outside the seeded region
    results = []
    for run in (compiled, attend):
        torch.manual_seed(3)
        for t in (q, k, v, bias):
            t.grad = None
        loss = run(q, k, v)
        loss.backward()
        results.append([loss, q.grad, k.grad, v.grad, bias.grad, torch.rand(2, device="tpu")])
    for got, want in zip(*results):
        assert_identical(got, want)
    eager_nodes = [name for program in torch_tpu.compile.last_programs() for name, _, _ in program.eager_nodes]
    assert eager_nodes == ([] if dropout_p == 0 else ["_scaled_dot_product_fused_attention_overrideable_backward"])


def test_input_mutation_views_and_in_place_ops_match_eager():
    def f(x, y):
        x.add_(1)
        row = x[1]
        row.mul_(y.sum())
        return x.t().contiguous() * 2, row

    x, y = torch.randn(3, 4), torch.randn(4)
    eager_x, compiled_x = x.to("tpu"), x.to("tpu")
    want = f(eager_x, y.to("tpu"))
    got = torch.compile(f, backend="tpu")(compiled_x, y.to("tpu"))
    assert_identical(compiled_x, eager_x)
    for a, b in zip(got, want):
        assert_identical(a, b)


def test_outputs_viewing_what_the_program_made_have_eager_layouts():
    """Views of new outputs and of a multi-output kernel's results are laid out from their FakeTensors when the
    program is generated (or are the output itself when they view it whole): values, sizes, strides and
    storage offsets as eager gives them, and a weight gradient transposed twice is a plain gradient."""
    def f(x, w):
        y = x @ w
        normed = F.layer_norm(y, (5,))
        return y.t(), (y * 2)[1:, ::2], (y + 1).view(-1), normed.transpose(0, 1), y.t().t(), normed[2]

    x, w = torch.randn(4, 3), torch.randn(3, 5)
    want = f(x.to("tpu"), w.to("tpu"))
    got = torch.compile(f, backend="tpu")(x.to("tpu"), w.to("tpu"))
    assert "tensor_at(" in torch_tpu.compile.last_programs()[-1].source
    for a, b in zip(got, want, strict=True):
        assert_identical(a, b)
        assert (a.shape, a.stride(), a.storage_offset()) == (b.shape, b.stride(), b.storage_offset())
    linear = torch.nn.Linear(3, 5).to("tpu")
    eager_linear = copy.deepcopy(linear)
    torch.compile(lambda x: linear(x).square().sum(), backend="tpu")(x.to("tpu")).backward()
    eager_linear(x.to("tpu")).square().sum().backward()
    for p, q in zip(linear.parameters(), eager_linear.parameters(), strict=True):
        assert_identical(p.grad, q.grad)
        assert p.grad.stride() == q.grad.stride()


def _computed_into_inputs(source):
    return [line.split("=")[0].strip() for line in source.splitlines() if "computed into the input" in line]


def test_a_value_copied_into_an_input_is_computed_there():
    def update(p, m, g):  # an optimizer-like update: the new moment and parameter written back
        m.mul_(0.9).add_(g)
        p.add_(m * -0.1)

    arguments = [torch.randn(5, 3) for _ in range(3)]
    eager_arguments, compiled_arguments = [a.to("tpu") for a in arguments], [a.to("tpu") for a in arguments]
    update(*eager_arguments)
    torch.compile(update, backend="tpu")(*compiled_arguments)
    for a, b in zip(compiled_arguments, eager_arguments):
        assert_identical(a, b)
    assert len(_computed_into_inputs(torch_tpu.compile.last_programs()[-1].source)) == 2


def test_a_value_is_not_computed_into_an_input_whose_old_value_is_read_later():
    from torch.fx.experimental.proxy_tensor import make_fx

    from torch_tpu.compile.codegen import generate
    from torch_tpu.compile.runtime import Program

    aten = torch.ops.aten

    def graph(p, g):  # a schedule functionalisation never writes, but a graph may hold
        new = aten.add.Tensor(p, g)
        old = aten.mul.Tensor(p, 3)  # reads p after `new` exists
        aten.copy_.default(p, new)
        return (old,)

    p, g = torch.randn(4, 6), torch.randn(4, 6)
    program = Program("late_read", generate(make_fx(graph, tracing_mode="fake")(p.to("tpu"), g.to("tpu")).graph,
                                            "late_read"))
    mutated = p.to("tpu")
    (old,) = program([mutated, g.to("tpu")])
    assert_identical(old, p.to("tpu") * 3)
    assert_identical(mutated, p.to("tpu") + g.to("tpu"))
    assert _computed_into_inputs(program.source) == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_lowering_equals_eager_bit_for_bit(dtype, reduction, weighted):
    """NLL loss and its gradient run as NumPy nodes (not eager ones) and give eager's bits: the CPU-order
    cascade sum in the input's dtype, class weights, an ignored index."""
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(300, 7, generator=generator) * 4).to("tpu", dtype)
    target = torch.randint(0, 7, (300,), generator=generator).to("tpu")
    weight = (torch.rand(7, generator=generator) * 3).to("tpu", dtype) if weighted else None

    def loss_of(x):
        return F.nll_loss(F.log_softmax(x, 1), target, weight, ignore_index=2, reduction=reduction).sum()

    compiled_input, eager_input = (logits.clone().requires_grad_() for _ in range(2))
    loss = torch.compile(loss_of, backend="tpu")(compiled_input)
    loss.backward()
    expected = loss_of(eager_input)
    expected.backward()
    assert_identical(loss, expected)
    assert_identical(compiled_input.grad, eager_input.grad)
    programs = torch_tpu.compile.last_programs()
    kernels = [node for program in programs for _, nodes, _ in program.kernels for node in nodes]
    assert "nll_loss_forward" in kernels and "nll_loss_backward" in kernels
    assert not [op for program in programs for _, op, _ in program.eager_nodes if "nll" in op]


def test_a_node_without_lowering_runs_its_eager_kernel_and_is_listed():
    x = torch.randn(5, 4).to("tpu")
    assert_identical(torch.compile(lambda x: torch.cumsum(x, 1) + 1, backend="tpu")(x), torch.cumsum(x, 1) + 1)
    (program,) = torch_tpu.compile.last_programs()
    assert [op for _, op, _ in program.eager_nodes] == ["aten.cumsum.default"]
    assert "eager cumsum: aten.cumsum.default (no NumPy lowering)" in program.dump(source=False)


def test_debug_environment_variable_prints_each_program(monkeypatch, capsys):
    monkeypatch.setenv("TORCH_TPU_COMPILE_DEBUG", "1")
    torch.compile(lambda x: x.exp() + 1, backend="tpu")(torch.randn(3).to("tpu"))
    err = capsys.readouterr().err
    assert "kernel fused_exp_add: exp, add" in err and "def inference_" in err


@pytest.mark.parametrize("softmax", [torch.ops.aten._softmax, torch.ops.aten._log_softmax])
def test_half_to_float_softmax_follows_eager_mode(softmax):
    """Eager follows CUDA: only float16 converts; Meta (hence FakeTensor) also takes bfloat16 for _softmax."""
    def program(x):
        return softmax(x, 1, True) * 2

    compiled = torch.compile(program, backend="tpu")
    with pytest.raises(RuntimeError, match="conversion is supported for Half type only"):
        program(torch.randn(3, 4, dtype=torch.bfloat16, device="tpu"))
    with pytest.raises(RuntimeError, match="conversion is supported for Half type only|half_to_float"):
        compiled(torch.randn(3, 4, dtype=torch.bfloat16, device="tpu"))
    x = torch.randn(3, 4, dtype=torch.float16, device="tpu")
    assert_identical(compiled(x), program(x))


def test_abstract_mode_refuses_a_compiled_program_clearly():
    compiled = torch.compile(lambda x: x + 1, backend="tpu")
    x = torch.randn(3).to("tpu")
    compiled(x)
    with torch_tpu.abstract():
        y = torch.empty(3, device="tpu")
        with pytest.raises(Exception, match="cannot run in abstract mode"):
            compiled(y)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="transformers is not installed")
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_hugging_face_tiny_models_train_like_eager(family):
    import transformers

    if family == "gpt2":
        config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=64, n_positions=16)
        make = transformers.GPT2LMHeadModel
    else:
        config = transformers.LlamaConfig(num_hidden_layers=2, num_attention_heads=2, hidden_size=32,
                                          intermediate_size=64, vocab_size=64, max_position_embeddings=16)
        make = transformers.LlamaForCausalLM
    torch.manual_seed(0)
    eager = make(config).to("tpu")
    compiled_model = copy.deepcopy(eager)
    eager.loss_type = compiled_model.loss_type = "ForCausalLM"  # else HF breaks the graph on a logger warning
    tokens = torch.randint(0, 64, (2, 12)).to("tpu")
    compiled = torch.compile(lambda t: compiled_model(t, labels=t).loss, backend="tpu")
    for step in range(2):  # GPT-2 trains with dropout: the compiled masks are eager's under the same seed
        torch.manual_seed(step)
        loss = compiled(tokens)
        torch.manual_seed(step)
        want = eager(tokens, labels=tokens).loss
        loss.backward()
        want.backward()
        assert_close(loss.cpu(), want.cpu(), rtol=1e-6, atol=0)
        for got, expected in zip(compiled_model.parameters(), eager.parameters(), strict=True):
            assert_close(got.grad.cpu(), expected.grad.cpu(), rtol=1e-5, atol=1e-6)
            got.grad = expected.grad = None


def test_a_multi_result_kernel_writes_its_results_into_planned_homes():
    """Layer norm's results: the normalised rows and the means read by later kernels only (planned buffers; the
    means fetched by two getitem nodes, as a graph may hold them), the inverse std read by nothing (no home);
    values equal eager's, and HBM holds only the program's output afterwards."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from torch_tpu.compile.codegen import generate
    from torch_tpu.compile.runtime import Program

    aten = torch.ops.aten

    def graph(x, w, b):
        normalized, mean, _ = aten.native_layer_norm.default(x, [8], w, b, 1e-5)
        return (aten.mul.Tensor(aten.add.Tensor(normalized, mean), mean),)

    inputs = [torch.randn(6, 8, device="tpu"), torch.randn(8, device="tpu"), torch.randn(8, device="tpu")]
    gm = make_fx(graph, tracing_mode="fake")(*inputs)
    mean_node = next(n for n in gm.graph.nodes if n.target is operator.getitem and n.args[1] == 1)
    mul = next(n for n in gm.graph.nodes if n.target is aten.mul.Tensor)
    with gm.graph.inserting_before(mul):
        again = gm.graph.call_function(operator.getitem, (mean_node.args[0], 1))
    again.meta["val"] = mean_node.meta["val"]
    mul.replace_input_with(mean_node, again)
    generated = generate(gm.graph, "norm_then_add")
    program = Program("norm_then_add", generated)
    homes = {n.name: generated.homes[n.name] for n in gm.graph.nodes if n.target is operator.getitem}
    assert sorted(homes.values()) == ["buffer", "buffer", "view", "view"]  # the second fetch views the first
    assert "new_output" in program.source and program.source.count("new_buffer") == 2
    before = torch.tpu.memory_allocated()
    (got,) = program(list(inputs))
    assert torch.tpu.memory_allocated() - before == got.untyped_storage().nbytes()
    normalized, mean, _ = aten.native_layer_norm.default(inputs[0], [8], *inputs[1:], 1e-5)
    assert_identical(got, (normalized + mean) * mean)


# --- compiled user programs (docs/compile.md, "Compiled user programs") ----------------------------------


def _eager_and_compiled_gradients(function, *inputs):
    """``function``'s result and its inputs' gradients, eagerly and compiled (the sum of the result times a fixed
    cotangent is the loss)."""
    leaves = [[x.detach().clone().requires_grad_() for x in inputs] for _ in range(2)]
    runs = []
    for run, xs in zip((function, torch.compile(function, backend="tpu")), leaves):
        result = run(*xs)
        (result * torch.linspace(-1, 1, result.numel(), device="tpu").view(result.shape)).sum().backward()
        runs.append((result.detach(), [x.grad for x in xs]))
    return runs


def test_layer_norm_over_a_permuted_input_writes_its_input_gradient_into_a_strided_home():
    """ConvNeXt's channels-last layer norm (`permute -> layer_norm -> permute`): the traced graph lays the input
    gradient out as the permuted input, and the kernel wrote through a reshape of that home, a copy: the
    gradient was lost (the stem's gradient wrong by its whole size) when a later node read it (the stem's
    convolution backward). The home is now contiguous, as eager's input gradient is, so the convolution's
    backward sums it in eager's order."""
    def convnext_stem(x, stem, stem_bias, weight, pointwise):
        normalized = F.layer_norm(F.conv2d(x, stem, stem_bias).permute(0, 2, 3, 1), (4,), weight).permute(0, 3, 1, 2)
        return F.conv2d(normalized, pointwise)

    torch.manual_seed(0)
    inputs = (torch.randn(*shape, device="tpu") for shape in ((2, 3, 4, 4), (4, 3, 1, 1), (4,), (4,), (4, 4, 1, 1)))
    (eager, eager_grads), (compiled, compiled_grads) = _eager_and_compiled_gradients(convnext_stem, *inputs)
    assert_identical(compiled, eager)
    for got, want in zip(compiled_grads, eager_grads, strict=True):  # the home contiguous as eager's: same sums
        assert_identical(got, want)


@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_activation_checkpointing_replays_the_tpu_generator_in_the_recomputation(dropout_p):
    """torch.utils.checkpoint in a compiled function: AOTAutograd wraps the random ops the backward recomputes
    (fused attention, dropout) in run_and_save_rng_state / run_with_rng_state, which torch implements for
    cpu/cuda/hpu/xpu only ("Backend not supported for tpu"). On tpu they save and replay the tpu generator's
    state: the recomputed dropout masks are the forward's, results and gradients eager's, and the generator
    is left where eager leaves it."""
    from torch.utils.checkpoint import checkpoint

    def attention_block(weight, x):
        q = (x @ weight).view(2, 2, 3, 4)
        return F.dropout(F.scaled_dot_product_attention(q, q, q, dropout_p=dropout_p, is_causal=True), dropout_p)

    def loss(weight, x):
        return checkpoint(attention_block, weight, x, use_reentrant=False).square().sum()

    x = torch.randn(2, 3, 8, device="tpu")
    weight = torch.randn(8, 8, device="tpu")
    weights = [weight.clone().requires_grad_() for _ in range(2)]
    results, states = [], []
    for run, weight in zip((loss, torch.compile(loss, backend="tpu")), weights):
        torch.manual_seed(1)
        value = run(weight, x)
        value.backward()
        results.append((value.detach(), weight.grad))
        states.append(torch.tpu.get_rng_state())
    (eager, eager_grad), (compiled, compiled_grad) = results
    assert_identical(compiled, eager)
    assert_identical(compiled_grad, eager_grad)
    assert torch.equal(states[0], states[1])


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_batch_norm_training_step_equals_eager_bit_for_bit(memory_format):
    """A batch norm in training mode: output, running statistics (updated in place) and every gradient take
    eager's bits. Its backward was decomposed into sums in another order than eager's kernel (input gradients
    1e-7 apart, a MobileNet's norm weights' gradients 6e-6); it runs its eager kernel now."""
    torch.manual_seed(0)
    eager = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.Hardswish())
    eager = eager.to("tpu").to(memory_format=memory_format)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="tpu")
    for step in range(2):
        x = torch.randn(4, 4, 6, 6, device="tpu").contiguous(memory_format=memory_format)
        cotangent = torch.randn(4, 8, 6, 6, device="tpu")
        inputs = [x.clone().requires_grad_() for _ in range(2)]
        results = [model(x_) for model, x_ in zip((eager, compiled), inputs)]
        for result in results:
            (result * cotangent).sum().backward()
        assert_identical(results[1].detach(), results[0].detach())
        assert_identical(inputs[1].grad, inputs[0].grad)
        for got, want in zip((*compiled_model.parameters(), *compiled_model.buffers()),
                             (*eager.parameters(), *eager.buffers()), strict=True):
            assert_identical(got.grad if got.grad is not None else got, want.grad if want.grad is not None else want)
