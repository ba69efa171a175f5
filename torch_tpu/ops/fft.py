"""FFT kernels: the three aten primitives every ``torch.fft`` op, ``stft`` and ``istft`` lower to.

``_fft_r2c`` (real to complex), ``_fft_c2r`` (Hermitian complex to real) and ``_fft_c2c`` run
multi-dimensional transforms over a list of dims. ``normalization`` is aten's ``fft_norm_mode``:
0 leaves the transform unscaled, 1 scales it by 1/sqrt(n) and 2 by 1/n, where n is the product of
the signal sizes (the output's for c2r), whatever the direction. scipy.fft runs pocketfft, the
library torch CPU uses without MKL, in the input's own precision (float32 stays single precision),
and scales inside the transform as torch does; picking scipy's ``norm`` by direction gives exactly
aten's scaling.
"""

import numpy as np
import scipy.fft
import torch

from ._common import operand, store, wrap_dim
from ._registry import register

_REAL_TO_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}

# scipy's norm names the scaling of the forward transform; the inverse gets the complementary one.
_FORWARD_NORM = {0: "backward", 1: "ortho", 2: "forward"}
_INVERSE_NORM = {0: "forward", 1: "ortho", 2: "backward"}


def _check_dtype(self, kind, expected):
    if not expected(self.dtype):
        raise RuntimeError(f"{kind} expects a {'complex' if kind != 'r2c' else 'floating point'} input tensor, "
                           f"but got {self.dtype}")


def _axes(self, dim):
    return [wrap_dim(d, self.dim()) for d in dim]


@register("_fft_r2c", "_fft_r2c.out")
def fft_r2c(self, dim, normalization, onesided, *, out=None):
    _check_dtype(self, "r2c", lambda dtype: dtype.is_floating_point)
    x, axes = operand(self), _axes(self, dim)
    norm = _FORWARD_NORM[normalization]
    if onesided:
        result = scipy.fft.rfftn(x, axes=axes, norm=norm)
    else:
        result = scipy.fft.fftn(x, axes=axes, norm=norm)
    return store(result, _REAL_TO_COMPLEX[self.dtype], out=out, distinct=(self,), dtype_rule=None)


@register("_fft_c2r", "_fft_c2r.out")
def fft_c2r(self, dim, normalization, last_dim_size, *, out=None):
    _check_dtype(self, "c2r", lambda dtype: dtype.is_complex)
    x, axes = operand(self), _axes(self, dim)
    sizes = [self.shape[axis] for axis in axes[:-1]] + [last_dim_size]
    result = scipy.fft.irfftn(x, s=sizes, axes=axes, norm=_INVERSE_NORM[normalization])
    return store(result, self.dtype.to_real(), out=out, distinct=(self,), dtype_rule=None)


@register("_fft_c2c", "_fft_c2c.out")
def fft_c2c(self, dim, normalization, forward, *, out=None):
    _check_dtype(self, "c2c", lambda dtype: dtype.is_complex)
    x, axes = operand(self), _axes(self, dim)
    if not axes:
        return store(np.array(x), self.dtype, out=out, distinct=(self,), dtype_rule=None)
    if forward:
        result = scipy.fft.fftn(x, axes=axes, norm=_FORWARD_NORM[normalization])
    else:
        result = scipy.fft.ifftn(x, axes=axes, norm=_INVERSE_NORM[normalization])
    return store(result, self.dtype, out=out, distinct=(self,), dtype_rule=None)
