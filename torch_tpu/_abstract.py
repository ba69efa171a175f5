"""Abstract mode: tpu tensors with shapes, dtypes, strides and exact HBM bytes, but no values.

    with torch_tpu.abstract():          # or TORCH_TPU_ABSTRACT=1 for the whole process
        model = Llama70B(device="tpu")  # 140 GB of parameters, a few MB of host RAM
        model(tokens).sum().backward()
    torch.tpu.max_memory_allocated()    # the exact HBM peak; the clock holds the step's time

This is how a training step is planned at full scale (``python -m torch_tpu.plan``): the program
runs unchanged, every op allocates and frees HBM exactly as in eager mode and charges the clock with
the same cost model (``_cost.py``), but no kernel computes anything.

How: every registered kernel launch passes through one wrapper (``_cost.charged``). In abstract mode
it calls ``_abstract_launch.py`` instead of the kernel, which answers from the op's Meta kernel; HBM
is bufferless meanwhile (``csrc_py/hbm.py``): allocations are counted to the byte with no host memory.
This module is only the mode, light enough to load at ``import torch`` (docs/architecture.md, "Lazy
loading"); the launches load with the kernels.

What needs values cannot run: ``.item()``, ``.cpu()``, ``.tolist()``, ops whose output shape
depends on values (``nonzero``, ``masked_select``, ``unique``, ...) raise ``NoValuesError`` naming
the op. Checks of values (``torch._assert_async``, linalg's error codes) pass: there is nothing to
check. Printing shows the metadata instead (``tensor(..., device='tpu:0', size=(2, 3))``). A tensor
that existed before abstract mode keeps its values until an abstract op writes it; from then on it
has none. Random ops draw nothing, so the generator's state does not advance.
"""

import contextlib
import os

from . import _C

ENVIRONMENT_VARIABLE = "TORCH_TPU_ABSTRACT"


class _Mode:
    """Process-wide, not per thread: autograd runs backward on its own device thread."""

    depth = 0


MODE = _Mode()


def is_abstract():
    """True while tpu ops run abstractly."""
    return MODE.depth > 0


def _sync_hbm(chip):
    """The chip's allocator gives host memory outside abstract mode only."""
    chip.hbm.set_bufferless(MODE.depth > 0)


def _enter():
    MODE.depth += 1
    if _C.chip.created():
        _sync_hbm(_C.current_chip())


def _exit():
    MODE.depth -= 1
    if _C.chip.created():
        _sync_hbm(_C.current_chip())


@contextlib.contextmanager
def abstract():
    """Run tpu ops on shapes alone: exact HBM accounting and clock charges, no values (see module doc)."""
    _enter()
    try:
        yield
    finally:
        _exit()


def enable_from_environment():
    """``TORCH_TPU_ABSTRACT=1`` makes the whole process abstract (the chip, once made, is bufferless)."""
    if os.environ.get(ENVIRONMENT_VARIABLE, "0") == "1" and not is_abstract():
        _enter()


_C.chip.when_created(_sync_hbm)  # a chip first used inside abstract mode starts bufferless


def has_values(tensor):
    """Whether a tpu tensor holds values (False once abstract mode made or wrote it)."""
    from . import _tensor

    return _tensor.tensor_has_values(tensor)
