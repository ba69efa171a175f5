"""Shape kernels, differential against torch CPU."""

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from differential import check, check_grads, check_same_error, make, noncontiguous

pytestmark = pytest.mark.usefixtures("seeded")
DTYPES = [torch.float32, torch.bfloat16, torch.int64, torch.bool]


# --- cat / stack / split -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_cat_stack(dtype):
    a, b = noncontiguous(2, 3, dtype=dtype), make(4, 3, dtype=dtype)
    check(lambda a, b: torch.cat([a, b]), a, b)
    check(lambda a, b: torch.cat([a, b, a], dim=-2), a, b)
    check(lambda a: torch.cat([a, a.t().t()], 1), a)
    check(lambda a: torch.stack([a, a], -1), a)
    check(lambda a: torch.hstack([a, a]), a)
    check(lambda a: torch.cat([a[:0], a]), a)


def test_cat_type_promotion_and_legacy_empty():
    check(lambda a, b, c: torch.cat([a, b, c]), make(2, 3, dtype=torch.int64), make(1, 3), make(1, 3, dtype=torch.bfloat16))
    check(lambda a, b: torch.cat([a, b]), make(2, 3, dtype=torch.bool), make(2, 3, dtype=torch.int32))
    check(lambda a, e: torch.cat([a, e, a], 1), make(2, 3), torch.empty(0))
    check(lambda a: torch.cat([a.unsqueeze(0), a.unsqueeze(0)]), make())


def test_cat_out_and_errors():
    check(lambda a, out: torch.cat([a, a], out=out), make(2, 3), torch.empty(0))
    check(lambda a, out: torch.cat([a, a], dim=1, out=out), make(2, 3), torch.empty(5, 5))
    check(lambda a, out: torch.cat([a, a], out=out), make(2, 3), torch.empty(0, dtype=torch.int64))
    check(lambda a, out: torch.cat([a, a], out=out), make(2, 3, dtype=torch.int32), torch.empty(0, dtype=torch.float64))
    check(lambda a, b: torch.cat([a, b]), make(2, 3), make(2, 4))
    check(lambda a: torch.cat([a, a], dim=2), make(2, 3))


def test_split_chunk_tensor_split_meshgrid():
    x = noncontiguous(6, 5)
    check(lambda x: x.split(4), x)
    check(lambda x: x.split([1, 2, 3]), x)
    check(lambda x: x.chunk(3, -1), x)
    check(lambda x: torch.tensor_split(x, [1, 4], dim=1), x)
    check(lambda a, b: torch.meshgrid(a, b, indexing="ij"), make(3), make(2))
    check(lambda a, b: torch.meshgrid(a, b, indexing="xy"), make(3), make(2))


