"""Worker (run under torchrun): full state dicts loaded from rank 0 into FSDP2, and an asynchronous checkpoint.

    full_state_dict.py DIR

- A full (unsharded) model and optimizer state dict held by rank 0 alone is loaded into an FSDP2 model with
  ``broadcast_from_rank0=True``; the model's full state dicts then equal the reference's on every rank. Likewise
  a CPU model's state dict (its tensors go over gloo, on the same "ici" group).
- ``torch.distributed.checkpoint.async_save`` (which asks the group for a CPU backend) of the sharded state, then
  ``dcp.load`` into a model that started elsewhere: every tensor equal.

Both read the devices the group carries (``ProcessGroup._device_types``). Prints "full state dict ok".
"""

import copy
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict, get_state_dict, set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard

import torch_tpu  # noqa: F401

FULL = StateDictOptions(full_state_dict=True)
FROM_RANK_0 = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)


def trained(seed, shard):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).to("tpu")
    if shard:
        for layer in (model[0], model[2]):
            fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.ones(2, 8, device="tpu")).sum().backward()
    optimizer.step()
    optimizer.zero_grad()
    return model, optimizer


def assert_equal(actual, expected, what):
    """Nested state dicts equal: tensors bit for bit (on the CPU, same dtype and shape), everything else by ==."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), (what, actual, expected)
        for key in expected:
            assert_equal(actual[key], expected[key], f"{what}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), (what, actual, expected)
        for index, (item, expected_item) in enumerate(zip(actual, expected)):
            assert_equal(item, expected_item, f"{what}[{index}]")
    elif isinstance(expected, torch.Tensor):
        actual, expected = actual.cpu(), expected.cpu()
        assert actual.dtype == expected.dtype and torch.equal(actual, expected), f"{what}: {actual} != {expected}"
    else:
        assert actual == expected, f"{what}: {actual!r} != {expected!r}"


def check_broadcast_from_rank_0():
    reference, reference_optimizer = trained(seed=0, shard=False)
    model_state, optimizer_state = get_state_dict(reference, reference_optimizer)
    model, optimizer = trained(seed=1, shard=True)
    held = rank == 0  # loading fills the given dicts in place: hand over copies
    set_model_state_dict(model, copy.deepcopy(model_state) if held else {}, options=FROM_RANK_0)
    set_optimizer_state_dict(model, optimizer, copy.deepcopy(optimizer_state) if held else {}, options=FROM_RANK_0)
    assert_equal(get_model_state_dict(model, options=FULL), model_state, "model, loaded from rank 0")
    assert_equal(get_optimizer_state_dict(model, optimizer, options=FULL), optimizer_state,
                 "optimizer, loaded from rank 0")

    torch.manual_seed(2)
    cpu_model = nn.Linear(2, 2)
    expected = {key: value.detach().clone() for key, value in cpu_model.state_dict().items()}
    cpu_model._apply(torch.zeros_like)
    set_model_state_dict(cpu_model, copy.deepcopy(expected) if held else {}, options=FROM_RANK_0)
    assert_equal(cpu_model.state_dict(), expected, "a CPU model, loaded from rank 0")


def check_async_checkpoint(directory):
    model, optimizer = trained(seed=3, shard=True)
    state = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.async_save(state, checkpoint_id=directory).result()
    expected = {"model": get_model_state_dict(model, options=FULL),
                "optimizer": get_optimizer_state_dict(model, optimizer, options=FULL)}
    elsewhere, elsewhere_optimizer = trained(seed=4, shard=True)
    state = {"model": get_model_state_dict(elsewhere), "optimizer": get_optimizer_state_dict(elsewhere, elsewhere_optimizer)}
    dcp.load(state, checkpoint_id=directory)
    set_model_state_dict(elsewhere, state["model"])
    set_optimizer_state_dict(elsewhere, elsewhere_optimizer, state["optimizer"])
    assert_equal({"model": get_model_state_dict(elsewhere, options=FULL),
                  "optimizer": get_optimizer_state_dict(elsewhere, elsewhere_optimizer, options=FULL)},
                 expected, "async_save, then load")


dist.init_process_group()
rank = dist.get_rank()
check_broadcast_from_rank_0()
check_async_checkpoint(sys.argv[1])
dist.destroy_process_group()
print(f"rank {rank}: full state dict ok", flush=True)
