"""The handle of a collective in flight: ``work.wait()`` on the host and on the simulated clock.

Waiting does two things. On the host it waits for the transport to finish moving the bytes and
brings computed copies back to HBM (``_host.HostTensor.finish``). On the simulated chip it makes
the current stream wait until the collective's end on its ICI stream, as ``ncclWork.wait()`` makes
the current CUDA stream wait for NCCL's: until then, compute kernels overlap the collective.

``get_future()`` is how DDP's reducer takes a gradient bucket's all-reduce, in C++, where the clock
cannot follow its wait; DDP waits for every bucket when backward ends, so a future taken during
backward makes the compute stream wait then (an autograd end-of-backward callback, as DDP's own).
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
        self._source = source_rank  # None: the transport knows (a receive from any source)
        self._finished = False
        self._exception = None

    def _finish(self):
        if self._exception is not None:
            raise self._exception
        if self._finished:
            return
        try:
            for pending in self._pending:
                pending.wait()
            for host in self._host_tensors:
                host.finish()
        except RuntimeError as error:
            if str(error).startswith(self._describe):  # already names the call (a recv's envelope)
                self._exception = error
                raise
            self._exception = type(error)(f"{self._describe} failed: {error}")
            raise self._exception from error
        except Exception as error:  # kept as it is: its class may take other arguments than a message
            error.add_note(f"{self._describe} failed")
            self._exception = error
            raise
        self._finished = True

    def wait(self, timeout=None):
        self._finish()
        if self._ends_at is not None:
            self._wait_on_the_clock()
        return True

    def is_completed(self):
        """True once the output can be read without ``wait()`` (c10d's promise): a collective that
        computed in a copy (low-precision, strided) brings it back to HBM before saying so."""
        if self._finished or self._exception is not None:
            return True
        if not all(p.is_completed() for p in self._pending):
            return False
        try:
            self._finish()
        except Exception:
            pass  # kept in self._exception: wait() raises it, as c10d's Work does; polling never raises
        return True

    def is_success(self):
        return self._finished

    def exception(self):
        return self._exception

    def source_rank(self):
        if self._source is None:
            self.wait()
            self._source = self._pending[0]._source_rank() if self._pending else -1
        return self._source

    _source_rank = source_rank  # the name c10d's recv(src=None) calls

    def result(self):
        self.wait()
        return self._result

    def synchronize(self):
        self.wait()

    def get_future(self):
        """A completed future holding the output tensors (DDP's communication hooks read it)."""
        self._finish()
        future = torch.futures.Future()
        future.set_result(self._result)
        if self._ends_at is not None:
            try:
                torch.autograd.Variable._execution_engine.queue_callback(self._wait_on_the_clock)
            except RuntimeError:  # not inside a backward pass: the caller is about to use the result
                self._wait_on_the_clock()
        return future

    def _wait_on_the_clock(self):
        clock = _C.current_chip().clock
        clock.wait(clock.current_stream, self._ends_at)
