"""Error messages shared by kernels, worded like PyTorch's own so users recognise them."""

import torch


def device_mismatch(first, second, op_name=None):
    where = f" (when running {op_name} on tpu)" if op_name else ""
    return RuntimeError(
        f"Expected all tensors to be on the same device, but found at least two devices, "
        f"{first} and {second}!{where}"
    )


def check_device_index(device, op_name="tensor creation"):
    """One process drives one chip: tpu:1 and above exist only in other processes."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "tpu" and device.index not in (None, 0):
        raise RuntimeError(
            f"{op_name}: {device} is not available in this process. torch_tpu emulates one chip "
            "per process, always tpu:0; run one process per chip with torchrun "
            "(e.g. `torchrun --nproc-per-node 4 train.py`) and use tpu:0 in each."
        )
