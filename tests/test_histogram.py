"""torch.histogram / torch.histogramdd on tpu against CPU: bin edges, binning, weights, density, errors."""

import math

import pytest
import torch


def both(fn, *inputs):
    return fn(*(x.to("tpu") if isinstance(x, torch.Tensor) else x for x in inputs)), fn(*inputs)


def assert_matches(fn, *inputs):
    actual, expected = both(fn, *inputs)
    actual = [actual] if isinstance(actual, torch.Tensor) else list(actual)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    for a, e in zip(actual, expected):
        if isinstance(e, (list, tuple)):  # histogramdd's bin_edges
            for a_edge, e_edge in zip(a, e):
                assert a_edge.device.type == "tpu"
                torch.testing.assert_close(a_edge.cpu(), e_edge)
        else:
            assert a.device.type == "tpu"
            torch.testing.assert_close(a.cpu(), e, equal_nan=True)


def data(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("density", [False, True])
def test_histogram_bin_count(dtype, density):
    x, weight = data(7, 9, dtype=dtype), data(7, 9, seed=1, dtype=dtype).abs()
    assert_matches(lambda t: torch.histogram(t, 5, density=density), x)
    assert_matches(lambda t, w: torch.histogram(t, 8, range=(-1.0, 0.5), weight=w, density=density), x, weight)
    assert_matches(lambda t: torch.histogram(t.t(), 3, density=density), x)  # non-contiguous


def test_histogram_edge_rules():
    assert_matches(lambda t: torch.histogram(t, 4), torch.tensor([1.0, 1.0]))  # empty range widened by 0.5
    assert_matches(lambda t: torch.histogram(t, 3), torch.empty(0))  # default range [0, 1]
    assert_matches(lambda t: torch.histogram(t, 4, range=(0.0, 4.0)), torch.tensor([0.0, 1.0, 4.0, 5.0, math.nan]))
    # elements exactly on the linspace edges of an awkward range
    edges = torch.linspace(-0.3, 0.7, 11)
    assert_matches(lambda t: torch.histogram(t, 10, range=(-0.3, 0.7)), edges)


def test_histogram_bin_tensor():
    x = data(50)
    assert_matches(lambda t, b: torch.histogram(t, b), x, torch.tensor([-1.0, 0.0, 0.3, 2.0]))
    assert_matches(lambda t, b: torch.histogram(t, b, density=True), x, torch.tensor([-2.0, -0.5, 0.5, 3.0]))
    # not increasing: CPU's binary search decides
    assert_matches(lambda t, b: torch.histogram(t, b), torch.tensor([0.0, 1, 2, 3, 4]),
                   torch.tensor([3.0, 1.0, 2.0, 0.5, 4.0]))


def test_histogram_out():
    x = data(20)
    hist, edges = torch.empty(0, device="tpu"), torch.empty(0, device="tpu")
    torch.histogram(x.to("tpu"), 4, out=(hist, edges))
    expected = torch.histogram(x, 4)
    torch.testing.assert_close(hist.cpu(), expected.hist)
    torch.testing.assert_close(edges.cpu(), expected.bin_edges)


@pytest.mark.parametrize("density", [False, True])
def test_histogramdd(density):
    x, weight = data(30, 3), data(30, seed=2).abs()
    assert_matches(lambda t: torch.histogramdd(t, [2, 3, 4], density=density), x)
    assert_matches(lambda t, w: torch.histogramdd(t, [2, 3, 4], weight=w, density=density), x, weight)
    assert_matches(lambda t: torch.histogramdd(t, [3, 2, 2], range=[-1.0, 1.0, 0.0, 1.0, -2.0, 2.0]), x)
    bins = [torch.tensor([-1.0, 0.0, 1.0]), torch.tensor([-2.0, 2.0]), torch.tensor([-0.5, 0.0, 0.5, 3.0])]
    assert_matches(lambda t, *b: torch.histogramdd(t, list(b), density=density), x, *bins)
    assert_matches(lambda t: torch.histogramdd(t, [2, 2]), data(2, 5, 2, dtype=torch.float64))


@pytest.mark.parametrize("call, error", [
    (lambda d: torch.histogram(torch.ones(3, dtype=torch.bfloat16, device=d), 3), NotImplementedError),
    (lambda d: torch.histogram(torch.ones(3, device=d), 0), RuntimeError),
    (lambda d: torch.histogram(torch.ones(3, device=d), 3, range=(1.0, 0.0)), RuntimeError),
    (lambda d: torch.histogram(torch.ones(3, device=d), 3, range=(0.0, math.inf)), RuntimeError),
    (lambda d: torch.histogram(torch.tensor([math.nan], device=d), 3), RuntimeError),
    (lambda d: torch.histogram(torch.ones(3, device=d), 3, weight=torch.ones(2, device=d)), RuntimeError),
    (lambda d: torch.histogram(torch.ones(3, device=d), 3, weight=torch.ones(3, device=d).double()), RuntimeError),
    (lambda d: torch.histogram(torch.ones(3, device=d).double(), torch.ones(2, device=d)), RuntimeError),
    (lambda d: torch.histogram(torch.ones(3, device=d), torch.ones(0, device=d)), RuntimeError),
    (lambda d: torch.histogramdd(torch.ones(5, 2, device=d), [2, 3], range=[0.0, 1.0]), RuntimeError),
])
def test_errors_match_cpu(call, error):
    with pytest.raises(error) as on_cpu:
        call("cpu")
    with pytest.raises(error, match=str(on_cpu.value).split("\n")[0][:40].replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        call("tpu")
