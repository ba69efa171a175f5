"""torch.multiprocessing refuses tpu tensors with a reason, instead of failing deep in shared memory.

CUDA sends a device tensor to another process through CUDA IPC: both processes then share the
device memory. Here each process emulates its own chip (tpu:0 of another process is another chip),
so there is no memory to share, and PyTorch's reducers would try POSIX shared memory and fail with
"_share_fd_: only available on CPU". A copy would silently break the sharing that the receiver
relies on (in-place updates, Hogwild training), so the reducers for tensors and storages refuse tpu
with the way out. (Plain ``pickle`` and ``torch.save`` copy through the host, as documented.)

A ``multiprocessing.Queue`` pickles in a feeder thread, which only prints an error and drops the object:
the receiver, such as a DataLoader's main process waiting for a batch its ``spawn`` worker made on tpu,
would wait forever. There the refusal travels with the message and is raised where it arrives.
"""

import functools
import threading
from multiprocessing.reduction import ForkingPickler

import torch
import torch.multiprocessing.reductions as reductions
from torch.nn.parameter import Parameter


_REFUSAL = (
    "a tpu tensor cannot be shared with another process: each process emulates its own chip, so there is no "
    "device memory to share as CUDA IPC shares it. Send tensor.cpu() (shared memory) and move it to tpu in the "
    "receiving process."
)


def _refused(message):
    raise RuntimeError(message)


def _refuse_tpu(reduce, device_of):
    @functools.wraps(reduce)
    def wrapper(obj):
        if device_of(obj).type == "tpu":
            if threading.current_thread().name == "QueueFeederThread":  # multiprocessing.queues.Queue's
                return _refused, (_REFUSAL,)
            raise RuntimeError(_REFUSAL)
        return reduce(obj)

    return wrapper


reduce_tensor = _refuse_tpu(reductions.reduce_tensor, lambda tensor: tensor.device)
reduce_storage = _refuse_tpu(reductions.reduce_storage, lambda storage: storage.device)
reduce_typed_storage = _refuse_tpu(reductions.reduce_typed_storage, lambda storage: storage._untyped_storage.device)

for tensor_class in (torch.Tensor, Parameter, *torch._tensor_classes):
    ForkingPickler.register(tensor_class, reduce_tensor)
ForkingPickler.register(torch.UntypedStorage, reduce_storage)
ForkingPickler.register(torch.storage.TypedStorage, reduce_typed_storage)
