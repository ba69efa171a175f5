"""Reductions on tpu against torch CPU on the same inputs: values, dtypes, indices and errors."""

import contextlib
import itertools
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

import differential
from differential import check

pytestmark = pytest.mark.filterwarnings("ignore:.*degrees of freedom is <= 0")

DTYPES = [torch.float32, torch.bfloat16, torch.int64, torch.bool]
FLOATS = [torch.float32, torch.bfloat16]


def make(shape, dtype, seed=0):
    """Small integers, so that sums and products stay exact and arg-reductions meet ties."""
    values = differential.make(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    return values if dtype.is_floating_point or dtype == torch.bool else values.remainder(9) - 4


def with_nans(tensor):
    """A copy with NaNs at a few scattered positions (so some rows have one and some none)."""
    tensor = tensor.clone()
    flat = tensor.view(-1)
    flat[:: max(len(flat) // 3, 1) + 1] = math.nan
    return tensor


def transposed(t):
    return t.transpose(0, -1) if t.dim() > 1 else t


def strided(t):
    return t[..., ::2] if t.dim() else t


VIEWS = [lambda t: t, transposed, strided]
VIEW_IDS = ["contiguous", "transposed", "strided"]

# ---------------------------------------------------------------------------------------------
# Reductions over a list of dims
# ---------------------------------------------------------------------------------------------

DIMS = [None, 0, -1, [0, 2], [-1, 0, 1], []]

LIST_REDUCTIONS = {
    "sum": lambda x, dim, keepdim: x.sum(dim, keepdim),
    "nansum": lambda x, dim, keepdim: x.nansum(dim, keepdim),
    "mean": lambda x, dim, keepdim: x.mean(dim, keepdim),
    "nanmean": lambda x, dim, keepdim: x.nanmean(dim, keepdim),
    "amax": lambda x, dim, keepdim: x.amax(() if dim is None else dim, keepdim),
    "amin": lambda x, dim, keepdim: x.amin(() if dim is None else dim, keepdim),
    "logsumexp": lambda x, dim, keepdim: x.logsumexp(() if dim is None else dim, keepdim),
    "any": lambda x, dim, keepdim: x.any(dim, keepdim),
    "all": lambda x, dim, keepdim: x.all(dim, keepdim),
    "count_nonzero": lambda x, dim, keepdim: x.count_nonzero(dim),
    "var": lambda x, dim, keepdim: x.var(dim, keepdim=keepdim),
    "std": lambda x, dim, keepdim: x.std(dim, correction=0, keepdim=keepdim),
    "var_mean": lambda x, dim, keepdim: torch.var_mean(x, dim, correction=2, keepdim=keepdim),
    "std_mean": lambda x, dim, keepdim: torch.std_mean(x, dim, keepdim=keepdim),
    "norm": lambda x, dim, keepdim: x.norm(dim=dim, keepdim=keepdim),
    "vector_norm_1": lambda x, dim, keepdim: torch.linalg.vector_norm(x, 1, dim, keepdim),
    "vector_norm_inf": lambda x, dim, keepdim: torch.linalg.vector_norm(x, math.inf, dim, keepdim),
    "vector_norm_-inf": lambda x, dim, keepdim: torch.linalg.vector_norm(x, -math.inf, dim, keepdim),
    "vector_norm_0": lambda x, dim, keepdim: torch.linalg.vector_norm(x, 0, dim, keepdim),
    "vector_norm_3.5": lambda x, dim, keepdim: torch.linalg.vector_norm(x, 3.5, dim, keepdim),
    "vector_norm_-1": lambda x, dim, keepdim: torch.linalg.vector_norm(x, -1, dim, keepdim),
}


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", LIST_REDUCTIONS)
def test_list_reductions(name, dtype, keepdim):
    reduction = LIST_REDUCTIONS[name]
    x = make((4, 3, 6), dtype)
    for dim in DIMS:
        for view in VIEWS:
            check(lambda t: reduction(view(t), dim, keepdim), x)


@pytest.mark.parametrize("name", LIST_REDUCTIONS)
def test_list_reductions_zero_dim_and_empty(name):
    reduction = LIST_REDUCTIONS[name]
    for dim in [None, 0, -1, []]:
        check(lambda t: reduction(t, dim, False), make((), torch.float32))
        check(lambda t: reduction(t, dim, True), make((), torch.int64))
    empty = torch.empty(0, 3)
    for dim in [None, 0, 1, [0, 1]]:
        check(lambda t: reduction(t, dim, False), empty)
        check(lambda t: reduction(t, dim, True), empty.long())


@pytest.mark.parametrize("name", LIST_REDUCTIONS)
def test_list_reductions_propagate_nan(name):
    reduction = LIST_REDUCTIONS[name]
    x = with_nans(make((4, 5), torch.float32))
    for dim in [None, 0, 1]:
        check(lambda t: reduction(t, dim, False), x)
        check(lambda t: reduction(t, dim, False), x.bfloat16())


@pytest.mark.parametrize("name", LIST_REDUCTIONS)
def test_list_reductions_bad_dims(name):
    reduction = LIST_REDUCTIONS[name]
    x = make((2, 3), torch.float32)
    for dim in [2, -3, [0, 0]]:
        check(lambda t: reduction(t, dim, False), x)


def test_sum_promotes_and_converts_to_dtype():
    for dtype in [torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool]:
        result = check(lambda t: t.sum(1), make((3, 5), dtype))
        assert result.dtype == torch.int64
    x = make((3, 50), torch.float32) * 100
    for dtype in [torch.float64, torch.bfloat16, torch.int32, torch.float16]:
        check(lambda t: t.sum(1, dtype=dtype), x)
        check(lambda t: t.sum(dtype=dtype), x)
    check(lambda t: t.sum(0, dtype=torch.float32), make((3, 5), torch.int64))
    check(lambda t: t.mean(0, dtype=torch.float64), make((3, 5), torch.int64))


def test_integer_sum_wraps_like_int64():
    x = torch.tensor([2**62, 2**62, 2**62], dtype=torch.int64)
    check(lambda t: t.sum(), x, rtol=0, atol=0)


def test_bfloat16_sum_accumulates_in_float32():
    # 4096 ones: a bf16 accumulator would stall at 256, float32 reaches 4096 exactly.
    x = torch.ones(4096, dtype=torch.bfloat16)
    assert check(lambda t: t.sum(), x).item() == 4096
    assert check(lambda t: t.mean(), x).item() == 1


def test_complex_reductions():
    x = torch.randn(3, 4, dtype=torch.complex64)
    for fn in [lambda t: t.sum(1), lambda t: t.mean(), lambda t: t.var(0), lambda t: t.norm(dim=1),
               lambda t: torch.linalg.vector_norm(t, math.inf), lambda t: t.prod(1),
               lambda t: t.nansum(), lambda t: t.amax(), lambda t: t.argmax(), lambda t: t.max()]:
        check(fn, x)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128, torch.float32], ids=str)
def test_vector_norm_with_a_complex_dtype_is_real(dtype):
    """``dtype=`` sets the dtype the elements are read in; a complex one still gives the real norm (of its
    real type), which torch.masked.normalize of complex inputs relies on; a real one is refused."""
    x = torch.randn(3, 4, dtype=torch.complex64)
    for ord in (2, 1, 0, math.inf, 3):
        check(lambda t: torch.linalg.vector_norm(t, ord, dim=1, dtype=dtype), x)
    check(lambda t, out: torch.linalg.vector_norm(t, 2, dim=1, dtype=dtype, out=out), x, torch.empty(0, dtype=torch.float64))
    check(lambda t: torch.masked.normalize(t, 2, 1), x)


# ---------------------------------------------------------------------------------------------
# Reductions over one dim, with and without indices
# ---------------------------------------------------------------------------------------------

ONE_DIM_REDUCTIONS = {
    "prod": lambda x, dim, keepdim: x.prod(dim, keepdim),
    "max": lambda x, dim, keepdim: x.max(dim, keepdim),
    "min": lambda x, dim, keepdim: x.min(dim, keepdim),
    "argmax": lambda x, dim, keepdim: x.argmax(dim, keepdim),
    "argmin": lambda x, dim, keepdim: x.argmin(dim, keepdim),
    "aminmax": lambda x, dim, keepdim: torch.aminmax(x, dim=dim, keepdim=keepdim),
    "median_values": lambda x, dim, keepdim: x.median(dim, keepdim).values,
    "nanmedian_values": lambda x, dim, keepdim: x.nanmedian(dim, keepdim).values,
    "mode_values": lambda x, dim, keepdim: x.mode(dim, keepdim).values,
    "any": lambda x, dim, keepdim: x.any(dim, keepdim),
    "all": lambda x, dim, keepdim: x.all(dim, keepdim),
}


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ONE_DIM_REDUCTIONS)
def test_one_dim_reductions(name, dtype, keepdim):
    reduction = ONE_DIM_REDUCTIONS[name]
    x = make((4, 3, 6), dtype)
    for dim in [0, 1, -1]:
        for view in VIEWS:
            check(lambda t: reduction(view(t), dim, keepdim), x)


