"""The chip's counter-based generator behind torch.manual_seed and fork_rng."""

import random

import torch

from .. import _C


def _rng():
    return _C.current_chip().rng


def manual_seed(seed):
    _rng().manual_seed(int(seed))


manual_seed_all = manual_seed


def seed():
    manual_seed(random.getrandbits(63))


seed_all = seed


def initial_seed():
    return _rng().initial_seed


def get_rng_state(device="tpu"):
    return torch.from_numpy(_rng().get_state())


def set_rng_state(new_state, device="tpu"):
    _rng().set_state(new_state.detach().cpu().numpy())


def get_rng_state_all():
    return [get_rng_state()]


def set_rng_state_all(new_states):
    set_rng_state(new_states[0])
