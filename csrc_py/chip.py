"""One emulated chip: its spec, its HBM, its RNG, its clock and its event log.

A process drives exactly one chip (multi-chip runs are one process per chip),
so the chip is created once, lazily, from the environment.

Like a driver context, the chip belongs to the process that created it. A child forked after
that cannot use it (its HBM is a copy-on-write snapshot and the parent's worker threads are
gone): in the child the chip is *lost*, ``current_chip()`` raises ``ChipLostInFork`` and kernels
launched on the inherited chip refuse to run. A child forked before the chip existed creates
its own, as a spawned process does.
"""

import os

from . import chips
from .clock import Clock
from .hbm import HBM
from .rng import CounterRNG
from .trace import EventLog


class Chip:
    def __init__(self, spec, hbm_capacity):
        self.spec = spec
        self.events = EventLog()
        self.hbm = HBM(hbm_capacity, spec.name, self.events)
        self.rng = CounterRNG()
        self.clock = Clock(spec)
        self.hbm_capacity_limit = hbm_capacity  # the physical (or overridden) size
        self.lost_in_fork = False  # set in a forked child: this chip belongs to the parent

    def become(self, spec, hbm_capacity=None):
        """Turn into another chip of the table, e.g. to plan for several generations in one process.

        The clock goes on; only allocations made afterwards see the new capacity, so HBM must be
        empty."""
        if self.hbm.allocated_bytes.current:
            raise RuntimeError(f"cannot become {spec.name}: {self.hbm.allocated_bytes.current} bytes of "
                               f"{self.spec.name}'s HBM are still allocated")
        capacity = spec.hbm_bytes if hbm_capacity is None else hbm_capacity
        self.spec = self.clock.spec = spec
        self.hbm.chip_name = spec.name
        self.hbm.capacity = self.hbm_capacity_limit = capacity

    def set_memory_fraction(self, fraction):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"memory fraction must be within [0, 1], got {fraction}")
        self.hbm.capacity = int(self.hbm_capacity_limit * fraction)


class ChipLostInFork(RuntimeError):
    def __init__(self):
        super().__init__(
            "Cannot re-initialize TPU in forked subprocess. To use TPU with multiprocessing, you must use the "
            "'spawn' start method. (This process was forked after its parent had used the tpu, so the chip and "
            "its HBM belong to the parent; a child forked before the parent's first tpu use gets a chip of its own.)"
        )


_current = None
_in_bad_fork = False  # this process was forked from one whose chip existed
_creation_hooks = []


def current_chip():
    global _current
    if _current is None:
        if _in_bad_fork:
            raise ChipLostInFork()
        spec = chips.chip_from_environment()
        _current = Chip(spec, chips.hbm_capacity_from_environment(spec))
        os.register_at_fork(after_in_child=_lose_chip_in_child)
        for hook in _creation_hooks:
            hook(_current)
    return _current


def created():
    """Whether this process's chip exists (a lost one does not count)."""
    return _current is not None


def in_bad_fork():
    return _in_bad_fork


def when_created(hook):
    """Run ``hook(chip)`` once the chip exists: now if it does, else right after it is created.

    Settings made before first use (a seed, say) wait here, as torch.cuda queues its lazy calls.
    """
    if _current is not None:
        hook(_current)
    else:
        _creation_hooks.append(hook)


def _lose_chip_in_child():
    global _current, _in_bad_fork
    if _current is not None:  # registered once the chip exists, so only a later fork() reaches here
        _current.lost_in_fork = True
        _current.hbm.lose(ChipLostInFork)
        _current = None
        _in_bad_fork = True
