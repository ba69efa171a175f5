"""Readings of the chip around a planned phase: simulated time split by what bounds it, and HBM.

A phase's time is the simulated device time from its start to the moment every stream is done
(``Clock.synchronize``). It splits into
- ``compute_s``: MXU time, the FLOPs of every kernel at the chip's peak for their input type;
- ``hbm_s``: the rest of the kernels' time: HBM traffic beyond what the MXU time hides, and the
  fixed launch cost of each kernel;
- ``ici_exposed_s``: the time no kernel covers, which is the step waiting for a collective
  (``ici_s`` is the time the ICI is busy at all, overlapped or not).
A phase is compute-bound when its MXU time exceeds the rest of its kernel time, HBM-bound otherwise.
"""

import contextlib
import dataclasses
import gc
import importlib

from .. import _C, _lazy

UNLIMITED_BYTES = 1 << 62


@dataclasses.dataclass
class Phase:
    seconds: float = 0.0
    compute_s: float = 0.0
    hbm_s: float = 0.0
    ici_s: float = 0.0
    ici_exposed_s: float = 0.0
    flops: int = 0  # MXU FLOPs of every kernel

    @property
    def bound(self):
        return "compute" if self.compute_s >= self.hbm_s else "hbm"


class Stopwatch:
    """``with Stopwatch() as phase:`` fills ``phase`` with what the block cost on the simulated chip."""

    def __init__(self):
        self.clock = _C.current_chip().clock
        self.phase = Phase()

    def __enter__(self):
        self.clock.synchronize()
        self._start = self.clock.device_now()
        self._kernels = self.clock.totals_snapshot()
        self._collectives = self.clock.collective_totals_snapshot()
        return self.phase

    def __exit__(self, *exc_info):
        self.clock.synchronize()
        phase = self.phase
        phase.seconds = self.clock.device_now() - self._start
        kernels = _since(self.clock.op_totals, self._kernels)
        busy = sum(t.seconds for t in kernels)
        phase.compute_s = sum(t.compute_seconds for t in kernels)
        phase.hbm_s = busy - phase.compute_s
        phase.flops = sum(t.flops for t in kernels)
        phase.ici_s = sum(t.seconds for t in _since(self.clock.collective_totals, self._collectives))
        phase.ici_exposed_s = max(phase.seconds - busy, 0.0)


def _since(totals_by_name, before):
    return [totals.minus(before[name]) if name in before else totals for name, totals in totals_by_name.items()]


def flops_so_far():
    """Every MXU FLOP the chip has charged since the process started."""
    return _C.current_chip().clock.total_flops


@contextlib.contextmanager
def unlimited_hbm():
    """Let a planned program allocate past the chip's capacity, so that it runs to the end and its
    whole footprint is known; yields the real capacity to compare the peak with."""
    hbm = _C.current_chip().hbm
    capacity = hbm.capacity
    hbm.capacity = UNLIMITED_BYTES
    try:
        yield capacity
    finally:
        hbm.capacity = capacity


# What planning imports on its first use: DTensor and FSDP2, Dynamo (FSDP2's hooks call torch._dynamo.disable),
# the simulated world's process group; and the kernels (_lazy.load). Imported before the heap is frozen, so that
# the first plan's collections do not walk them either.
MACHINERY = ("torch.distributed.tensor", "torch.distributed.fsdp", "torch._dynamo",
             "torch_tpu.distributed.process_group")


@contextlib.contextmanager
def collecting_the_plans_garbage_only():
    """Garbage collection that sees only the objects a plan makes; yields the HBM that is not the plan's.

    A plan collects garbage several times (its peak must not count cycles Python has not freed yet), and a
    full collection walks every object of torch, DTensor and Dynamo: most of a small model's planning
    time. The heap as it stands is frozen (``gc.freeze``) for the plan's duration instead, after a full
    collection only if something may hold HBM: the caller's tensors, or an earlier plan's still referenced
    (by the traceback of the error it raised, say). Plans report their peak above what is left, and leave no
    garbage holding HBM behind them. A caller that froze its own heap (a pre-forking server) keeps its freeze:
    the plan then makes full collections."""
    for name in MACHINERY:
        importlib.import_module(name)
    _lazy.load()
    if allocated():
        collect_garbage()
    baseline = allocated()
    ours = gc.get_freeze_count() == 0  # unfreezing would thaw the caller's frozen objects with the plan's
    if ours:
        gc.freeze()
    try:
        yield baseline
        collect_garbage()  # the plan's modules, FSDP state and simulated world hold cycles: free their HBM now
    finally:
        if ours:
            gc.unfreeze()
    if allocated() > baseline:  # an object older than the plan, garbage now, held some of its cycles
        collect_garbage()


def collect_garbage():
    """Free every garbage cycle that holds HBM. One pass is not always enough: a cycle's finalizers can
    leave more garbage (tensors of a traceback's frames) for the next pass."""
    for _ in range(4):
        if not gc.collect():
            return


def allocated():
    return _C.current_chip().hbm.allocated_bytes.current


def peak():
    return _C.current_chip().hbm.allocated_bytes.peak


def reset_peak():
    """Start measuring a peak from what is live now: garbage cycles (an earlier plan's modules, FSDP's
    state) are collected first, or whether they still held HBM would depend on when Python's collector ran."""
    collect_garbage()
    _C.current_chip().hbm.reset_peak_stats()


def use_chip(name):
    """Make this process's chip the table's ``name`` (nothing may be allocated on the old one)."""
    chip = _C.current_chip()
    if chip.spec.name != name:
        try:
            spec = _C.CHIPS[name]
        except KeyError:
            raise ValueError(f"unknown chip {name!r}; choose one of {', '.join(_C.CHIPS)}") from None
        chip.become(spec, _C.chips.hbm_capacity_from_environment(spec))
    return chip.spec


def local_storage(tensor):
    """The tpu storage behind ``tensor`` (a DTensor's local shard's), or None."""
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.untyped_storage() if local.device.type == "tpu" else None


def storage_key(storage):
    """What tells live storages apart: their HBM address (an empty storage's object)."""
    return storage.data_ptr() or id(storage)


def tensor_bytes(tensors, excluding=()):
    """Bytes of the distinct tpu storages behind ``tensors`` whose keys are not in ``excluding``."""
    storages = {}
    for tensor in tensors:
        storage = local_storage(tensor)
        if storage is not None and storage_key(storage) not in excluding:
            storages[storage_key(storage)] = storage.nbytes()
    return sum(storages.values())
