"""The emulated TPU chip (installed as ``torch_tpu._C``).

This layer plays the part a C++ ``csrc/`` plays in a real backend: it models the
hardware with NumPy and knows nothing of PyTorch. Never import torch here.
"""

from . import chips, clock, dtypes, hbm, ici, rng, trace, vpu
from .chip import Chip, current_chip
from .chips import CHIPS, ChipSpec
from .hbm import HBMOutOfMemory

__all__ = ["CHIPS", "Chip", "ChipSpec", "HBMOutOfMemory", "chips", "clock", "current_chip", "dtypes", "hbm", "ici", "rng", "trace", "vpu"]
