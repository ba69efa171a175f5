"""``torch.tpu.tunable``: TunableOp picks among cuBLAS/hipBLASLt GEMM kernels by timing them. The emulated chip has
one matmul path (the MXU's bf16 passes, csrc_py/mxu.py) and no kernels to choose from, so TunableOp is never on."""

import torch.cuda.tunable

from ._unavailable import unavailable_functions


def is_enabled() -> bool:
    return False


def tuning_is_enabled() -> bool:
    return False


def record_untuned_is_enabled() -> bool:
    return False


globals().update(unavailable_functions(
    "tunable", [name for name in torch.cuda.tunable.__all__ if not name.endswith("is_enabled")],
    "TunableOp times cuBLAS/hipBLASLt GEMM variants, and the emulated chip has one matmul path (the MXU's bf16 "
    "passes, set by torch.set_float32_matmul_precision)"))
