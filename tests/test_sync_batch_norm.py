"""The kernels of nn.SyncBatchNorm on tpu, in one process: a batch cut into uneven parts (the ranks' batches), each
part's statistics from ``batch_norm_stats``, combined by ``batch_norm_gather_stats_with_counts``, normalized by
``batch_norm_elemt``; the gradient's sums from ``batch_norm_backward_reduce``, added over the parts (SyncBatchNorm's
all-reduce), and the input's gradient from ``batch_norm_backward_elemt``. The oracle is CPU's batch norm of the whole
batch (PyTorch has these kernels for CUDA only). tests/distributed/sync_batch_norm.py trains SyncBatchNorm on ranks.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

EPS, MOMENTUM = 1e-5, 0.1
TOLERANCE = {torch.float64: dict(atol=1e-12, rtol=1e-12), torch.float32: dict(atol=2e-5, rtol=2e-5),
             torch.bfloat16: dict(atol=2e-2, rtol=2e-2)}


def cpu_batch_norm(x, weight, bias, gradient):
    """Output, running statistics and gradients of CPU's batch norm over the whole batch, in float64."""
    x, gradient = x.double().requires_grad_(), gradient.double()
    weight, bias = weight.double().requires_grad_(), bias.double().requires_grad_()
    running = torch.zeros(x.shape[1], dtype=torch.float64), torch.ones(x.shape[1], dtype=torch.float64)
    out = F.batch_norm(x, *running, weight, bias, True, MOMENTUM, EPS)
    out.backward(gradient)
    return out.detach(), running, x.grad, weight.grad, bias.grad


def synced_batch_norm(parts, weight, bias, gradients, stats_dtype, with_counts=True):
    """SyncBatchNorm's steps on tpu, the parts standing for the ranks' batches."""
    channels = weight.shape[0]
    running = (torch.zeros(channels, dtype=stats_dtype, device="tpu"), torch.ones(channels, dtype=stats_dtype, device="tpu"))
    stats = [torch.batch_norm_stats(p, EPS) for p in parts]
    means, invstds = (torch.stack(s) for s in zip(*stats))
    assert means.dtype == stats_dtype
    if with_counts:
        counts = torch.tensor([p.numel() // channels for p in parts], dtype=stats_dtype, device="tpu")
        mean, invstd = torch.batch_norm_gather_stats_with_counts(parts[0], means, invstds, *running, MOMENTUM, EPS, counts)
    else:
        mean, invstd = torch.batch_norm_gather_stats(parts[0], means, invstds, *running, MOMENTUM, EPS,
                                                     parts[0].numel() // channels)
    out = [torch.batch_norm_elemt(p, weight, bias, mean, invstd, EPS) for p in parts]
    reduced = [torch.batch_norm_backward_reduce(g, p, mean, invstd, weight, True, True, True)
               for g, p in zip(gradients, parts)]
    sum_dy, sum_dy_xmu, grad_weight, grad_bias = (sum(r) for r in zip(*reduced))
    counts = torch.tensor([p.numel() // channels for p in parts], dtype=torch.int32, device="tpu")
    grad_input = [torch.batch_norm_backward_elemt(g, p, mean, invstd, weight, sum_dy, sum_dy_xmu, counts)
                  for g, p in zip(gradients, parts)]
    return out, running, grad_input, grad_weight, grad_bias


def compare(tpu, cpu, dtype):
    assert_close(tpu.cpu().double(), cpu, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype,layout", [(torch.float32, torch.contiguous_format), (torch.float32, torch.channels_last),
                                          (torch.float64, torch.contiguous_format), (torch.bfloat16, torch.contiguous_format)])
def test_sync_batch_norm_kernels_over_parts_equal_one_batch_norm_of_the_whole(dtype, layout):
    torch.manual_seed(0)
    x, gradient = torch.randn(7, 3, 4, 5).to(dtype), torch.randn(7, 3, 4, 5).to(dtype)
    weight, bias = torch.randn(3), torch.randn(3)
    params_dtype = torch.float64 if dtype == torch.float64 else torch.float32  # bf16 input, float32 parameters
    cut = [(0, 2), (2, 7)]
    parts = [x[a:b].to("tpu").contiguous(memory_format=layout) for a, b in cut]
    gradients = [gradient[a:b].to("tpu").contiguous(memory_format=layout) for a, b in cut]
    out, running, grad_input, grad_weight, grad_bias = synced_batch_norm(
        parts, weight.to(params_dtype).to("tpu"), bias.to(params_dtype).to("tpu"), gradients, params_dtype)
    expected = cpu_batch_norm(x, weight.to(params_dtype), bias.to(params_dtype), gradient)
    assert out[0].dtype == dtype and grad_input[0].dtype == dtype and grad_weight.dtype == params_dtype
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