@pytest.mark.parametrize("name", ONE_DIM_REDUCTIONS)
def test_one_dim_reductions_zero_dim_empty_and_nan(name):
    reduction = ONE_DIM_REDUCTIONS[name]
    for dim in [0, -1, 1]:
        check(lambda t: reduction(t, dim, False), make((), torch.float32))
        check(lambda t: reduction(t, dim, True), make((), torch.int64))
        # Reducing the empty dim has no identity for most; reducing the other one is fine.
        check(lambda t: reduction(t, dim, False), torch.empty(0, 3))
        check(lambda t: reduction(t, dim, True), torch.empty(3, 0))
    if name != "mode_values":  # CPU's mode sorts NaNs with an inconsistent comparison
        for dim in [0, 1]:
            check(lambda t: reduction(t, dim, False), with_nans(make((4, 5), torch.float32)))
    check(lambda t: reduction(t, 2, False), make((2, 3), torch.float32))


def test_extreme_indices_are_first_occurrences():
    ties = torch.tensor([[1, 3, 3, 0, 3], [2, 2, 2, 2, 2], [0, -1, 0, -1, 5]])
    for dtype in [torch.int64, torch.float32, torch.bfloat16, torch.bool]:
        x = ties.to(dtype)
        for fn in [lambda t: t.max(1), lambda t: t.min(1), lambda t: t.argmax(1), lambda t: t.argmin(0),
                   lambda t: t.argmax(), lambda t: t.argmin(), lambda t: t.max(0, keepdim=True)]:
            check(fn, x, rtol=0, atol=0)


def test_extreme_indices_point_at_first_nan():
    x = torch.tensor([[1.0, math.nan, 5.0, math.nan], [math.inf, 2.0, -math.inf, 0.0]])
    for fn in [lambda t: t.max(1), lambda t: t.min(1), lambda t: t.argmax(1), lambda t: t.argmin(1),
               lambda t: t.argmax(), lambda t: t.max(), lambda t: t.min(), lambda t: torch.aminmax(t),
               lambda t: t.median(1), lambda t: t.median()]:
        check(fn, x)
        check(fn, x.bfloat16())


def test_full_reductions():
    for dtype in DTYPES:
        x = make((3, 4), dtype)
        for fn in [torch.max, torch.min, torch.prod, torch.argmax, torch.argmin, torch.aminmax,
                   torch.median, torch.nanmedian, torch.any, torch.all, torch.count_nonzero]:
            check(fn, x)
            check(lambda t: fn(transposed(t)), x)
            check(fn, make((), dtype))


def test_empty_full_reductions():
    for dtype in [torch.float32, torch.int64, torch.bool]:
        for fn in [torch.max, torch.min, torch.argmax, torch.argmin, torch.aminmax, torch.prod, torch.sum,
                   torch.any, torch.all, torch.count_nonzero]:
            check(fn, torch.empty(0, 3).to(dtype))
    for fn in [torch.median, torch.nanmedian, torch.mean, torch.var, torch.norm, torch.logsumexp_all
               if hasattr(torch, "logsumexp_all") else torch.nanmean]:
        check(fn, torch.empty(2, 0))


def test_median_picks_lower_median_and_its_index():
    x = torch.randperm(24, generator=torch.Generator().manual_seed(1)).float().reshape(4, 6)
    for fn in [lambda t: t.median(1), lambda t: t.median(0, keepdim=True), lambda t: t.nanmedian(1),
               lambda t: t.median(), lambda t: t.nanmedian()]:
        check(fn, x)
        check(lambda t: fn(transposed(t)), x)
    check(lambda t: t.median(1).values, make((5, 8), torch.int64))


def test_nanmedian_skips_nans():
    x = torch.tensor([[math.nan, 1.0, 3.0, 2.0], [math.nan, math.nan, 7.0, math.nan],
                      [4.0, 6.0, 5.0, 0.0]])
    for fn in [lambda t: t.nanmedian(1), lambda t: t.nanmedian(), lambda t: t.median(1),
               lambda t: t.nanmedian(0).values]:
        check(fn, x)
    all_nan = torch.full((2, 3), math.nan)
    check(lambda t: t.nanmedian(1).values, all_nan)
    check(lambda t: t.nanmedian(), all_nan)


def test_mode():
    x = torch.tensor([[1, 3, 3, 2, 2, 5], [4, 4, 4, 1, 1, 1], [9, 8, 7, 6, 5, 4]])
    for dtype in [torch.int64, torch.float32, torch.bfloat16]:
        check(lambda t: t.mode(1), x.to(dtype))
        check(lambda t: t.mode(0), x.to(dtype))
    check(lambda t: t.mode(1), x.bool())


@pytest.mark.parametrize("dtype", [torch.int64, torch.bfloat16, torch.bool])
def test_mode_of_long_rows_reports_the_index_cpu_std_sort_leaves_last(dtype):
    x = torch.randint(0, 5, (6, 3000), generator=torch.Generator().manual_seed(0)).to(dtype)
    check(lambda t: t.mode(1), x, rtol=0, atol=0)
    check(lambda t: t.mode(0), x.t(), rtol=0, atol=0)


def test_unsupported_dtypes_raise_like_cpu():
    complex_x = torch.randn(3, 2, dtype=torch.complex64)
    for fn in [torch.median, lambda t: t.mode(0), lambda t: t.cummax(0), lambda t: t.amax(0),
               lambda t: t.max(0), lambda t: t.argmax(0), lambda t: t.aminmax()]:
        check(fn, complex_x)
    for fn in [torch.median, torch.nanmedian, lambda t: t.median(0), lambda t: t.var(), lambda t: t.std(0),
               lambda t: t.mean(), lambda t: t.norm(), lambda t: t.logcumsumexp(0)]:
        check(fn, make((3, 2), torch.bool))
        check(fn, make((3, 2), torch.int64))


# ---------------------------------------------------------------------------------------------
# Scans
# ---------------------------------------------------------------------------------------------

