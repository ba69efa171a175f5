"""The vector unit: elementwise work, spread over the host's cores when it is big enough.

NumPy runs a ufunc on one core but releases the GIL inside it, so a large elementwise op is
split into row blocks run by a thread pool. Floating-point exceptions are ignored, as on a
TPU (and in PyTorch): overflow gives inf and invalid operations give NaN, silently. Small ops run inline (a thread hand-off costs
more than they do), and so do ops whose output overlaps an input in any way other than
exactly (``x += y`` splits safely; ``x[1:] += x[:-1]`` does not).
"""

import concurrent.futures
import os

import numpy as np

PARALLEL_MIN_ELEMENTS = 1 << 18
WORKERS = max(1, min(os.cpu_count() or 1, 8))
_pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="tpu-vpu") if WORKERS > 1 else None


def _splittable(inputs, out):
    if _pool is None or out.size < PARALLEL_MIN_ELEMENTS or out.ndim == 0 or out.shape[0] < WORKERS:
        return False
    for value in inputs:
        if isinstance(value, np.ndarray) and value is not out and np.shares_memory(value, out, max_work=0):
            return False  # may overlap: only the whole-array ufunc handles that correctly
    return True


def _ignoring_fp_errors(ufunc, *inputs, out):
    with np.errstate(all="ignore"):  # NumPy's error state is per thread
        return ufunc(*inputs, out=out)


def apply(ufunc, *inputs, out):
    """``ufunc(*inputs, out=out)``, in parallel row blocks when ``out`` is large."""
    if not _splittable(inputs, out):
        with np.errstate(all="ignore"):
            return ufunc(*inputs, out=out)
    shaped = [np.broadcast_to(v, out.shape) if isinstance(v, np.ndarray) and v.ndim else v for v in inputs]
    bounds = np.linspace(0, out.shape[0], WORKERS + 1, dtype=np.int64)
    blocks = [
        _pool.submit(_ignoring_fp_errors, ufunc, *(v[start:stop] if isinstance(v, np.ndarray) and v.ndim else v for v in shaped),
                     out=out[start:stop])
        for start, stop in zip(bounds[:-1], bounds[1:])
    ]
    for block in blocks:
        block.result()
    return out
