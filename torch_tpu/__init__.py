"""torch_tpu: an emulated Google TPU (Ironwood by default) as the PyTorch device ``"tpu"``.

``import torch`` loads this package through the ``torch.backends`` entry point
(set ``TORCH_DEVICE_BACKEND_AUTOLOAD=0`` to turn that off and ``import torch_tpu``
yourself). After that, ``tensor.to("tpu")`` runs on the emulated chip.
"""


def _autoload():
    """Entry point for torch's device-backend autoloading; importing this package did the work."""


# defined before anything imports torch: `import torch_tpu` first imports torch, whose
# autoloading looks up torch_tpu._autoload on this partly initialised module
from . import _backend  # noqa: E402

_backend.register_device()

from . import _accelerator  # noqa: E402

_accelerator.install()

from . import _pinned, _printing, _storage, autocast, fp8, ops, profiler  # noqa: E402,F401
from . import _abstract  # noqa: E402
from ._abstract import abstract, has_values, is_abstract  # noqa: E402
from ._errors import NoValuesError  # noqa: E402
from . import distributed  # noqa: E402

distributed.register_backend()

from .distributed import simulate  # noqa: E402
from .ops.fallback import fallback_counts  # noqa: E402
from .report import report  # noqa: E402

_abstract.enable_from_environment()

__version__ = "0.1.0"
__all__ = ["NoValuesError", "abstract", "fallback_counts", "has_values", "is_abstract", "report", "simulate"]