SCANS = {
    "cumsum": lambda x, dim: x.cumsum(dim),
    "cumprod": lambda x, dim: x.cumprod(dim),
    "cummax": lambda x, dim: x.cummax(dim),
    "cummin": lambda x, dim: x.cummin(dim),
    "logcumsumexp": lambda x, dim: x.logcumsumexp(dim),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", SCANS)
def test_scans(name, dtype):
    scan = SCANS[name]
    x = make((4, 3, 6), dtype)
    for dim in [0, 1, -1]:
        for view in VIEWS:
            check(lambda t: scan(view(t), dim), x)
    check(lambda t: scan(t, 0), make((), dtype))
    check(lambda t: scan(t, -1), torch.empty(3, 0).to(dtype))
    check(lambda t: scan(t, 2), x)


@pytest.mark.parametrize("name", SCANS)
def test_scans_with_nan_and_inf(name):
    scan = SCANS[name]
    x = torch.tensor([[1.0, math.nan, 3.0, math.nan, 0.5], [-math.inf, -math.inf, 2.0, math.inf, math.inf],
                      [2.0, 2.0, 1.0, 2.0, 3.0]])
    check(lambda t: scan(t, 1), x)
    check(lambda t: scan(t, 1), x.bfloat16())


def test_logcumsumexp_of_large_values_rounds_once_like_cpu():
    """CPU keeps the running value in double: at 1e4 a float32 running value is off by several ulps,
    which its gradient (exp of a difference of such values) turns into a 1e-3 relative error."""
    x = (torch.randn(9, 5, 4, generator=torch.Generator().manual_seed(1)) * 3 + 1e4).requires_grad_()
    gradient = torch.randn(9, 4, 5)
    cpu_out = x.transpose(1, 2).logcumsumexp(0)
    (cpu_grad,) = torch.autograd.grad(cpu_out, x, gradient)
    tpu_x = x.detach().to("tpu").requires_grad_()
    tpu_out = tpu_x.transpose(1, 2).logcumsumexp(0)
    (tpu_grad,) = torch.autograd.grad(tpu_out, tpu_x, gradient.to("tpu"))
    torch.testing.assert_close(tpu_out.cpu(), cpu_out.detach(), atol=0, rtol=0)
    torch.testing.assert_close(tpu_grad.cpu(), cpu_grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=str)
@pytest.mark.parametrize("name", ["cumsum", "cumprod"])
def test_float_scans_accumulate_in_double_like_cpu(name, dtype):
    """CPU's cumsum/cumprod of float32 and complex64 keep the running value in double: a float32 running
    value drifts by ulps within a few dozen steps (prod's forward-mode tangent, which goes through
    cumprod, was 2e-6 off)."""
    x = torch.rand(3, 400, generator=torch.Generator().manual_seed(2), dtype=dtype) + 0.5
    for dim, view in [(1, lambda t: t), (0, lambda t: t.t())]:
        check(lambda t: SCANS[name](view(t), dim), x, rtol=0, atol=0)
    if not dtype.is_complex:  # a bf16 input converted to a float32 result accumulates in double too
        check(lambda t: getattr(t, name)(1, dtype=torch.float32), x.bfloat16(), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["cumsum", "cumprod"])
def test_scans_into_a_bool_result_are_refused_as_on_cpu(name):
    for device in ("cpu", "tpu"):
        ones = torch.ones(2, 3, dtype=torch.bool, device=device)
        with pytest.raises(NotImplementedError, match=rf"^\"{name}_out_cpu\" not implemented for 'Bool'$"):
            getattr(torch, name)(ones, 1, out=torch.empty(0, dtype=torch.bool, device=device))
        with pytest.raises(NotImplementedError, match=rf"^\"{name}_out_cpu\" not implemented for 'Bool'$"):
            getattr(torch, name)(ones, 1, dtype=torch.bool)


def test_cumulative_extremes_take_latest_tie():
    x = torch.tensor([[1, 3, 3, 0, 3, 4, 4], [2, 2, 2, 2, 2, 2, 2]])
    for dtype in [torch.int64, torch.float32, torch.bool]:
        check(lambda t: t.cummax(1), x.to(dtype), rtol=0, atol=0)
        check(lambda t: t.cummin(1), x.to(dtype), rtol=0, atol=0)


def test_scan_dtypes():
    x = make((3, 5), torch.int32)
    assert check(lambda t: t.cumsum(1), x).dtype == torch.int64
    check(lambda t: t.cumsum(1, dtype=torch.float64), x)
    check(lambda t: t.cumprod(0, dtype=torch.bfloat16), make((6, 2), torch.float32))
    check(lambda t: t.cumsum_(1), make((3, 5), torch.float32))
    ones = torch.ones(1000, dtype=torch.bfloat16)
    check(lambda t: t.cumsum(0), ones)  # float32 accumulation: 1000 is exact-ish in bf16


# ---------------------------------------------------------------------------------------------
# out= overloads
# ---------------------------------------------------------------------------------------------


def out_case(fn, out_dtypes, x):
    """``fn(t, out)`` writes ``out`` (allocated empty on the right device) like on CPU."""

    def run(t):
        outs = tuple(torch.empty(0, dtype=d, device=t.device) for d in out_dtypes)
        result = fn(t, outs if len(outs) > 1 else outs[0])
        assert all(a is b for a, b in zip(result if len(outs) > 1 else (result,), outs))
        return outs

    check(run, x)


OUT_CASES = [
    (lambda t, o: torch.sum(t, 1, out=o), [torch.float32]),
    (lambda t, o: torch.sum(t, 1, out=o), [torch.float64]),
    (lambda t, o: torch.sum(t, (0, 1), keepdim=True, out=o), [torch.float32]),
    (lambda t, o: torch.nansum(t, 1, out=o), [torch.float32]),
    (lambda t, o: torch.mean(t, 0, out=o), [torch.float32]),
    (lambda t, o: torch.prod(t, 1, out=o), [torch.float32]),
    (lambda t, o: torch.amax(t, 1, out=o), [torch.float32]),
    (lambda t, o: torch.amin(t, 0, out=o), [torch.float32]),
    (lambda t, o: torch.max(t, out=o), [torch.float32]),
    (lambda t, o: torch.max(t, out=o), [torch.int64]),
    (lambda t, o: torch.min(t, out=o), [torch.float64]),
    (lambda t, o: torch.max(t, 1, out=o), [torch.float32, torch.int64]),
    (lambda t, o: torch.min(t, 0, keepdim=True, out=o), [torch.float32, torch.int64]),
    (lambda t, o: torch.aminmax(t, dim=1, out=o), [torch.float32, torch.float32]),
    (lambda t, o: torch.argmax(t, 1, out=o), [torch.int64]),
    (lambda t, o: torch.argmin(t, out=o), [torch.int64]),
    (lambda t, o: torch.var(t, 1, out=o), [torch.float32]),
    (lambda t, o: torch.var(t, 1, out=o), [torch.float64]),
    (lambda t, o: torch.std(t, 0, correction=0, out=o), [torch.float32]),
    (lambda t, o: torch.var_mean(t, 1, out=o), [torch.float32, torch.float32]),
    (lambda t, o: torch.norm(t, 3, 1, out=o), [torch.float32]),
    (lambda t, o: torch.linalg.vector_norm(t, 2, 1, out=o), [torch.float32]),
    (lambda t, o: torch.linalg.vector_norm(t, 2, 1, dtype=torch.float64, out=o), [torch.float64]),
    (lambda t, o: torch.logsumexp(t, 1, out=o), [torch.float32]),
    (lambda t, o: torch.logsumexp(t, 1, out=o), [torch.int64]),
    (lambda t, o: torch.any(t, 1, out=o), [torch.bool]),
    (lambda t, o: torch.all(t, out=o), [torch.bool]),
    (lambda t, o: torch.any(t, (0, 1), out=o), [torch.bool]),
    (lambda t, o: torch.count_nonzero(t, 1, out=o), [torch.int64]),
    (lambda t, o: torch.cumsum(t, 1, out=o), [torch.float32]),
    (lambda t, o: torch.cumprod(t, 0, out=o), [torch.float64]),
    (lambda t, o: torch.cummax(t, 1, out=o), [torch.float32, torch.int64]),
    (lambda t, o: torch.logcumsumexp(t, 1, out=o), [torch.float32]),
    (lambda t, o: torch.median(t, 1, out=o), [torch.float32, torch.int64]),
    (lambda t, o: torch.median(t, 1, out=o), [torch.int64, torch.int64]),
    (lambda t, o: torch.nanmedian(t, 0, out=o), [torch.float32, torch.int64]),
    (lambda t, o: torch.mode(t, 1, out=o), [torch.float32, torch.int64]),
]


@pytest.mark.parametrize("case", range(len(OUT_CASES)))
def test_out_overloads(case):
    fn, out_dtypes = OUT_CASES[case]
    out_case(fn, out_dtypes, make((3, 5), torch.float32))


def test_out_into_strided_view():
    def run(t):
        out = torch.zeros(3, 4, device=t.device)
        torch.sum(t, 0, out=out[:, 1])
        torch.amax(t, 0, out=out[:, 3])
        return out

    check(run, make((2, 3), torch.float32))


@pytest.mark.parametrize("reduce", [torch.sum, torch.nansum, torch.mean])
@pytest.mark.parametrize("keepdim", [False, True])
def test_sums_into_a_transposed_out_add_in_the_order_cpus_iterator_takes_for_it(reduce, keepdim):
    """The output's strides order TensorIterator's dims first: a transposed ``out=`` changes which kept dim the
    loop vectorises over, and so the order each output's elements are added in (22 of 1320 differed)."""
    x = torch.randn(50, 33, 40, generator=torch.Generator().manual_seed(0)) * 3 + 1

    def run(device):
        out = torch.empty(40, 33, 1, device=device).permute(2, 1, 0) if keepdim else \
            torch.empty(40, 33, device=device).t()
        reduce(x.to(device), 0, keepdim=keepdim, out=out)
        return out.cpu()

    assert torch.equal(run("tpu"), run("cpu"))


@pytest.mark.parametrize("keepdim, out_shape, expanded_shape", [
    (False, (1, 40), (33, 40)), (True, (1, 1, 40), (33, 1, 40)), (False, (33, 1), (33, 40))])
def test_a_sum_into_an_out_expanded_over_a_kept_dim_sums_over_that_dim_too_as_cpu(keepdim, out_shape, expanded_shape):
    """CPU's iterator reads an out= of stride 0 along a kept dim as one more reduced dim: each element holds the
    sum over both (tpu wrote the last row's sum)."""
    x = torch.randn(33, 50, 40, generator=torch.Generator().manual_seed(0))

    def run(device):
        out = torch.zeros(out_shape, device=device).expand(expanded_shape)
        torch.sum(x.to(device), 1, keepdim=keepdim, out=out)
        return out.cpu()

    assert torch.equal(run("tpu"), run("cpu"))


def test_a_mean_into_an_expanded_out_is_refused_as_cpus_in_place_division_refuses_it():
    differential.check_same_error(
        lambda d: torch.mean(torch.ones(3, 5, 4, device=d), 1, out=torch.zeros(1, 4, device=d).expand(3, 4)))


@pytest.mark.parametrize("case", ["size-1 dim kept", "transposed", "expanded", "float32 strided", "float32 permuted"])
def test_a_var_whose_output_is_one_element_is_cpus_all_dims_algorithm(case):
    """CPU's iterator drops size-1 dims, so any var/std with a one-element output takes std_var_all_cpu: the
    tensor's own mean (float32's from the float32 sum kernel), then squared deviations in double, in the order the
    iterator walks the input (an expanded dim's stride 0 included)."""
    generator = torch.Generator().manual_seed(3)
    row = torch.randn(1, 600, dtype=torch.float64, generator=generator) * 1e3 + 1e5
    table = torch.randn(10000, 3, generator=generator) * 1e3 + 1e5
    x, reduce = {"size-1 dim kept": (row, lambda t: t.var(1)), "transposed": (row, lambda t: t.t().std(0)),
                 "expanded": (row[:, :300], lambda t: t.expand(4, 300).var()),
                 "float32 strided": (table, lambda t: t[::2].var()),
                 "float32 permuted": (table, lambda t: t.t().std(correction=0))}[case]
    assert torch.equal(reduce(x.to("tpu")).cpu(), reduce(x))


def test_uint8_any_all_keep_uint8():
    x = torch.tensor([[0, 3], [0, 0]], dtype=torch.uint8)
    for fn in [lambda t: t.any(1), lambda t: t.all(0), lambda t: t.any(), lambda t: t.all()]:
        assert check(fn, x).dtype == torch.uint8


def test_var_degrees_of_freedom_warning():
    x = make((3,), torch.float32)
    with pytest.warns(UserWarning, match="degrees of freedom"):
        check(lambda t: t.var(correction=3), x)
    check(lambda t: t.std(correction=0.5), x)


# ---------------------------------------------------------------------------------------------
# Autograd through the kernels
# ---------------------------------------------------------------------------------------------

BACKWARD_CASES = {
    "sum": lambda a: a.sum(1), "mean": lambda a: a.mean(), "nansum": lambda a: a.nansum(0),
    "prod": lambda a: a.prod(1), "amax": lambda a: a.amax(1), "max": lambda a: a.max(),
    "max_dim": lambda a: a.max(1).values, "var_mean": lambda a: sum(torch.var_mean(a, 1)),
    "std": lambda a: a.std(), "norm": lambda a: a.norm(dim=1), "norm_3": lambda a: torch.linalg.vector_norm(a, 3),
    "cumsum": lambda a: a.cumsum(1), "cumprod": lambda a: a.cumprod(1), "cummax": lambda a: a.cummax(1).values,
    "logcumsumexp": lambda a: a.logcumsumexp(1), "logsumexp": lambda a: a.logsumexp(1),
    "median_dim": lambda a: a.median(1).values, "mode": lambda a: a.mode(1).values,
}


@pytest.mark.parametrize("name", BACKWARD_CASES)
def test_backward(name):
    fn = BACKWARD_CASES[name]

    def gradient(t):
        t = t.clone().requires_grad_()
        fn(t).sum().backward()
        return t.grad

    check(gradient, make((3, 4), torch.float64))


@contextlib.contextmanager
def warn_always():
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        yield
    finally:
        torch.set_warn_always(before)


@pytest.mark.parametrize("dim", [None, 1])
def test_deprecated_aminmax_matches_cpu_and_warns_as_cpu_warns(dim):
    """torch._aminmax: aminmax's values, with CPU's once-per-process deprecation warning (every time under
    torch.set_warn_always(True), which PyTorch's own tests use to see it)."""
    x = torch.randn(3, 4)
    arguments = () if dim is None else (dim, True)
    expected = torch._aminmax(x, *arguments)
    with warn_always(), pytest.warns(UserWarning, match="^_aminmax is deprecated as of PyTorch 1.11"):
        actual = torch._aminmax(x.to("tpu"), *arguments)
    for got, want in zip(actual, expected):
        assert torch.equal(got.cpu(), want)


@pytest.mark.parametrize("dtypes", [(torch.float32, torch.float64, torch.int64), (torch.float32, torch.float32, torch.int32),
                                    (torch.uint8, torch.int8, torch.int64)], ids=["values", "indices", "values_int"])
@pytest.mark.parametrize("op", [torch.median, torch.nanmedian, torch.mode, lambda x, *a, **k: torch.kthvalue(x, 2, *a, **k)],
                         ids=["median", "nanmedian", "mode", "kthvalue"])
def test_selections_refuse_out_dtypes_in_each_ops_cpu_words(op, dtypes):
    """values must have self's dtype and indices int64 (an int32 indices out was filled on tpu); each op
    words it as its CPU kernel does."""
    self_dtype, values_dtype, indices_dtype = dtypes

    def call(device):
        out = (torch.empty(1, dtype=values_dtype, device=device), torch.empty(1, dtype=indices_dtype, device=device))
        return op(torch.ones(10, dtype=self_dtype, device=device), -1, True, out=out)

    differential.check_same_error(lambda device: _tpu_type_names_as_cpu(call, device))


def _tpu_type_names_as_cpu(call, device):
    """``call(device)``, its error with tpu's legacy type names (torch.tpu.FloatTensor) as CPU's."""
    try:
        return call(device)
    except RuntimeError as error:
        raise RuntimeError(str(error).replace("torch.tpu.", "torch.")) from None


# The float16 input on which PyTorch's test_ref_duplicate_values fails on tpu (its make_tensor draws from
# the tpu generator): tpu's sums equal CPU's bit for bit; it is CPU's result that differs from NumPy's
# float16 reference in the last bit of column 3.
DUPLICATE_VALUES_FP16 = [[0.76708984375, -0.6611328125, -0.666015625, 0.35888671875],
                         [1.3544921875, 0.76708984375, -1.5712890625, -0.666015625],
                         [1.5458984375, 0.3681640625, -1.45703125, 1.4521484375],
                         [1.056640625, 1.5458984375, -0.61328125, -1.45703125]]


@pytest.mark.parametrize("dim", [None, 0, 1])
@pytest.mark.parametrize("op", [torch.nansum, torch.sum, torch.nanmean, torch.mean,
                                lambda x, **k: torch.masked._ops.sum(x, mask=torch.ones_like(x, dtype=torch.bool), **k)],
                         ids=["nansum", "sum", "nanmean", "mean", "masked_sum"])
def test_float16_sums_of_pytorch_duplicate_values_input_equal_cpus(op, dim):
    x = torch.tensor(DUPLICATE_VALUES_FP16, dtype=torch.float16)
    kwargs = {} if dim is None else {"dim": dim}
    differential.assert_identical(op(x.to("tpu"), **kwargs), op(x, **kwargs))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
@pytest.mark.parametrize("source", [torch.float32, torch.bfloat16])
def test_nansum_into_an_explicit_integer_dtype_converts_the_elements_nans_as_zeros_as_cpu_does(dtype, source):
    values = torch.tensor([[1.7, -1.7, math.nan, 2.9], [0.4, math.nan, -0.6, 5.5]], dtype=source)
    for dim in (None, 1):
        expected = torch.nansum(values, dim, dtype=dtype)
        result = torch.nansum(values.to("tpu"), dim, dtype=dtype)
        assert result.dtype == expected.dtype and torch.equal(result.cpu(), expected)


def test_nansum_of_floats_into_an_integer_or_complex_result_without_that_dtype_is_refused_as_on_cpu():
    differential.check_same_error(lambda d: torch.nansum(torch.ones(3, device=d), out=torch.empty((), dtype=torch.long,
                                                                                                   device=d)))
    differential.check_same_error(lambda d: torch.nansum(torch.ones(3, device=d), dtype=torch.complex64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_mean_whose_sum_overflows_is_inf_without_a_warning(dtype):
    """A global average pool (``mean`` over the spatial dims) whose sum passes the dtype's range gives CPU's inf and,
    as on CPU, no RuntimeWarning (NumPy's reduction warned "overflow encountered in reduce")."""
    big = torch.finfo(dtype).max / 2
    x = torch.full((2, 3, 4, 4), big, dtype=dtype)
    x[1] = -1.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        actual = x.to("tpu").mean((-2, -1), keepdim=True).cpu()
    assert torch.equal(actual, x.mean((-2, -1), keepdim=True))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("dim", [0, 1, [0, 1]])
def test_logsumexp_of_16_bit_floats_and_its_gradient_have_cpus_bits(dtype, dim):
    """CPU composes logsumexp of ops on tensors of the dtype, each rounding its result (the shifted input, the
    exponentials, their sum, its log, the shift added back); rounded once, half the rows were an ulp off."""
    x = (torch.randn(16, 40, generator=torch.Generator().manual_seed(5)) * 3).to(dtype)
    results = []
    for device in ("cpu", "tpu"):
        leaf = x.clone().to(device).requires_grad_()
        value = leaf.logsumexp(dim)
        value.backward(torch.linspace(-2, 3, value.numel()).view(value.shape).to(dtype).to(device))
        results.append((value.detach().cpu(), leaf.grad.cpu()))
    for cpu, tpu in zip(*results):
        assert torch.equal(tpu, cpu)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,dims", [
    ((4, 32, 7, 7), (-2, -1)),  # the zoo's global pools: rows shorter than a cascade step
    ((2, 3, 14, 14), (2, 3)),
    ((2, 5, 33, 47), (-1, -2)),  # a row's last elements past whole vectors
    ((3, 2, 5), (-1,)),  # rows shorter than a vector
    ((3, 4100), (1,)),  # cascade levels flushed
    ((2, 17000), (-1,)),
    ((9000,), (0,)),  # one row: a full reduction (CPU splits only rows past 32768 elements, across threads)
    ((100_000,), (0,)),  # one row past GRAIN_SIZE: one chunk per thread, the chunk totals then added
    ((1, 1, 256, 256), (-2, -1)),  # a global pool of one plane, split alike
    ((1, 2, 256, 256), (-2, -1)),  # two rows past GRAIN_SIZE: each summed whole, whatever the threads
])
@pytest.mark.parametrize("threads", [1, 2])
def test_mean_over_a_contiguous_trailing_run_is_cpus_sum_bit_for_bit(dtype, shape, dims, threads):
    """CPU's mean is its sum kernel's total divided by the count; over the trailing dims of a contiguous input the
    kernel adds each output's elements as a contiguous row (SumKernel.cpp: four 32-byte vectors abreast through
    cascade levels, the lanes then added to the row's tail): ``cpu_replay.inner_sum``. NumPy's pairwise sum gave
    other bits for a third to two thirds of the values; ``adaptive_avg_pool2d(x, 1)`` is this mean. One output of
    32768 or more elements CPU sums in one chunk per thread (two_pass_reduction): summed whole, a third of the
    means on 2 threads were off."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for seed in range(4):
            x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 3 + 1
            for keepdim in (False, True):
                assert torch.equal(x.to("tpu").mean(dims, keepdim=keepdim).cpu(), x.mean(dims, keepdim=keepdim))
            if x.dim() == 4:
                assert torch.equal(F.adaptive_avg_pool2d(x.to("tpu"), 1).cpu(), F.adaptive_avg_pool2d(x, 1))
        zeros = -torch.zeros(shape, dtype=dtype)  # CPU's accumulators start at +0.0
        assert torch.equal(zeros.to("tpu").mean(dims).cpu().signbit(), zeros.mean(dims).signbit())
    finally:
        torch.set_num_threads(previous)

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["transposed", "channels_last", "reversed"])
def test_mean_over_every_dim_of_a_permuted_dense_input_is_cpus_sum_in_memory_order(dtype, layout):
    """CPU orders a reduction's dims by stride: over every dim of a dense input (``x.t().mean()``, a channels-last
    activation's mean) its sum kernel adds the elements as one contiguous row in memory order. NumPy's pairwise
    order gave other bits for a third of the means."""
    for seed in range(6):
        x = torch.randn(3, 5, 7, 9, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 3 + 1
        x = {"transposed": x.reshape(15, 63).t(), "channels_last": x.to(memory_format=torch.channels_last),
             "reversed": x.permute(3, 2, 1, 0)}[layout]
        assert torch.equal(x.to("tpu").mean().cpu(), x.mean())
        assert torch.equal(x.to("tpu").mean(tuple(range(x.dim())), keepdim=True).cpu(),
                           x.mean(tuple(range(x.dim())), keepdim=True))


def _layouts(shape, dtype, seed):
    """(CPU tensor, the same on tpu) pairs of one shape: contiguous, transposed, and every other element of a twice
    larger tensor (strided: no dims coalesce), each made on its own device so the tpu copy keeps the strides."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=torch.float64).mul(3).add(1).to(dtype)
    base = torch.randn([2 * size for size in shape], generator=generator, dtype=torch.float64).to(dtype)
    every_other = tuple(slice(None, None, 2) for _ in shape)
    pairs = [(x, x.to("tpu")), (base[every_other], base.to("tpu")[every_other])]
    if x.dim() > 1:
        pairs.append((x.transpose(0, -1), x.to("tpu").transpose(0, -1)))
    return pairs


SUM_REDUCTIONS = {"sum": torch.sum, "mean": torch.mean, "nansum": torch.nansum}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduce", sorted(SUM_REDUCTIONS))
@pytest.mark.parametrize("shape", [(12,), (6, 2), (2, 6), (3, 5, 7), (70, 3), (17, 33), (9, 64), (5, 40, 3),
                                   (33, 2, 9), (40, 1, 2)])
def test_sums_over_any_dims_and_layout_are_cpus_bit_for_bit(dtype, reduce, shape):
    """CPU's sum kernel orders its additions by the layout TensorIterator gives it (reduced dims innermost, dims
    coalesced) and by which of its four loops the two innermost dims' strides choose: a contiguous run in vectors
    four abreast, columns in runs of four accumulator vectors in order, or every fourth element into one of four
    accumulators (``cpu_replay.sum_kernel``); column sums then add into their outputs in iteration order, which a
    bf16/fp16 ``nansum`` rounds every time. A (6, 2) float32 ``sum(0)`` was an ulp off, and a third of all these."""
    function = SUM_REDUCTIONS[reduce]
    for seed in range(2):
        for on_cpu, on_tpu in _layouts(shape, dtype, seed):
            for dims in [d for r in range(1, on_cpu.dim() + 1) for d in itertools.combinations(range(on_cpu.dim()), r)]:
                for keepdim in (False, True):
                    expected = function(on_cpu, dims, keepdim=keepdim)
                    assert torch.equal(function(on_tpu, dims, keepdim=keepdim).cpu(), expected), (dims, keepdim)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduce", sorted(SUM_REDUCTIONS))
@pytest.mark.parametrize("shape", [(70, 70, 9), (200, 300), (1100, 33), (40000,)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_sums_past_grain_size_split_across_threads_as_cpus(dtype, reduce, shape, threads):
    """At 32768 elements CPU splits a sum across its threads: one output in two passes (each thread's chunk of the
    iteration, its partial rows included, into a slot of a buffer of the output's dtype, then the slots summed), more
    outputs by columns of one kept dim (rounded to 128 bytes where adjacent). The bits follow the thread count."""
    function = SUM_REDUCTIONS[reduce]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for on_cpu, on_tpu in _layouts(shape, dtype, seed=0):
            single_dims = [(axis,) for axis in range(on_cpu.dim() if on_cpu.dim() > 1 else 0)]
            dims_list = [tuple(range(on_cpu.dim()))] + single_dims
            for dims in dims_list:
                assert torch.equal(function(on_tpu, dims).cpu(), function(on_cpu, dims)), dims
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape,dims", [
    ((68, 32), (0,)), ((3, 17, 64), (0, 1)), ((394, 768), (0,)), ((8, 197, 192), (0, 1)),  # bias gradients
    ((1100, 38), (0,)), ((300, 130), (0,)),  # a thread's columns shorter than a vector at 8 threads: split kept
    ((32, 68), (1,)), ((256, 64), (-1,)), ((9, 4000), (1,)), ((4, 6, 50), (1, 2)),  # contiguous rows
    ((8, 32, 64), (0,)), ((256, 192), (0,)), ((1, 64), (0,)),  # GPT-style gradients; one row: nothing added
    ((17, 32), (0,)), ((4101, 32), (0,)), ((65536 + 16 * 17 + 3, 32), (0,)),  # the cascade's levels, rows held
    ((64, 5), (0,)), ((64, 40), (0,)), ((100, 7), (0,)), ((3, 17, 37), (0, 1)),  # columns past whole runs
    ((5, 8 * 4 * 17 + 8 * 2 + 7), (-1,)), ((3, 8 * 4 * 4101 + 8 * 3 + 5), (1,)),  # rows: levels, vectors, elements
])
@pytest.mark.parametrize("threads", [1, 2, 8])
def test_sums_over_leading_or_trailing_dims_of_contiguous_inputs_take_the_direct_path_with_cpus_bits(
        dtype, shape, dims, threads):
    """The commonest sums (a contiguous input over its leading dims, as every bias gradient; over its trailing
    dims) skip the general replay's bookkeeping (``sum_kernel.direct_sum``), and past 32768 elements the threads'
    split of the columns is dropped where it adds every column as one loop would (``_split_changes_sums``): still
    CPU's bits, on any number of threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        x = (x * torch.logspace(-3, 3, shape[-1], dtype=torch.float64)).to(dtype)
        for function in (torch.sum, torch.mean):
            for keepdim in (False, True):
                assert torch.equal(function(x.to("tpu"), dims, keepdim).cpu(), function(x, dims, keepdim))
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("shape", [(1, 64), (17, 32), (256, 64), (3, 4), (1, 9)])
def test_direct_sums_of_negative_zeros_are_cpus_positive_zero(shape):
    """CPU's accumulators start at +0.0, so its sum of -0.0s is +0.0, however many rows the cascade holds (the
    direct path takes a single row as it is and adds +0.0 last)."""
    x = torch.full(shape, -0.0)
    for dims in ((0,), (1,), (0, 1)):
        got, expected = x.to("tpu").sum(dims).cpu(), x.sum(dims)
        assert torch.equal(got, expected) and torch.equal(got.signbit(), expected.signbit()), dims


def _same_or_both_nan(got, expected):
    return torch.equal(got.isnan(), expected.isnan()) and torch.equal(got.nan_to_num(), expected.nan_to_num())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(12,), (6, 2), (3, 5, 7), (70, 3), (17, 33), (5, 40, 3), (300,)])
@pytest.mark.parametrize("reduce", [torch.var, torch.std, torch.var_mean, torch.std_mean])
def test_var_and_std_are_cpus_welford_in_double_bit_for_bit(dtype, shape, reduce):
    """CPU's var/std (and their _mean pairs) run WelfordOps in double for every floating dtype, each output's
    elements in TensorIterator's order, rounded once; a float64 var/std over every dim is its sum kernel's mean,
    then the squared deviations added in order. tpu's float32 two-pass in the input's opmath differed in 53 of 62
    small cases (float64 in 41 of 48)."""
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3 + 1).to(dtype)
    for source in (x, x.transpose(0, -1)):
        for dims in [None] + [d for r in range(1, x.dim() + 1) for d in itertools.combinations(range(x.dim()), r)]:
            for options in ({}, {"correction": 0, "keepdim": True}):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a size-1 reduction's NaN, on both devices
                    expected, got = reduce(source, dims, **options), reduce(source.to("tpu"), dims, **options)
                for got_one, expected_one in zip(*(r if isinstance(r, tuple) else (r,) for r in (got, expected))):
                    assert _same_or_both_nan(got_one.cpu(), expected_one), (dims, options)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128, torch.complex32])
@pytest.mark.parametrize("reduce", [torch.var, torch.var_mean])
def test_complex_var_is_its_parts_vars_added_bit_for_bit(dtype, reduce):
    """CPU's complex var is the real part's var plus the imaginary part's, each its real kernel's of the strided
    part, rounded to the real dtype; var_mean's mean is the parts' means. tpu's complex two-pass differed in 440
    of 594 cases. (std takes the sum's square root with MKL's float32 sqrt: docs/numerics.md's known exception.)"""
    x = torch.randn(17, 33, generator=torch.Generator().manual_seed(1), dtype=torch.complex128).mul(3).add(1 + 2j)
    x = x.to(dtype)
    for view in (lambda t: t, lambda t: t.t(), lambda t: t[:, ::2]):
        for dims in (None, 0, 1):
            for options in ({}, {"correction": 0, "keepdim": True}):
                expected, got = reduce(view(x), dims, **options), reduce(view(x.to("tpu")), dims, **options)
                for got_one, expected_one in zip(*(r if isinstance(r, tuple) else (r,) for r in (got, expected))):
                    as_real = lambda t: torch.view_as_real(t) if t.is_complex() else t  # no equal_cpu for complex32
                    assert torch.equal(as_real(got_one.cpu()), as_real(expected_one)), (dims, options)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(12,), (70, 3), (17, 33), (9, 64), (300,), (3, 100), (4, 1000), (3, 5, 7)])
