"""Indexing kernels, differential against torch CPU."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from differential import check, check_grads, check_same_error, make, noncontiguous

pytestmark = pytest.mark.usefixtures("seeded")
DTYPES = [torch.float32, torch.bfloat16, torch.int64, torch.bool]


# --- advanced indexing -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_index_integer_and_negative(dtype):
    x = noncontiguous(4, 5, dtype=dtype)
    check(lambda x: x[torch.tensor([0, -1, 2, 2])], x)
    check(lambda x: x[:, torch.tensor([[1, -2], [0, 4]])], x)
    check(lambda x: x[torch.tensor([0, 3]), torch.tensor([-1, 2])], x)


def test_index_mixed_slices_none_and_non_adjacent():
    x = make(3, 4, 5, 6)
    i, j = torch.tensor([0, 2]), torch.tensor([1, 3])
    check(lambda x: x[i, :, j], x)
    check(lambda x: x[:, i, None, j], x)
    check(lambda x: x[..., i], x)
    check(lambda x: x[1:, ::2, i], x)


def test_index_bool_masks():
    x = noncontiguous(4, 5)
    mask = torch.rand(4, 5) > 0.5
    check(lambda x, m: x[m], x, mask)
    check(lambda x, m: x[m[:, 0]], x, mask)
    check(lambda x, m: x[:, m[0]], x, mask)
    check(lambda x: x[torch.zeros(4, dtype=torch.bool)], x)
    check(lambda x: x[torch.tensor(True)], x)


def test_index_int32_and_empty():
    x = make(4, 5)
    check(lambda x: x[torch.tensor([1, 3], dtype=torch.int32)], x)
    check(lambda x: x[torch.tensor([], dtype=torch.long)], x)
    check(lambda x: x[torch.tensor([0, 1])], make(2, 0))


@pytest.mark.parametrize("index", [torch.tensor([4]), torch.tensor([-5]), torch.tensor([0.0]),
                                   torch.tensor([True, False])])
def test_index_errors(index):
    check(lambda x: x[index], make(4, 5))


# --- index_put -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("accumulate", [False, True])
def test_index_put(dtype, accumulate):
    x = noncontiguous(4, 5, dtype=dtype)
    idx = (torch.tensor([0, -1, 2]),)
    check(lambda x, v: x.clone().index_put_(idx, v, accumulate=accumulate), x, make(3, 5, dtype=dtype))
    check(lambda x, v: x.clone().index_put_(idx, v, accumulate=accumulate), x, make(5, dtype=dtype))
    check(lambda x, v: x.clone().index_put(idx, v, accumulate=accumulate), x, make(dtype=dtype))


def test_index_put_accumulate_duplicates_and_masks():
    x = make(4, 5)
    dup = (torch.tensor([1, 1, 1, 3]), torch.tensor([0, 0, 2, -1]))
    check(lambda x, v: x.clone().index_put_(dup, v, accumulate=True), x, make(4))
    mask = torch.rand(4, 5) > 0.5
    check(lambda x, m: x.clone().index_put_((m,), torch.tensor(7.0), accumulate=True), x, mask)
    check(lambda x, m: x.clone().index_put_((m,), torch.tensor(7.0)), x, mask)


def test_setitem_through_view_mutates_base():
    x = make(4, 6)
    def fn(x):
        x = x.clone()
        x[:, ::2][torch.tensor([0, 2])] = 5.0
        x[x > 1] = -1.0
        return x
    check(fn, x)


def test_index_put_errors():
    x = make(4, 5)
    check(lambda x: x.clone().index_put_((torch.tensor([4]),), torch.tensor(1.0)), x)
    check(lambda x: x.clone().index_put_((torch.tensor([0]),), torch.tensor(1.0, dtype=torch.float64)), x)
    check(lambda x: x.clone().index_put_((torch.tensor([0, 1]),), torch.ones(3)), x)


# --- gather / scatter ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather(dtype):
    x = noncontiguous(4, 6, dtype=dtype)
    index = torch.randint(0, 4, (3, 2))
    check(lambda x, i: x.gather(0, i), x, index)
    check(lambda x, i: x.gather(-1, i), x, index)
    check(lambda x, i: x.gather(1, i), x, index.t())
    check(lambda x, i: x.gather(0, i), make(dtype=dtype), torch.tensor(0))
    check(lambda x, i: x.gather(1, i), x, torch.zeros(4, 0, dtype=torch.long))


@pytest.mark.parametrize("index", [torch.tensor([[6]]), torch.tensor([[-1]])])
def test_gather_scatter_out_of_range(index):
    x = make(4, 6)
    check(lambda x, i: x.gather(1, i), x, index)
    check(lambda x, i: x.scatter(1, i, 1.0), x, index)
    check(lambda x, i: x.scatter_add(1, i, x), x, index)
    check(lambda x, i: x.scatter_reduce(1, i, x, "amax"), x, index)


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter(dtype):
    x = noncontiguous(4, 6, dtype=dtype)
    index = torch.stack([torch.randperm(4)[:3] for _ in range(6)], 1)  # unique along dim 0
    src = make(5, 7, dtype=dtype)
    check(lambda x, i, s: x.scatter(0, i, s), x, index, src)
    check(lambda x, i: x.scatter(0, i, 3), x, index)
    check(lambda x, i, s: x.clone().scatter_(0, i, s), x, index, src)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_scatter_add_and_reduce_variants(dtype):
    x = make(4, 6, dtype=dtype)
    index = torch.randint(-0, 4, (5, 6))
    src = make(5, 6, dtype=dtype)
    check(lambda x, i, s: x.scatter_add(0, i, s), x, index, src)
    check(lambda x, i, s: x.scatter(0, i, s, reduce="add"), x, index, src)
    check(lambda x, i, s: x.scatter(0, i, s, reduce="multiply"), x, index, src)
    check(lambda x, i: x.scatter(0, i, 2, reduce="multiply"), x, index)
    for reduce in ("sum", "prod", "mean", "amax", "amin"):
        for include_self in (True, False):
            check(lambda x, i, s: x.scatter_reduce(0, i, s, reduce, include_self=include_self), x, index, src)


# --- index_select / index_add / index_copy / index_fill ------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_index_select(dtype):
    x = noncontiguous(4, 5, dtype=dtype)
    check(lambda x, i: x.index_select(0, i), x, torch.tensor([3, 0, 0]))
    check(lambda x, i: x.index_select(-1, i), x, torch.tensor([4, 1], dtype=torch.int32))
    check(lambda x, i: x.index_select(1, i), x, torch.tensor([], dtype=torch.long))
    check(lambda x, i: x.index_select(0, i), make(dtype=dtype), torch.tensor([0]))
    check(lambda x, i: x.index_select(0, i), x, torch.tensor(2))


@pytest.mark.parametrize("index", [torch.tensor([4]), torch.tensor([-1]), torch.tensor([[0]])])
def test_index_select_errors(index):
    check(lambda x, i: x.index_select(0, i), make(4, 5), index)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_index_add_copy_fill(dtype):
    x = noncontiguous(4, 5, dtype=dtype)
    source = make(5, 3, dtype=dtype)
    check(lambda x, i, s: x.index_add(1, i, s), x, torch.tensor([0, 4, 0]), source)
    check(lambda x, i, s: x.index_add(1, i, s, alpha=2), x, torch.tensor([0, 4, 0]), source)
    check(lambda x, i, s: x.index_copy(1, i, s), x, torch.tensor([1, 4, 0]), source)
    check(lambda x, i: x.index_fill(1, i, 3), x, torch.tensor([-1, 0]))
    check(lambda x, i: x.clone().index_fill_(0, i, torch.tensor(3)), x, torch.tensor([2]))


def test_index_add_copy_fill_errors():
    x = make(4, 5)
    check(lambda x, i, s: x.index_add(0, i, s), x, torch.tensor([4]), torch.ones(1, 5))
    check(lambda x, i, s: x.index_add(0, i, s), x, torch.tensor([-1]), torch.ones(1, 5))
    check(lambda x, i, s: x.index_copy(0, i, s), x, torch.tensor([-1]), torch.ones(1, 5))
    check(lambda x, i: x.index_fill(0, i, 1.0), x, torch.tensor([4]))


@pytest.mark.parametrize("reduce", ["prod", "mean", "amax", "amin"])
def test_index_reduce(reduce):
    x = make(4, 5)
    source = make(3, 5)
    for include_self in (True, False):
        check(lambda x, i, s: x.index_reduce(0, i, s, reduce, include_self=include_self),
              x, torch.tensor([1, 1, 3]), source)


# --- masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_ops(dtype):
    x = noncontiguous(4, 5, dtype=dtype)
    mask = torch.rand(4, 5) > 0.5
    row_mask = torch.rand(5) > 0.5
    check(lambda x, m: x.masked_fill(m, 1), x, mask)
    check(lambda x, m: x.masked_fill(m, torch.tensor(0)), x, row_mask)
    check(lambda x, m: x.masked_select(m), x, row_mask)
    check(lambda x, m: torch.masked_select(x[0], m[:, None]), x, row_mask)
    check(lambda x, m, s: x.masked_scatter(m, s), x, mask, make(30, dtype=dtype))
    check(lambda x, m, s: x.masked_scatter(m, s), x, row_mask, make(4, 5, dtype=dtype).t())


def test_masked_errors():
    x = make(4, 5)
    check(lambda x, m: x.masked_fill(m, 1.0), x, torch.ones(4, 5))
    check(lambda x, m, v: x.masked_fill(m, v), x, torch.ones(4, 5, dtype=torch.bool), torch.ones(2))
    check(lambda x, m, s: x.masked_scatter(m, s), x, torch.ones(4, 5, dtype=torch.bool), torch.ones(3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_nonzero_family(dtype):
    x = noncontiguous(3, 4, dtype=dtype)
    x[0, 0] = 0
    result = check(torch.nonzero, x)
    assert result.stride() == torch.nonzero(x).stride()
    check(torch.argwhere, x)
    check(lambda x: torch.nonzero(x, as_tuple=True), x)
    check(torch.nonzero, make(dtype=dtype))
    check(torch.nonzero, make(0, 3, dtype=dtype))
    check(lambda x: torch.nonzero_static(x, size=4), x)
    check(lambda x: torch.nonzero_static(x, size=20, fill_value=-7), x)


# --- take / put --------------------------------------------------------------------------------


def test_take_put():
    x = noncontiguous(3, 4)
    index = torch.tensor([[0, -1], [5, 11]])
    check(lambda x, i: x.take(i), x, index)
    check(lambda x, i: x.take(i), x, torch.tensor([12]))
    check(lambda x, i, s: x.clone().put_(i, s), x, index, make(2, 2))
    check(lambda x, i, s: x.put(i, s, accumulate=True), x, torch.tensor([1, 1, -12]), make(3))
    check(lambda x, i, s: x.t().put_(i, s), x.contiguous(), torch.tensor([1, 7]), make(2))
    check(lambda x, i, s: x.clone().put_(i, s), x, torch.tensor([12]), make(1))


# --- embedding -------------------------------------------------------------------------------


def test_embedding_forward_and_errors():
    weight = make(10, 3)
    check(F.embedding, torch.tensor([[1, 2], [9, 0]]), weight)
    check(F.embedding, torch.tensor([10]), weight)
    check(F.embedding, torch.tensor([-1]), weight)


@pytest.mark.parametrize("padding_idx,scale", [(None, False), (2, False), (None, True), (1, True)])
def test_embedding_backward(padding_idx, scale):
    weight = make(6, 3)
    indices = torch.tensor([[1, 2, 1], [5, 1, 0]])

    def grads(device):
        w = weight.detach().to(device).requires_grad_()
        out = F.embedding(indices.to(device), w, padding_idx=padding_idx, scale_grad_by_freq=scale)
        (out * torch.arange(18.0).reshape(2, 3, 3).to(device)).sum().backward()
        return w.grad.cpu()

    torch.testing.assert_close(grads("tpu"), grads("cpu"))


# --- autograd --------------------------------------------------------------------------------


def test_autograd_through_index_gather_scatter():
    x = make(4, 5)
    check_grads(lambda x: x[torch.tensor([0, 0, -1]).to(x.device)], x)
    check_grads(lambda x: x[x.detach() > 0], x)
    index = torch.randint(0, 4, (3, 5))
    check_grads(lambda x: x.gather(0, index.to(x.device)), x)
    check_grads(lambda x, s: x.scatter(0, index[:1].to(x.device), s), x, make(1, 5))
    check_grads(lambda x, s: x.scatter_add(0, index.to(x.device), s), x, make(3, 5))
    check_grads(lambda x: x.index_select(1, torch.tensor([4, 4, 0]).to(x.device)), x)
    check_grads(lambda x, s: x.index_add(0, torch.tensor([1, 1]).to(x.device), s), x, make(2, 5))
    check_grads(lambda x: x.masked_fill((x.detach() > 0), 0.0), x)


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_bag_forward_backward(mode, padding_idx):
    weight = make(8, 3)
    indices = torch.tensor([1, 2, 4, 5, 4, 3, 2, 7])
    offsets = torch.tensor([0, 2, 2, 5])

    def run(device, include_last_offset=False, weighted=False):
        w = weight.detach().to(device).requires_grad_()
        psw = torch.linspace(0.5, 2, 8).to(device).requires_grad_() if weighted else None
        offs = torch.cat([offsets, torch.tensor([8])]) if include_last_offset else offsets
        out = F.embedding_bag(indices.to(device), w, offs.to(device), mode=mode, padding_idx=padding_idx,
                              per_sample_weights=psw, include_last_offset=include_last_offset)
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(device))
        return out.detach().cpu(), w.grad.cpu(), psw.grad.cpu() if weighted else None

    for include_last_offset in (False, True):
        torch.testing.assert_close(run("tpu", include_last_offset), run("cpu", include_last_offset))
    if mode == "sum":
        torch.testing.assert_close(run("tpu", weighted=True), run("cpu", weighted=True))
    bags = torch.tensor([[1, 2], [0, 7]])
    torch.testing.assert_close(F.embedding_bag(bags.to("tpu"), weight.to("tpu"), mode=mode).cpu(),
                               F.embedding_bag(bags, weight, mode=mode))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("mode, weighted", [("sum", True), ("sum", False), ("mean", False)])
@pytest.mark.parametrize("scale_grad_by_freq", [False, True])
@pytest.mark.parametrize("padding_idx", [None, 4])
def test_embedding_bag_weights_and_gradient_have_cpus_bits(dtype, mode, weighted, scale_grad_by_freq, padding_idx):
    """CPU's fbgemm forward takes each weighted row by a fused multiply-add (without padding); its backward adds
    each row's scaled gradient by axpy in the order of its unstable sort, dividing by the count of the index at
    the group's number (its quirk). tpu rounded the products (an ulp off) and added in index order."""
    generator = torch.Generator().manual_seed(0)
    weight, indices = torch.randn(20, 9, generator=generator).to(dtype), torch.randint(0, 20, (60,), generator=generator)
    sample_weights = torch.randn(60, generator=generator).to(dtype) if weighted else None
    offsets = torch.tensor([0, 3, 3, 10, 25])
    grad = torch.randn(5, 9, generator=generator).to(dtype)
    results = []
    for device in ("cpu", "tpu"):
        w = weight.to(device, copy=True).requires_grad_()
        out = F.embedding_bag(indices.to(device), w, offsets.to(device), mode=mode, scale_grad_by_freq=scale_grad_by_freq,
                              per_sample_weights=None if sample_weights is None else sample_weights.to(device),
                              padding_idx=padding_idx)
        out.backward(grad.to(device))
        results.append((out.detach().cpu(), w.grad.cpu()))
    (cpu_out, cpu_grad), (tpu_out, tpu_grad) = results
    assert torch.equal(tpu_grad, cpu_grad)
    if weighted or dtype.itemsize >= 4:  # the 16-bit unweighted forward still rounds as tpu's own sum
        assert torch.equal(tpu_out, cpu_out)


