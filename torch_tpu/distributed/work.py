"""The handle of a collective in flight: ``work.wait()`` on the host and on the simulated clock.

Waiting does two things. On the host it waits for the transport to finish moving the bytes and
brings computed copies back to HBM (``_host.HostTensor.finish``). On the simulated chip it makes
the current stream wait until the collective's end on its ICI stream, as ``ncclWork.wait()`` makes
the current CUDA stream wait for NCCL's: until then, compute kernels overlap the collective.
"""

import torch
import torch.distributed as dist

from .. import _C


class Work(dist.Work):
    def __init__(self, describe, pending=(), host_tensors=(), result=(), ends_at=None, source_rank=-1):
        super().__init__()
        self._describe = describe  # "all_reduce on rank 1 of group 0": for error messages
        self._pending = [p for p in pending if p is not None]
        self._host_tensors = host_tensors  # also keeps every tensor of the collective alive until it ends
        self._result = list(result)
        self._ends_at = ends_at  # simulated seconds; None for collectives that do not use the ICI
        self._source_rank = source_rank
        self._finished = False

    def _finish(self):
        if self._finished:
            return
        try:
            for pending in self._pending:
                pending.wait()
        except RuntimeError as error:
            raise type(error)(f"{self._describe} failed: {error}") from error
        for host in self._host_tensors:
            host.finish()
        self._pending = ()
        self._finished = True

    def wait(self, timeout=None):
        self._finish()
        if self._ends_at is not None:
            clock = _C.current_chip().clock
            clock.wait(clock.current_stream, self._ends_at)
        return True

    def is_completed(self):
        return self._finished or all(p.is_completed() for p in self._pending)

    def is_success(self):
        return self.is_completed()

    def exception(self):
        return None

    def source_rank(self):
        return self._source_rank

    def result(self):
        self.wait()
        return self._result

    def synchronize(self):
        self.wait()

    def get_future(self):
        """A completed future holding the output tensors (DDP's communication hooks read it)."""
        self.wait()
        future = torch.futures.Future()
        future.set_result(self._result)
        return future