# --- flip / roll / tril / triu / repeat ----------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_flip_roll(dtype):
    x = noncontiguous(3, 4, 5, dtype=dtype)
    check(lambda x: x.flip(0), x)
    check(lambda x: x.flip(-1, 1), x)
    check(lambda x: x.flip([]), x)
    check(lambda x: torch.fliplr(x), x)
    check(lambda x: x.roll(2), x)
    check(lambda x: x.roll((1, -7), (0, -1)), x)
    check(lambda x: x.roll(3, 1), make(0, 4, dtype=dtype))
    check(lambda x: x.flip(0), make(dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("diagonal", [-2, 0, 1, 7])
def test_tril_triu(dtype, diagonal):
    x = noncontiguous(2, 4, 5, dtype=dtype)
    check(lambda x: x.tril(diagonal), x)
    check(lambda x: x.triu(diagonal), x)
    check(lambda x: x.clone().tril_(diagonal), x)
    check(lambda x: x.triu(diagonal), make(0, 3, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_repeat_family(dtype):
    x = noncontiguous(2, 3, dtype=dtype)
    check(lambda x: x.repeat(2, 1, 3), x)
    check(lambda x: x.tile((2,)), x)
    check(lambda x: x.repeat_interleave(2, dim=-1), x)
    check(lambda x: x.repeat_interleave(2), x)
    check(lambda x, r: x.repeat_interleave(r, dim=0), x, torch.tensor([0, 3]))
    check(lambda r: torch.repeat_interleave(r), torch.tensor([2, 0, 1]))
    check(lambda r: torch.repeat_interleave(r), torch.tensor([2, -1]))


# --- padding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "constant"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_padding_forward_backward(mode, dims):
    shape = (2, 3, 4, 5, 6)[: dims + 2]
    pad = (2, 1, 0, 3, 1, 1)[: 2 * dims]
    x = make(*shape)

    def grads(device):
        leaf = x.to(device).transpose(-1, -2).contiguous().transpose(-1, -2).requires_grad_()
        out = F.pad(leaf, pad, mode=mode)
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(device))
        return out.detach().cpu(), leaf.grad.cpu()

    torch.testing.assert_close(grads("tpu"), grads("cpu"))


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("pad, shape", [((2, 1, 0, 3, 1, 1), (4, 8, 40, 6, 4)), ((-1, 2, 3, -1, 1, 0), (4, 8, 40, 6, 4)),
                                        ((3, 3, 4, 4, 3, 2), (1, 2, 5, 6, 4))],
                         ids=["padded", "cropped", "wide"])  # wide: more slices than elements (``np.add.at``)
def test_padding_backward_is_cpus_sum_bit_for_bit(mode, dims, dtype, pad, shape):
    """Every output gradient added into the input position it read, in the output's row-major order and in the
    tensor's dtype, as CPU's loop adds them (corners get several additions per element)."""
    x = torch.randn(shape[: dims + 2], dtype=dtype)
    padding = pad[: 2 * dims]
    gradient = torch.randn(F.pad(x, padding, mode=mode).shape, dtype=dtype)

    def input_gradient(device):
        leaf = x.to(device).requires_grad_()
        F.pad(leaf, padding, mode=mode).backward(gradient.to(device))
        return leaf.grad.cpu()

    assert torch.equal(input_gradient("tpu"), input_gradient("cpu"))


def test_long_reflection_padding_backward_adds_each_side_at_once():
    """``torch.stft(center=True)`` reflects n_fft // 2 samples at each end: the gradient of each side's padding is
    one add (its positions read distinct samples), not one per position (a 16,000-sample signal's backward took
    60 ms, 4x CPU's time and 17x the whole stft's); the sums stay CPU's bit for bit."""
    from torch_tpu.ops import shape as shape_ops

    x = torch.randn(2, 3, 4000)
    gradient = torch.randn(2, 3, 4000 + 512)

    def input_gradient(device):
        return torch.ops.aten.reflection_pad1d_backward(gradient.to(device), x.to(device), [256, 256]).cpu()

    assert torch.equal(input_gradient("tpu"), input_gradient("cpu"))
    source = shape_ops._reflect(np.arange(-256, 4000 + 256), 4000)
    assert len(shape_ops._pad_slices(source, 256)) == 3
    replicated = shape_ops._replicate(np.arange(-2, 6), 4)  # every padding position reads the same edge sample
    assert len(shape_ops._pad_slices(replicated, 2)) == 5


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
@pytest.mark.parametrize("shape, memory_format", [
    ((2, 3, 5, 6), torch.channels_last), ((2, 1, 4, 5), torch.channels_last),
    ((2, 3, 4, 5, 6), torch.channels_last_3d), ((3, 4, 5), torch.contiguous_format),
], ids=str)
def test_pads_keep_a_channels_last_input_channels_last(mode, shape, memory_format):
    """CPU allocates reflection/replication pads in the input's suggested memory format."""
    x = make(*shape).to(memory_format=memory_format)
    padding = (1, 2, 2, 1, 1, 1)[:2 * (len(shape) - 2)]  # every dim after batch and channels
    result = check(lambda x: F.pad(x, padding, mode=mode), x)
    assert result.stride() == F.pad(x, padding, mode=mode).stride()


def test_padding_negative_and_errors():
    x = make(2, 3, 6)
    check(lambda x: F.pad(x, (-1, 2), mode="reflect"), x)
    check(lambda x: F.pad(x, (-2, 1), mode="replicate"), x)
    check(lambda x: F.pad(x, (6, 0), mode="reflect"), x)
    check(lambda x: F.pad(x, (1, -2), value=3.5), x)
    check(lambda x: F.pad(x, (1, 1), mode="reflect"), make(2, 3, 6, dtype=torch.bfloat16))


# --- sort / topk / argsort ---------------------------------------------------------------------


def with_ties_and_nans(dtype):
    x = torch.tensor([[3.0, float("nan"), 1.0, 3.0, -0.0, 0.0, float("-inf"), 1.0],
                      [2.0, 2.0, float("nan"), float("inf"), -1.0, 2.0, float("nan"), 5.0]]).to(dtype)
    return x.t().contiguous().t()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("descending", [False, True])
def test_sort_stable_with_nans(dtype, descending):
    x = with_ties_and_nans(dtype)
    check(lambda x: x.sort(stable=True, descending=descending), x)
    check(lambda x: x.sort(dim=0, stable=True, descending=descending), x)
    check(lambda x: x.argsort(stable=True, descending=descending), x)
    check(lambda x: torch.sort(x, stable=True, descending=descending), make(dtype=dtype))


def test_roll_requires_shifts():
    check_same_error(lambda d: torch.roll(torch.ones(3, device=d), shifts=(), dims=0))


def test_sort_into_its_own_input():
    # CPU sorts in place when ``values`` is the input; indices, or values that are only part of it, may not overlap
    check(lambda x, i: torch.sort(x, stable=True, out=(x, i)), make(4, 9), torch.empty(0, dtype=torch.int64))
    check(lambda x, i: torch.sort(x, dim=0, descending=True, stable=True, out=(x, i)), make(6, 3),
          torch.empty(0, dtype=torch.int64))
    check(lambda x, i: torch.sort(x[1:], stable=True, out=(x[:-1], i)), make(5), torch.empty(0, dtype=torch.int64))


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.int8])
def test_sort_integers(dtype):
    x = make(5, 7, dtype=dtype).t()
    check(lambda x: x.sort(stable=True), x)
    check(lambda x: x.sort(stable=True, descending=True, dim=0), x)
    check(lambda x: x.sort(), make(0, 3, dtype=dtype))


@pytest.mark.parametrize("largest", [True, False])
def test_topk(largest):
    x = torch.randperm(40).float().reshape(5, 8).t()
    check(lambda x: x.topk(3, largest=largest), x)
    check(lambda x: x.topk(2, dim=0, largest=largest), x)
    check(lambda x: x.topk(0, largest=largest), x)
    check(lambda x: x.topk(9, largest=largest), x)
    check(lambda x: x.topk(1, largest=largest), torch.tensor(2.0))
    nan = torch.tensor([1.0, float("nan"), 3.0, 2.0])
    check(lambda x: x.topk(2, largest=largest), nan)
    check(lambda x: x.topk(2, largest=largest), torch.tensor([1, 5, 3, 2], dtype=torch.int64))


def tied(*shape, values, dtype, seed=0):
    """Keys from only ``values`` distinct values: long rows full of ties."""
    return torch.randint(0, values, shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool])