# --- regressions from the OpInfo sweep ----------------------------------------------------------------------------


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.uint8])
def test_gather_and_scatter_with_an_empty_index_of_any_rank(index_dtype):
    """CPU checks nothing of an empty index: any rank and dtype give an empty result or an unchanged self."""
    x, src = make(5), make(3, 3)
    index = torch.empty(2, 0, dtype=index_dtype)
    check(torch.gather, x, 0, index)
    if index_dtype == torch.int64:
        check(lambda t, i, s: t.scatter_add(0, i, s), x, index, src)
        check(lambda t, i, s: t.scatter(0, i, s), x, index, src)
        check(lambda t, i: t.scatter(0, i, 2.0), x, index)
        check(lambda t, i, s: t.scatter_reduce(0, i, s, "amax", include_self=False), x, index, src)
    leaf = x.clone().requires_grad_()
    tpu_leaf = x.to("tpu").requires_grad_()
    torch.gather(tpu_leaf, 0, index.to("tpu")).sum().backward()
    torch.gather(leaf, 0, index).sum().backward()
    torch.testing.assert_close(tpu_leaf.grad.cpu(), leaf.grad)


@pytest.mark.parametrize("write", [
    lambda x, d: x.index_put_((torch.tensor([2, 0], device=d),), x[1]),
    lambda x, d: x.index_put_((torch.tensor([2, 0], device=d),), x[1], accumulate=True),
    lambda x, d: x.__setitem__(torch.tensor([2, 0], device=d), x[3]),
    lambda x, d: (lambda y: y.index_put_((y[:2],), torch.zeros(2, device=d, dtype=torch.long)))(x.long().view(-1)),
], ids=["values", "values_accumulate", "setitem", "indices"])
def test_index_put_refuses_to_read_its_own_memory(write):
    """ATen's assert_no_overlap: the result would depend on the order elements are written."""
    def call(device):
        x = torch.arange(16.0, device=device).view(4, 4) % 3
        write(x, device)
    check_same_error(call)