def test_prod_is_cpus_reduce_vec_bit_for_bit(dtype, shape):
    """CPU's prod reads a contiguous reduced run in blocks of four 32-byte vectors (Reduce.h's
    vectorized_inner_reduction: four accumulators, combined pairwise, their lanes in order, then the run's tail), a
    full product run by run in TensorIterator's order, other layouts element by element; bf16/fp16 round every
    product. NumPy's multiply.reduce took another order (float64 (300,) and (3, 100) were an ulp off, transposed
    full products too) and bf16/fp16 rounded once."""
    for seed in range(3):
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        x = (1 + 0.01 * noise).to(dtype)
        for view in (lambda t: t, lambda t: t.transpose(0, -1), lambda t: t[..., ::2]):
            source, on_tpu = view(x), view(x.to("tpu"))
            assert torch.equal(torch.prod(on_tpu).cpu(), torch.prod(source))
            for dim in range(x.dim()):
                for keepdim in (False, True):
                    assert torch.equal(torch.prod(on_tpu, dim, keepdim=keepdim).cpu(), torch.prod(source, dim, keepdim))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_prod_past_grain_size_is_cpus_per_thread_products(threads):
    """One output of 32768 or more elements: CPU multiplies each thread's chunk of the iteration into its own slot
    (a row cut by a chunk's end is a row of its own in the vector loop), then the slots in order."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            x = (1 + 0.001 * torch.randn(200, 301, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
            x = x.to(dtype)
            for view in (lambda t: t, lambda t: t.t(), lambda t: t[:, 1:]):
                assert torch.equal(torch.prod(view(x.to("tpu"))).cpu(), torch.prod(view(x))), dtype
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_var_std_and_prod_are_cpus_bit_for_bit(dtype):
    """Compiled programs run the eager kernels' var/std/prod maths; std is kept whole (core ATen's decomposition
    took the square root of a float32-rounded var: float32 ``std(1)`` was an ulp off CPU)."""
    torch._dynamo.reset()
    reductions = lambda x: (x.var(0), x.std(1), x.prod(-1), torch.var_mean(x, 1)[0], torch.std_mean(x, 0)[0], x.std())
    compiled = torch.compile(reductions, backend="tpu", fullgraph=True)
    x = (1 + 0.01 * torch.randn(17, 100, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).to(dtype)
    for got, expected in zip(compiled(x.to("tpu")), reductions(x)):
        assert torch.equal(got.cpu(), expected)


def test_compiled_sum_and_mean_are_cpus_bit_for_bit():
    """The compiled program's sum and mean call the same replay (``reduction.sum_into``, ``mean_array``)."""
    torch._dynamo.reset()
    summed = torch.compile(lambda x: (x.sum(0), x.sum((0, 2)), x.mean(1)), backend="tpu", fullgraph=True)
    for seed in range(3):
        x = torch.randn(6, 17, 5, generator=torch.Generator().manual_seed(seed)) * 3 + 1
        for got, expected in zip(summed(x.to("tpu")), (x.sum(0), x.sum((0, 2)), x.mean(1))):
            assert torch.equal(got.cpu(), expected)