@pytest.mark.parametrize("descending", [False, True])
def test_unstable_sort_leaves_ties_where_cpu_introsort_does(dtype, descending):
    """CPU's stable=False sort is libstdc++'s std::sort: equal keys come out in its introsort's order."""
    for x in (tied(3, 900, values=4, dtype=dtype), tied(2000, values=50, dtype=dtype, seed=1),
              tied(40, 30, values=3, dtype=dtype, seed=2).t(), tied(5, 17, values=2, dtype=dtype, seed=3)):
        check(lambda t: t.sort(descending=descending), x)
        check(lambda t: t.argsort(dim=0, descending=descending), x.reshape(x.shape[-1], -1))
    with_nans = tied(300, values=5, dtype=torch.float32)
    with_nans[::7] = float("nan")
    check(lambda t: t.sort(descending=descending), with_nans.to(dtype) if dtype.is_floating_point else with_nans)


def test_unstable_sort_cases_cpu_sorts_stably_or_not_at_all():
    check(lambda t: t.sort(), tied(40000, values=3, dtype=torch.int64))  # fbgemm's radix sort: stable
    check(lambda t: t.sort(descending=True), tied(40000, values=3, dtype=torch.int64))
    one = tied(1, values=3, dtype=torch.float32)  # expanded to stride 0: CPU sorts nothing
    assert torch.equal(one.to("tpu").expand(300).sort().indices.cpu(), one.expand(300).sort().indices)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
