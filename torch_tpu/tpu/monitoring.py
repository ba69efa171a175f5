"""What nvidia-smi samples, as torch.cuda reports it (``utilization``, ``memory_usage``), from the simulated clock.

CUDA's figures cover the driver's last sample period; the emulated chip's cover its whole simulated run so far (the
clock has no sampling), as percentages (ints) of the time since the chip started: ``utilization()`` of the time
some kernel ran, ``memory_usage()`` of the time HBM was being read or written (the kernels' bytes at the chip's HBM
bandwidth). The chip has no power, thermal or frequency model, so ``power_draw``, ``temperature`` and
``clock_rate`` raise.
"""

from .. import _C
from .._errors import check_device_index
from ._unavailable import unavailable


def _percent_of_run(busy_seconds, device):
    check_device_index(device, "torch.tpu utilization query")
    elapsed = _C.current_chip().clock.device_now()
    return min(100, int(100 * busy_seconds / elapsed)) if elapsed > 0 else 0


def utilization(device=None) -> int:
    """Percent of the simulated run during which a kernel was executing."""
    return _percent_of_run(_C.current_chip().clock.busy_seconds, device)


def memory_usage(device=None) -> int:
    """Percent of the simulated run during which HBM was being read or written."""
    chip = _C.current_chip()
    moved = sum(totals.bytes for totals in chip.clock.op_totals.values())
    return _percent_of_run(moved / chip.spec.hbm_bandwidth, device)


_NO_MODEL = ("the emulated chip models time from FLOPs and HBM bytes (a roofline), not power, temperature or clock "
             "frequency; torch.tpu.utilization() and memory_usage() report what it does model")
power_draw = unavailable("power_draw", _NO_MODEL)
temperature = unavailable("temperature", _NO_MODEL)
clock_rate = unavailable("clock_rate", _NO_MODEL)
