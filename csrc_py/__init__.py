"""The emulated TPU chip (installed as ``torch_tpu._C``).

This layer plays the part a C++ ``csrc/`` plays in a real backend: it models the
hardware with NumPy and knows nothing of PyTorch. Never import torch here.

``import torch`` loads this package (through torch_tpu's autoload), so importing it must stay
cheap: the chip's table, HBM, clock and RNG need only NumPy, which torch has already loaded.
The element types (ml_dtypes), the MXU and VPU numerics and the special functions (SciPy) are
submodules loaded on first attribute access (``_C.dtypes``, ``from torch_tpu._C import mxu``).
"""

import importlib

from . import chips, clock, hbm, ici, rng, trace
from .chip import Chip, current_chip
from .chips import CHIPS, ChipSpec
from .hbm import HBMOutOfMemory, HostOutOfMemory

LAZY_SUBMODULES = frozenset({"cpu_loops", "dtypes", "libm", "mxu", "special", "vpu"})

__all__ = ["CHIPS", "Chip", "ChipSpec", "HBMOutOfMemory", "HostOutOfMemory", "chips", "clock", "current_chip", "dtypes", "hbm", "ici",
           "rng", "trace", "vpu"]


def __getattr__(name):
    if name in LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
