"""Histogram kernels: ``torch.histogram`` and ``torch.histogramdd`` (aten's histogramdd family).

Follows aten/src/ATen/native/Histogram.cpp and cpu/HistogramKernel.cpp. The input is read as M
points of N coordinates (its last dim; ``histogram`` is the N = 1 case). Bin edges given as a count
are ``linspace(min, max, count + 1)`` in the input dtype, over the ``range`` or else the data's
extremes, an empty range widened by 0.5 each way. A coordinate outside [first edge, last edge] or NaN
drops its point; inside, its bin is the last edge not above it, and the last bin also takes its right
edge. For edge counts the CPU guesses the bin by linear interpolation and corrects it by a search of
the neighbouring edges; given edge tensors it searches all edges, so edges that are not increasing
bin exactly as CPU's binary search bins them.
"""

import numpy as np
import torch

from .._errors import cpp_type_name, not_implemented_for
from ._common import operand, store
from ._registry import register

_SUPPORTED = (torch.float32, torch.float64)


def _check_inputs(self, bin_dims, weight):
    if self.dtype not in _SUPPORTED:
        raise not_implemented_for("histogramdd", self.dtype)
    if self.dim() < 2:
        raise RuntimeError("torch.histogramdd: input tensor should have at least 2 dimensions")
    if bin_dims != self.shape[-1]:
        raise RuntimeError("histogramdd: The size of bins must be equal to the innermost dimension of the input.")
    if weight is not None:
        if tuple(weight.shape) != tuple(self.shape[:-1]):
            raise RuntimeError(
                "torch.histogramdd: if weight tensor is provided it should have the same shape as the input tensor "
                f"excluding its innermost dimension, but got input with shape {list(self.shape)} and weight with "
                f"shape {list(weight.shape)}")
        if weight.dtype != self.dtype:
            raise RuntimeError(
                "torch.histogramdd: if weight tensor is provided, input tensor and weight tensor should have the "
                f"same dtype, but got input({cpp_type_name(self.dtype)}), and weight({cpp_type_name(weight.dtype)})")


def _check_bin_tensors(self, bins):
    for dim, edges in enumerate(bins):
        if edges.dtype != self.dtype:
            raise RuntimeError(
                "torch.histogramdd: input tensor and bins tensors should have the same dtype, but got input with "
                f"dtype {cpp_type_name(self.dtype)} and bins for dimension {dim} with dtype {cpp_type_name(edges.dtype)}")
        if edges.dim() != 1:
            raise RuntimeError(
                "torch.histogramdd: bins tensor should have one dimension, but got "
                f"{edges.dim()} dimensions in the bins tensor for dimension {dim}")
        if edges.numel() == 0:
            raise RuntimeError(
                "torch.histogramdd: bins tensor should have at least 1 element, but got "
                f"{edges.numel()} elements in the bins tensor for dimension {dim}")


def _points(self):
    return operand(self).reshape(-1, self.shape[-1])


def _number(value):
    """A double as C++ streams it into a message: integral values without a decimal point."""
    return f"{value:g}"


def _outer_edges(points, range_):
    """The first and last edge per dimension, as doubles (select_outer_bin_edges)."""
    n = points.shape[1]
    left, right = np.zeros(n), np.ones(n)
    if range_ is not None:
        if len(range_) != 2 * n:
            raise RuntimeError(f"torch.histogramdd: for a {n}-dimensional histogram range should have {2 * n} "
                               f"elements, but got {len(range_)}")
        left, right = np.array(range_[0::2], float), np.array(range_[1::2], float)
    elif points.size:
        left, right = points.min(axis=0).astype(float), points.max(axis=0).astype(float)
    for dim in range(n):
        if not (np.isfinite(left[dim]) and np.isfinite(right[dim])):
            raise RuntimeError(f"torch.histogramdd: dimension {dim}'s range [{_number(left[dim])}, "
                               f"{_number(right[dim])}] is not finite")
        if left[dim] > right[dim]:
            raise RuntimeError(f"torch.histogramdd: min should not exceed max, but got min {_number(left[dim])} "
                               f"max {_number(right[dim])} for dimension {dim}")
    empty_range = left == right
    return np.where(empty_range, left - 0.5, left), np.where(empty_range, right + 0.5, right)


