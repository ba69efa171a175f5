"""``torch.tpu.tunable``: TunableOp picks among cuBLAS/hipBLASLt GEMM kernels by timing them. The emulated chip has
one matmul path (the MXU's bf16 passes, csrc_py/mxu.py) and no kernels to choose from, so TunableOp is never on:
its switches may be turned off (code that disables it runs), not on."""

import torch.cuda.tunable

from ._unavailable import unavailable, unavailable_functions

_WHY = ("TunableOp times cuBLAS/hipBLASLt GEMM variants, and the emulated chip has one matmul path (the MXU's bf16 "
        "passes, set by torch.set_float32_matmul_precision)")
_SWITCHES = ("enable", "tuning_enable", "record_untuned_enable")


def _switch_that_stays_off(name):
    refuse = unavailable(f"tunable.{name}", _WHY)

    def switch(val: bool = True) -> None:
        if val:
            refuse()

    switch.__name__ = switch.__qualname__ = name
    return switch


globals().update(unavailable_functions(
    "tunable", [name for name in torch.cuda.tunable.__all__ if not name.endswith("is_enabled")], _WHY))
globals().update({name: _switch_that_stays_off(name) for name in _SWITCHES})
globals().update({f"{name[:-len('enable')]}is_enabled": (lambda: False) for name in _SWITCHES})
