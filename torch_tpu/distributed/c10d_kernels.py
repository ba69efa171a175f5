"""The PrivateUse1 kernels of c10d's ops, routed to the "ici" group for tpu tensors.

Two kinds of caller reach them. ``ProcessGroup.scatter``, ``gather``, ``reduce``, ``alltoall``,
``allgather_coalesced`` and ``recv_anysource`` are not virtual for Python subclasses: called from C++
(or through ``torch.ops.c10d``), they go to the dispatcher's per-device kernels, whose PrivateUse1
version looks for a C++ backend and raises "No backend type associated with device type tpu". And the
group's own Python methods for the collectives that move data without reducing it (broadcast, all-gather,
all-to-all, scatter, gather) dispatch these ops on tpu tensors, as a C++ group's methods do, so that
dispatcher modes (CommDebugMode, the profiler) see them. Each kernel unboxes the live Python group and
runs the collective itself.
"""

import datetime
import warnings

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import AllgatherOptions

_library = None


def _group(boxed):
    from .process_group import ProcessGroupICI

    group = dist.ProcessGroup.unbox(boxed)
    if not isinstance(group, ProcessGroupICI):
        raise RuntimeError(
            f"tpu tensors need a process group of the 'ici' backend, got {group.name()!r}: "
            "init_process_group('ici') (or with no backend) under torchrun"
        )
    return group


def _with_timeout(options, timeout):
    if timeout >= 0:
        options.timeout = datetime.timedelta(milliseconds=timeout)
    return options


def _options(kind, timeout, **fields):
    options = _with_timeout(kind(), timeout)
    for name, value in fields.items():
        setattr(options, name, value)
    return options


def scatter_(output_tensors, input_tensors, process_group, root_rank, async_op=True, timeout=-1):
    group = _group(process_group)
    work = group._scatter(output_tensors, input_tensors, _options(dist.ScatterOptions, timeout, rootRank=root_rank))
    return output_tensors, group.hand_out(work)


def gather_(output_tensors, input_tensors, process_group, root_rank, async_op=True, timeout=-1):
    group = _group(process_group)
    options = _options(dist.GatherOptions, timeout, rootRank=root_rank)
    return group.hand_out(group._gather(output_tensors, input_tensors, options))


def reduce_(tensors, process_group, reduce_op, root_rank, root_tensor, async_op=True, timeout=-1):
    op = dist.ReduceOp(dist.ReduceOp.RedOpType(reduce_op.op()))  # the ReduceOp arrives as a ScriptObject
    options = _options(dist.ReduceOptions, timeout, reduceOp=op, rootRank=root_rank, rootTensor=root_tensor)
    group = _group(process_group)
    return group.hand_out(group.reduce(tensors, options))


def alltoall_(output_tensors, input_tensors, process_group, async_op=True, timeout=-1):
    group = _group(process_group)
    options = _options(dist.AllToAllOptions, timeout)
    return output_tensors, group.hand_out(group._alltoall(output_tensors, input_tensors, options))


def broadcast_(tensors, process_group, root_rank, root_tensor, async_op=True, timeout=-1):
    options = _options(dist.BroadcastOptions, timeout, rootRank=root_rank, rootTensor=root_tensor)
    group = _group(process_group)
    return tensors, group.hand_out(group._broadcast(tensors, options))


def allgather_(output_tensors, input_tensors, process_group, async_op=True, timeout=-1):
    group = _group(process_group)
    options = _options(AllgatherOptions, timeout)
    return output_tensors, group.hand_out(group._allgather(output_tensors, input_tensors, options))


def _allgather_base_(output_tensor, input_tensor, process_group, async_op=True, timeout=-1):
    group = _group(process_group)
    options = _options(AllgatherOptions, timeout)
    return output_tensor, group.hand_out(group._all_gather_single(output_tensor, input_tensor, options))


def alltoall_base_(output, input, process_group, output_split_sizes, input_split_sizes, async_op=True, timeout=-1):
    options = _options(dist.AllToAllOptions, timeout)
    group = _group(process_group)
    return group.hand_out(group._all_to_all_single(output, input, output_split_sizes, input_split_sizes, options))


def allgather_coalesced_(output_lists, input_list, process_group, async_op=True):
    group = _group(process_group)
    return group.hand_out(group.allgather_coalesced(output_lists, input_list, AllgatherOptions()))


def recv_any_source_(tensors, process_group, tag):
    group = _group(process_group)
    return group.hand_out(group.recv_anysource(tensors, tag))


def register():
    """Install the PrivateUse1 kernels (once per process)."""
    global _library
    if _library is not None:
        return
    _library = torch.library.Library("c10d", "IMPL")
    with warnings.catch_warnings():  # replacing c10d's PrivateUse1 kernels is the point
        warnings.filterwarnings("ignore", "Warning only once for all operators")
        for kernel in (scatter_, gather_, reduce_, alltoall_, allgather_coalesced_, recv_any_source_,
                       broadcast_, allgather_, _allgather_base_, alltoall_base_):
            _library.impl(kernel.__name__, kernel, "PrivateUse1")