def test_sum_of_bf16_into_float32_and_mean_of_a_strided_bf16_read_the_converted_copy():
    """``sum(dtype=float32)`` of bf16 and a bf16 ``mean`` sum a float32 copy of the input: same strides when it is
    dense, contiguous when it is not (``Tensor.to``)."""
    base = torch.randn(34, 18, 10, generator=torch.Generator().manual_seed(3)).bfloat16()
    for on_cpu, on_tpu in [(base, base.to("tpu")), (base[::2, :, ::3], base.to("tpu")[::2, :, ::3]),
                           (base.transpose(0, 2), base.to("tpu").transpose(0, 2))]:
        for dims in [(0,), (1,), (0, 2), (1, 2)]:
            assert torch.equal(on_tpu.sum(dims, dtype=torch.float32).cpu(), on_cpu.sum(dims, dtype=torch.float32))
            assert torch.equal(on_tpu.mean(dims).cpu(), on_cpu.mean(dims))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduce", ["sum dim", "sum out", "prod out"])
def test_sums_and_products_that_overflow_are_inf_without_a_warning(reduce, dtype):
    """A sum or product past the dtype's range gives CPU's inf silently (NumPy's reduction warned "overflow encountered
    in reduce", which ``-W error`` made an error): a bias gradient summed from large activations, or a loss scale."""
    big = torch.finfo(dtype).max / 1.5
    x = torch.full((2, 3), big, dtype=dtype)
    x[:, 1] = -2.5

    def run(x):
        if reduce == "sum dim":
            return x.sum(0, keepdim=True)
        out = torch.empty(3, dtype=dtype, device=x.device)
        return (torch.sum if reduce == "sum out" else torch.prod)(x, 0, out=out)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        actual = run(x.to("tpu")).cpu()
    assert torch.equal(actual, run(x))


