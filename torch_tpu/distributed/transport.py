"""How a process group's bytes travel: gloo between real processes, or nowhere in a simulated world.

A transport has the method set of a c10d backend (``allreduce``, ``_allgather_base``,
``alltoall_base``, ``send``, ...), takes CPU tensors (the host views ``_host`` gives of tpu tensors)
and c10d option objects, and returns something to ``wait()`` on, or None when the work is done.
Everything else a collective needs (argument checks, the ICI cost, streams, work handles) is the
process group's, shared by every transport.

- ``gloo_transport``: gloo's own process group over TCP, which works across processes and hosts.
- ``SimulatedTransport``: one process plays one rank of a bigger world and has no peers. Its
  collectives give every output its exact shape and the values it would have if **every rank held
  the same tensors as this one**: an all-reduce sums (or multiplies, ...) ``world`` equal copies,
  an all-gather repeats the local tensor, a reduce-scatter reduces ``world`` copies of this rank's
  chunk, an all-to-all fills every block with the block this rank sends itself. What only another
  rank holds cannot be known: a scatter on a rank that is not the root, a recv, and a reduce or
  gather on a rank that is not the root leave their outputs as they were. Tensors without bytes
  (abstract runs) get no values at all; only their shapes matter.
"""

import torch
import torch.distributed as dist

RedOpType = dist.ReduceOp.RedOpType


def gloo_transport(store, rank, size, timeout):
    """gloo's process group over ``store``'s rendezvous: real bytes between real processes."""
    return dist.ProcessGroupGloo(store, rank, size, timeout)


def reduce_equal_copies(tensor, op, copies):
    """``tensor`` becomes the reduction of ``copies`` tensors equal to it."""
    if tensor is None or copies == 1:
        return
    if op == RedOpType.SUM and tensor.dtype != torch.bool:
        tensor.mul_(copies)
    elif op == RedOpType.PRODUCT and tensor.dtype != torch.bool:
        tensor.pow_(copies)
    elif op == RedOpType.BXOR:
        if copies % 2 == 0:
            tensor.zero_()
    # AVG, MAX, MIN, BAND, BOR and logical sums/products of equal copies leave them as they are


def _copy(destination, source):
    if destination is not None and source is not None:
        destination.copy_(source)


def _fill_block(destination, source):
    """``destination`` with ``source``'s rows, repeated or cut to its length (an all-to-all block)."""
    if destination is None or source is None or destination.numel() == 0:
        return
    if source.shape[0] == 0:
        destination.zero_()
        return
    index = torch.arange(destination.shape[0]) % source.shape[0]
    destination.copy_(source.index_select(0, index))


def _split(tensor, sizes, world):
    if tensor is None:
        return [None] * world
    sizes = list(sizes) or [tensor.shape[0] // world] * world
    return list(tensor.split(sizes))


class SimulatedTransport:
    """No peers: rank ``rank`` of ``size`` ranks that all hold what this one holds."""

    def __init__(self, rank, size):
        self._rank, self._size = rank, size

    def rank(self):
        return self._rank

    def size(self):
        return self._size

    def allreduce(self, tensors, opts):
        for tensor in tensors:
            reduce_equal_copies(tensor, opts.reduceOp.op, self._size)

    allreduce_coalesced = allreduce

    def broadcast(self, tensors, opts):
        pass  # the root holds what this rank holds

    def allgather(self, output_lists, inputs, opts):
        for outputs, tensor in zip(output_lists, inputs):
            for output in outputs:
                _copy(output, tensor)

    def _allgather_base(self, output, tensor, opts):
        if output is not None and tensor is not None:
            for chunk in output.chunk(self._size):
                chunk.copy_(tensor.reshape(chunk.shape))

    def reduce_scatter(self, outputs, input_lists, opts):
        for output, inputs in zip(outputs, input_lists):
            _copy(output, inputs[self._rank])
            reduce_equal_copies(output, opts.reduceOp.op, self._size)

    def _reduce_scatter_base(self, output, tensor, opts):
        if output is not None and tensor is not None:
            output.copy_(tensor.chunk(self._size)[self._rank].reshape(output.shape))
        reduce_equal_copies(output, opts.reduceOp.op, self._size)

    def alltoall_base(self, output, tensor, output_splits, input_splits, opts):
        mine = _split(tensor, input_splits, self._size)[self._rank]
        for block in _split(output, output_splits, self._size):
            _fill_block(block, mine)

    def alltoall(self, outputs, inputs, opts):
        for output in outputs:
            _fill_block(output, inputs[self._rank])

    def scatter(self, outputs, input_lists, opts):
        if opts.rootRank == self._rank:
            for output, inputs in zip(outputs, input_lists):
                _copy(output, inputs[self._rank])

    def gather(self, output_lists, inputs, opts):
        if opts.rootRank == self._rank:
            self.allgather(output_lists, inputs, opts)

    def reduce(self, tensors, opts):
        if opts.rootRank == self._rank:
            self.allreduce(tensors, opts)

    def send(self, tensors, destination, tag):
        pass

    def recv(self, tensors, source, tag):
        pass

    def recv_anysource(self, tensors, tag):
        pass

    def barrier(self, opts):
        pass

    def shutdown(self):
        pass
