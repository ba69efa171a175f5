"""One emulated chip: its spec, its HBM, its RNG, its clock and its event log.

A process drives exactly one chip (multi-chip runs are one process per chip),
so the chip is created once, lazily, from the environment.
"""

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


_current = None


def current_chip():
    global _current
    if _current is None:
        spec = chips.chip_from_environment()
        _current = Chip(spec, chips.hbm_capacity_from_environment(spec))
    return _current
