"""The chip's event log: what happened on the device, in order.

Memory events are recorded here so later tools (memory snapshots, timelines,
the profiler) can replay them. The log is bounded so a long run cannot grow host
memory without limit.
"""

import collections
import itertools
import time

DEFAULT_CAPACITY = 100_000


class EventLog:
    def __init__(self, capacity=DEFAULT_CAPACITY):
        self._events = collections.deque(maxlen=capacity)
        self._sequence = itertools.count()
        self.enabled = True

    def record(self, kind, **fields):
        if self.enabled:
            fields.update(kind=kind, seq=next(self._sequence), host_time_ns=time.perf_counter_ns())
            self._events.append(fields)

    def events(self, kind=None):
        return [e for e in self._events if kind is None or e["kind"] == kind]

    def clear(self):
        self._events.clear()

    def __len__(self):
        return len(self._events)