@pytest.mark.parametrize("dtype,alpha", [(torch.uint8, -1), (torch.int8, 3), (torch.float16, -0.5)])
def test_index_add_alpha_is_cast_to_the_dtype_as_cpu_casts_it(dtype, alpha):
    """-1 wraps to 255 for uint8 on CPU; NumPy refuses to multiply a uint8 array by -1."""
    check(lambda x, i, s: x.index_add(0, i, s, alpha=alpha),
          torch.zeros(3, dtype=dtype), torch.tensor([0, 0, 2]), torch.tensor([5, 7, 1]).to(dtype))


# --- what PyTorch's own test_indexing.py found: CPU's errors and warnings for advanced indexing ------------


def _assign(x, key, value):
    x[key] = value


@pytest.mark.parametrize("case", [
    lambda d: torch.zeros(5, 5, device=d)[[0, 1], [0, 1, 2]],                       # index tensors not broadcastable
    lambda d: _assign(torch.zeros(5, 5, device=d), ([0, 1], [0, 1, 2]), 0),
    lambda d: torch.ones(2, 3, 4, device=d)[False, [0, 1], ...],                     # a false scalar mask has 0 indices
    lambda d: torch.empty(10, 0, device=d)[:, [0, 1]],                               # a dimension of size 0
    lambda d: torch.ones(3, 4, device=d)[:, torch.tensor([7], device=d)],           # CPU counts indexed dims only
    lambda d: _assign(torch.arange(4, device=d), torch.arange(4, device=d) > -1,     # shapes are checked before dtypes
                      torch.tensor([1.0, 2.0, 3.0], device=d)),
    lambda d: _assign(torch.arange(1, device=d), torch.arange(1, device=d) > -1,     # values expand one way only
                      torch.tensor([1, 2, 3], device=d)),
])
def test_advanced_indexing_errors_are_cpus(case):
    check_same_error(case)