@pytest.mark.parametrize("largest", [True, False])
def test_topk_with_ties_matches_cpu_selection(dtype, largest):
    """CPU's topk: std::partial_sort when k * 64 <= n, else std::nth_element then std::sort."""
    x = tied(4, 700, values=6, dtype=dtype)
    for k in (1, 5, 10, 11, 300, 700):
        check(lambda t: t.topk(k, largest=largest), x)
        check(lambda t: t.topk(k, dim=0, largest=largest), x.t())
        check(lambda t: t.topk(k, largest=largest, sorted=False), x)
    check(lambda t: t.topk(3, dim=1, largest=largest), tied(5, 10, 5, values=3, dtype=dtype).transpose(0, 2))


# --- unique ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_unique(dtype):
    x = torch.randint(0, 4, (3, 5)).to(dtype).t()
    check(lambda x: torch.unique(x), x)
    check(lambda x: torch.unique(x, return_inverse=True, return_counts=True), x)
    check(lambda x: torch.unique(x, sorted=False, return_inverse=True), x)
    check(lambda x: torch.unique(x, dim=0, return_inverse=True, return_counts=True), x)
    check(lambda x: torch.unique(x, dim=-1, return_counts=True), x)
    check(lambda x: torch.unique_consecutive(x, return_inverse=True, return_counts=True), x)
    check(lambda x: torch.unique_consecutive(x, dim=1, return_inverse=True, return_counts=True), x)
    check(lambda x: torch.unique(x, return_inverse=True, return_counts=True), make(0, dtype=dtype))


def test_unique_float_dim_ordering():
    x = torch.tensor([[1.5, -2.0], [-3.0, 10.0], [1.5, -2.0], [-3.0, 2.0]])
    check(lambda x: torch.unique(x, dim=0, return_inverse=True, return_counts=True), x)
    check(lambda x: torch.unique(x, return_inverse=True), torch.tensor([float("nan"), 1.0, float("nan")]))


# --- *_scatter, diag, narrow_copy ----------------------------------------------------------------


def test_scatter_family_and_diag():
    x = noncontiguous(4, 5)
    check(lambda x, s: torch.diagonal_scatter(x, s, 1), x, make(4))
    check(lambda x, s: torch.select_scatter(x, s, 1, -1), x, make(4))
    check(lambda x, s: torch.slice_scatter(x, s, 1, 1, 5, 2), x, make(4, 2))
    check(lambda x, s: torch.as_strided_scatter(x.contiguous(), s, (2, 2), (1, 2)), x, make(2, 2))
    check(lambda x: torch.diag(x, -1), x)
    check(lambda v: torch.diag(v, 2), make(3))
    check(lambda x: torch.diag_embed(x, offset=1, dim1=0, dim2=2), x)
    check(lambda x: x.narrow_copy(1, 1, 3), x)
    check(lambda x: x.diagonal(0, 0, 1).clone(), x)


# --- searchsorted / bucketize / histc / bincount -------------------------------------------------