@pytest.mark.parametrize("reduce", [
    lambda x: x.sum(), lambda x: x.sum(1), lambda x: x.prod(1), lambda x: x.norm(), lambda x: x.norm(dim=1),
    lambda x: torch.linalg.vector_norm(x, 3, dim=1), lambda x: torch.nn.functional.normalize(x, dim=1),
    lambda x: torch.nn.functional.cosine_similarity(x, x.flip(1)), lambda x: torch.cdist(x.float(), x.flip(0).float()),
], ids=["sum", "sum1", "prod1", "norm", "norm1", "norm3", "normalize", "cosine", "cdist"])
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_reductions_of_infinities_and_overflows_are_silent_as_on_cpu(reduce, dtype):
    """inf - inf, or squares overflowing float32, give NaN or inf without a word on CPU; tpu let NumPy's
    RuntimeWarning ("invalid value encountered in reduce") through, as a model whose loss blew up met it."""
    x = torch.tensor([[math.inf, -math.inf, 3e38, 1.0], [-3e38, 2.0, 0.5, 1e30]], dtype=dtype)
    expected = reduce(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        actual = reduce(x.to("tpu"))
    torch.testing.assert_close(actual.cpu(), expected, equal_nan=True)


def _complex_half(device, *shape):
    with warnings.catch_warnings():  # "ComplexHalf support is experimental"
        warnings.simplefilter("ignore")
        return torch.full(shape, 1 + 2j, dtype=torch.complex32, device=device)


@pytest.mark.parametrize("call", [
    lambda d: _complex_half(d, 2).sum(), lambda d: _complex_half(d, 2, 3).sum(1, keepdim=True),
    lambda d: _complex_half(d, 2).mean(), lambda d: _complex_half(d, 2, 3).mean(0),
    lambda d: torch.ones(2, dtype=torch.float16, device=d).sum(dtype=torch.complex32),
    lambda d: torch.sum(_complex_half(d, 2), 0, out=_complex_half(d)),
    lambda d: torch.mean(_complex_half(d, 2), 0, out=_complex_half(d)),
    lambda d: _complex_half(d, 3).cumsum(0), lambda d: _complex_half(d, 3).cumprod(0),
    lambda d: _complex_half(d, 0).mean(),  # the empty sum is filled; its division has no ComplexHalf loop either
    lambda d: _complex_half(d, 2).prod(),
])
def test_complex_half_sums_and_means_are_refused_as_on_cpu(call):
    """CPU's sum, mean and prod loops have none for ComplexHalf; tpu summed them."""
    differential.check_same_error(call)


@pytest.mark.parametrize("call", [
    lambda x: x.sum(dtype=torch.complex64), lambda x: x.mean(0, dtype=torch.complex64),
    lambda x: x[:0].sum(), lambda x: x[:0].prod(),
])
def test_complex_half_reductions_in_another_dtype_or_of_nothing_match_cpu(call):
    x = _complex_half("cpu", 3)
    differential.compare(call(x.to("tpu")).to(torch.complex64), call(x).to(torch.complex64))


@pytest.mark.parametrize("ord", [math.inf, -math.inf], ids=["inf", "minus_inf"])
def test_the_complex_inf_norm_is_a_maximum_of_abs_so_its_forward_gradient_is_cpus(ord):
    """The inf-norm's JVP divides by the count of elements whose abs() equals the norm: an abs rounded otherwise
    than abs() left none for some rows, and the tangent NaN (CPU: 0)."""
    import torch.autograd.forward_ad as forward_ad
    values = torch.randn(3, 2, 1, 2, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    tangent = torch.full_like(values, 1j)
    tangents = []
    for device in ("cpu", "tpu"):
        with forward_ad.dual_level():
            dual = forward_ad.make_dual(values.to(device), tangent.to(device))
            norm = torch.linalg.vector_norm(dual, ord, dim=(1, 3))
            tangents.append(forward_ad.unpack_dual(norm).tangent.cpu())
    torch.testing.assert_close(tangents[1], tangents[0], rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.complex64,
                                   torch.complex128])
@pytest.mark.parametrize("ord", [2, 1, 0, 3, 3.5, -1, 0.5])
def test_vector_norm_is_cpus_norm_kernel_bit_for_bit(dtype, ord):
    """CPU's 2-norm over a contiguous innermost run of a float32/float64/bf16 input is binary_kernel_reduce_lastdim's
    32-byte vector loop (``acc + x * x`` unfused, the lanes in order, the float32 tail's groups of four unfused,
    the rest fused); every other norm adds its terms one by one in TensorIterator's order
    (``cpu_replay.norm_kernel``), a p-norm's powers C's ``pow``/``powf`` (``_C.libm``). NumPy's pairwise sums gave
    other bits in about a third of the rows, its SIMD power in most p-norms (complex ord 3 too)."""
    x = torch.randn(5, 37, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64).mul(3).to(dtype)
    views = [lambda t: t, lambda t: t.transpose(0, -1), lambda t: t[..., ::2], lambda t: t[:, :7, :1].squeeze(-1)]
    for view in views:
        source, on_tpu = view(x), view(x.to("tpu"))
        for dims in [None, 0, 1, -1, (0, -1), (1, 2) if source.dim() == 3 else (0, 1)]:
            for keepdim in (False, True):
                expected = torch.linalg.vector_norm(source, ord, dims, keepdim)
                assert torch.equal(torch.linalg.vector_norm(on_tpu, ord, dims, keepdim).cpu(), expected), dims


@pytest.mark.parametrize("threads", [1, 2])
def test_a_norm_past_grain_size_is_cpus_per_thread_sums(threads):
    """One output of 32768 or more elements outside the vector loop: CPU sums each thread's chunk on its own and
    adds the chunks in thread order; a row in the vector loop is one row whatever the threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.rand(300, 150, generator=torch.Generator().manual_seed(0)) * 4
        sliced = x.double()[:, ::2]
        for source, on_tpu in ((x, x.to("tpu")), (x.t(), x.to("tpu").t()), (sliced, x.double().to("tpu")[:, ::2])):
            for ord in (2, 1):
                assert torch.equal(torch.linalg.vector_norm(on_tpu, ord).cpu(), torch.linalg.vector_norm(source, ord))
    finally:
        torch.set_num_threads(previous)


def test_compiled_vector_norms_are_cpus_bit_for_bit():
    """linalg_vector_norm is not decomposed: the compiled program runs the eager kernel's replay."""
    torch._dynamo.reset()
    norms = lambda x: (torch.linalg.vector_norm(x, 2, -1), torch.linalg.vector_norm(x, 1, 0), x.norm(dim=0))
    x = torch.randn(17, 37, generator=torch.Generator().manual_seed(0)) * 3
    for got, expected in zip(torch.compile(norms, backend="tpu", fullgraph=True)(x.to("tpu")), norms(x)):
        assert torch.equal(got.cpu(), expected)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(200, 170), (20, 30, 70), (2, 33000)])
