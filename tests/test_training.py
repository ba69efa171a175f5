"""Acceptance: small models train on tpu step for step like the same models on CPU (fp32, 20 steps).

Both copies start from the same weights and see the same batches; the loss at every step must agree
within 1e-4 relative. Covers SGD with momentum, Adam and AdamW (foreach off and on), clip_grad_norm_
(foreach off and on) and LR schedulers.
"""

import copy
import functools

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from models import GPT, MLP, SmallCNN, cross_entropy

STEPS = 20


def mlp_batch(generator, batch=8):
    return torch.randn(batch, 12, generator=generator), torch.randint(0, 5, (batch,), generator=generator)


def cnn_batch(generator, batch=4):
    return torch.randn(batch, 3, 8, 8, generator=generator), torch.randint(0, 4, (batch,), generator=generator)


def gpt_batch(generator, batch=4, context=8, vocabulary=32):
    tokens = torch.randint(0, vocabulary, (batch, context + 1), generator=generator)
    return tokens[:, :-1], tokens[:, 1:]

OPTIMIZERS = {
    "sgd_momentum": functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "adam": functools.partial(torch.optim.Adam, lr=3e-3, weight_decay=1e-4),
    "adamw": functools.partial(torch.optim.AdamW, lr=3e-3, weight_decay=0.05, amsgrad=True),
}
SCHEDULERS = {
    "step": functools.partial(torch.optim.lr_scheduler.StepLR, step_size=5, gamma=0.5),
    "cosine": functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=STEPS),
}
MODELS = {
    "mlp": (MLP, mlp_batch),
    "cnn": (SmallCNN, cnn_batch),
    "gpt": (GPT, gpt_batch),
}


def train(model, batches, device, make_optimizer, make_scheduler, foreach, clip):
    model = model.to(device)
    optimizer = make_optimizer(model.parameters(), foreach=foreach)
    scheduler = make_scheduler(optimizer)
    losses = []
    for inputs, targets in batches:
        optimizer.zero_grad()
        loss = cross_entropy(model(inputs.to(device)), targets.to(device))
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5, foreach=foreach)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses, model


