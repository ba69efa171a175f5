"""Streams and events on the chip's simulated clock.

Emulated kernels finish before they return, so every stream is idle and every event has
completed as far as the host can tell (``query()`` is always True). What streams and events
do follow is *simulated* time (``csrc_py/clock.py``): each stream has its own time line,
kernels launched inside ``torch.tpu.stream(s)`` are charged to ``s``, ``event.record(s)``
captures ``s``'s time, ``elapsed_time`` returns simulated milliseconds, and
``wait_event``/``wait_stream`` make one stream's next kernel start no earlier than the other's
work, as on the device.

``torch.tpu.Stream`` and ``torch.tpu.Event`` subclass ``torch.Stream`` and ``torch.Event``, and
``torch.accelerator.current_stream()``/``set_stream()`` answer with them. Objects built directly as
``torch.Stream(device="tpu")`` or ``torch.Event(device="tpu")`` never reach this module: C++ builds
and runs them through the Python device guard, which hands out the default stream (id 0) for every
new stream and records nothing. This module accepts them as handles: such a stream is the default
stream, and such an event carries no time (waiting on it is a no-op; ``elapsed_time`` needs
``torch.tpu.Event``).
"""

import itertools

import torch

from .. import _C
from .._errors import check_device_index

_DEVICE_TYPE = torch._C._autograd.DeviceType.PrivateUse1.value
DEFAULT_STREAM_ID = 0
_stream_ids = itertools.count(DEFAULT_STREAM_ID + 1)
_event_ids = itertools.count(1)


def _clock():
    return _C.current_chip().clock


def _check_device(device, where):
    if isinstance(device, int):
        device = torch.device("tpu", device)
    check_device_index(device, where)


class Stream(torch.Stream):
    """A queue of kernels with its own simulated time line. ``Stream()`` is a new stream."""

    def __new__(cls, device=None, priority=0, stream_id=None, **kwargs):
        _check_device(device, "torch.tpu.Stream")
        _check_device(kwargs.get("device_index"), "torch.tpu.Stream")
        stream_id = next(_stream_ids) if stream_id is None else stream_id
        return super().__new__(cls, stream_id=stream_id, device_index=0, device_type=_DEVICE_TYPE)

    def __init__(self, device=None, priority=0, stream_id=None, **kwargs):
        self.priority = priority  # accepted for torch.cuda compatibility; the emulated chip has no scheduler
        self._outer_streams = []

    def query(self):
        return True

    def synchronize(self):
        _clock().synchronize(self.stream_id)

    def wait_event(self, event):
        recorded_at = getattr(event, "recorded_at", None)  # None for torch.Event: it carries no time
        if recorded_at is not None:
            _clock().wait(self.stream_id, recorded_at)

    def wait_stream(self, stream):
        clock = _clock()
        clock.wait(self.stream_id, clock.now(stream.stream_id))

    def record_event(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def __enter__(self):
        self._outer_streams.append(current_stream())
        set_stream(self)
        return self

    def __exit__(self, *exc):
        set_stream(self._outer_streams.pop())
        return False


class Event(torch.Event):
    """A point on one stream's simulated time line.

    ``blocking`` is accepted as in torch.cuda: the host waits in ``synchronize()`` either way.
    """

    def __new__(cls, enable_timing=False, blocking=False, interprocess=False, **kwargs):
        return super().__new__(cls, device="tpu", enable_timing=enable_timing, blocking=blocking,
                               interprocess=interprocess)

    def __init__(self, enable_timing=False, blocking=False, interprocess=False, **kwargs):
        self.enable_timing = enable_timing
        self.blocking = blocking
        self.recorded_at = None  # simulated seconds
        self._event_id = 0  # given at the first record, as a CUDA event is created then

    @property
    def event_id(self):
        return self._event_id

    @property
    def device(self):
        """``tpu`` until recorded, then ``tpu:0`` (the device of the stream that recorded it)."""
        return torch.device("tpu", 0) if self._event_id else torch.device("tpu")

    def record(self, stream=None):
        stream = current_stream() if stream is None else stream
        if stream.device_type != _DEVICE_TYPE:
            raise ValueError(f"Event device type tpu does not match recording stream's device type {stream.device.type}.")
        if not self._event_id:
            self._event_id = next(_event_ids)
        self.recorded_at = _clock().now(stream.stream_id)

    def query(self):
        return True

    def synchronize(self):
        if self.recorded_at is not None:
            _clock().host_wait(self.recorded_at)

    def wait(self, stream=None):
        _as_tpu_stream(current_stream() if stream is None else stream).wait_event(self)

    def elapsed_time(self, end_event):
        """Simulated milliseconds from this event to ``end_event``."""
        if not isinstance(end_event, Event):
            raise TypeError("elapsed_time needs two torch.tpu.Event objects: a torch.Event on tpu is recorded "
                            "by C++ through the Python device guard and carries no simulated time")
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if self.recorded_at is None or end_event.recorded_at is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        return (end_event.recorded_at - self.recorded_at) * 1e3

    def __repr__(self):
        index = 0 if self._event_id else -1
        return (f"torch.tpu.Event device_type=tpu, device_index={index}, enable_timing={self.enable_timing}, "
                f"event_id={self._event_id}")

    def ipc_handle(self):
        raise RuntimeError("torch.tpu.Event.ipc_handle: the emulated chip belongs to one process; "
                           "events cannot be shared with another")


def _as_tpu_stream(stream):
    """A torch.tpu.Stream for ``stream``, which may be a plain torch.Stream on tpu (a handle from C++)."""
    if isinstance(stream, Stream):
        return stream
    if not isinstance(stream, torch.Stream) or stream.device_type != _DEVICE_TYPE:
        raise TypeError(f"expected a tpu stream, got {stream!r}")
    return default_stream() if stream.stream_id == DEFAULT_STREAM_ID else Stream(stream_id=stream.stream_id)


_default_stream = None
_current_stream = None


def default_stream(device=None):
    global _default_stream
    _check_device(device, "torch.tpu.default_stream")
    if _default_stream is None:
        _default_stream = Stream(stream_id=DEFAULT_STREAM_ID)
    return _default_stream


def current_stream(device=None):
    _check_device(device, "torch.tpu.current_stream")
    return _current_stream or default_stream()


def set_stream(stream):
    """Make ``stream`` current: kernels launched from now on are charged to it."""
    global _current_stream
    if stream is None:
        return  # as torch.cuda.set_stream(None)
    _current_stream = _as_tpu_stream(stream)
    _clock().current_stream = _current_stream.stream_id


class StreamContext:
    """``with torch.tpu.StreamContext(s):`` launches kernels on ``s``, as torch.cuda.StreamContext; ``None`` leaves
    the current stream."""

    def __init__(self, stream):
        self.stream = stream
        self._previous = None

    def __enter__(self):
        if self.stream is not None:
            self._previous = current_stream()
            set_stream(self.stream)
        return self.stream

    def __exit__(self, *exc):
        if self.stream is not None:
            set_stream(self._previous)
        return False


def stream(s):
    """``with torch.tpu.stream(s):`` launches kernels on ``s``; ``None`` leaves the current stream."""
    return StreamContext(s)


def synchronize():
    """The host waits for every stream; returns the chip's simulated time in seconds."""
    if not (_C.chip.created() or _C.chip.in_bad_fork()):
        return 0.0  # nothing has run: no need to create the chip (torch.profiler synchronizes on exit)
    return _clock().synchronize()
