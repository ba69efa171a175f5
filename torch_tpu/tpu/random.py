"""The chip's counter-based generator behind torch.manual_seed and fork_rng.

``torch.manual_seed`` seeds every device, and most programs call it before they touch one.
As torch.cuda does, a seed set before the chip exists waits and is applied when it is
created, so seeding alone does not initialise the device (nor make a later fork a bad one).
"""

import random

import torch

from .. import _C

_queued_seed = None


def _rng():
    return _C.current_chip().rng


def _apply_queued_seed(chip):
    if _queued_seed is not None:
        chip.rng.manual_seed(_queued_seed)


_C.chip.when_created(_apply_queued_seed)


def manual_seed(seed):
    global _queued_seed
    if _C.chip.created():
        _rng().manual_seed(int(seed))
    else:
        _queued_seed = int(seed)


manual_seed_all = manual_seed


def seed():
    default_generators[0].seed()


seed_all = seed


def initial_seed():
    return _rng().initial_seed


# The state goes in and out of sight of torch function and dispatch modes, as CUDA's and CPU's generators give and
# take it in C++: torch.testing's freeze_rng_state restores it inside a strict TorchRefsMode, which refuses detach,
# and LocalTensorMode saves and restores each simulated rank's state while DTensor propagates shardings under a
# FakeTensorMode, which would make the saved state a fake tensor and refuses a real one's detach.
# (torch's own switches, not _cost's alias: `import torch` loads this module and must not load the kernels.)


def get_rng_state(device="tpu"):
    with torch._C.DisableTorchFunction(), torch._C._DisableTorchDispatch():
        return torch.from_numpy(_rng().get_state())


def set_rng_state(new_state, device="tpu"):
    with torch._C.DisableTorchFunction(), torch._C._DisableTorchDispatch():
        state = new_state.detach().cpu().numpy()
    _rng().set_state(state)


def get_rng_state_all():
    return [get_rng_state()]


def set_rng_state_all(new_states):
    set_rng_state(new_states[0])


class TPUGenerator:
    """The chip's generator as ``torch.tpu.default_generators[0]``, with torch.Generator's methods, for code that
    seeds or saves the device's default generator through that tuple. (It is not a ``torch.Generator``, which
    PyTorch builds in C++ only, so it cannot be passed as ``generator=``; see README's "Not supported".)"""

    @property
    def device(self):
        return torch.device("tpu", 0)

    def manual_seed(self, seed):
        manual_seed(seed)
        return self

    def graphsafe_get_state(self, *args):
        """Graph-safe RNG states belong to CUDA graphs' capture, which the chip does not have: PyTorch's graph-safe
        RNG operators get the refusal they give a device without ``default_generators``."""
        raise RuntimeError("GraphSafe RNG operations not supported for device 'tpu' (no CUDA graph capture)")

    graphsafe_set_state = graphsafe_get_state

    def seed(self):
        chosen = random.getrandbits(63)
        manual_seed(chosen)
        return chosen

    def initial_seed(self):
        return initial_seed()

    def get_state(self):
        return get_rng_state()

    def set_state(self, new_state):
        set_rng_state(new_state)
        return self

    def __repr__(self):
        return "<torch.tpu default generator (the chip's counter-based RNG)>"


default_generators = (TPUGenerator(),)
