"""The simulated chip inside PyTorch's own profilers (``torch.profiler``, ``torch.autograd.profiler``).

PyTorch collects device activity in C++ only: through a Kineto activity-profiler plugin
(``KINETO_PRIVATEUSE1``) or through ProfilerStubs registered with ``registerPrivateUse1Methods``
(``use_device="tpu"`` without Kineto, ``KINETO_PRIVATEUSE1_FALLBACK``). Python can register neither,
so a Python backend gets no device events, and the stub path logs "PrivateUse1 used in profiler but
not enabled" for every op. Both APIs run on one Python class, ``torch.autograd.profiler.profile``;
while it profiles with ``use_device="tpu"`` (as ``torch.profiler.profile`` does whenever its
activities include ``ProfilerActivity.PrivateUse1``, the default), this module makes it:

- profile the host with Kineto's CPU activities instead of the stubs it cannot call;
- record every kernel on the chip's clock, as ``torch_tpu.profiler`` does;
- attach each kernel, with its simulated duration, to the aten op that launched it
  (``FunctionEvent.append_kernel``, the path PyTorch's legacy CUDA timing uses), so tables gain
  "Self TPU" / "TPU total" columns and ``self_device_time_total`` is simulated time;
- add the chip's time line (a track per stream) to the Chrome trace it exports, each kernel
  carrying the "External id" of its op.

A kernel belongs to the innermost host op that encloses its marker, preferably one named after it
(``aten::mm`` for ``mm``). The marker is a zero-length host event that each recorded kernel leaves
(``_RecordFunctionFast``) while its op runs, so Kineto times it on the op's own clock: attribution
compares Kineto's times only. (Comparing our host clock with Kineto's failed on a loaded host:
Kineto converts its cycle counter to wall time from one calibration pair, which can be off by
more than any slack.) The markers are removed from the events and the Chrome trace.
"""

import bisect
import functools
import gzip
import json
import threading
import time

import torch
from torch._C._autograd import DeviceType
from torch._C._profiler import ProfilerState, _RecordFunctionFast
from torch.autograd.profiler_util import FunctionEvent

from . import _C
from ._backend import DEVICE_NAME

MATCH_LOOKBACK = 256  # ops that started before a kernel's marker and may still enclose it
MARKER_PREFIX = "tpu kernel #"  # the host event a recorded kernel leaves inside its op: this and the kernel's index
MEMORY_MARKER_PREFIX = "tpu memory #"  # likewise for an HBM allocation or free, under profile_memory=True

_profile = torch.autograd.profiler.profile
_waiting = []  # recordings started before the chip existed


class MarkedRecords(list):
    """The kernel records the chip's clock appends (or the HBM events its allocator logs); each leaves its marker
    in the host op running it."""

    def __init__(self, prefix=MARKER_PREFIX):
        super().__init__()
        self._prefix = prefix
        self._indexing = threading.Lock()  # two threads' kernels (forward and autograd's) must not share an index

    def append(self, record):
        with self._indexing:
            index = len(self)
            super().append(record)
        with _RecordFunctionFast(self._prefix + str(index)):
            pass


def marked_kernel(name):
    """The index of the kernel whose marker is the host event ``name``, or None."""
    return int(name[len(MARKER_PREFIX):]) if name.startswith(MARKER_PREFIX) else None


def marked_memory_event(name):
    """The index of the HBM event whose marker is the host event ``name``, or None."""
    return int(name[len(MEMORY_MARKER_PREFIX):]) if name.startswith(MEMORY_MARKER_PREFIX) else None


def is_marker(name):
    return name.startswith(MARKER_PREFIX) or name.startswith(MEMORY_MARKER_PREFIX)


class Recording:
    """The kernels one PyTorch profile sees, with their simulated time."""

    def __init__(self, memory=False):
        self.records = MarkedRecords()
        self.memory_events = MarkedRecords(MEMORY_MARKER_PREFIX) if memory else None  # the allocator's tuples
        self.chip = None
        self.device_start = 0.0
        self.start_epoch_us = time.time_ns() / 1e3
        if _C.chip.created():
            self.attach(_C.current_chip())
        else:
            _waiting.append(self)  # attached when the chip is created: profiling alone does not create it

    def attach(self, chip):
        self.chip = chip
        self.device_start = chip.clock.synchronize()  # the device starts idle, as in torch_tpu.profiler
        chip.clock.recorders.append(self.records)
        if self.memory_events is not None:
            chip.hbm.log_also_to(self.memory_events.append)

    def stop(self):
        if self in _waiting:
            _waiting.remove(self)
        if self.chip is not None:
            recorders = self.chip.clock.recorders
            recorders[:] = [r for r in recorders if r is not self.records]
            if self.memory_events is not None:
                self.chip.hbm.log_also_to(None)