@pytest.mark.parametrize("right", [False, True])
def test_searchsorted_bucketize(right):
    boundaries = torch.tensor([1.0, 2.0, 2.0, 5.0])
    values = torch.tensor([[0.0, 2.0], [5.0, 7.0]]).t()
    check(lambda b, v: torch.searchsorted(b, v, right=right), boundaries, values)
    check(lambda b, v: torch.searchsorted(b, v, side="right" if right else "left", out_int32=True), boundaries, values)
    check(lambda b: torch.searchsorted(b, 2.0, right=right), boundaries)
    check(lambda v, b: torch.bucketize(v, b, right=right), values, boundaries)
    batched = torch.sort(torch.randn(3, 6), dim=-1).values
    check(lambda b, v: torch.searchsorted(b, v, right=right), batched, torch.randn(3, 4))
    unsorted = torch.randn(6)
    check(lambda b, s, v: torch.searchsorted(b, v, sorter=s), unsorted, unsorted.argsort(), torch.randn(5))


def test_searchsorted_errors():
    check(lambda b, v: torch.searchsorted(b, v), torch.zeros(2, 3), torch.zeros(3, 3))
    check(lambda b, v: torch.searchsorted(b, v, side="left", right=True), torch.zeros(3), torch.zeros(3))


def test_histc():
    x = torch.randn(200)
    check(lambda x: torch.histc(x), x)
    check(lambda x: torch.histc(x, bins=7, min=-1, max=1), x)
    check(lambda x: torch.histc(x, bins=4, min=0, max=3), torch.tensor([0.0, 1.0, 2.0, 3.0, 3.0, -1.0, 4.0]))
    check(lambda x: torch.histc(x, bins=3), torch.tensor([2.0, 2.0]))
    check(lambda x: torch.histc(x, bins=5), x.double())
    check(lambda x: torch.histc(x, bins=-1), x)


def test_bincount():
    x = torch.tensor([1, 3, 3, 0, 7])
    check(torch.bincount, x)
    check(lambda x: torch.bincount(x, minlength=10), x)
    check(lambda x, w: torch.bincount(x, w), x, torch.rand(5))
    check(lambda x, w: torch.bincount(x, w), x, torch.rand(5).double())
    check(lambda x, w: torch.bincount(x, w), x, torch.arange(5))
    check(torch.bincount, torch.tensor([], dtype=torch.int64))
    check(torch.bincount, torch.tensor([-1, 2]))
    check(torch.bincount, torch.tensor([1.0]))


# --- autograd --------------------------------------------------------------------------------


def test_autograd_through_shape_ops():
    a, b = make(2, 3), make(4, 3)
    check_grads(lambda a, b: torch.cat([a, b, a]), a, b)
    check_grads(lambda a: torch.stack([a, a * 2], 1), a)
    check_grads(lambda a: a.flip(1).roll(1, 0), a)
    check_grads(lambda a: a.sort(dim=1).values, a)
    check_grads(lambda b: b.topk(2, dim=0).values, b)
    check_grads(lambda b: b.triu(1) + b.tril(-1), b)
    check_grads(lambda a: a.repeat(2, 2), a)


# --- regressions from the OpInfo sweep ----------------------------------------------------------------------------


@pytest.mark.parametrize("boundaries, values", [
    ((0, 0), (0, 0)), ((0, 5), (0, 3)), ((3, 0), (3, 2)), ((2, 0, 4), (2, 0, 1)), ((4,), (0,)),
], ids=str)
def test_searchsorted_empty_batches(boundaries, values):
    sorted_sequence = make(*boundaries).sort(dim=-1).values
    for side in ("left", "right"):
        check(torch.searchsorted, sorted_sequence, make(*values), side=side)
    check(torch.searchsorted, sorted_sequence, make(*values), out_int32=True)


