"""Profile tpu programs on the simulated chip, shaped like ``torch.profiler.profile``.

    with torch_tpu.profiler.profile() as prof:
        train_step()
    print(prof.key_averages().table(sort_by="device_time_total", row_limit=10))
    prof.export_chrome_trace("trace.json")  # open in https://ui.perfetto.dev
    print(prof.report())                     # step time, MFU, HBM peak, top ops

The trace has two processes: the host (Python wall-clock time of each emulated kernel, and
HBM allocated) and the TPU, whose time line is the *simulated* chip: one event per kernel
per stream, with its FLOPs, bytes, shapes and dtypes, one event per collective on the ICI
stream of its process group, with its bytes, torus axes and algorithm, and HBM allocated on
the same clock. Both start at 0 at the start of the profile.
"""

import bisect
import json
import os
import threading
import time

from . import _C
from ._C.clock import CollectiveCost, compute_seconds, OpTotals
from ._C.hbm import format_bytes
from .report import StepReport, Window, ici_busy_and_exposed, op_table

DEVICE_PID = 0  # as Kineto numbers GPU processes by device index
MEMORY_COUNTER = "HBM allocated"


class profile:
    """Record every kernel launched between ``start()`` and ``stop()`` (or inside ``with``).

    Arguments torch.profiler.profile takes that have no meaning here (activities, schedules,
    with_stack, ...) are accepted and ignored; ``on_trace_ready(prof)`` runs at ``stop()``.
    """

    def __init__(self, activities=None, *, on_trace_ready=None, **ignored):
        self.on_trace_ready = on_trace_ready
        self.records = []
        self.step_marks = []  # simulated time of each step() call
        self.window = None
        self.device_seconds = self.host_seconds = 0.0
        self.hbm_peak = 0
        self.memory_events = []

    def start(self):
        self.chip = _C.current_chip()
        clock = self.chip.clock
        clock.synchronize()  # a profile starts with the device idle, as CUDA profilers do
        self.window = Window(self.chip)
        clock.recorders.append(self.records)

    def stop(self):
        clock = self.chip.clock
        clock.recorders[:] = [r for r in clock.recorders if r is not self.records]
        self.device_seconds = clock.synchronize() - self.window.device_start
        self.host_seconds = (time.perf_counter_ns() - self.window.host_start_ns) / 1e9
        self.hbm_peak = self.window.hbm_peak()
        self.memory_events = self.chip.events.since(self.window.host_start_ns)
        if self.on_trace_ready is not None:
            self.on_trace_ready(self)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def step(self):
        """Mark the end of a training step (as torch.profiler's ``prof.step()``)."""
        self.step_marks.append(self.chip.clock.device_now() - self.window.device_start)

    @property
    def kernel_records(self):
        return [r for r in self.records if not is_collective(r)]

    @property
    def collective_records(self):
        return [r for r in self.records if is_collective(r)]

    def _totals(self, key):
        totals = {}
        spec = self.chip.spec
        for record in self.kernel_records:
            cost = record.cost
            op = totals.setdefault(key(record), OpTotals())
            op.add(record.seconds, compute_seconds(cost, spec) if cost.mxu_flops else 0.0, cost.bytes, cost.flops)
            op.host_seconds += (record.host_end_ns - record.host_start_ns) / 1e9
        return totals

    def key_averages(self, group_by_input_shape=False):
        """Per-kernel-name totals (and per input shapes if asked), ranked with ``.table()``."""
        key = (lambda r: f"{r.cost.name} {list(r.cost.shapes)}") if group_by_input_shape else (lambda r: r.cost.name)
        return op_table(self._totals(key), self.chip.spec, self.device_seconds)

    def collective_averages(self):
        """Per-collective totals ("name [group]" -> OpTotals: calls, ICI seconds, bytes moved)."""
        totals = {}
        for record in self.collective_records:
            cost = record.cost
            key = f"{cost.name} [{cost.group}]" if cost.group else cost.name
            totals.setdefault(key, OpTotals()).add(record.seconds, 0.0, cost.ici_bytes, 0)
        return totals

    def report(self, top=10):
        """The StepReport of the profiled region."""
        kernels, collectives = self.kernel_records, self.collective_records
        ici, exposed = ici_busy_and_exposed([(r.start, r.end) for r in kernels], [(r.start, r.end) for r in collectives])
        return StepReport(
            spec=self.chip.spec, device_seconds=self.device_seconds, host_seconds=self.host_seconds,
            kernels=len(kernels), hbm_peak=self.hbm_peak, hbm_capacity=self.chip.hbm.capacity,
            ops=self.key_averages(), steps=len(self.step_marks), title="profiled region", top=top,
            collectives=self.collective_averages(), ici_seconds=ici, exposed_ici_seconds=exposed,
        )

    summary = report

    def export_chrome_trace(self, path):
        """Write the Chrome/Perfetto JSON trace (``traceEvents``) to ``path``."""
        with open(path, "w") as f:
            json.dump(chrome_trace(self), f)


