"""Every model of the zoo (examples/zoo.py) trains on tpu as on CPU: same weights, same batches, three SGD
steps with momentum; the losses and the final weights agree within float32 tolerance."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from zoo import ZOO

STEPS = 3


def train(model, batch, device):
    model = model.to(device)
    inputs, targets = (t.to(device) for t in batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses).cpu(), {name: p.detach().cpu() for name, p in model.named_parameters()}


@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
@pytest.mark.parametrize("name", ZOO)
def test_model_trains_on_tpu_as_on_cpu(name):
    make_model, make_batch = ZOO[name]
    torch.manual_seed(0)
    model = make_model()
    batch = make_batch(torch.Generator().manual_seed(1))
    cpu_losses, cpu_weights = train(copy.deepcopy(model), batch, "cpu")
    tpu_losses, tpu_weights = train(copy.deepcopy(model), batch, "tpu")
    assert cpu_losses[-1] < cpu_losses[0]  # the steps train: the comparison is not of a model standing still
    assert_close(tpu_losses, cpu_losses, atol=1e-4, rtol=1e-4)
    assert_close(tpu_weights, cpu_weights, atol=1e-4, rtol=1e-4)
