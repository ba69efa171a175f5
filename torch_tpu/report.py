"""Will it fit, how fast: the step report and the per-op roofline table.

``torch_tpu.report()`` summarises everything since process start (or the last
``report(reset=True)``) from the chip's running totals; ``prof.report()`` summarises one
profiled region from its kernel records. Both give the estimated device time on the chip,
MFU, HBM peak against capacity and the ops that cost the most.

Per op: arithmetic intensity is MXU FLOPs per HBM byte; an op is compute-bound when its
MXU time exceeds its HBM time, i.e. when its intensity is above the chip's ridge point for
its input type (``peak / HBM bandwidth``: 313 FLOP/byte for bf16 on Ironwood). "% roofline"
is the share of the device time spent at the roofline; the rest is launch overhead.

Time is split into MXU time (FLOPs at peak), HBM time (bytes at HBM bandwidth), both summed over
kernels, and ICI time (collectives, on their own streams). The ICI time that no kernel overlaps is
*exposed*: the step waited for it. A profile knows every kernel's interval and gives that exactly;
the running report (no intervals kept) gives the ICI total only.
"""

import atexit
import dataclasses
import getpass
import json
import os
import sys
import tempfile
import time

from . import _C
from ._C.clock import LAUNCH_OVERHEAD_SECONDS, OpTotals
from ._C.hbm import format_bytes

NAME_WIDTH = 34
SORT_KEYS = {
    "device_time_total": lambda t: t.seconds,
    "self_device_time_total": lambda t: t.seconds,
    "cuda_time_total": lambda t: t.seconds,
    "device_time": lambda t: t.seconds / t.count,
    "host_time_total": lambda t: t.host_seconds,
    "cpu_time_total": lambda t: t.host_seconds,
    "count": lambda t: t.count,
    "flops": lambda t: t.flops,
    "bytes": lambda t: t.bytes,
}


def format_time(seconds):
    """'12.345us', '1.234ms' or '1.234s', like torch.profiler's tables."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3f}us"
    if seconds < 1:
        return f"{seconds * 1e3:.3f}ms"
    return f"{seconds:.3f}s"


def format_flops(flops):
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("KFLOP", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops:.0f} FLOP"


@dataclasses.dataclass
class OpRow:
    """One kernel name's totals, with its place on the chip's roofline."""

    name: str
    totals: OpTotals
    spec: object

    count = property(lambda self: self.totals.count)
    device_seconds = property(lambda self: self.totals.seconds)
    flops = property(lambda self: self.totals.flops)
    bytes = property(lambda self: self.totals.bytes)

    @property
    def memory_seconds(self):
        return self.totals.bytes / self.spec.hbm_bandwidth

    @property
    def intensity(self):
        """MXU FLOPs per HBM byte."""
        return self.totals.flops / self.totals.bytes if self.totals.bytes else float("inf")

    @property
    def ridge_point(self):
        """The intensity at which this op's MXU and HBM times would be equal (None without FLOPs)."""
        if not self.totals.flops:
            return None
        return self.totals.flops / (self.totals.compute_seconds * self.spec.hbm_bandwidth)

    @property
    def bound(self):
        return "compute" if self.totals.compute_seconds > self.memory_seconds else "memory"

    @property
    def roofline_fraction(self):
        """Share of the device time at the roofline (peak FLOP/s or HBM bandwidth)."""
        t = self.totals
        return (t.seconds - t.count * LAUNCH_OVERHEAD_SECONDS) / t.seconds if t.seconds else 0.0