def _attach_waiting(chip):
    while _waiting:
        _waiting.pop().attach(chip)


_C.chip.when_created(_attach_waiting)


def launching_ops(recording, host_events):
    """For each recorded kernel, the op that launched it (or None).

    ``host_events`` are (thread, start, end, name, event) on Kineto's clock, in any order.
    """
    markers, ops = {}, {}
    for thread, start, end, name, event in host_events:
        index = marked_kernel(name)
        if index is None:
            ops.setdefault(thread, []).append((start, end, name, event))
        else:
            markers[index] = (thread, start)
    for thread_ops in ops.values():
        thread_ops.sort(key=lambda o: o[0])
    starts = {thread: [o[0] for o in thread_ops] for thread, thread_ops in ops.items()}
    found = []
    for index, record in enumerate(recording.records):
        thread, moment = markers.get(index, (None, None))
        thread_ops = ops.get(thread, [])
        position = bisect.bisect_right(starts.get(thread, []), moment) if thread_ops else 0
        name = "aten::" + record.cost.name.partition(".")[0]
        enclosing = None
        for op_start, op_end, op_name, op in reversed(thread_ops[max(0, position - MATCH_LOOKBACK):position]):
            if op_end < moment:
                continue
            if op_name == name:
                enclosing = op
                break
            enclosing = enclosing if enclosing is not None else op
        found.append(enclosing)
    return found


def kernel_events(events, recording, trace_start_ns):
    """The recorded kernels as PyTorch profiler events, linked to the ops that launched them.

    As Kineto does for a CUDA kernel: one FunctionEvent on the device (its time line simulated, from
    the profile's start) with the op's correlation id, and the kernel appended to the op's event.
    """
    origin_us = trace_start_ns / 1e3
    host_events = [(e.thread, e.time_range.start, e.time_range.end, e.name, e) for e in events
                   if e.device_type == DeviceType.CPU and not e.is_async and not e.is_python_function]
    launchers = launching_ops(recording, [e for e in host_events if not e[4].is_user_annotation or is_marker(e[3])])
    if recording.memory_events:
        add_device_memory(recording.memory_events, host_events)  # record_function blocks count bytes too
    remove_markers(events)
    device_origin_us = recording.start_epoch_us - origin_us
    kernels = []
    for record, op in zip(recording.records, launchers):
        start = device_origin_us + (record.start - recording.device_start) * 1e6
        duration = record.seconds * 1e6
        correlation = 0 if op is None else op.id
        kernels.append(FunctionEvent(
            id=correlation, name=record.cost.name, thread=record.stream, start_us=start, end_us=start + duration,
            input_shapes=[], stack=[], use_device=DEVICE_NAME, device_type=DeviceType.PrivateUse1,
            device_index=0, device_resource_id=record.stream, flops=record.cost.flops,
            linked_correlation_id=correlation, activity_type="kernel",
        ))
        if op is not None:
            op.append_kernel(record.cost.name, 0, duration)
    return kernels


def add_device_memory(memory_events, host_events):
    """Each HBM allocation (+bytes) and free (-bytes) counted in the device memory of every op enclosing its marker,
    as PyTorch counts a CUDA allocation in every op whose interval holds it (the "TPU Mem" columns)."""
    ops, moments = {}, {}
    for thread, start, end, name, event in host_events:
        index = marked_memory_event(name)
        if index is not None:
            kind, _, _, nbytes, _ = memory_events[index]
            if kind in ("alloc", "free"):
                moments.setdefault(thread, []).append((start, nbytes if kind == "alloc" else -nbytes))
        elif marked_kernel(name) is None:
            ops.setdefault(thread, []).append((start, end, event))
    for thread, changes in moments.items():
        _count_in_enclosing_ops(sorted(changes, key=lambda change: change[0]),
                                sorted(ops.get(thread, ()), key=lambda op: (op[0], -op[1])))