def train_both(model_name, optimizer_name, scheduler_name, foreach, clip):
    make_model, make_batch = MODELS[model_name]
    torch.manual_seed(0)
    model = make_model()
    generator = torch.Generator().manual_seed(1)
    batches = [make_batch(generator) for _ in range(2)] * (STEPS // 2)  # a fixed set, so the loss must fall
    arguments = (OPTIMIZERS[optimizer_name], SCHEDULERS[scheduler_name], foreach, clip)
    cpu_losses, cpu_model = train(copy.deepcopy(model), batches, "cpu", *arguments)
    tpu_losses, tpu_model = train(copy.deepcopy(model), batches, "tpu", *arguments)
    return cpu_losses, tpu_losses, cpu_model, tpu_model


CASES = [
    ("mlp", "sgd_momentum", "step", False, False),
    ("mlp", "adam", "cosine", True, True),
    ("mlp", "adamw", "step", False, True),
    ("cnn", "sgd_momentum", "cosine", True, True),
    ("cnn", "adam", "step", False, False),
    ("gpt", "adamw", "cosine", True, True),
    ("gpt", "adam", "step", False, True),
]


@pytest.mark.parametrize("model_name,optimizer_name,scheduler_name,foreach,clip", CASES)
def test_loss_matches_cpu_every_step(model_name, optimizer_name, scheduler_name, foreach, clip):
    cpu_losses, tpu_losses, cpu_model, tpu_model = train_both(
        model_name, optimizer_name, scheduler_name, foreach, clip)
    assert sum(cpu_losses[-2:]) < sum(cpu_losses[:2]), "the CPU reference did not learn: the test proves nothing"
    assert_close(torch.tensor(tpu_losses), torch.tensor(cpu_losses), rtol=1e-4, atol=0)
    for (name, cpu_parameter), tpu_parameter in zip(cpu_model.named_parameters(), tpu_model.parameters()):
        assert tpu_parameter.device.type == "tpu", name
        assert_close(tpu_parameter.detach().cpu(), cpu_parameter.detach(), rtol=1e-3, atol=1e-4, msg=name)


def test_default_optimizer_uses_foreach_on_tpu():
    """With foreach=None, optimizers pick the foreach path for tpu parameters (tpu is a foreach device)."""
    from torch.optim.optimizer import _default_to_fused_or_foreach

    parameters = [torch.zeros(2, device="tpu", requires_grad=True)]
    assert _default_to_fused_or_foreach(parameters, differentiable=False, use_fused=False) == (False, True)


def test_module_to_keeps_tied_weights():
    model = GPT()
    shared = model.head.weight
    assert shared is model.tokens.weight
    model = model.to("tpu")
    assert model.head.weight is model.tokens.weight and model.head.weight.device.type == "tpu"
    assert len(list(model.parameters())) == len(list(GPT().parameters()))
    model = model.to(torch.float64)
    assert model.head.weight is model.tokens.weight and model.head.weight.dtype == torch.float64


def test_module_to_keeps_parameter_objects_so_an_earlier_optimizer_trains_the_model():
    """As CPU->CUDA: Module._apply moves data into the same Parameters (``param.data = tpu_tensor``)."""
    torch.manual_seed(0)
    cpu_model = nn.Linear(4, 3)
    tpu_model = nn.Linear(4, 3)
    tpu_model.load_state_dict(cpu_model.state_dict())
    parameters = list(tpu_model.parameters())
    optimizer = torch.optim.SGD(tpu_model.parameters(), lr=0.5)
    cpu_optimizer = torch.optim.SGD(cpu_model.parameters(), lr=0.5)
    tpu_model.to("tpu")
    assert all(a is b for a, b in zip(tpu_model.parameters(), parameters))
    x = torch.randn(5, 4)
    for model, opt, batch in ((cpu_model, cpu_optimizer, x), (tpu_model, optimizer, x.to("tpu"))):
        model(batch).square().sum().backward()
        opt.step()
    assert_close(tpu_model.weight.detach().cpu(), cpu_model.weight.detach())
    assert not torch.equal(cpu_model.weight.detach(), nn.Linear(4, 3).weight.detach())  # it did move
    tpu_model.cpu()
    assert all(a is b for a, b in zip(tpu_model.parameters(), parameters)) and parameters[0].device.type == "cpu"


def test_cpu_and_tpu_tensors_are_shallow_copy_compatible():
    cpu, tpu = torch.ones(2), torch.zeros(3, device="tpu")
    assert torch._has_compatible_shallow_copy_type(cpu, tpu) and torch._has_compatible_shallow_copy_type(tpu, cpu)
    assert not torch._has_compatible_shallow_copy_type(torch.ones(2, device="meta"), tpu)
    parameter = nn.Parameter(torch.ones(3))
    parameter.data = tpu
    assert parameter.device.type == "tpu" and parameter.is_leaf and isinstance(parameter, nn.Parameter)
    assert torch.equal(parameter.detach().cpu(), torch.zeros(3))


@pytest.mark.filterwarnings("ignore:Using -1 to represent CPU tensor is deprecated")
def test_data_parallel_over_the_one_chip_trains_like_the_bare_model():
    """CUDA scripts wrap models in nn.DataParallel; over device_ids=[0] it scatters the batch to the chip and
    returns the module's output. The gradient of a host input comes back to the host, as on CUDA."""
    torch.manual_seed(0)
    reference = MLP()
    wrapped = nn.DataParallel(copy.deepcopy(reference).to("tpu"))
    assert wrapped.device_ids == [0]
    inputs = torch.randn(6, 12)
    host_input, reference_input = inputs.clone().requires_grad_(), inputs.clone().requires_grad_()
    output = wrapped(host_input)
    assert output.device == torch.device("tpu", 0)
    output.square().sum().backward()
    reference(reference_input).square().sum().backward()
    assert host_input.grad.device.type == "cpu"
    assert_close(host_input.grad, reference_input.grad, atol=1e-5, rtol=1e-4)
    for tpu_parameter, cpu_parameter in zip(wrapped.module.parameters(), reference.parameters()):
        assert_close(tpu_parameter.grad.cpu(), cpu_parameter.grad, atol=1e-5, rtol=1e-4)
    on_chip = torch.randn(4, 12, device="tpu")
    assert_close(wrapped(on_chip), wrapped.module(on_chip))