class OpTable(list):
    """A list of OpRows (``prof.key_averages()``); ``table()`` prints it like torch.profiler does."""

    def __init__(self, rows, device_seconds):
        super().__init__(rows)
        self.device_seconds = device_seconds

    def table(self, sort_by="device_time_total", row_limit=-1):
        if sort_by not in SORT_KEYS:
            raise ValueError(f"sort_by must be one of {', '.join(SORT_KEYS)}, got {sort_by!r}")
        key = SORT_KEYS[sort_by]
        rows = sorted(self, key=lambda row: (-key(row.totals), row.name))
        if row_limit is not None and row_limit >= 0:
            rows = rows[:row_limit]
        header = (
            f"{'Name':<{NAME_WIDTH}}{'Calls':>7}{'Device total':>14}{'Device %':>10}{'Device avg':>12}"
            f"{'MXU FLOPs':>14}{'HBM bytes':>13}{'FLOP/B':>9}{'Ridge':>7}{'% roofline':>12}{'Bound':>9}"
        )
        rule = "-" * len(header)
        return "\n".join([rule, header, rule, *(self._line(row) for row in rows), rule]) + "\n"

    def _line(self, row):
        name = row.name if len(row.name) <= NAME_WIDTH - 1 else row.name[: NAME_WIDTH - 4] + "..."
        share = row.device_seconds / self.device_seconds if self.device_seconds else 0.0
        ridge = row.ridge_point
        return (
            f"{name:<{NAME_WIDTH}}{row.count:>7}{format_time(row.device_seconds):>14}{share:>10.1%}"
            f"{format_time(row.device_seconds / row.count):>12}{format_flops(row.flops) if row.flops else '-':>14}"
            f"{format_bytes(row.bytes):>13}{f'{row.intensity:.1f}' if row.flops else '-':>9}"
            f"{f'{ridge:.0f}' if ridge else '-':>7}{row.roofline_fraction:>12.1%}{row.bound:>9}"
        )


def op_table(totals_by_name, spec, device_seconds):
    rows = [OpRow(name, totals, spec) for name, totals in totals_by_name.items() if totals.count]
    return OpTable(rows, device_seconds)


def collective_table(totals_by_name, row_limit=10):
    """Collectives by ICI time: calls, time, bytes moved (V) and the bandwidth that makes."""
    rows = sorted(((name, t) for name, t in totals_by_name.items() if t.count), key=lambda r: (-r[1].seconds, r[0]))
    header = f"{'Collective [group]':<{NAME_WIDTH}}{'Calls':>7}{'ICI total':>14}{'ICI avg':>12}{'Bytes (V)':>13}{'V / time':>13}"
    rule = "-" * len(header)
    lines = [rule, header, rule]
    for name, t in rows[:row_limit]:
        name = name if len(name) <= NAME_WIDTH - 1 else name[: NAME_WIDTH - 4] + "..."
        rate = f"{t.bytes / t.seconds / 1e9:.1f} GB/s" if t.seconds else "-"
        lines.append(f"{name:<{NAME_WIDTH}}{t.count:>7}{format_time(t.seconds):>14}"
                     f"{format_time(t.seconds / t.count):>12}{format_bytes(t.bytes):>13}{rate:>13}")
    return "\n".join([*lines, rule]) + "\n"


def merged_intervals(intervals):
    """The union of (start, end) intervals, as sorted disjoint intervals."""
    merged = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1][1] = end
        else:
            merged.append([start, end])
    return merged


def overlap_seconds(a, b):
    """Length of the intersection of two sorted disjoint interval lists."""
    total, i, j = 0.0, 0, 0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def ici_busy_and_exposed(compute_intervals, collective_intervals):
    """Seconds the ICI is busy, and of those the seconds no kernel runs (the step waits for the ICI)."""
    ici = merged_intervals(collective_intervals)
    busy = sum(end - start for start, end in ici)
    return busy, busy - overlap_seconds(ici, merged_intervals(compute_intervals))


class Window:
    """A span of the chip's life: where the clock, HBM and the event log stood at its start."""

    def __init__(self, chip):
        self.chip = chip
        self.host_start_ns = time.perf_counter_ns()
        self.device_start = chip.clock.device_now()
        self.allocated_start = chip.hbm.allocated_bytes.current
        self.totals_start = chip.clock.totals_snapshot()
        self.collectives_start = chip.clock.collective_totals_snapshot()
        self.kernels_start = chip.clock.kernels_run

    def hbm_peak(self):
        """Most HBM allocated at any moment since the start (the all-time peak if the log has wrapped)."""
        events = self.chip.events
        if not events.covers(self.host_start_ns):
            return self.chip.hbm.allocated_bytes.peak
        return max([self.allocated_start, *(e[4] for e in events.since(self.host_start_ns))])

    def totals(self):
        return _since(self.chip.clock.op_totals, self.totals_start)

    def collective_totals(self):
        return _since(self.chip.clock.collective_totals, self.collectives_start)


