"""``loss.backward()`` inside the compiled function (``torch._dynamo.config.trace_autograd_ops``): forward,
backward and the gradients' accumulation are one program, equal to tpu eager bit for bit."""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch_tpu
from torch._dynamo.utils import counters
from torch.fx.experimental.proxy_tensor import make_fx

from torch_tpu.compile.pipeline import copies_into_fresh_tensors_as_casts, skip_copies_of_values_read_once

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from models import GPT, MLP, cross_entropy  # noqa: E402

aten = torch.ops.aten


@pytest.fixture
def traced_backward(fresh_dynamo):
    # Dynamo's own patcher: its config attributes are not plain module attributes, which newer pytest's
    # monkeypatch refuses
    with torch._dynamo.config.patch(trace_autograd_ops=True):
        counters.clear()
        yield


def _mlp():
    return MLP(12, 32, 5), (torch.randn(16, 12), torch.randint(0, 5, (16,)))


def _gpt():
    tokens = torch.randint(0, 32, (2, 9))
    return GPT(vocabulary=32, context=8, width=16, heads=2, layers=1), (tokens[:, :-1], tokens[:, 1:])


def _loss_of(model):
    if isinstance(model, GPT):
        return model
    return lambda x, y: cross_entropy(model(x), y)


@pytest.mark.parametrize("make", [_mlp, pytest.param(_gpt, marks=pytest.mark.slow)], ids=["mlp", "gpt"])
def test_one_program_equals_eager_and_accumulates_as_eager(traced_backward, make):
    torch.manual_seed(0)
    eager, batch = make()
    torch.manual_seed(0)
    compiled, _ = make()
    eager, compiled = eager.to("tpu"), compiled.to("tpu")
    x, y = (t.to("tpu") for t in batch)
    eager_loss, loss_of = _loss_of(eager), _loss_of(compiled)

    @torch.compile(backend="tpu", fullgraph=True)
    def loss_and_gradients(x, y):
        loss = loss_of(x, y)
        loss.backward()
        return loss.detach()

    for step in range(3):  # the second and third calls add to the gradients, in place, as eager does
        if step == 2:
            graphs = counters["stats"]["unique_graphs"]
        expected = eager_loss(x, y)
        expected.backward()
        assert torch.equal(loss_and_gradients(x, y).cpu(), expected.detach().cpu())
        for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
            assert torch.equal(p.grad.cpu(), q.grad.cpu()), name
    assert not counters["graph_break"]
    programs = torch_tpu.compile.last_programs()
    assert counters["stats"]["unique_graphs"] == graphs  # adding to existing gradients compiled once
    assert {p.name.split("_")[0] for p in programs} == {"inference"}  # no separate backward program
    assert not any(p.eager_nodes for p in programs)


def test_new_gradients_take_exactly_their_bytes_and_no_allocation_is_left_behind(traced_backward):
    torch.manual_seed(0)
    model, batch = _mlp()
    model = model.to("tpu")
    x, y = (t.to("tpu") for t in batch)

    @torch.compile(backend="tpu")
    def loss_and_gradients(x, y):
        loss = cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    before = torch.tpu.memory_allocated()
    loss = loss_and_gradients(x, y)
    gradients = sum(p.grad.untyped_storage().nbytes() for p in model.parameters())
    assert gradients == sum(p.numel() * p.element_size() for p in model.parameters())
    assert torch.tpu.memory_allocated() - before == gradients + loss.untyped_storage().nbytes()


def _copied_into_empty_like(parameter, gradient):
    fresh = torch.empty_like(parameter)
    fresh.copy_(gradient)
    return fresh


def _functional_graph(parameter, gradient):
    function = torch.func.functionalize(_copied_into_empty_like, remove="mutations_and_views")
    return make_fx(function, tracing_mode="fake")(parameter, gradient).graph


def test_a_contiguous_fresh_copy_becomes_one_cast_and_its_allocation_goes():
    graph = _functional_graph(torch.randn(3, 4), torch.randn(3, 4, dtype=torch.float64))
    copies_into_fresh_tensors_as_casts(graph)
    targets = [n.target for n in graph.nodes if n.op == "call_function"]
    assert targets == [aten._to_copy.default]
    cast = next(n for n in graph.nodes if n.op == "call_function")
    assert cast.kwargs == {"dtype": torch.float32, "memory_format": torch.contiguous_format}
    assert cast.meta["val"].dtype == torch.float32 and cast.meta["val"].is_contiguous()


def test_a_fresh_copy_with_the_parameters_transposed_layout_stays_a_copy():
    graph = _functional_graph(torch.randn(4, 3).t(), torch.randn(3, 4))
    copies_into_fresh_tensors_as_casts(graph)
    assert aten.copy.default in [n.target for n in graph.nodes]


def _gradient_of_product(parameter, a, b):
    product = torch.mm(a, b).t().t()  # a weight gradient: transposed twice
    fresh = torch.empty_like(parameter)
    fresh.copy_(product)
    return fresh