def _linspace(start, end, steps, dtype):
    """torch.linspace's CPU formula in ``dtype``: start + step * i for the first half, end - step * (steps
    - 1 - i) after, each a fused multiply-add in CPU's build (exact in float64 for float32 operands)."""
    start, end = dtype.type(start), dtype.type(end)
    if steps == 1:
        return np.array([start], dtype)
    step = (end - start) / dtype.type(steps - 1)
    index = np.arange(steps)
    from_start = np.float64(start) + np.float64(step) * index
    from_end = np.float64(end) - np.float64(step) * (steps - index - 1)
    return np.where(index < steps // 2, from_start, from_end).astype(dtype)


def _edges_from_counts(self, bins, range_, op_name="torch.histogramdd()"):
    points = _points(self)
    for dim, count in enumerate(bins):
        if count <= 0:
            raise RuntimeError(f"{op_name}: bins must be > 0, but got {count} for dimension {dim}")
    left, right = _outer_edges(points, range_)
    return [_linspace(left[d], right[d], bins[d] + 1, points.dtype) for d in range(len(bins))]


def _upper_bound(edges, values, first, last):
    """std::upper_bound's binary search over edges[first:last], per value: exact even for unsorted edges."""
    count = last - first
    while np.any(count > 0):
        step = count // 2
        probe = first + step
        right = (count > 0) & ~(values < edges[np.minimum(probe, len(edges) - 1)])
        first = np.where(right, probe + 1, first)
        count = np.where(right, count - step - 1, step)
    return first


def _bin_by_search(coordinates, edges):
    first = np.zeros(coordinates.shape, np.int64)
    return _upper_bound(edges, coordinates, first, first + len(edges)) - 1


def _bin_by_interpolation(coordinates, edges):
    """CPU's guess (elt - first) * bins / (last - first), corrected by an upper_bound on its neighbours."""
    bins = len(edges) - 1
    with np.errstate(all="ignore"):
        guess = ((coordinates - edges[0]) * edges.dtype.type(bins) / (edges[-1] - edges[0])).astype(np.int64)
    return _upper_bound(edges, coordinates, np.maximum(guess - 1, 0), np.minimum(guess + 2, bins + 1)) - 1


def _histogram(points, edges, weight, density, bin_of):
    """The N-dimensional histogram of ``points`` (M x N) over the per-dimension ``edges``."""
    dtype = points.dtype
    shape = tuple(len(e) - 1 for e in edges)
    keep = np.ones(len(points), bool)
    flat_index = np.zeros(len(points), np.int64)
    for dim, dim_edges in enumerate(edges):
        coordinates = points[:, dim]
        keep &= (coordinates >= dim_edges[0]) & (coordinates <= dim_edges[-1])  # NaN fails both
        position = bin_of(np.where(keep, coordinates, dim_edges[0]), dim_edges)
        position = np.where(position == len(dim_edges) - 1, position - 1, position)
        flat_index = flat_index * shape[dim] + np.where(keep, position, 0)
    weights = None if weight is None else weight.reshape(-1)[keep]
    hist = np.bincount(flat_index[keep], weights, minlength=int(np.prod(shape))).astype(dtype).reshape(shape)
    if density:
        with np.errstate(all="ignore"):
            hist = hist / dtype.type(hist.sum(dtype=dtype))
            for dim, dim_edges in enumerate(edges):
                lengths = np.diff(dim_edges).reshape([-1 if d == dim else 1 for d in range(len(edges))])
                hist = hist / lengths
    return hist.astype(dtype)


def _same_dtype_as_input(name, dimension=""):
    """torch.histogram's rule for its outputs, with its words."""

    def rule(input_dtype, out_dtype):
        if out_dtype != input_dtype:
            raise RuntimeError(f"torch.histogram: input tensor and {name} tensor should have the same dtype, but got "
                               f"input {cpp_type_name(input_dtype)} and {name} {cpp_type_name(out_dtype)}{dimension}")

    return rule


def _store_histogram(self, counts, edges, hist, bin_edges):
    return (store(counts, self.dtype, out=hist, distinct=(self,), dtype_rule=_same_dtype_as_input("hist")),
            store(edges, self.dtype, out=bin_edges, distinct=(self,),
                  dtype_rule=_same_dtype_as_input("bin_edges", " for dimension 0")))


def _weights(weight):
    return None if weight is None else operand(weight)


@register("histogram.bin_ct", "histogram.bin_ct_out")
def histogram_bin_ct(self, bins=100, *, range=None, weight=None, density=False, hist=None, bin_edges=None):
    column = self.reshape(-1, 1)
    _check_inputs(column, 1, None if weight is None else weight.reshape(-1))
    edges = _edges_from_counts(column, [bins], range, "torch.histogram()")
    counts = _histogram(_points(column), edges, _weights(weight), density, _bin_by_interpolation)
    return _store_histogram(self, counts, edges[0], hist, bin_edges)


@register("histogram.bins_tensor", "histogram.bins_tensor_out")
def histogram_bins_tensor(self, bins, *, weight=None, density=False, hist=None, bin_edges=None):
    column = self.reshape(-1, 1)
    _check_bin_tensors(column, [bins])
    _check_inputs(column, 1, None if weight is None else weight.reshape(-1))
    edges = [np.array(operand(bins))]
    counts = _histogram(_points(column), edges, _weights(weight), density, _bin_by_search)
    return _store_histogram(self, counts, edges[0], hist, bin_edges)


@register("_histogramdd_bin_edges")
def histogramdd_bin_edges(self, bins, *, range=None, weight=None, density=False):
    _check_inputs(self, len(bins), weight)
    return [store(edges, self.dtype) for edges in _edges_from_counts(self, bins, range)]


@register("_histogramdd_from_bin_cts", "_histogramdd_from_bin_cts.out")
def histogramdd_from_bin_cts(self, bins, *, range=None, weight=None, density=False, out=None):
    _check_inputs(self, len(bins), weight)
    edges = _edges_from_counts(self, bins, range)
    counts = _histogram(_points(self), edges, _weights(weight), density, _bin_by_interpolation)
    return store(counts, self.dtype, out=out, distinct=(self,), dtype_rule=_same_dtype_as_input("hist"))


@register("_histogramdd_from_bin_tensors", "_histogramdd_from_bin_tensors.out")
def histogramdd_from_bin_tensors(self, bins, *, weight=None, density=False, out=None):
    _check_bin_tensors(self, bins)
    _check_inputs(self, len(bins), weight)
    edges = [np.array(operand(b)) for b in bins]
    counts = _histogram(_points(self), edges, _weights(weight), density, _bin_by_search)
    return store(counts, self.dtype, out=out, distinct=(self,), dtype_rule=_same_dtype_as_input("hist"))