@pytest.mark.parametrize("shape, dim", [((0,), 0), ((0, 3), 0), ((3, 0), 0), ((3, 0), 1), ((2, 0, 3), 2), ((2, 0, 3), 1), ((0, 0), 1)], ids=str)
def test_unique_with_dim_of_empty_tensors(shape, dim):
    x = make(*shape)
    check(lambda t: torch.unique(t, dim=dim, return_inverse=True, return_counts=True), x)
    check(lambda t: torch.unique_consecutive(t, dim=dim, return_inverse=True, return_counts=True), x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_histc_bins_edge_values_like_cpu(dtype):
    torch.manual_seed(0)
    x = (torch.randn(40, 25) * 5).to(dtype)  # data extrema and values on bin edges
    for bins, low, high in ((10, 0, 0), (10, -10, 10), (100, -7, 9), (7, -3, 2.5), (1, 0, 0), (3, 1, 1)):
        check(torch.histc, x, bins, low, high)
    check(torch.histc, x.t()[::2], 13, -2, 3)  # non-contiguous
    check(torch.histc, torch.tensor([], dtype=dtype), 5)
    check(torch.histc, torch.tensor([1.0, float("nan"), 3.0], dtype=dtype), 4)  # NaN extrema: not finite
    # one value: edges x - 1 and x + 1, not rounded through float32 for float64 (x sat on bin 49 of 100)
    check(torch.histc, torch.tensor(-2.7122528851, dtype=dtype), 100, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fractions", [(-1, 1), (0, 1), (-1, 0), (0, 0.5)])
def test_histc_with_a_range_that_overflows_counts_as_cpu(dtype, fractions):
    """Near the dtype's largest value CPU's linspace step or an element's scaled position overflows: edges of NaN
    count nothing, and an overflowed position (C++'s int64 "indefinite") lands in bin 0. tpu raised."""
    largest = torch.finfo(dtype).max
    x = (torch.tensor([-0.9, -0.3, 0.0, 0.3, 0.9, 1.0, -1.0, 0.6, math.inf, math.nan]) * largest).to(dtype)
    low, high = (f * largest for f in fractions)
    assert torch.equal(torch.histc(x.to("tpu"), 5, low, high).cpu(), torch.histc(x, 5, low, high))


@pytest.mark.parametrize("dtype, low, high, fill", [
    (torch.float32, -1e308, 1e308, 1.0), (torch.float32, -3.5e38, 0, 1.0), (torch.float16, -70000, 70000, 1.0),
    (torch.float16, 0, 1e5, 1.0), (torch.float16, -65519, 0, 1.0), (torch.bfloat16, -1e39, 0, 1.0),
    (torch.float16, 0, 0, 65504.0)])  # the last takes its range from the data: [65503, 65505]
def test_histc_with_bounds_beyond_the_dtype_raises_as_cpu(dtype, low, high, fill):
    """CPU's linspace converts the outer edges to the dtype with c10's checked Scalar conversion; tpu counted."""
    x = torch.full((3,), fill, dtype=dtype)
    with pytest.raises(RuntimeError) as cpu:
        torch.histc(x, 4, low, high)
    with pytest.raises(RuntimeError, match=re.escape(str(cpu.value))):
        torch.histc(x.to("tpu"), 4, low, high)


def test_histc_counts_saturate_per_thread_like_cpu():
    """CPU counts each thread's share in the input dtype: a bfloat16 count stops at 256."""
    check(torch.histc, torch.ones(7000, dtype=torch.bfloat16), 3, 0, 2)
    check(torch.histc, torch.randn(100_000, dtype=torch.float16), 5)


def test_searchsorted_warns_once_per_kind_of_non_contiguous_argument(monkeypatch):
    from torch_tpu import _errors

    monkeypatch.setattr(_errors, "_WARNED_ONCE", set())
    boundaries = torch.arange(12.0, device="tpu").view(4, 3).t()
    values = torch.arange(6, device="tpu").view(2, 3).t()
    with pytest.warns(UserWarning) as caught:
        result = torch.searchsorted(boundaries, values)
        torch.searchsorted(boundaries, values)
    kinds = [str(w.message).split(" tensor is non-contiguous")[0] for w in caught]
    assert kinds == ["torch.searchsorted(): input value", "torch.searchsorted(): boundary"]
    assert torch.equal(result.cpu(), torch.searchsorted(boundaries.cpu(), values.cpu()))


@pytest.mark.parametrize("mode", ["reflection", "replication"])
@pytest.mark.parametrize("shape", [(3, 4, 0), (0, 4), (3, 0, 4), (2, 3, 4, 5), (0, 3, 4)], ids=str)
def test_pads_refuse_empty_channels_or_padded_dims_as_cpu_does(mode, shape):
    """An empty batch is fine; an empty channel or padded dim (or a rank without its batch/no-batch meaning) is not."""
    pad = getattr(torch.ops.aten, f"{mode}_pad1d")
    check(lambda x: pad(x, [1, 1]), torch.randn(shape))


SHUFFLES = {
    "pixel_shuffle": lambda x: F.pixel_shuffle(x, 2),
    "pixel_unshuffle": lambda x: F.pixel_unshuffle(x, 2),
    "channel_shuffle": lambda x: F.channel_shuffle(x, 2),
    "native_channel_shuffle": lambda x: torch.native_channel_shuffle(x, 4),
}


@pytest.mark.parametrize("name", SHUFFLES)
@pytest.mark.parametrize("shape, memory_format", [
    ((2, 8, 4, 6), torch.channels_last), ((2, 8, 4, 6), torch.contiguous_format), ((8, 4, 6), torch.contiguous_format),
    ((2, 8, 4, 6, 2), torch.channels_last_3d), ((3, 2, 8, 4, 6), torch.contiguous_format),
    ((0, 8, 4, 6), torch.channels_last), ((2, 8, 4, 0), torch.contiguous_format),
], ids=str)
def test_shuffles_lay_out_their_result_as_cpu_does(name, shape, memory_format):
    """CPU's kernels write in the input's suggested memory format (PyTorch's composites reshape contiguously) and
    refuse a channels-last 3-d input to a pixel shuffle; an empty input gives a view of its copy."""
    x = make(*shape, dtype=torch.int32).contiguous(memory_format=memory_format)
    if name == "pixel_unshuffle" and 0 in shape:  # CPU returns a copy in the input's shape there; tpu the result's
        *batch, channels, height, width = shape
        assert SHUFFLES[name](x.to("tpu")).shape == (*batch, channels * 4, height // 2, width // 2)
        return
    result = check(SHUFFLES[name], x, atol=0, rtol=0)
    if result is not None:
        assert result.stride() == SHUFFLES[name](x).stride()


@pytest.mark.parametrize("call", [lambda x: F.pixel_shuffle(x, 3), lambda x: F.pixel_unshuffle(x, 0),
                                  lambda x: F.channel_shuffle(x, 3), lambda x: F.pixel_shuffle(x[0, 0], 2)],
                         ids=["channels not divisible", "factor 0", "groups not dividing", "2-d input"])
def test_shuffle_refusals_are_cpus(call):
    check_same_error(lambda device: call(torch.ones(2, 8, 4, 6, device=device)))


def test_shuffle_gradients_are_laid_out_as_cpus():
    x = torch.randn(2, 8, 4, 6).contiguous(memory_format=torch.channels_last)
    for shuffle in (lambda x: F.pixel_shuffle(x, 2), lambda x: F.channel_shuffle(x, 2)):
        gradients = []
        for device in ("cpu", "tpu"):
            leaf = x.to(device).requires_grad_()
            result = shuffle(leaf)
            gradients.append(torch.autograd.grad(result, leaf, torch.ones_like(result))[0])
        assert gradients[1].stride() == gradients[0].stride()
        torch.testing.assert_close(gradients[1].cpu(), gradients[0])
