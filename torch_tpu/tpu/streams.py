"""Streams and events. Emulated kernels finish before they return, so every
stream is always idle and every recorded event has already completed."""

import contextlib
import time

import torch

_DEVICE_TYPE = torch._C._autograd.DeviceType.PrivateUse1


class Stream(torch.Stream):
    def __new__(cls, device=None, priority=0, stream_id=0):
        return super().__new__(cls, stream_id=stream_id, device_index=0, device_type=_DEVICE_TYPE.value)

    def query(self):
        return True

    def synchronize(self):
        pass

    def wait_event(self, event):
        pass

    def wait_stream(self, stream):
        pass

    def record_event(self, event=None):
        event = event or Event()
        event.record(self)
        return event


class Event:
    def __init__(self, enable_timing=False, blocking=False, interprocess=False):
        self.enable_timing = enable_timing
        self._recorded_at = None

    def record(self, stream=None):
        self._recorded_at = time.perf_counter()

    def query(self):
        return True

    def synchronize(self):
        pass

    def wait(self, stream=None):
        pass

    def elapsed_time(self, end_event):
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("Both events must be created with enable_timing=True to measure elapsed time")
        if self._recorded_at is None or end_event._recorded_at is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time")
        return (end_event._recorded_at - self._recorded_at) * 1e3


_default_stream = None
_current_stream = None


def default_stream(device=None):
    global _default_stream
    if _default_stream is None:
        _default_stream = Stream()
    return _default_stream


def current_stream(device=None):
    return _current_stream or default_stream()


def set_stream(stream):
    global _current_stream
    _current_stream = stream


@contextlib.contextmanager
def stream(s):
    previous = current_stream()
    set_stream(s)
    try:
        yield s
    finally:
        set_stream(previous)
