"""The PrivateUse1 kernels of c10d's ops, routed to the "ici" group for tpu tensors.

Two kinds of caller reach them. ``ProcessGroup.scatter``, ``gather``, ``reduce``, ``alltoall``,
``allgather_coalesced`` and ``recv_anysource`` are not virtual for Python subclasses: called from C++
(or through ``torch.ops.c10d``), they go to the dispatcher's per-device kernels, whose PrivateUse1
version looks for a C++ backend and raises "No backend type associated with device type tpu". And the
group's own Python methods dispatch these ops on tpu tensors, as a C++ group's methods do, so that
dispatcher modes (CommDebugMode, the profiler) see every collective. Each kernel unboxes the live Python
group and runs the collective itself.

The reductions' ops take a ``ReduceOp`` script object, which Python cannot build with a chosen operation
(``torch.classes.c10d.ReduceOp()`` is always SUM, and ``dist.ReduceOp`` does not convert). A C++ group
builds one per call, so ``script_reduce_op`` takes them from there: a bare ``dist.ProcessGroup`` (no
Python methods, so PyTorch's own ``allreduce`` runs) dispatches ``c10d::allreduce_`` under a mode that
keeps its ReduceOp argument and stops the call. PREMUL_SUM is left out: its factor does not come back out
of the script object (which answers only ``op()``), so those reductions stay off the ops.
"""

import datetime
import warnings

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import AllgatherOptions
from torch.utils._python_dispatch import TorchDispatchMode

RedOpType = dist.ReduceOp.RedOpType

_library = None
_script_reduce_ops = {}  # RedOpType -> the ReduceOp script object c10d's reduction ops take


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


class _Taken(Exception):
    """Stops the capturing call once its ReduceOp argument is in hand."""


class _TakeReduceOp(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.c10d.allreduce_.default:
            raise _Taken(args[2])
        return func(*args, **(kwargs or {}))


def _capture_script_reduce_op(reduce_op):
    options = dist.AllreduceOptions()
    options.reduceOp = reduce_op
    try:
        with _TakeReduceOp():
            dist.ProcessGroup(0, 1).allreduce([torch.empty(0)], options)
    except _Taken as taken:
        return taken.args[0]
    raise RuntimeError("c10d's ProcessGroup.allreduce did not dispatch c10d::allreduce_: cannot build its ReduceOp")


def script_reduce_op(reduce_op):
    """The ReduceOp script object a c10d reduction op takes for ``reduce_op`` (a ``dist.ReduceOp``), or
    None for PREMUL_SUM, whose factor the script object would lose."""
    return _script_reduce_ops.get(reduce_op.op)


def _reduce_op(script_op, name):
    red_op_type = RedOpType(script_op.op())
    if red_op_type == RedOpType.PREMUL_SUM:
        raise RuntimeError(f"c10d::{name} on tpu tensors: ReduceOp.PREMUL_SUM cannot be read back from the op's "
                           "ReduceOp argument (its factor is lost); call the process group's method instead")
    return dist.ReduceOp(red_op_type)


def allreduce_(tensors, process_group, reduce_op, sparse_indices=None, async_op=True, timeout=-1):
    if sparse_indices is not None:
        raise RuntimeError("c10d::allreduce_ on tpu tensors: sparse all-reduce is not supported")
    options = _options(dist.AllreduceOptions, timeout, reduceOp=_reduce_op(reduce_op, "allreduce_"))
    group = _group(process_group)
    return tensors, group.hand_out(group._all_reduce(tensors, options))


def allreduce_coalesced_(tensors, process_group, reduce_op, async_op=True, timeout=-1):
    options = _options(dist.AllreduceCoalescedOptions, timeout,
                       reduceOp=_reduce_op(reduce_op, "allreduce_coalesced_"))
    group = _group(process_group)
    return group.hand_out(group._all_reduce_coalesced(tensors, options))


def reduce_scatter_(output_tensors, input_tensors, process_group, reduce_op, async_op=True, timeout=-1):
    options = _options(dist.ReduceScatterOptions, timeout, reduceOp=_reduce_op(reduce_op, "reduce_scatter_"))
    group = _group(process_group)
    return output_tensors, group.hand_out(group._reduce_scatter(output_tensors, input_tensors, options))


def _reduce_scatter_base_(output_tensor, input_tensor, process_group, reduce_op, async_op=True, timeout=-1):
    options = _options(dist.ReduceScatterOptions, timeout, reduceOp=_reduce_op(reduce_op, "_reduce_scatter_base_"))
    group = _group(process_group)
    return output_tensor, group.hand_out(group._reduce_scatter_single(output_tensor, input_tensor, options))


def scatter_(output_tensors, input_tensors, process_group, root_rank, async_op=True, timeout=-1):
    group = _group(process_group)
    work = group._scatter(output_tensors, input_tensors, _options(dist.ScatterOptions, timeout, rootRank=root_rank))
    return output_tensors, group.hand_out(work)


def gather_(output_tensors, input_tensors, process_group, root_rank, async_op=True, timeout=-1):
    group = _group(process_group)
    options = _options(dist.GatherOptions, timeout, rootRank=root_rank)
    return group.hand_out(group._gather(output_tensors, input_tensors, options))


def reduce_(tensors, process_group, reduce_op, root_rank, root_tensor, async_op=True, timeout=-1):
    options = _options(dist.ReduceOptions, timeout, reduceOp=_reduce_op(reduce_op, "reduce_"), rootRank=root_rank,
                       rootTensor=root_tensor)
    group = _group(process_group)
    return group.hand_out(group._reduce(tensors, options))


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
    return group.hand_out(group._allgather_coalesced(output_lists, input_list, AllgatherOptions()))


def allgather_into_tensor_coalesced_(outputs, inputs, process_group, async_op=True):
    group = _group(process_group)
    return group.hand_out(group._all_gather_single_coalesced(outputs, inputs, AllgatherOptions()))


def reduce_scatter_tensor_coalesced_(outputs, inputs, process_group, reduce_op, async_op=True, timeout=-1):
    options = _options(dist.ReduceScatterOptions, timeout,
                       reduceOp=_reduce_op(reduce_op, "reduce_scatter_tensor_coalesced_"))
    group = _group(process_group)
    return group.hand_out(group._reduce_scatter_single_coalesced(outputs, inputs, options))


def recv_any_source_(tensors, process_group, tag):
    group = _group(process_group)
    return group.hand_out(group.recv_anysource(tensors, tag))


def register():
    """Install the PrivateUse1 kernels (once per process)."""
    global _library
    if _library is not None:
        return
    _script_reduce_ops.update({t: _capture_script_reduce_op(dist.ReduceOp(t)) for t in RedOpType.__members__.values()
                               if t != RedOpType.PREMUL_SUM})
    _library = torch.library.Library("c10d", "IMPL")
    with warnings.catch_warnings():  # replacing c10d's PrivateUse1 kernels is the point
        warnings.filterwarnings("ignore", "Warning only once for all operators")
        for kernel in (scatter_, gather_, reduce_, alltoall_, allgather_coalesced_, recv_any_source_,
                       broadcast_, allgather_, _allgather_base_, alltoall_base_, allreduce_, allreduce_coalesced_,
                       reduce_scatter_, _reduce_scatter_base_, allgather_into_tensor_coalesced_,
                       reduce_scatter_tensor_coalesced_):
            _library.impl(kernel.__name__, kernel, "PrivateUse1")
