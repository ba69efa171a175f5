"""equal, kthvalue, hash_tensor, segment_reduce, embedding_renorm_ and fractional max pooling against CPU."""

import math

import pytest
import torch

from differential import compare


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# equal ------------------------------------------------------------------------------------------


def test_equal():
    a = torch.randn(3, 4, generator=gen())
    t = a.to("tpu")
    assert torch.equal(t, t.clone()) and torch.equal(t.t(), t.t().contiguous())
    assert not torch.equal(t, t + 1) and not torch.equal(t, t[:2])
    assert torch.equal(torch.arange(4, device="tpu"), torch.arange(4.0, device="tpu"))  # promoted
    nan = torch.tensor([1.0, math.nan], device="tpu")
    assert torch.equal(nan, nan) == torch.equal(nan.cpu(), nan.cpu()) is False
    assert torch.equal(torch.empty(0, device="tpu"), torch.empty(0, device="tpu"))
    with pytest.raises(RuntimeError, match="different devices"):
        torch.equal(t, a)


# kthvalue ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_kthvalue_ties_pick_cpu_index(dtype):
    x = torch.randint(0, 3, (6, 9), generator=gen()).to(dtype)
    for k in (1, 4, 9):
        for dim, keepdim in ((1, False), (0, True)):
            size = x.shape[dim]
            if k > size:
                continue
            expected = torch.kthvalue(x, k, dim, keepdim)
            actual = torch.kthvalue(x.to("tpu"), k, dim, keepdim)
            compare(actual.values, expected.values)
            compare(actual.indices, expected.indices)


def test_kthvalue_nan_views_and_errors():
    x = torch.randint(0, 3, (3, 5, 4), generator=gen()).float()
    x[0, 1, 2] = x[1, 1, 2] = x[1, 3, 2] = math.nan
    for k in range(1, 6):
        expected = torch.kthvalue(x.transpose(1, 2), k, 2)
        actual = torch.kthvalue(x.to("tpu").transpose(1, 2), k, 2)
        compare(actual.values, expected.values)
        compare(actual.indices, expected.indices)
    scalar = torch.kthvalue(torch.tensor(2.0, device="tpu"), 1)
    assert scalar.values.item() == 2.0 and scalar.indices.item() == 0
    with pytest.raises(RuntimeError, match="out of range"):
        torch.kthvalue(torch.ones(3, device="tpu"), 4)
    with pytest.raises(IndexError):
        torch.kthvalue(torch.ones(3, 0, device="tpu"), 1, 1)


# hash_tensor ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: torch.randn(3, 4, generator=gen()),
    lambda: torch.randn(3, 4, generator=gen()).bfloat16(),
    lambda: torch.randint(-5, 5, (3, 4), generator=gen()),
    lambda: torch.randint(-5, 5, (3, 4), generator=gen()).to(torch.int8),
    lambda: torch.randint(0, 255, (3, 4), generator=gen()).to(torch.uint8),
    lambda: torch.randint(0, 2, (3, 4), generator=gen()).bool(),
])
def test_hash_tensor(make):
    x = make()
    compare(torch.hash_tensor(x.to("tpu")), torch.hash_tensor(x))
    compare(torch.hash_tensor(x.to("tpu").t(), 1, keepdim=True), torch.hash_tensor(x.t(), 1, keepdim=True))
    compare(torch.hash_tensor(x.to("tpu")[:0], 1), torch.hash_tensor(x[:0], 1))
    with pytest.raises(IndexError, match="non-zero size"):
        torch.hash_tensor(x.to("tpu")[:0], 0)
    with pytest.raises(RuntimeError, match="reduction dim"):
        torch.hash_tensor(torch.empty(0, device="tpu"))


# segment_reduce ---------------------------------------------------------------------------------

SEGMENTED = torch.tensor([[1.0, -2.0, 0.5], [2.0, math.nan, 1.0], [0.0, 2.0, 2.0], [-1.0, 2.0, -1.0],
                          [2.0, 1.0, 0.0], [0.0, -1.0, 2.0]])


def segment_reduce_and_grad(device, reduce, initial, grad_seed=0, **segments):
    data = SEGMENTED.clone().to(device).requires_grad_()
    segments = {name: value.to(device) if isinstance(value, torch.Tensor) else value
                for name, value in segments.items()}
    result = torch.segment_reduce(data, reduce, initial=initial, **segments)
    grad = torch.randn(result.shape, generator=gen(grad_seed)).to(device)
    result.backward(grad)
    return result, data.grad


