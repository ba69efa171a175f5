"""DLPack export refuses tpu tensors with a reason, instead of handing out a capsule nobody can read.

DLPack names memory by a device type and a raw pointer. It has no device type for this chip, and
emulated HBM bytes live in a host buffer owned by the storage, not at ``data_ptr()`` (an address
in the emulated HBM). ``__dlpack_device__`` already refuses tpu in PyTorch, but ``__dlpack__`` and
``torch.utils.dlpack.to_dlpack`` would export the emulated address, and a consumer would read
garbage. Both go through the exporters wrapped here.
"""

import functools

import torch
import torch.utils.dlpack


def _refuse_tpu(export):
    @functools.wraps(export)
    def wrapper(tensor, *args, **kwargs):
        if isinstance(tensor, torch.Tensor) and tensor.device.type == "tpu":
            raise BufferError(
                "DLPack cannot export a tpu tensor: DLPack has no device type for the emulated TPU and its "
                "bytes are not at data_ptr(). Copy it to the host first: tensor.cpu()."
            )
        return export(tensor, *args, **kwargs)

    return wrapper


torch._C._to_dlpack = _refuse_tpu(torch._C._to_dlpack)
torch._C._to_dlpack_versioned = _refuse_tpu(torch._C._to_dlpack_versioned)
torch.utils.dlpack.to_dlpack = torch._C._to_dlpack