def _count_in_enclosing_ops(changes, ops):
    """Add each (moment, bytes) to the ops whose [start, end] holds it, both sorted by time: one sweep with a
    stack of the ops begun and not yet ended (ops nest, so the innermost ends first), not every op per change."""
    open_ops, following = [], iter(ops)
    upcoming = next(following, None)
    for moment, nbytes in changes:
        while upcoming is not None and upcoming[0] <= moment:
            _close_ended(open_ops, upcoming[0])
            open_ops.append(upcoming)
            upcoming = next(following, None)
        _close_ended(open_ops, moment)
        for start, end, op in open_ops:
            if start <= moment <= end:  # exact even where ops overlap without nesting
                op.device_memory_usage += nbytes


def _close_ended(open_ops, moment):
    while open_ops and open_ops[-1][1] < moment:
        open_ops.pop()


def remove_markers(events):
    """Drop the kernels' and HBM events' markers from a profile's events (their time stays their op's own)."""
    markers = [e for e in events if is_marker(e.name)]
    for marker in markers:
        if marker.cpu_parent is not None:
            marker.cpu_parent.cpu_children.remove(marker)
    events[:] = [e for e in events if not is_marker(e.name)]


def add_device_lanes(path, recording):
    """Append the simulated chip's tracks to the Chrome trace Kineto wrote at ``path``."""
    from .profiler import device_lanes

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        trace = json.load(f)
    base_us = trace.get("baseTimeNanoseconds", 0) / 1e3  # Kineto writes times relative to this epoch
    events = trace["traceEvents"]
    host_events = [(e.get("tid"), e["ts"], e["ts"] + e.get("dur", 0), e["name"], e) for e in events
                   if e.get("ph") == "X" and (e.get("cat") == "cpu_op" or marked_kernel(e["name"]) is not None)]
    external_ids = [None if op is None else op.get("args", {}).get("External id")
                    for op in launching_ops(recording, host_events)]
    events[:] = [e for e in events if not is_marker(e.get("name", ""))]
    events += device_lanes(recording.records, recording.device_start, recording.chip.spec,
                           origin_us=recording.start_epoch_us - base_us,
                           extra_args=lambda index, record: {"External id": external_ids[index]})
    with opener(path, "wt") as f:
        json.dump(trace, f)


# --- the patches of torch.autograd.profiler.profile --------------------------------------------

def _patch(name):
    def decorate(wrapper):
        original = getattr(_profile, name)

        @functools.wraps(original)
        def method(self, *args, **kwargs):
            return wrapper(original, self, *args, **kwargs)

        setattr(_profile, name, method)
        return wrapper

    return decorate


def _recording(profile):
    return getattr(profile, "_tpu_recording", None)


@_patch("__init__")
def _init(original, self, *args, **kwargs):
    original(self, *args, **kwargs)
    self._tpu_recording = None
    if getattr(self, "use_device", None) == DEVICE_NAME and self.profiler_kind == ProfilerState.KINETO_PRIVATEUSE1_FALLBACK:
        self.profiler_kind = ProfilerState.KINETO  # the host only: the fallback's C++ stubs do not exist


@_patch("_start_trace")
def _start_trace(original, self):
    original(self)
    if self.use_device == DEVICE_NAME:
        self._tpu_recording = Recording(memory=self.profile_memory)


@_patch("__exit__")
def _exit(original, self, *exc):
    if _recording(self) is not None:
        self._tpu_recording.stop()  # before the original, which may build the events right away
    return original(self, *exc)


@_patch("_ensure_function_events")
def _ensure_function_events(original, self):
    fresh = self._function_events is None
    original(self)
    recording = _recording(self)
    if fresh and recording is not None and recording.records and self.kineto_results is not None:
        self._function_events.extend(kernel_events(self._function_events, recording,
                                                   self.kineto_results.trace_start_ns()))


@_patch("export_chrome_trace")
def _export_chrome_trace(original, self, path, *args, **kwargs):
    result = original(self, path, *args, **kwargs)
    recording = _recording(self)
    if recording is not None and recording.chip is not None:
        add_device_lanes(path, recording)
    return result
