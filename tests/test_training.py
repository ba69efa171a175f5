"""Acceptance: small models train on tpu step for step like the same models on CPU (fp32, 20 steps).

Both copies start from the same weights and see the same batches; the loss at every step must agree
within 1e-4 relative. Covers SGD with momentum, Adam and AdamW (foreach off and on), clip_grad_norm_
(foreach off and on) and LR schedulers.
"""

import copy
import functools

import pytest
import torch
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
    """Module._apply would untie them (PrivateUse1 is not a "compatible shallow-copy type"); torch_tpu re-ties."""
    model = GPT()
    shared = model.head.weight
    assert shared is model.tokens.weight
    model = model.to("tpu")
    assert model.head.weight is model.tokens.weight and model.head.weight.device.type == "tpu"
    assert len(list(model.parameters())) == len(list(GPT().parameters()))
    model = model.to(torch.float64)
    assert model.head.weight is model.tokens.weight and model.head.weight.dtype == torch.float64