# --- the Chrome trace ------------------------------------------------------------------------

def _name(pid, tid, kind, name):
    """A metadata event naming a process ("process_name") or a thread ("thread_name")."""
    return {"ph": "M", "pid": pid, "tid": tid, "name": kind, "args": {"name": name}}


def _sort_index(pid, index):
    return {"ph": "M", "pid": pid, "tid": 0, "name": "process_sort_index", "args": {"sort_index": index}}


def is_collective(record):
    return isinstance(record.cost, CollectiveCost)


def _collective_args(record, correlation):
    cost = record.cost
    return {"correlation": correlation, "stream": record.stream, "group": cost.group, "bytes": cost.ici_bytes,
            "axes": list(cost.axes), "algorithm": cost.algorithm, "shapes": [list(s) for s in cost.shapes],
            "dtypes": list(cost.dtypes)}


def _kernel_args(record, correlation):
    cost = record.cost
    return {
        "correlation": correlation, "stream": record.stream, "mxu_flops": cost.flops,
        "flops_by_dtype": cost.mxu_flops, "vpu_ops": cost.vpu_ops, "bytes_read": cost.bytes_read,
        "bytes_written": cost.bytes_written, "shapes": [list(s) for s in cost.shapes],
        "dtypes": list(cost.dtypes),
    }


def device_lanes(records, device_start, spec, origin_us=0.0, extra_args=None):
    """The simulated chip's part of a Chrome trace: process "TPU 0", a track per stream, an event per kernel.

    Kernel times are simulated, placed ``origin_us`` + (start - ``device_start``) microseconds into the
    trace. ``extra_args(index, record)`` adds arguments to a kernel (its correlation with a host event).
    """
    events = [
        _name(DEVICE_PID, 0, "process_name", f"TPU 0: {spec.name} ({spec.generation}, simulated clock)"),
        _sort_index(DEVICE_PID, 1),
    ]
    for index, record in enumerate(records):
        collective = is_collective(record)
        args = (_collective_args if collective else _kernel_args)(record, index)
        if extra_args is not None:
            args.update(extra_args(index, record))
        events.append({"ph": "X", "cat": "collective" if collective else "kernel", "name": record.cost.name,
                       "pid": DEVICE_PID, "tid": record.stream,
                       "ts": round(origin_us + (record.start - device_start) * 1e6, 6),
                       "dur": round(record.seconds * 1e6, 6), "args": args})
    labels = _C.current_chip().clock.stream_names  # collective streams are named after their group
    for stream in sorted({record.stream for record in records}):
        events.append(_name(DEVICE_PID, stream, "thread_name", labels.get(stream, f"stream {stream}")))
    return events