def test_float64_var_and_std_past_grain_size_are_cpus_per_thread_bits(threads, shape):
    """Past GRAIN_SIZE CPU splits a float64 var's single output across threads: var/std over every dim
    (std_var_all_cpu) sums each thread's chunk of squared deviations call by call, then the chunks in order (tpu's
    two-pass in double was a few ulps off on 2 and 3 threads): CPU's bits. Welford (var_mean, std_mean) is replayed
    step by step below GRAIN_SIZE elements per output only; past it a Python step per element would be a cliff, so
    it is a two-pass in double (more accurate than a long Welford), within 1e-13 relative."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 1
        for view in (lambda t: t, lambda t: t.transpose(0, -1)[1:]):  # [1:]: a 2-d loop call per outer index
            source, on_tpu = view(x), view(x.to("tpu"))
            for reduce, dims in ((torch.var, None), (torch.std, None), (torch.var_mean, None), (torch.std_mean, -1)):
                expected, got = reduce(source, dims), reduce(on_tpu, dims)
                per_output = source.numel() if dims is None else source.shape[dims]
                replayed = reduce in (torch.var, torch.std) or per_output < 32768
                for got_one, expected_one in zip(*(r if isinstance(r, tuple) else (r,) for r in (got, expected))):
                    if replayed:
                        assert torch.equal(got_one.cpu(), expected_one), (reduce, dims)
                    else:
                        torch.testing.assert_close(got_one.cpu(), expected_one, rtol=1e-13, atol=0)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("reduce", [
    lambda t, o, d, k: torch.prod(t, d, k, out=o), lambda t, o, d, k: torch.linalg.vector_norm(t, 2, d, k, out=o),
    lambda t, o, d, k: torch.linalg.vector_norm(t, 1, d, k, out=o),
    lambda t, o, d, k: torch.var(t, d, keepdim=k, out=o),
    lambda t, o, d, k: torch.std(t, d, keepdim=k, out=o),
], ids=["prod", "norm2", "norm1", "var", "std"])
def test_a_reduction_into_an_expanded_out_reduces_over_its_expanded_dims_as_cpu(reduce):
    """An out= expanded (stride 0) along a kept dim: CPU's iterator reduces over that dim too, each element taking
    the whole reduction, as for sum; tpu wrote each row's own result."""
    x = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(0))
    for dim, keepdim in ((1, False), (1, True), (0, False), (2, False)):
        shape = [1 if axis == dim else size for axis, size in enumerate(x.shape)] if keepdim else [
            size for axis, size in enumerate(x.shape) if axis != dim]
        expected, got = torch.zeros(shape[-1]).expand(shape), torch.zeros(shape[-1], device="tpu").expand(shape)
        reduce(x, expected, dim, keepdim)
        reduce(x.to("tpu"), got, dim, keepdim)
        assert torch.equal(got.cpu(), expected), (dim, keepdim)


