"""ATen kernels for the tpu device, grouped the way PyTorch groups native functions.

Importing this package registers every kernel and the boxed fallback.
"""

from . import copy, factory, fallback, view  # noqa: F401
from ._registry import KERNELS

__all__ = ["KERNELS"]
