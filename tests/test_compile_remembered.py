"""The host values a compiled forward keeps for its backward (torch_tpu/compile/remembered.py): GELU's
Gaussian CDF. The backward uses it only for an operand with the forward's bits; results equal tpu eager
bit for bit whether it did or recomputed it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from differential import assert_identical
from torch_tpu.compile import remembered

pytestmark = [pytest.mark.filterwarnings("ignore:Profiler record function"), pytest.mark.usefixtures("fresh_dynamo")]


def test_same_bits_tells_signed_zeros_and_nan_payloads_apart():
    values = np.array([0.0, 1.5, np.nan, -2.0], np.float32)
    assert remembered.same_bits(values, values.copy())
    signed = values.copy()
    signed[0] = -0.0
    assert not remembered.same_bits(values, signed)
    payload = values.copy()
    payload.view(np.uint32)[2] += 1  # still a NaN, another payload
    assert np.isnan(payload[2]) and not remembered.same_bits(values, payload)
    assert not remembered.same_bits(values, values.reshape(2, 2))
    assert not remembered.same_bits(values, values.astype(np.float64))


def test_a_slot_is_taken_once_and_only_for_the_same_operand():
    shared = remembered.Remembered()
    operand = np.linspace(-3, 3, 12, dtype=np.float32)
    shared.keep("x", operand, "cdf")
    operand[0] = 7  # the kept copy is the forward's operand, not a view of memory written since
    assert shared.take("x", operand) is None
    shared.keep("x", operand, "cdf")
    assert shared.take("x", operand.copy()) == "cdf"
    assert shared.take("x", operand) is None  # taken: a second backward computes it again


class _GeluBlock(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.up, self.down = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


@pytest.fixture
def taken(monkeypatch):
    """Whether each backward GELU found the forward's CDF, in call order."""
    found = []
    take = remembered.Remembered.take

    def spying_take(self, slot, operand):
        value = take(self, slot, operand)
        found.append(value is not None)
        return value

    monkeypatch.setattr(remembered.Remembered, "take", spying_take)
    return found


def _gradients(model, loss_of, *inputs):
    model.zero_grad(set_to_none=True)
    loss_of(*inputs).backward()
    return [p.grad for p in model.parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_gelu_backward_takes_the_forwards_cdf_and_equals_eager(taken, dtype):
    torch.manual_seed(0)
    model = _GeluBlock(16).to("tpu", dtype)
    x = torch.randn(8, 16, dtype=dtype).mul(2).to("tpu")

    def loss_of(x):
        return model(x).square().sum()

    compiled = torch.compile(loss_of, backend="tpu")
    for _ in range(2):
        expected = _gradients(model, loss_of, x)
        actual = _gradients(model, compiled, x)
        for a, e in zip(actual, expected):
            assert_identical(a, e)
    assert taken == [True, True]


def test_two_forwards_before_one_backward_recompute_the_cdf_they_lost(taken):
    torch.manual_seed(1)
    model = _GeluBlock(8).to("tpu")
    first, second = torch.randn(4, 8).to("tpu"), torch.randn(4, 8).to("tpu")

    def loss_of(x):
        return model(x).sum()

    compiled = torch.compile(loss_of, backend="tpu")
    expected = _gradients(model, lambda a, b: loss_of(a) + loss_of(b) * 3, first, second)
    actual = _gradients(model, lambda a, b: compiled(a) + compiled(b) * 3, first, second)
    for a, e in zip(actual, expected):
        assert_identical(a, e)
    assert sorted(taken) == [False, True]  # the second forward's CDF replaced the first's


@torch._dynamo.config.patch(trace_autograd_ops=True)
def test_a_traced_backward_takes_the_cdf_its_own_program_computed(taken):
    torch.manual_seed(2)
    model = _GeluBlock(8).to("tpu")
    x = torch.randn(4, 8).to("tpu")

    def loss_of(x):
        return model(x).sum()

    def loss_and_gradients(x):
        loss = loss_of(x)
        loss.backward()
        return loss.detach()

    expected = _gradients(model, loss_of, x)
    model.zero_grad(set_to_none=True)
    torch.compile(loss_and_gradients, backend="tpu")(x)
    for p, e in zip(model.parameters(), expected):
        assert_identical(p.grad, e)
    assert taken == [True]


def test_an_inference_graph_without_gelus_backward_keeps_no_cdf(monkeypatch):
    kept = []
    monkeypatch.setattr(remembered.Remembered, "keep", lambda self, *args: kept.append(args))
    model = _GeluBlock(8).to("tpu")
    with torch.no_grad():
        torch.compile(model, backend="tpu")(torch.randn(4, 8).to("tpu"))
    assert kept == []


@torch._dynamo.config.patch(trace_autograd_ops=True)
def test_a_traced_backward_copies_only_an_operand_its_program_did_not_compute(monkeypatch, taken):
    """A GELU of a value the program computed keeps no copy of it (nothing in the program writes it); a GELU of
    one of the program's inputs keeps its copy and checks it."""
    copied = []
    keep = remembered.Remembered.keep

    def spying_keep(self, slot, operand, value):
        copied.append(operand is not None)
        keep(self, slot, operand, value)

    monkeypatch.setattr(remembered.Remembered, "keep", spying_keep)
    torch.manual_seed(3)
    model = _GeluBlock(8).to("tpu")
    x = torch.randn(4, 8).to("tpu")
    leaf = torch.randn(4, 8).to("tpu").requires_grad_()

    def loss_and_gradients(x):
        loss = model(x).sum() + F.gelu(leaf).square().sum()
        loss.backward()
        return loss.detach()

    expected = _gradients(model, lambda x: model(x).sum() + F.gelu(leaf).square().sum(), x) + [leaf.grad.clone()]
    model.zero_grad(set_to_none=True)
    leaf.grad = None
    torch.compile(loss_and_gradients, backend="tpu")(x)
    for actual, e in zip([p.grad for p in model.parameters()] + [leaf.grad], expected):
        assert_identical(actual, e)
    assert sorted(copied) == [False, True] and taken == [True, True]


def test_a_gelu_backward_before_its_gelu_never_takes_the_previous_calls_cdf():
    """In a program holding both, a gelu_backward that comes before the GELU of the same value in the graph would take
    the CDF the previous call kept: such a slot keeps its copy and its bit check (gradients 0.9 off from the second
    call on, silently, before)."""
    def f(x):
        y = x * 2
        return torch.ops.aten.gelu_backward(torch.ones_like(y), y), F.gelu(y)

    compiled = torch.compile(f, backend="tpu")
    with torch.no_grad():
        for seed in (1, 2, 3):
            torch.manual_seed(seed)
            x = torch.randn(16).to("tpu")
            for actual, expected in zip(compiled(x), f(x)):
                assert_identical(actual, expected)
