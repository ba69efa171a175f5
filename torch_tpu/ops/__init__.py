"""ATen kernels for the tpu device, grouped the way PyTorch groups native functions.

Importing this package registers every kernel and the boxed fallback.
"""

from . import (  # noqa: F401
    amp,
    attention,
    conv,
    copy,
    factory,
    fake_quant,
    fallback,
    fft,
    foreach,
    histogram,
    indexing,
    linalg,
    losses,
    nested,
    nested_strided,
    nn,
    pooling,
    product_nodes,
    optim,
    pointwise,
    random,
    reduction,
    rnn,
    sampling,
    scaled_mm,
    shape,
    sparse,
    special,
    transformer,
    view,
)
from ._registry import KERNELS

__all__ = ["KERNELS"]