def _since(totals_by_name, start):
    empty = OpTotals()
    return {name: totals.minus(start.get(name, empty)) for name, totals in totals_by_name.items()}


@dataclasses.dataclass
class StepReport:
    """Estimated time on the chip, MFU, HBM peak and top ops for a region of the program."""

    spec: object
    device_seconds: float
    host_seconds: float
    kernels: int
    hbm_peak: int
    hbm_capacity: int
    ops: OpTable
    steps: int = 0
    title: str = "step report"
    top: int = 10
    collectives: dict = dataclasses.field(default_factory=dict)  # "name [group]" -> OpTotals
    ici_seconds: float = 0.0  # time the ICI is busy
    exposed_ici_seconds: float = None  # of which no kernel overlaps it (None: not known)

    @property
    def flops(self):
        return sum(row.flops for row in self.ops)

    @property
    def mxu_seconds(self):
        """MXU time of every kernel at peak, summed."""
        return sum(row.totals.compute_seconds for row in self.ops)

    @property
    def hbm_seconds(self):
        """HBM time of every kernel at full bandwidth, summed."""
        return sum(row.memory_seconds for row in self.ops)

    @property
    def ici_share(self):
        """Share of the device time spent waiting for the ICI (exposed, else total ICI time)."""
        ici = self.ici_seconds if self.exposed_ici_seconds is None else self.exposed_ici_seconds
        return ici / self.device_seconds if self.device_seconds else 0.0

    @property
    def mfu(self):
        """Model FLOPs utilisation against the chip's bf16 peak."""
        peak = self.spec.peak_flops["bfloat16"]
        return self.flops / (self.device_seconds * peak) if self.device_seconds else 0.0

    @property
    def step_seconds(self):
        return self.device_seconds / self.steps if self.steps else self.device_seconds

    def __str__(self):
        spec = self.spec
        overhead = self.kernels * LAUNCH_OVERHEAD_SECONDS
        steps = f"; {self.steps} steps, {format_time(self.step_seconds)} per step" if self.steps else ""
        lines = [
            f"torch_tpu {self.title}: {spec.name} ({spec.generation}), simulated",
            f"  estimated device time : {format_time(self.device_seconds)} ({self.kernels} kernels{steps})",
            f"  MXU FLOPs             : {format_flops(self.flops)}",
            f"  MFU                   : {self.mfu * 100:.3g}% of {spec.peak_flops['bfloat16'] / 1e12:g} TFLOP/s bf16 peak",
            f"  HBM peak              : {format_bytes(self.hbm_peak)} of {format_bytes(self.hbm_capacity)}"
            f" ({self.hbm_peak / self.hbm_capacity if self.hbm_capacity else 0:.2%})",
            f"  launch overhead       : {format_time(overhead)}"
            f" ({overhead / self.device_seconds if self.device_seconds else 0:.1%} of device time)",
            f"  time split            : MXU {format_time(self.mxu_seconds)}, HBM {format_time(self.hbm_seconds)}"
            f" (summed over kernels), ICI {format_time(self.ici_seconds)}{self._exposed()}",
            f"  host time (emulation) : {format_time(self.host_seconds)}",
            f"Top {self.top} ops by device time:",
        ]
        text = "\n".join(lines) + "\n" + self.ops.table(row_limit=self.top)
        if self.collectives:
            text += "Collectives over the ICI:\n" + collective_table(self.collectives, self.top)
        return text

    def _exposed(self):
        if self.exposed_ici_seconds is None:
            return ""
        return f" ({format_time(self.exposed_ici_seconds)} exposed, {self.ici_share:.1%} of device time)"

    def __repr__(self):
        return str(self)


_window = None


