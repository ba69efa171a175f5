"""torch_tpu: an emulated Google TPU (Ironwood by default) as the PyTorch device ``"tpu"``.

``import torch`` loads this package through the ``torch.backends`` entry point
(set ``TORCH_DEVICE_BACKEND_AUTOLOAD=0`` to turn that off and ``import torch_tpu``
yourself). After that, ``tensor.to("tpu")`` runs on the emulated chip.

Importing registers the device and its hooks only; the kernels, ml_dtypes and SciPy load on
first tpu use (``_lazy.py``), so torch users who never touch the tpu do not pay for them.
Submodules (``torch_tpu.profiler``, ``torch_tpu.fp8``, ...) load when first named.
"""

import importlib


def _autoload():
    """Entry point for torch's device-backend autoloading; importing this package did the work."""


# defined before anything imports torch: `import torch_tpu` first imports torch, whose
# autoloading looks up torch_tpu._autoload on this partly initialised module
from . import _backend  # noqa: E402

_backend.register_device()

from . import _accelerator, _lazy, _parallel_comm  # noqa: E402

_accelerator.install()
_parallel_comm.install()
_lazy.install_fallbacks()

from . import _dlpack, _multiprocessing, _pinned, _printing, _pytorch_profiler, _storage, autocast, distributed, profiler  # noqa: E402,F401
from . import _abstract  # noqa: E402
from .compile import registration as _compile_registration  # noqa: E402

_compile_registration.install()  # light: hooks that run when Dynamo and Inductor are first imported
from ._abstract import abstract, has_values, is_abstract  # noqa: E402
from ._errors import NoValuesError  # noqa: E402

distributed.register_backend()  # cheap: "ici" is a name for c10d until a process group is made

from .distributed import simulate  # noqa: E402
from .report import report  # noqa: E402

_abstract.enable_from_environment()

__version__ = "0.1.0"
__all__ = ["NoValuesError", "abstract", "fallback_counts", "has_values", "is_abstract", "report", "simulate"]


def fallback_counts():
    """How many times each op ran on the CPU through ``TORCH_TPU_CPU_FALLBACK=1``."""
    if not _lazy.loaded():
        return {}  # no kernel has run yet, so no fallback either
    from .ops.fallback import fallback_counts as counts

    return counts()


def __getattr__(name):
    """``torch_tpu.<submodule>`` imports the submodule on first use."""
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise  # the submodule exists but something it imports does not
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