def chrome_trace(prof):
    """The trace as a dict: host and simulated-device time lines, microseconds from the start."""
    window, spec = prof.window, prof.chip.spec
    host_pid = os.getpid()
    main_thread = threading.main_thread().native_id
    events = [_name(host_pid, 0, "process_name", "host (Python emulation, wall clock)"), _sort_index(host_pid, 0)]
    for index, record in enumerate(prof.records):
        if is_collective(record):
            continue  # nothing runs on the host: the collective is the ICI's
        host_ts = (record.host_start_ns - window.host_start_ns) / 1e3
        events.append({"ph": "X", "cat": "cpu_op", "name": record.cost.name, "pid": host_pid, "tid": record.thread,
                       "ts": round(host_ts, 3), "dur": round((record.host_end_ns - record.host_start_ns) / 1e3, 3),
                       "args": {"correlation": index}})
    for thread in sorted({record.thread for record in prof.kernel_records}):
        label = "Python main thread" if thread == main_thread else f"Python thread {thread} (autograd)"
        events.append(_name(host_pid, thread, "thread_name", label))
    events += device_lanes(prof.records, window.device_start, spec)
    events += _memory_counters(prof, host_pid)
    for mark, device_time in enumerate(prof.step_marks):
        events.append({"ph": "i", "s": "p", "name": f"step {mark}", "pid": DEVICE_PID, "tid": 0,
                       "ts": round(device_time * 1e6, 6)})
    return {
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {"chip": spec.name, "device_seconds": prof.device_seconds,
                      "hbm_peak": format_bytes(prof.hbm_peak), "note": "TPU times are simulated (roofline clock)"},
    }


def _memory_counters(prof, host_pid):
    """HBM allocated after each allocation and free, on the host clock and on the simulated one.

    A memory event happens on the device after the last kernel the host finished before it.
    """
    window = prof.window
    records = prof.kernel_records
    host_ends = [r.host_end_ns for r in records]
    counters = []
    for kind, host_ns, _, _, allocated in prof.memory_events:
        if kind == "oom":
            continue
        before = bisect.bisect_right(host_ends, host_ns)
        device_time = records[before - 1].end - window.device_start if before else 0.0
        counters.append({"ph": "C", "name": MEMORY_COUNTER, "pid": host_pid, "tid": 0,
                         "ts": round((host_ns - window.host_start_ns) / 1e3, 3), "args": {"bytes": allocated}})
        counters.append({"ph": "C", "name": MEMORY_COUNTER, "pid": DEVICE_PID, "tid": 0,
                         "ts": round(device_time * 1e6, 6), "args": {"bytes": allocated}})
    return counters


# --- HBM over time as a picture --------------------------------------------------------------

def plot_memory(path, title=None):
    """Write a PNG of HBM allocated over (host) time, from the chip's event log.

    Needs matplotlib, an optional extra: ``pip install matplotlib`` (or ``torch_tpu[plot]``).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "torch_tpu.profiler.plot_memory needs matplotlib, which is not installed: "
            "pip install matplotlib (or pip install torch_tpu[plot])"
        ) from None
    chip = _C.current_chip()
    events = [e for e in chip.events.since(0) if e[0] != "oom"]
    start = events[0][1] if events else 0
    seconds = [(e[1] - start) / 1e9 for e in events]
    allocated = [e[4] / 2**20 for e in events]
    peak = max(allocated, default=0.0)
    figure = Figure(figsize=(10, 4))
    axes = figure.add_subplot()
    axes.step(seconds, allocated, where="post", label="allocated")
    axes.axhline(peak, color="tab:red", linestyle="--", label=f"peak {peak:.1f} MiB")
    axes.set_xlabel("host time since the first allocation (s)")
    axes.set_ylabel("HBM allocated (MiB)")
    axes.set_title(title or f"HBM on {chip.spec.name}: peak {peak:.1f} MiB of {format_bytes(chip.hbm.capacity)}")
    axes.legend(loc="upper left")
    figure.savefig(path, format="png", dpi=100)
    return path