def _gradient_of_product_read_twice(parameter, a, b):
    product = torch.mm(a, b)
    fresh = torch.empty_like(parameter)
    fresh.copy_(product)
    return fresh, product.sum()


def _passes_applied(function, *inputs):
    """The graph's ops after the passes, on tpu values (a host value is not the program's to lay out)."""
    function = torch.func.functionalize(function, remove="mutations")  # views stay views, as AOTAutograd leaves them
    graph = make_fx(function, tracing_mode="fake")(*(i.to("tpu") for i in inputs)).graph
    copies_into_fresh_tensors_as_casts(graph)
    skip_copies_of_values_read_once(graph)
    return [n.target for n in graph.nodes if n.op == "call_function"]


def test_a_copy_of_a_new_value_read_by_it_alone_is_that_value():
    targets = _passes_applied(_gradient_of_product, torch.randn(3, 4), torch.randn(3, 5), torch.randn(5, 4))
    assert aten._to_copy.default not in targets and aten.mm.default in targets


def test_copies_of_inputs_and_of_values_read_twice_stay():
    assert _passes_applied(_copied_into_empty_like, torch.randn(3, 4), torch.randn(3, 4)) == [aten._to_copy.default]
    targets = _passes_applied(_gradient_of_product_read_twice, torch.randn(3, 4), torch.randn(3, 5), torch.randn(5, 4))
    assert aten._to_copy.default in targets


def test_a_gradient_an_eager_kernel_lays_out_keeps_its_copy_into_the_parameters_layout(traced_backward):
    """A convolution's weight gradient is channels-last for a channels-last input (the kernel's layout, as on
    CPU) where its meta function says contiguous: the program must still copy it into the parameter's layout,
    as eager's gradient accumulation does."""
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(4, 3, 3, 3, device="tpu"))
    x = torch.randn(2, 3, 5, 5, device="tpu").contiguous(memory_format=torch.channels_last)

    def loss_and_gradients(x):
        loss = torch.nn.functional.conv2d(x, weight).sum()
        loss.backward()
        return loss.detach()

    torch.compile(loss_and_gradients, backend="tpu")(x)
    compiled = weight.grad
    weight.grad = None
    loss_and_gradients(x)
    assert compiled.stride() == weight.grad.stride() == weight.stride()
    assert torch.equal(compiled.cpu(), weight.grad.cpu())


class _NormAttendClassify(torch.nn.Module):
    """Layer norm, fused attention and cross-entropy: every multi-result kernel a GPT-style step has."""

    def __init__(self):
        super().__init__()
        self.norm, self.head = torch.nn.LayerNorm(8), torch.nn.Linear(8, 5)

    def forward(self, x, y):
        h = self.norm(x).view(2, 6, 2, 4).transpose(1, 2)
        h = torch.nn.functional.scaled_dot_product_attention(h, h, h, is_causal=True)
        return cross_entropy(self.head(h.transpose(1, 2).reshape(12, 8)), y)


def test_results_that_never_leave_the_program_are_no_tensors(traced_backward, monkeypatch):
    """Layer norm's statistics, attention's output and log-sum-exp, the NLL loss's total weight and the backward
    kernels' input gradients live in the program's planned HBM buffers: the only new tensors are its outputs
    (the loss and one gradient per parameter), and results and HBM equal eager's."""
    torch.manual_seed(0)
    eager = _NormAttendClassify().to("tpu")
    compiled = _NormAttendClassify().to("tpu")
    compiled.load_state_dict(eager.state_dict())
    x, y = torch.randn(2, 6, 8, device="tpu"), torch.randint(0, 5, (12,), device="tpu")

    @torch.compile(backend="tpu", fullgraph=True)
    def loss_and_gradients(x, y):
        loss = compiled(x, y)
        loss.backward()
        return loss.detach()

    loss_and_gradients(x, y)  # compiles
    compiled.zero_grad()
    made = []
    real_new = torch_tpu._tensor._new
    monkeypatch.setattr(torch_tpu._tensor, "_new", lambda *a: made.append(math.prod(a[0])) or real_new(*a))
    before = torch.tpu.memory_allocated()
    loss = loss_and_gradients(x, y)
    monkeypatch.undo()
    parameters = list(compiled.parameters())
    assert sorted(made) == sorted([1] + [p.numel() for p in parameters])  # elements of each new tensor
    assert torch.tpu.memory_allocated() - before == sum(p.grad.untyped_storage().nbytes() for p in parameters) + \
        loss.untyped_storage().nbytes()
    expected = eager(x, y)
    expected.backward()
    assert torch.equal(loss.cpu(), expected.detach().cpu())
    for (name, p), q in zip(eager.named_parameters(), parameters):
        assert torch.equal(p.grad.cpu(), q.grad.cpu()), name
    (program,) = torch_tpu.compile.last_programs()
    assert not program.eager_nodes
    assert "arrays_of(" not in program.source
