"""The kernels of nn.SyncBatchNorm on tpu, in one process: a batch cut into uneven parts (the ranks' batches), each
part's statistics from ``batch_norm_stats``, combined by ``batch_norm_gather_stats_with_counts``, normalized by
``batch_norm_elemt``; the gradient's sums from ``batch_norm_backward_reduce``, added over the parts (SyncBatchNorm's
all-reduce), and the input's gradient from ``batch_norm_backward_elemt``. The oracle is CPU's batch norm of the whole
batch (PyTorch has these kernels for CUDA only). tests/distributed/sync_batch_norm.py trains SyncBatchNorm on ranks.
"""

import pytest
import torch
from torch.testing import assert_close

EPS, MOMENTUM = 1e-5, 0.1
TOLERANCE = {torch.float64: dict(atol=1e-12, rtol=1e-12), torch.float32: dict(atol=2e-5, rtol=2e-5),
             torch.bfloat16: dict(atol=2e-2, rtol=2e-2), torch.float16: dict(atol=4e-3, rtol=4e-3)}


def cpu_batch_norm(x, weight, bias, gradient, eps=EPS):
    """Output, running statistics and gradients of CPU's batch norm over the whole batch, in float64."""
    x, gradient = x.double().requires_grad_(), gradient.double()
    weight, bias = weight.double().requires_grad_(), bias.double().requires_grad_()
    running = torch.zeros(x.shape[1], dtype=torch.float64), torch.ones(x.shape[1], dtype=torch.float64)
    out = torch.batch_norm(x, weight, bias, *running, True, MOMENTUM, eps, False)  # F.batch_norm refuses eps 0
    out.backward(gradient)
    return out.detach(), running, x.grad, weight.grad, bias.grad