def report(reset=False):
    """A StepReport of everything the chip did since process start or the last ``report(reset=True)``."""
    global _window
    chip = _C.current_chip()
    window = _window or _process_window(chip)
    device_seconds = chip.clock.device_now() - window.device_start
    result = StepReport(
        spec=chip.spec, device_seconds=device_seconds,
        host_seconds=(time.perf_counter_ns() - window.host_start_ns) / 1e9,
        kernels=chip.clock.kernels_run - window.kernels_start, hbm_peak=window.hbm_peak(),
        hbm_capacity=chip.hbm.capacity, ops=op_table(window.totals(), chip.spec, device_seconds),
        title="report since " + ("last reset" if _window else "process start"),
        collectives=(collectives := window.collective_totals()),
        ici_seconds=sum(t.seconds for t in collectives.values()),
    )
    if reset:
        _window = Window(chip)
    return result


_PROCESS_START_NS = time.perf_counter_ns()  # close enough: torch_tpu is imported by `import torch`


def _process_window(chip):
    window = Window(chip)
    window.host_start_ns, window.device_start, window.allocated_start = _PROCESS_START_NS, 0.0, 0
    window.totals_start, window.collectives_start, window.kernels_start = {}, {}, 0
    return window


def chip_status():
    """What ``python -m torch_tpu.smi`` shows for this process's chip."""
    chip = _C.current_chip()
    clock, hbm = chip.clock, chip.hbm
    return {
        "chip": chip.spec.name, "generation": chip.spec.generation,
        "hbm_used": hbm.allocated_bytes.current, "hbm_peak": hbm.allocated_bytes.peak,
        "hbm_capacity": hbm.capacity, "kernels_run": clock.kernels_run,
        "busy_seconds": clock.busy_seconds, "device_seconds": clock.device_now(),
        "mxu_flops": clock.total_flops,
    }


# --- chip status for python -m torch_tpu.smi -------------------------------------------------
# Each process writes <runtime dir>/<pid>.json when its chip is created (its first tpu use; a torch
# program that never touches the tpu publishes nothing), then at most once a second, checked
# every PROGRESS_EVERY_KERNELS kernels (the kernel hot path pays one integer comparison), and
# removes it at exit. Runtime dir: $TORCH_TPU_RUNTIME_DIR, default $TMPDIR/torch_tpu-$USER.

PUBLISH_INTERVAL_SECONDS = 1.0


def runtime_dir():
    configured = os.environ.get("TORCH_TPU_RUNTIME_DIR")
    if configured:
        return configured
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return os.path.join(tempfile.gettempdir(), f"torch_tpu-{user}")


class Publisher:
    """Writes this process's chip status for smi to read."""

    def __init__(self, directory):
        self.directory = directory
        self.last_write = 0.0

    @property
    def path(self):  # a forked child publishes as itself
        return os.path.join(self.directory, f"{os.getpid()}.json")

    def write(self):
        status = {**chip_status(), "pid": os.getpid(), "command": " ".join(sys.argv) or "python", "updated": time.time()}
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        temporary = f"{self.path}.tmp"
        with open(temporary, "w") as f:
            json.dump(status, f)
        os.replace(temporary, self.path)  # readers never see a half-written file
        self.last_write = time.monotonic()

    def on_progress(self, clock):
        if time.monotonic() - self.last_write >= PUBLISH_INTERVAL_SECONDS:
            self.write_quietly()

    def write_quietly(self):
        try:
            self.write()
        except OSError:
            pass  # a monitor must never break the program it monitors

    def remove(self):
        try:
            os.remove(self.path)
        except OSError:
            pass


def start_publishing(chip):
    """Publish this process's chip status for ``python -m torch_tpu.smi`` (off with TORCH_TPU_SMI=0)."""
    if os.environ.get("TORCH_TPU_SMI", "1") == "0":
        return
    publisher = Publisher(runtime_dir())
    publisher.write_quietly()
    chip.clock.progress_hooks.append(publisher.on_progress)
    atexit.register(publisher.remove)


_C.chip.when_created(start_publishing)