def test_logsumexp_into_an_expanded_out_is_refused_as_on_cpu():
    """CPU's logsumexp writes its steps into out in place, which refuses an out= with overlapping elements."""
    x = torch.randn(4, 5)
    for device in ("cpu", "tpu"):
        with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
            torch.logsumexp(x.to(device), 1, out=torch.zeros(1, device=device).expand(4))


def test_c_power_is_exact_in_small_arrays_and_vectorised_past_them():
    """``_C.libm.power`` calls C's pow one element at a time (CPU's norm kernel does) up to EXACT_ELEMENTS; past it
    the power is taken in a wider type and rounded once, so a p-norm's cost does not grow by a C call per element:
    still C's bits in all but about 0.1% of elements (where the C library itself is not correctly rounded)."""
    import numpy as np
    from torch_tpu import _C
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        base = (np.abs(rng.standard_normal(3 * _C.libm.EXACT_ELEMENTS)) * 3).astype(dtype)
        element_by_element = np.concatenate([_C.libm.power(part, 3.0) for part in np.split(base, 3)])
        whole = _C.libm.power(base, 3.0)
        assert whole.dtype == dtype
        assert np.mean(whole != element_by_element) < 0.005
        np.testing.assert_array_max_ulp(whole, element_by_element, maxulp=1)


@pytest.mark.parametrize("threads", [1, 2])
def test_single_output_sums_and_vars_of_a_view_that_does_not_coalesce_are_cpus(threads):
    """A view whose dims do not coalesce makes CPU's 2-d loop calls a few elements each; sum's two-pass reduction
    and var's std_var_all_cpu add each call's sum in order. tpu summed the whole calls between a range's ends
    together (it took a Python step per call: seconds for a million elements, review16b); the bits stay CPU's."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for dtype in (torch.float64, torch.float32):
            x = torch.randn(20001, 3, 3, generator=torch.Generator().manual_seed(0), dtype=dtype) * 3 + 1
            source, on_tpu = x[:, :2, :2], x.to("tpu")[:, :2, :2]
            for reduce in (torch.sum, torch.mean, torch.var, torch.std):
                assert torch.equal(reduce(on_tpu).cpu(), reduce(source)), (dtype, reduce)
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("reduce", [torch.var, torch.std])
def test_var_into_an_out_expanded_over_its_kept_dim_runs_welford_as_cpu(reduce):
    """CPU picks std_var_all_cpu only for a result of one element; an out= expanded over a kept dim widens the
    reduction, not the result, so CPU runs Welford there (tpu took the one-output kernel's order: an ulp off)."""
    for seed in range(20):
        x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        expected = torch.zeros((), dtype=torch.float64).expand(4, 1)
        got = torch.zeros((), dtype=torch.float64, device="tpu").expand(4, 1)
        reduce(x, 1, keepdim=True, out=expected)
        reduce(x.to("tpu"), 1, keepdim=True, out=got)
        assert torch.equal(got.cpu(), expected), seed
