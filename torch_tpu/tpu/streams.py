"""Streams and events on the chip's simulated clock.

Emulated kernels finish before they return, so every stream is idle and every event has
completed as far as the host can tell (``query()`` is always True). What streams and events
do follow is *simulated* time (``csrc_py/clock.py``): each stream has its own time line,
kernels launched inside ``torch.tpu.stream(s)`` are charged to ``s``, ``event.record(s)``
captures ``s``'s time, ``elapsed_time`` returns simulated milliseconds, and
``wait_event``/``wait_stream`` make one stream's next kernel start no earlier than the other's
work, as on the device.
"""

import contextlib
import itertools

import torch

from .. import _C

_DEVICE_TYPE = torch._C._autograd.DeviceType.PrivateUse1.value
DEFAULT_STREAM_ID = 0
_stream_ids = itertools.count(DEFAULT_STREAM_ID + 1)


def _clock():
    return _C.current_chip().clock


class Stream(torch.Stream):
    """A queue of kernels with its own simulated time line. ``Stream()`` is a new stream."""

    def __new__(cls, device=None, priority=0, stream_id=None, **kwargs):
        stream_id = next(_stream_ids) if stream_id is None else stream_id
        return super().__new__(cls, stream_id=stream_id, device_index=0, device_type=_DEVICE_TYPE)

    def query(self):
        return True

    def synchronize(self):
        _clock().synchronize(self.stream_id)

    def wait_event(self, event):
        if event.recorded_at is not None:
            _clock().wait(self.stream_id, event.recorded_at)

    def wait_stream(self, stream):
        clock = _clock()
        clock.wait(self.stream_id, clock.now(stream.stream_id))

    def record_event(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def __enter__(self):
        self._previous = current_stream()
        set_stream(self)
        return self

    def __exit__(self, *exc):
        set_stream(self._previous)
        return False


class Event(torch.Event):
    """A point on one stream's simulated time line."""

    def __new__(cls, enable_timing=False, blocking=False, interprocess=False):
        return super().__new__(cls, device="tpu", enable_timing=enable_timing)

    def __init__(self, enable_timing=False, blocking=False, interprocess=False):
        self.enable_timing = enable_timing
        self.recorded_at = None  # simulated seconds

    def record(self, stream=None):
        stream = stream or current_stream()
        self.recorded_at = _clock().now(stream.stream_id)

    def query(self):
        return True

    def synchronize(self):
        if self.recorded_at is not None:
            _clock().host_wait(self.recorded_at)

    def wait(self, stream=None):
        (stream or current_stream()).wait_event(self)

    def elapsed_time(self, end_event):
        """Simulated milliseconds from this event to ``end_event``."""
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("Both events must be created with enable_timing=True to measure elapsed time")
        if self.recorded_at is None or end_event.recorded_at is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time")
        return (end_event.recorded_at - self.recorded_at) * 1e3


_default_stream = None
_current_stream = None


def default_stream(device=None):
    global _default_stream
    if _default_stream is None:
        _default_stream = Stream(stream_id=DEFAULT_STREAM_ID)
    return _default_stream


def current_stream(device=None):
    return _current_stream or default_stream()


def set_stream(stream):
    """Make ``stream`` current: kernels launched from now on are charged to it."""
    global _current_stream
    _current_stream = stream
    _clock().current_stream = DEFAULT_STREAM_ID if stream is None else stream.stream_id


@contextlib.contextmanager
def stream(s):
    """``with torch.tpu.stream(s):`` launches kernels on ``s``; ``None`` leaves the current stream."""
    if s is None:
        yield s
        return
    previous = current_stream()
    set_stream(s)
    try:
        yield s
    finally:
        set_stream(previous)


def synchronize():
    """The host waits for every stream; returns the chip's simulated time in seconds."""
    return _clock().synchronize()