@pytest.mark.parametrize("initial", [None, 2.0])
@pytest.mark.parametrize("reduce", ["sum", "prod", "mean", "max", "min"])
@pytest.mark.parametrize("segments", [
    dict(lengths=torch.tensor([2, 0, 3, 1])),
    dict(offsets=torch.tensor([0, 2, 2, 5, 6])),
    dict(lengths=torch.tensor([[2, 0, 1], [1, 2, 0], [3, 0, 0], [0, 0, 3], [1, 1, 1], [3, 0, 0]]), axis=1),
])
def test_segment_reduce_forward_and_backward(reduce, initial, segments):
    actual, actual_grad = segment_reduce_and_grad("tpu", reduce, initial, **segments)
    expected, expected_grad = segment_reduce_and_grad("cpu", reduce, initial, **segments)
    compare(actual, expected)
    compare(actual_grad, expected_grad)


def test_segment_reduce_errors():
    data = torch.ones(5, device="tpu")
    for kwargs, error in [
        (dict(lengths=torch.tensor([2, 2])), RuntimeError),
        (dict(lengths=torch.tensor([2, -1, 4])), RuntimeError),
        (dict(lengths=torch.tensor([5.0])), NotImplementedError),
        (dict(), RuntimeError),
    ]:
        tpu_kwargs = {name: value.to("tpu") for name, value in kwargs.items()}
        with pytest.raises(error):
            torch.segment_reduce(data.cpu(), "sum", **kwargs)
        with pytest.raises(error):
            torch.segment_reduce(data, "sum", **tpu_kwargs)
    with pytest.raises(RuntimeError, match="reduce argument"):
        torch.segment_reduce(data, "foo", lengths=torch.tensor([5], device="tpu"))
    with pytest.raises(NotImplementedError):
        torch.segment_reduce(data.int(), "sum", lengths=torch.tensor([5], device="tpu"))


# embedding_renorm_ ------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_embedding_renorm(norm_type):
    weight = torch.randn(10, 4, generator=gen()) * 3
    indices = torch.tensor([[1, 3, 3], [0, 9, 1]])
    expected = weight.clone()
    torch.embedding_renorm_(expected, indices, 1.5, norm_type)
    actual = weight.to("tpu")
    assert torch.embedding_renorm_(actual, indices.to("tpu"), 1.5, norm_type) is actual
    compare(actual, expected)


def test_embedding_max_norm():
    weight = torch.randn(10, 4, generator=gen())
    indices = torch.tensor([1, 3, 1])
    expected = torch.nn.functional.embedding(indices, weight.clone(), max_norm=0.5)
    compare(torch.nn.functional.embedding(indices.to("tpu"), weight.to("tpu"), max_norm=0.5), expected)


# fractional max pooling -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape, kernel, output_size", [
    ((2, 3, 9, 11), (2, 3), (4, 5)),
    ((3, 9, 11), (3, 2), (5, 4)),
    ((2, 2, 7, 8, 9), (2, 3, 2), (3, 4, 5)),
    ((2, 7, 8, 9), (2, 2, 3), (4, 3, 5)),
    ((0, 2, 5, 5), (2, 2), (2, 2)),
])
def test_fractional_max_pool(shape, kernel, output_size, dtype):
    spatial = len(kernel)
    pool = getattr(torch.ops.aten, f"fractional_max_pool{spatial}d")
    x = torch.randn(shape, generator=gen()).to(dtype)
    if x.numel():
        x.view(-1)[3] = math.nan
        x.view(-1)[7] = x.view(-1)[8]  # a tie
    batched = len(shape) == spatial + 2
    samples = torch.rand(shape[0] if batched else 1, shape[1 if batched else 0], spatial, generator=gen(1)).to(dtype)

    def run(device):
        leaf = x.to(device).requires_grad_()
        values, indices = pool(leaf, kernel, output_size, samples.to(device))
        values.backward(torch.randn(values.shape, generator=gen(2)).to(dtype).to(device))
        return values, indices, leaf.grad

    for actual, expected in zip(run("tpu"), run("cpu")):
        compare(actual, expected)


def test_fractional_max_pool_too_large():
    with pytest.raises(RuntimeError):
        torch.ops.aten.fractional_max_pool2d(torch.ones(1, 1, 4, 4, device="tpu"), (3, 3), (3, 3),
                                             torch.rand(1, 1, 2, device="tpu"))