def synced_batch_norm(parts, weight, bias, gradients, stats_dtype, with_counts=True, eps=EPS):
    """SyncBatchNorm's steps on tpu, the parts standing for the ranks' batches."""
    channels = weight.shape[0]
    running = (torch.zeros(channels, dtype=stats_dtype, device="tpu"), torch.ones(channels, dtype=stats_dtype, device="tpu"))
    stats = [torch.batch_norm_stats(p, eps) for p in parts]
    means, invstds = (torch.stack(s) for s in zip(*stats))
    assert means.dtype == stats_dtype
    if with_counts:
        counts = torch.tensor([p.numel() // channels for p in parts], dtype=stats_dtype, device="tpu")
        mean, invstd = torch.batch_norm_gather_stats_with_counts(parts[0], means, invstds, *running, MOMENTUM, eps, counts)
    else:
        mean, invstd = torch.batch_norm_gather_stats(parts[0], means, invstds, *running, MOMENTUM, eps,
                                                     parts[0].numel() // channels)
    out = [torch.batch_norm_elemt(p, weight, bias, mean, invstd, eps) for p in parts]
    reduced = [torch.batch_norm_backward_reduce(g, p, mean, invstd, weight, True, True, True)
               for g, p in zip(gradients, parts)]
    sum_dy, sum_dy_xmu, grad_weight, grad_bias = (sum(r) for r in zip(*reduced))
    counts = torch.tensor([p.numel() // channels for p in parts], dtype=torch.int32, device="tpu")
    grad_input = [torch.batch_norm_backward_elemt(g, p, mean, invstd, weight, sum_dy, sum_dy_xmu, counts)
                  for g, p in zip(gradients, parts)]
    return out, running, grad_input, grad_weight, grad_bias


def compare(tpu, cpu, dtype):
    assert_close(tpu.cpu().double(), cpu, **TOLERANCE[dtype])


def laid_out(part, layout):
    """``part`` on tpu in a memory format, or, for "transposed", as a non-contiguous view with its last two dims'
    strides swapped."""
    if layout == "transposed":
        return part.transpose(2, 3).contiguous().to("tpu").transpose(2, 3)
    return part.to("tpu").contiguous(memory_format=layout)


@pytest.mark.parametrize("dtype,layout", [(torch.float32, torch.contiguous_format), (torch.float32, torch.channels_last),
                                          (torch.float32, "transposed"), (torch.float64, torch.contiguous_format),
                                          (torch.bfloat16, torch.contiguous_format),
                                          (torch.float16, torch.contiguous_format), (torch.float16, "transposed")])
def test_sync_batch_norm_kernels_over_parts_equal_one_batch_norm_of_the_whole(dtype, layout):
    torch.manual_seed(0)
    x, gradient = torch.randn(7, 3, 4, 5).to(dtype), torch.randn(7, 3, 4, 5).to(dtype)
    weight, bias = torch.randn(3), torch.randn(3)
    params_dtype = torch.float64 if dtype == torch.float64 else torch.float32  # 16-bit input, float32 parameters
    cut = [(0, 2), (2, 7)]
    parts = [laid_out(x[a:b], layout) for a, b in cut]
    gradients = [laid_out(gradient[a:b], layout) for a, b in cut]
    assert layout != "transposed" or not parts[1].is_contiguous()
    out, running, grad_input, grad_weight, grad_bias = synced_batch_norm(
        parts, weight.to(params_dtype).to("tpu"), bias.to(params_dtype).to("tpu"), gradients, params_dtype)
    expected = cpu_batch_norm(x, weight.to(params_dtype), bias.to(params_dtype), gradient)
    assert out[0].dtype == dtype and grad_input[0].dtype == dtype and grad_weight.dtype == params_dtype
    if layout != "transposed":
        assert out[1].is_contiguous(memory_format=layout) and grad_input[1].is_contiguous(memory_format=layout)
    compare(torch.cat(out), expected[0], dtype)
    for got, reference in zip(running, expected[1]):
        compare(got, reference, params_dtype)
    compare(torch.cat(grad_input), expected[2], dtype)
    compare(grad_weight, expected[3], params_dtype)
    compare(grad_bias, expected[4], params_dtype)


def test_gather_stats_with_one_count_for_every_part():
    torch.manual_seed(1)
    x, gradient, weight, bias = torch.randn(6, 4, 3), torch.randn(6, 4, 3), torch.randn(4), torch.randn(4)
    parts = [x[:3].to("tpu"), x[3:].to("tpu")]
    gradients = [gradient[:3].to("tpu"), gradient[3:].to("tpu")]
    out, running, *_ = synced_batch_norm(parts, weight.to("tpu"), bias.to("tpu"), gradients, torch.float32,
                                         with_counts=False)
    expected = cpu_batch_norm(x, weight, bias, gradient)
    compare(torch.cat(out), expected[0], torch.float32)
    compare(running[1], expected[1][1], torch.float32)


def test_backward_reduce_leaves_out_what_is_not_asked():
    x, mean, invstd = torch.randn(4, 2, device="tpu"), torch.zeros(2, device="tpu"), torch.ones(2, device="tpu")
    sum_dy, sum_dy_xmu, grad_weight, grad_bias = torch.batch_norm_backward_reduce(x, x, mean, invstd, None, True, False, False)
    assert grad_weight is None and grad_bias is None
    compare(sum_dy, x.cpu().double().sum(0), torch.float32)
    compare(sum_dy_xmu, (x.cpu().double() ** 2).sum(0), torch.float32)


def test_kernels_run_in_abstract_mode_with_the_eager_kernels_shapes_and_dtypes():
    """PyTorch has no Meta kernels for them: abstract mode gives what the tpu kernels give, without values."""
    import torch_tpu

    def calls(x, weight):
        mean, invstd = torch.batch_norm_stats(x, EPS)
        counts = torch.tensor([4, 4], dtype=torch.int32, device="tpu")
        whole = torch.batch_norm_gather_stats_with_counts(x, torch.stack([mean, mean]), torch.stack([invstd, invstd]),
                                                          None, None, MOMENTUM, EPS, counts.float())
        out = torch.batch_norm_elemt(x, weight, None, mean, invstd, EPS)
        sums = torch.batch_norm_backward_reduce(out, x, mean, invstd, weight, True, False, True)
        grad = torch.batch_norm_backward_elemt(out, x, mean, invstd, weight, sums[0], sums[1], counts)
        return [mean, invstd, *whole, out, *sums, grad]

    x = torch.randn(4, 3, 2, 2).to(torch.bfloat16).to("tpu").contiguous(memory_format=torch.channels_last)
    weight = torch.ones(3, device="tpu")
    eager = calls(x, weight)
    with torch_tpu.abstract():
        abstract = calls(torch.empty_like(x), torch.empty_like(weight))
    for e, a in zip(eager, abstract):
        assert (e is None) == (a is None)
        if e is not None:
            assert (a.shape, a.dtype, a.stride()) == (e.shape, e.dtype, e.stride())


def test_a_constant_channel_without_eps_normalizes_to_zero_as_cpu():
    """CUDA's and CPU's InvStd give a zero variance without eps an inverse std of 0 (not inf, which makes NaN)."""
    torch.manual_seed(2)
    x, gradient, weight, bias = torch.randn(6, 3, 4), torch.randn(6, 3, 4), torch.randn(3), torch.randn(3)
    x[:, 1] = 2.5
    parts, gradients = [x[:2].to("tpu"), x[2:].to("tpu")], [gradient[:2].to("tpu"), gradient[2:].to("tpu")]
    _, invstd = torch.batch_norm_stats(parts[0], 0.0)
    assert invstd.cpu()[1] == 0
    out, _, grad_input, grad_weight, grad_bias = synced_batch_norm(parts, weight.to("tpu"), bias.to("tpu"), gradients,
                                                                   torch.float32, eps=0.0)
    expected = cpu_batch_norm(x, weight, bias, gradient, eps=0.0)
    compare(torch.cat(out), expected[0], torch.float32)
    compare(torch.cat(grad_input), expected[2], torch.float32)
    compare(grad_weight, expected[3], torch.float32)
    compare(grad_bias, expected[4], torch.float32)


def test_backward_elemt_on_one_rank_equals_the_batch_norm_backward_bit_for_bit():
    """One rank's input gradient is the batch norm's: the same float32 arithmetic (an int64 count once promoted part
    of it to float64)."""
    torch.manual_seed(0)
    x, grad, weight = (torch.randn(64, 8, 5, device="tpu"), torch.randn(64, 8, 5, device="tpu"),
                       torch.randn(8, device="tpu"))
    _, mean, invstd = torch.native_batch_norm(x, weight, None, None, None, True, MOMENTUM, EPS)
    expected = torch.ops.aten.native_batch_norm_backward(grad, x, weight, None, None, mean, invstd, True, EPS,
                                                         [True, False, False])[0]
    sum_dy, sum_dy_xmu, _, _ = torch.batch_norm_backward_reduce(grad, x, mean, invstd, weight, True, False, False)
    count = torch.tensor([64 * 5], dtype=torch.int32, device="tpu")
    got = torch.batch_norm_backward_elemt(grad, x, mean, invstd, weight, sum_dy, sum_dy_xmu, count)
    assert torch.equal(got.cpu(), expected.cpu())


def sync_kernel_calls(x, statistics, counts, other_statistics=None):
    """Each kernel called on ``x`` (its dtype the one under test) with float32 statistics; ``other_statistics``
    stands for invstd where a gradient kernel takes mean and invstd."""
    mean = statistics
    invstd = statistics if other_statistics is None else other_statistics
    return {
        "batch_norm_stats_cuda": lambda: torch.batch_norm_stats(x, EPS),
        "batch_norm_update_stats_cuda": lambda: torch.batch_norm_gather_stats_with_counts(
            x, mean[None], invstd[None], None, None, MOMENTUM, EPS, counts),
        "batch_norm_elementwise_cuda": lambda: torch.batch_norm_elemt(x, None, None, mean, invstd, EPS),
        "batch_norm_backward_reduce": lambda: torch.batch_norm_backward_reduce(x, x, mean, invstd, None, True, True, True),
        "batch_norm_backward_elemt": lambda: torch.batch_norm_backward_elemt(x, x, mean, invstd, None, mean, mean,
                                                                             counts.int()),
    }


@pytest.mark.parametrize("abstract", [False, True])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.int32, torch.int64, torch.bool])
def test_kernels_refuse_what_cuda_does_not_dispatch(dtype, abstract):
    """CUDA compiles them for floating types only (its error names each kernel's dispatch)."""
    import contextlib

    import torch_tpu

    with torch_tpu.abstract() if abstract else contextlib.nullcontext():
        x = torch.ones(4, 3, dtype=dtype, device="tpu")
        calls = sync_kernel_calls(x, torch.ones(3, device="tpu"), torch.tensor([4.0], device="tpu"))
        for kernel, call in calls.items():
            name = {torch.complex64: "ComplexFloat", torch.int32: "Int", torch.int64: "Long", torch.bool: "Bool"}[dtype]
            with pytest.raises(NotImplementedError, match=f'"{kernel}" not implemented for \'{name}\''):
                call()


def test_gather_dispatches_on_the_running_statistics_dtype():
    x, statistics = torch.ones(4, 3, device="tpu"), torch.ones(1, 3, device="tpu")
    running = torch.zeros(3, dtype=torch.int32, device="tpu")
    with pytest.raises(NotImplementedError, match="\"batch_norm_update_stats_cuda\" not implemented for 'Int'"):
        torch.batch_norm_gather_stats(x, statistics, statistics, running, running.clone(), MOMENTUM, EPS, 4)


@pytest.mark.parametrize("kernel", ["batch_norm_backward_reduce", "batch_norm_backward_elemt"])
def test_gradient_kernels_want_mean_and_invstd_in_one_dtype(kernel):
    x = torch.ones(4, 3, device="tpu")
    calls = sync_kernel_calls(x, torch.ones(3, device="tpu"), torch.tensor([4.0], device="tpu"),
                              other_statistics=torch.ones(3, dtype=torch.float64, device="tpu"))
    with pytest.raises(RuntimeError, match="mean and invstd need to have the same data types"):
        calls[kernel]()
