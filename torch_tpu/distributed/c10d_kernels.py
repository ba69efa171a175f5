"""The c10d ops a Python process group cannot override, routed to the "ici" group for tpu tensors.

``ProcessGroup.scatter``, ``gather``, ``reduce``, ``alltoall``, ``allgather_coalesced`` and
``recv_anysource`` are not virtual for Python subclasses: called from C++ (or through
``torch.ops.c10d``), they go to the dispatcher's per-device kernels, whose PrivateUse1 version
looks for a C++ backend and raises "No backend type associated with device type tpu". These
kernels replace it: they unbox the live Python group and call its method. (Python callers such as
``dist.scatter`` reach the group's Python methods directly.)
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
    work = _group(process_group).scatter(output_tensors, input_tensors,
                                         _options(dist.ScatterOptions, timeout, rootRank=root_rank))
    return output_tensors, work.boxed()


def gather_(output_tensors, input_tensors, process_group, root_rank, async_op=True, timeout=-1):
    work = _group(process_group).gather(output_tensors, input_tensors,
                                        _options(dist.GatherOptions, timeout, rootRank=root_rank))
    return work.boxed()


def reduce_(tensors, process_group, reduce_op, root_rank, root_tensor, async_op=True, timeout=-1):
    op = dist.ReduceOp(dist.ReduceOp.RedOpType(reduce_op.op()))  # the ReduceOp arrives as a ScriptObject
    options = _options(dist.ReduceOptions, timeout, reduceOp=op, rootRank=root_rank, rootTensor=root_tensor)
    return _group(process_group).reduce(tensors, options).boxed()


def alltoall_(output_tensors, input_tensors, process_group, async_op=True, timeout=-1):
    work = _group(process_group).alltoall(output_tensors, input_tensors, _options(dist.AllToAllOptions, timeout))
    return output_tensors, work.boxed()


def allgather_coalesced_(output_lists, input_list, process_group, async_op=True):
    return _group(process_group).allgather_coalesced(output_lists, input_list, AllgatherOptions()).boxed()


def recv_any_source_(tensors, process_group, tag):
    return _group(process_group).recv_anysource(tensors, tag).boxed()


def register():
    """Install the PrivateUse1 kernels (once per process)."""
    global _library
    if _library is not None:
        return
    _library = torch.library.Library("c10d", "IMPL")
    with warnings.catch_warnings():  # replacing c10d's PrivateUse1 kernels is the point
        warnings.filterwarnings("ignore", "Warning only once for all operators")
        for kernel in (scatter_, gather_, reduce_, alltoall_, allgather_coalesced_, recv_any_source_):
            _library.impl(kernel.__name__, kernel, "PrivateUse1")
