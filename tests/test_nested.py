"""Jagged nested tensors (``layout=torch.jagged``) on tpu against the same ops on CPU."""

import pytest
import torch
import torch.nn.functional as F

from differential import compare, to_tpu

LENGTHS = (2, 5, 1, 3)


def jagged(rows, device="cpu", requires_grad=False):
    nested = torch.nested.nested_tensor([r.to(device) for r in rows], layout=torch.jagged)
    return nested.requires_grad_(requires_grad)


def sequences(width=4):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(n, width, generator=generator) for n in LENGTHS]


@pytest.mark.parametrize("program", [
    lambda nt: nt.to_padded_tensor(-1.0),
    lambda nt: (nt.sin() * 2 + 1).to_padded_tensor(0.0),
    lambda nt: F.softmax(nt, dim=-1).to_padded_tensor(0.0),
    lambda nt: F.softmax(nt, dim=1).to_padded_tensor(0.0),  # over the ragged dim: pads, then unpads
    lambda nt: F.layer_norm(nt, (4,)).to_padded_tensor(0.0),
    lambda nt: nt.sum(dim=1),
    lambda nt: torch.stack(nt.unbind()[1:2]),
], ids=["pad", "pointwise", "softmax", "softmax_ragged", "layer_norm", "sum_ragged", "unbind"])
def test_jagged_ops_match_cpu(program):
    rows = sequences()
    compare(program(jagged(rows, "tpu")), program(jagged(rows)), atol=1e-6, rtol=1e-5)


def test_padding_shorter_than_a_sequence_cuts_it_as_cpu_does():
    rows = sequences()
    values, offsets = jagged(rows).values(), jagged(rows).offsets()
    op = torch.ops.aten._jagged_to_padded_dense_forward
    compare(op(*to_tpu((values, [offsets])), [3], 7.0), op(values, [offsets], [3], 7.0))


def test_unpadding_checks_the_total_length_as_cpu_does():
    dense, offsets = torch.zeros(2, 3, 1, device="tpu"), torch.tensor([0, 1, 3], device="tpu")
    with pytest.raises(RuntimeError, match="final offset should match total_L"):
        torch.ops.aten._padded_dense_to_jagged_forward(dense, [offsets], 4)


def test_gradients_flow_through_padding_and_a_linear_layer():
    rows, weight = sequences(), torch.randn(3, 4)
    grads = []
    for device in ("cpu", "tpu"):
        values = torch.cat(rows).to(device).requires_grad_()
        w = weight.to(device, copy=True).requires_grad_()
        offsets = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0)]).to(device)
        nested = torch.nested.nested_tensor_from_jagged(values, offsets)
        F.linear(nested, w).to_padded_tensor(0.0).square().sum().backward()
        grads.append((values.grad, w.grad))
    compare(grads[1], grads[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("reduction", [torch.max, torch.min], ids=["max", "min"])
def test_a_backward_that_needs_zeros_of_the_ragged_size_refuses_as_cpu_does(reduction):
    """max/min over the ragged dim back-propagate into zeros of the input's symbolic size, which CPU's eager
    factories refuse (a RuntimeError naming the symbolic size), not a ValueError from comparing it."""
    for device in ("cpu", "tpu"):
        nested = jagged(sequences(), device, requires_grad=True)
        with pytest.raises(RuntimeError, match="SymIntArrayRef expected to contain only concrete integers"):
            torch.autograd.grad(reduction(nested, dim=1).values.sum(), nested)
