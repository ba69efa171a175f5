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


class NoValuesError(RuntimeError):
    """What needs a value from a tpu tensor that has none: one made or written in abstract mode.

    ``what`` names the operation; the launch wrapper fills it in when a kernel found out first.
    """

    def __init__(self, what=None):
        self.what = what
        super().__init__(
            f"{what or 'This tpu kernel'} needs tensor values, but this tpu tensor has none: it was created or "
            "written in abstract mode (torch_tpu.abstract() or TORCH_TPU_ABSTRACT=1), which keeps shapes, dtypes "
            "and HBM bytes only."
        )

    def naming(self, what):
        """This error, naming ``what`` if no operation is named yet."""
        return self if self.what is not None else NoValuesError(what)