def test_uint8_masks_warn_that_they_are_deprecated_once_per_index():
    def index_twice(device):
        mask = torch.tensor([1, 0, 1, 1, 0], dtype=torch.uint8, device=device)
        x = torch.arange(5.0, device=device)
        with pytest.warns(UserWarning, match="indexing with dtype torch.uint8 is now deprecated") as caught:
            x.index_put_((mask,), x[mask], accumulate=True)
        return x, len(caught)

    (cpu, cpu_warnings), (tpu, tpu_warnings) = index_twice("cpu"), index_twice("tpu")
    assert tpu_warnings == cpu_warnings == 2
    assert torch.equal(tpu.cpu(), cpu)


def test_uint8_mask_warnings_come_from_the_users_line_so_each_line_warns_as_on_cpu():
    # C++'s TORCH_WARN names the Python line that indexed; Python's default filter then shows each line's warning once.
    # From one line inside torch_tpu, the default filter showed the second line's warning no more
    def index_on_two_lines(device):
        x = torch.arange(5.0, device=device)
        mask = torch.tensor([1, 0, 1, 1, 0], dtype=torch.uint8, device=device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            first = x[mask]
            second = x[mask]
        return [(warning.filename, warning.lineno - caught[0].lineno) for warning in caught], first, second

    cpu_places, *cpu_values = index_on_two_lines("cpu")
    tpu_places, *tpu_values = index_on_two_lines("tpu")
    assert tpu_places == cpu_places == [(__file__, 0), (__file__, 1)]
    assert all(torch.equal(t.cpu(), c) for t, c in zip(tpu_values, cpu_values))


@pytest.mark.parametrize("case", [
    lambda d: torch.rand(1, device=d).expand(6).put_(torch.tensor([2, 1, 0], device=d), torch.rand(3, device=d)),
    lambda d: (lambda y: y.put_(torch.tensor(0, device=d), y[0]))(torch.rand(6, device=d)),
    lambda d: (lambda i: i.put_(i, i.clone()))(torch.tensor([2, 1, 0], device=d)),
    lambda d: torch.rand(1, device=d).expand(6).masked_scatter_(
        torch.tensor([True, False, True, True, False, False], device=d), torch.rand(3, device=d)),
])
def test_put_and_masked_scatter_refuse_to_write_what_they_read(case):
    # found by PyTorch's test_torch.py: these in-place writes were silently accepted
    check_same_error(case)


@pytest.mark.parametrize("dtype", [torch.bool, torch.float32, torch.int64])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_index_fill_refuses_a_complex_value_for_a_real_tensor(dtype, as_tensor):
    value = torch.tensor(1 + 1j) if as_tensor else 1 + 1j
    check_same_error(lambda d: torch.zeros(2, 3, dtype=dtype, device=d).index_fill_(1, torch.tensor([0], device=d), value))


@pytest.mark.parametrize("case", [
    lambda d, m: torch.zeros(2, device=d).masked_fill_(m, 1.0),
    lambda d, m: torch.zeros(2, device=d).masked_fill_(m.int(), torch.tensor(1.0)),
    lambda d, m: torch.zeros(2, device=d).masked_scatter_(m, torch.ones(2, device=d)),
    lambda d, m: torch.masked_select(torch.zeros(2, device=d), m),
])
def test_masked_ops_word_a_non_bool_mask_as_cpu(case):
    check_same_error(lambda d: case(d, torch.tensor([1, 0], dtype=torch.uint8, device=d)))


@pytest.mark.parametrize("warn_only", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_put_alerts_under_deterministic_algorithms_as_cpu_does(accumulate, warn_only):
    """Without accumulate, which of duplicate indices wins is unspecified: CPU raises (or warns) under
    torch.use_deterministic_algorithms; accumulating is deterministic on CPU and on tpu."""
    def put(device):
        return torch.zeros(5, device=device).put_(torch.tensor([0, 0], device=device), torch.ones(2, device=device),
                                                  accumulate=accumulate)

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    try:
        with warnings.catch_warnings(record=True) as cpu_warnings:
            warnings.simplefilter("always")
            try:
                expected = put("cpu")
            except RuntimeError as error:
                cpu_error = str(error)
                with pytest.raises(RuntimeError) as tpu_error:
                    put("tpu")
                assert str(tpu_error.value) == cpu_error
                return
        with warnings.catch_warnings(record=True) as tpu_warnings:
            warnings.simplefilter("always")
            assert torch.equal(put("tpu").cpu(), expected)
        assert [str(w.message).split(" (Triggered")[0] for w in tpu_warnings] == [
            str(w.message).split(" (Triggered")[0] for w in cpu_warnings]
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


EXPANDED_WRITES = {
    "index_put_": lambda x, d: x.index_put_((torch.tensor([2, 1, 0], device=d),), torch.ones(3, device=d)),
    "index_put_accumulate": lambda x, d: x.index_put_((torch.tensor([2, 1], device=d),), torch.ones(2, device=d),
                                                      accumulate=True),
    "setitem": lambda x, d: x.__setitem__(torch.tensor([0, 3], device=d), 2.0),
    "masked_fill_": lambda x, d: x.masked_fill_(torch.tensor([True, False] * 3, device=d), 0.5),
    "masked_fill_tensor": lambda x, d: x.masked_fill_(torch.tensor([True, False] * 3, device=d),
                                                      torch.tensor(0.5, device=d)),
    "index_fill_": lambda x, d: x.index_fill_(0, torch.tensor([1, 4], device=d), -1.0),
    "not_expanded": lambda x, d: x.clone().index_fill_(0, torch.tensor([1, 4], device=d), -1.0),
}


@pytest.mark.parametrize("write", EXPANDED_WRITES)
def test_indexing_writes_into_expanded_tensors_warn_as_deprecated_as_on_cpu(write):
    """CPU still lets index_put_/masked_fill_/index_fill_ write into an expanded tensor, with a deprecation warning."""
    def run(device):
        x = torch.tensor([0.25], device=device).expand(6)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            EXPANDED_WRITES[write](x, device)
        return x.cpu(), [str(w.message).split(" (Triggered")[0] for w in caught]

    (actual, tpu_warnings), (expected, cpu_warnings) = run("tpu"), run("cpu")
    assert tpu_warnings == cpu_warnings
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("call", [
    lambda d: (lambda i: i.index_fill_(0, i, 0))(torch.tensor([2, 1, 0], device=d)),
    lambda d: (lambda m: m[1:].masked_fill_(m[:-1], False))(torch.tensor([True, False, True, True], device=d)),
], ids=["index_fill_ of its own index", "masked_fill_ of a partly shared mask"])
def test_fills_refuse_reading_what_they_write_as_cpu_does(call):
    check_same_error(call)


INDEX_SELECT_OUT_OF_RANGE = {
    "second dim": ((4, 3), 1), "last dim of three": ((2, 3, 4), 2), "negative second dim": ((4, 3), -1),
    "first dim": ((4, 3), 0), "empty first dim": ((0, 3), 0), "empty second dim": ((4, 0), 1), "empty 1-d": ((0,), 0),
    "empty source, full dim": ((3, 0), 0), "empty source, last dim": ((2, 0, 4), 2),
}


@pytest.mark.parametrize("index", [[1, 7, -2], [5], [-1]], ids=str)
@pytest.mark.parametrize("case", INDEX_SELECT_OUT_OF_RANGE)
def test_index_select_out_of_range_raises_the_error_of_cpus_loop(case, index):
    """CPU's index_select checks ranges in three loops with their own errors: the second dimension of a tensor of
    two or more, and any dimension of an empty one, name the index (RuntimeError); an empty indexed dimension is
    refused first; every other case is an IndexError. Compiled programs share the check."""
    shape, dim = INDEX_SELECT_OUT_OF_RANGE[case]
    check_same_error(lambda d: torch.zeros(shape, device=d).index_select(dim, torch.tensor(index, device=d)))


@pytest.mark.parametrize("bag_sizes", [[16] * 8 + [0, 1], [3, 200, 1]], ids=["short", "one-over-64"])
def test_embedding_bag_sums_add_each_bag_in_order_a_rank_at_a_time(bag_sizes):
    """The forward's bag sums: one fancy-indexed add per rank within the bags (np.add.at went element by element, 25x
    CPU's forward at 4,096 indices), np.add.at past 64 rows in a bag; both the order of np.add.at, bit for bit, and
    CPU's float32 sums."""
    from torch_tpu.ops import indexing

    generator = torch.Generator().manual_seed(0)
    bag_of = np.repeat(np.arange(len(bag_sizes)), bag_sizes)
    rows = torch.randn(bag_of.size, 32, generator=generator).numpy()
    ordered = np.zeros((len(bag_sizes), 32), np.float32)
    np.add.at(ordered, bag_of, rows)
    by_rank = np.zeros_like(ordered)
    indexing._bag_sums(by_rank, rows, bag_of)
    assert np.array_equal(by_rank, ordered)
    weight = torch.randn(500, 32, generator=generator)
    indices = torch.randint(0, 500, (bag_of.size,), generator=generator)
    offsets = torch.tensor([0] + np.cumsum(bag_sizes)[:-1].tolist())
    assert torch.equal(F.embedding_bag(indices.to("tpu"), weight.to("tpu"), offsets.to("tpu")).cpu(),
                       F.embedding_bag(indices, weight, offsets))


def test_index_add_into_an_empty_matrix_ignores_its_indices_as_cpu():
    """CPU's index_add of a tensor of two or more dims returns before reading the indices when it is empty."""
    for shape, source in (((0, 2), (1, 2)), ((3, 0), (1, 0))):
        result = torch.zeros(shape, device="tpu").index_add(0, torch.tensor([9], device="tpu"),
                                                            torch.ones(source, device="tpu"))
        assert result.shape == shape and result.device.type == "tpu"


def test_fp16_embedding_bag_mean_divides_the_stored_sums_as_cpu():
    """CPU's mean mode divides the bag sums as stored in the fp16 output (two roundings, not one): a fifth of the
    means were an ulp off. (bf16 sums themselves still differ in about 2% of the values.)"""
    generator = torch.Generator().manual_seed(6)
    weight = torch.randn(50, 37, generator=generator).half()
    indices, offsets = torch.randint(0, 50, (60,), generator=generator), torch.tensor([0, 5, 17, 30, 31, 45])
    expected = F.embedding_bag(indices, weight, offsets, mode="mean")
    got = F.embedding_bag(indices.to("tpu"), weight.to("tpu"), offsets.to("tpu"), mode="mean")
    assert torch.equal(got.cpu(), expected)
