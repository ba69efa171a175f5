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

A kernel belongs to the innermost host op whose interval encloses the kernel's host interval,
preferably one named after it (``aten::mm`` for ``mm``); both are on the epoch clock Kineto uses.
"""

import bisect
import functools
import gzip
import json
import time

import torch
from torch._C._autograd import DeviceType
from torch._C._profiler import ProfilerState
from torch.autograd.profiler_util import FunctionEvent

from . import _C
from ._backend import DEVICE_NAME

MATCH_SLACK_US = 5.0  # the host clocks read by Kineto and by us may differ by a few microseconds
MATCH_LOOKBACK = 256  # ops that started before a kernel and may still enclose it

_profile = torch.autograd.profiler.profile
_waiting = []  # recordings started before the chip existed


class Recording:
    """The kernels one PyTorch profile sees, with their host interval and simulated time."""

    def __init__(self):
        self.records = []
        self.chip = None
        self.device_start = 0.0
        self.epoch_minus_perf_ns = time.time_ns() - time.perf_counter_ns()
        self.start_epoch_us = time.time_ns() / 1e3
        if _C.chip.created():
            self.attach(_C.current_chip())
        else:
            _waiting.append(self)  # attached when the chip is created: profiling alone does not create it

    def attach(self, chip):
        self.chip = chip
        self.device_start = chip.clock.synchronize()  # the device starts idle, as in torch_tpu.profiler
        chip.clock.recorders.append(self.records)

    def stop(self):
        if self in _waiting:
            _waiting.remove(self)
        if self.chip is not None:
            recorders = self.chip.clock.recorders
            recorders[:] = [r for r in recorders if r is not self.records]

    def host_interval_us(self, record):
        """A kernel's host interval in epoch microseconds."""
        offset = self.epoch_minus_perf_ns
        return (record.host_start_ns + offset) / 1e3, (record.host_end_ns + offset) / 1e3


def _attach_waiting(chip):
    while _waiting:
        _waiting.pop().attach(chip)


_C.chip.when_created(_attach_waiting)


def launching_ops(recording, ops):
    """For each recorded kernel, the op that launched it (or None).

    ``ops`` are (start_us, end_us, name, op) host events on the epoch clock, in any order.
    """
    ops = sorted(ops, key=lambda o: o[0])
    starts = [o[0] for o in ops]
    found = []
    for record in recording.records:
        start, end = recording.host_interval_us(record)
        name = "aten::" + record.cost.name.partition(".")[0]
        position = bisect.bisect_right(starts, start + MATCH_SLACK_US)
        enclosing = None
        for op_start, op_end, op_name, op in reversed(ops[max(0, position - MATCH_LOOKBACK):position]):
            if op_end + MATCH_SLACK_US < end:
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
    ops = [(e.time_range.start + origin_us, e.time_range.end + origin_us, e.name, e) for e in events
           if e.device_type == DeviceType.CPU and not e.is_async and not e.is_user_annotation
           and not e.is_python_function]
    device_origin_us = recording.start_epoch_us - origin_us
    kernels = []
    for record, op in zip(recording.records, launching_ops(recording, ops)):
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


def add_device_lanes(path, recording):
    """Append the simulated chip's tracks to the Chrome trace Kineto wrote at ``path``."""
    from .profiler import device_lanes

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        trace = json.load(f)
    base_us = trace.get("baseTimeNanoseconds", 0) / 1e3  # Kineto writes times relative to this epoch
    events = trace["traceEvents"]
    ops = [(e["ts"] + base_us, e["ts"] + e.get("dur", 0) + base_us, e["name"], e) for e in events
           if e.get("ph") == "X" and e.get("cat") == "cpu_op"]
    external_ids = [None if op is None else op.get("args", {}).get("External id")
                    for op in launching_ops(recording, ops)]
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
        self._tpu_recording = Recording()


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
