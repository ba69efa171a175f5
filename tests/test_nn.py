"""Neural-network kernels on tpu, checked against torch CPU: forward values and gradients.

Gradients are driven with an explicit random ``gradient`` tensor (not ``.sum().backward()``),
so each test exercises the backward kernel with a non-trivial incoming gradient.
"""

import math

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.testing import assert_close

import differential
from differential import check, check_grads, check_same_error
from torch_tpu.ops.cpu_replay import cascade_sum

BF16_TOLERANCE = dict(atol=2e-2, rtol=2e-2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------ softmax


@pytest.mark.parametrize("function", [F.softmax, F.log_softmax])
@pytest.mark.parametrize("shape,dim", [((3, 7), -1), ((3, 7), 0), ((2, 3, 4), 1), ((), 0), ((0, 5), 1), ((4, 0), 1)])
def test_softmax_matches_cpu(function, shape, dim):
    check_grads(lambda x: function(x, dim), torch.randn(shape))


@pytest.mark.parametrize("function", [F.softmax, F.log_softmax])
def test_softmax_non_contiguous_and_extreme_values(function):
    x = torch.randn(6, 5).t()
    x[0, 1] = float("inf")
    x[1] = float("-inf")
    x[2, 0] = float("nan")
    differential.check(lambda t: function(t, 1), x)
    check_grads(lambda t: function(t, 0), torch.randn(6, 5).t() * 50)


@pytest.mark.parametrize("function", [F.softmax, F.log_softmax])
def test_softmax_bf16_and_dtype_argument(function):
    x = torch.randn(4, 33).bfloat16()
    check_grads(lambda t: function(t, -1), x, **BF16_TOLERANCE)
    out = check_grads(lambda t: function(t, -1, dtype=torch.float32), x)[0]
    assert out.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape,dim", [((64, 33), -1), ((64, 4), 1), ((33,), 0), ((5, 64), 0)])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_log_softmax_of_16_bit_floats_has_cpus_bits(dtype, shape, dim, compiled):
    """CPU's last-dim loop keeps each row's sum and its log in bf16/fp16; computed in float32 throughout, a third
    of the bf16 results were one ulp off (a bf16 classifier's loss drifted from CPU's by its second step)."""
    x = torch.randn(shape).to(dtype)
    function = (lambda t: F.log_softmax(t, dim))
    if compiled:
        torch._dynamo.reset()
        function = torch.compile(function, backend="tpu")
    assert torch.equal(function(x.to("tpu")).cpu(), F.log_softmax(x, dim))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape,dim", [((16, 40), 0), ((6, 7, 9), 0), ((6, 7, 9), 1), ((6, 65), 0), ((4, 5, 1), 1)])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_softmax_of_16_bit_floats_over_a_middle_dim_has_cpus_bits(dtype, shape, dim, threads, compiled):
    """CPU's loop over a dim other than the last divides in float where it takes 64-byte vectors of columns and
    rounds each exponential to the dtype first where it takes columns one by one, which depends on how its threads
    split the columns; rounded once everywhere, a quarter of the results were one ulp off."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(threads)).to(dtype)
    function = (lambda t: F.softmax(t, dim))
    if compiled:
        torch._dynamo.reset()
        function = torch.compile(function, backend="tpu")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert torch.equal(function(x.to("tpu")).cpu(), F.softmax(x, dim))
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("op", [torch._softmax, torch._log_softmax])
def test_half_to_float(op):
    x = torch.randn(3, 9).half()
    out = op(x.to("tpu"), 1, True)
    assert out.dtype == torch.float32
    reference = F.softmax(x.float(), 1) if op is torch._softmax else F.log_softmax(x.float(), 1)
    assert_close(out.cpu(), reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_half_to_float_refuses_other_dtypes_as_cuda(dtype):
    # CPU refuses the conversion for every dtype; CUDA (and tpu) accept float16 input only
    with pytest.raises(RuntimeError, match="conversion is supported for Half type only"):
        torch._softmax(torch.randn(3, 9, dtype=dtype, device="tpu"), 1, True)


def test_softmax_dim_out_of_range_raises_like_cpu():
    with pytest.raises(IndexError):
        F.softmax(torch.randn(2, 3).to("tpu"), 2)


def test_safe_softmax_zeroes_fully_masked_rows():
    x = torch.randn(3, 4)
    x[1] = float("-inf")
    out = check_grads(lambda t: torch.ops.aten._safe_softmax(t, -1), x)[0].cpu()
    assert torch.equal(out[1], torch.zeros(4))


# ------------------------------------------------------------------ normalization


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape,normalized", [((4, 10), (10,)), ((2, 3, 4, 5), (4, 5)), ((0, 3), (3,))])
def test_layer_norm(affine, shape, normalized):
    weight = torch.randn(normalized) if affine else None
    bias = torch.randn(normalized) if affine else None
    check_grads(lambda x, w, b: F.layer_norm(x, normalized, w, b, eps=1e-4), torch.randn(shape) * 3 + 1, weight, bias)


def test_layer_norm_non_contiguous_input():
    check_grads(lambda x, w: F.layer_norm(x, (6,), w), torch.randn(6, 4).t(), torch.randn(6))


def test_layer_norm_bf16_with_float32_parameters_saves_float32_statistics():
    x, w, b = torch.randn(5, 16).bfloat16(), torch.randn(16), torch.randn(16)
    outputs = check_grads(lambda x, w, b: torch.ops.aten.native_layer_norm(x, [16], w, b, 1e-5), x, w, b, **BF16_TOLERANCE)
    assert [o.dtype for o in outputs] == [torch.bfloat16, torch.float32, torch.float32]
    check_grads(lambda x: F.layer_norm(x, (16,)), x, **BF16_TOLERANCE)


@pytest.mark.parametrize("weight_dtype", [None, torch.float32])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(16, 40), (4, 8, 40), (63, 24), (1, 50), (7, 1)])
def test_16_bit_layer_norm_parameter_gradients_sum_in_cpus_per_thread_buffers(shape, dtype, weight_dtype):
    """CPU adds each thread's run of rows into a buffer of the input's dtype (rounding every step, the weight's
    products fused into the additions), then the threads' buffers in float: the weight's and bias's gradients
    are CPU's bits (a matrix-vector sum was up to 3 ulps off). Fed CPU's saved statistics, as autograd feeds them."""
    generator = torch.Generator().manual_seed(3)
    x, grad = (torch.randn(shape, generator=generator).to(dtype) for _ in range(2))
    weight, bias = (torch.randn(shape[-1:], generator=generator).to(weight_dtype or dtype) for _ in range(2))
    _, mean, rstd = torch.ops.aten.native_layer_norm(x, shape[-1:], weight, bias, 1e-5)
    arguments = (grad, x, shape[-1:], mean, rstd, weight, bias, [True, True, True])
    expected = torch.ops.aten.native_layer_norm_backward(*arguments)
    got = torch.ops.aten.native_layer_norm_backward(*(a.to("tpu") if isinstance(a, torch.Tensor) else a
                                                       for a in arguments))
    for result, oracle in zip(got[1:], expected[1:]):
        assert torch.equal(result.cpu(), oracle)


def test_layer_norm_module():
    module = nn.LayerNorm(8)
    with torch.no_grad():
        module.weight.normal_()
        module.bias.normal_()
    check_grads(lambda x, w, b: F.layer_norm(x, (8,), w, b), torch.randn(3, 5, 8), module.weight, module.bias)
    assert_close(module.to("tpu")(torch.ones(2, 8).to("tpu") * torch.arange(8.).to("tpu")).cpu(),
                 module.cpu()(torch.ones(2, 8) * torch.arange(8.)))


@pytest.mark.parametrize("shape,groups", [((2, 6, 5), 3), ((3, 4, 2, 3), 2), ((2, 6), 3)])
def test_group_norm(shape, groups):
    channels = shape[1]
    check_grads(lambda x, w, b: F.group_norm(x, groups, w, b, eps=1e-3),
          torch.randn(shape) * 2 - 1, torch.randn(channels), torch.randn(channels))
    check_grads(lambda x: F.group_norm(x, groups), torch.randn(shape))


def test_group_norm_module():
    module = nn.GroupNorm(2, 4)
    tpu_module = nn.GroupNorm(2, 4).to("tpu")
    x = torch.randn(3, 4, 5, 5)
    assert_close(tpu_module(x.to("tpu")).cpu(), module(x))


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5), (2, 3, 4, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_functional(shape, training):
    running_mean, running_var = torch.randn(3), torch.rand(3) + 0.5
    cpu_stats = [running_mean.clone(), running_var.clone()]
    tpu_stats = [running_mean.to("tpu"), running_var.to("tpu")]

    def function(x, w, b):
        stats = tpu_stats if x.device.type == "tpu" else cpu_stats
        return F.batch_norm(x, *stats, w, b, training=training, momentum=0.3, eps=1e-3)

    check_grads(function, torch.randn(shape) * 2 + 1, torch.randn(3), torch.randn(3))
    assert_close(tpu_stats[0].cpu(), cpu_stats[0])
    assert_close(tpu_stats[1].cpu(), cpu_stats[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(4, 3, 7, 7), (2, 3, 5), (6, 3), (2, 3, 1, 1)])
def test_batch_norm_backward_sums_each_channel_apart_as_cpu(shape, dtype):
    """The weight's and bias's gradients are per-channel sums: an inf or a NaN in one channel's gradient reaches that
    channel's sums only."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator, dtype=dtype)
    grad = torch.randn(shape, generator=generator, dtype=dtype)
    grad[0, 0].view(-1)[-1] = math.inf
    grad[-1, 1].view(-1)[0] = math.nan
    weight = torch.randn(3, generator=generator, dtype=dtype)
    results = {}
    for device in ("cpu", "tpu"):
        on = [t.to(device) for t in (x, grad, weight)]
        _, mean, invstd = torch.ops.aten.native_batch_norm(on[0], on[2], None, None, None, True, 0.1, 1e-5)
        results[device] = [t.cpu() for t in torch.ops.aten.native_batch_norm_backward(
            on[1], on[0], on[2], None, None, mean, invstd, True, 1e-5, [False, True, True])[1:]]
    assert_close(results["tpu"], results["cpu"], equal_nan=True)
    assert math.isinf(results["tpu"][1][0]) and math.isnan(results["tpu"][1][1])
    assert math.isfinite(results["tpu"][1][2]) and math.isfinite(results["tpu"][0][2])


@pytest.mark.parametrize("side", [7, 56])
def test_batch_norm_sums_equal_channels_equally_and_as_accurately_as_cpu(side):
    """Channels holding the same values get the same per-channel sums, as accurate as CPU's: BLAS's matrix-vector
    kernel added a long run's leftover channels one element after another (bias gradients 1.0000113 for two of three
    equal channels and 0.99999976 for the third, where the exact sum is 1 and CPU's is 0.99999958)."""
    x = torch.randn(16, 1, side, side, generator=torch.Generator().manual_seed(0)).expand(16, 3, side, side)
    grad = torch.full(x.shape, 1 / (16 * side * side))
    errors = {}
    for device in ("cpu", "tpu"):
        norm = torch.nn.BatchNorm2d(3).to(device)
        norm(x.to(device).contiguous().requires_grad_()).backward(grad.to(device))
        bias_grad = norm.bias.grad.cpu().double()
        assert torch.all(bias_grad == bias_grad[0]), f"{device}: equal channels, unequal sums {bias_grad.tolist()}"
        errors[device] = (bias_grad[0] - 1).abs().item()
    assert errors["tpu"] <= max(errors["cpu"], 2 ** -23)


def test_batch_norm_without_running_stats():
    check_grads(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), torch.randn(4, 3, 2), torch.randn(3),
          torch.randn(3))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_of_a_constant_channel_without_eps_as_cpu(training):
    """Training saves CPU's InvStd, 0 for a zero variance without eps (the output 0, not NaN); evaluation divides by
    the running variance's square root as it is (NaN)."""
    x = torch.ones(4, 2)
    x[:, 1] = torch.arange(4.0)

    def batch_norm(t):
        running = (None, None) if training else (torch.zeros(2, device=t.device), torch.zeros(2, device=t.device))
        return torch.native_batch_norm(t, None, None, *running, training, 0.1, 0.0)

    for got, expected in zip(batch_norm(x.to("tpu")), batch_norm(x)):
        assert_close(got.cpu(), expected, equal_nan=True)


def test_batch_norm_eval_needs_running_stats():
    with pytest.raises(RuntimeError):
        torch.ops.aten.native_batch_norm(torch.randn(4, 3).to("tpu"), None, None, None, None, False, 0.1, 1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_refuses_running_statistics_cpu_refuses(training):
    """One running statistic without the other, or one that is not 1-d, is refused with CPU's error class and
    wording (a (C, 1) running mean broadcast, or was read as its C values, review16a)."""
    for running_mean, running_var in ((None, torch.ones(3)), (torch.ones(3, 1), torch.ones(3)),
                                      (torch.ones(1, 3), torch.ones(3))):
        results = []
        for device in ("cpu", "tpu"):
            mean = None if running_mean is None else running_mean.to(device)
            try:
                torch.native_batch_norm(torch.ones(2, 3, device=device), None, None, mean, running_var.to(device),
                                        training, 0.1, 1e-5)
                results.append(None)
            except (RuntimeError, ValueError) as error:
                results.append((type(error), str(error)))
        assert results[0] is not None and results[1] == results[0]


def test_batch_norm_2d_module_running_stats_train_then_eval():
    cpu_module = nn.BatchNorm2d(3, momentum=0.2)
    tpu_module = nn.BatchNorm2d(3, momentum=0.2).to("tpu")
    for _ in range(3):
        x = torch.randn(4, 3, 5, 5) * 3 + 2
        assert_close(tpu_module(x.to("tpu")).cpu(), cpu_module(x))
    for name in ("running_mean", "running_var"):
        assert_close(getattr(tpu_module, name).cpu(), getattr(cpu_module, name))
    assert tpu_module.num_batches_tracked.item() == 3
    cpu_module.eval()
    tpu_module.eval()
    x = torch.randn(2, 3, 5, 5)
    assert_close(tpu_module(x.to("tpu")).cpu(), cpu_module(x))


def test_batch_norm_bf16_input_with_float32_module():
    outputs = check_grads(
        lambda x, w, b: torch.ops.aten.native_batch_norm(x, w, b, None, None, True, 0.1, 1e-5),
        torch.randn(6, 4, 3).bfloat16(), torch.randn(4), torch.randn(4), **BF16_TOLERANCE,
    )
    assert [o.dtype for o in outputs] == [torch.bfloat16, torch.float32, torch.float32]


def test_rms_norm():
    check_grads(lambda x, w: F.rms_norm(x, (6,), w, eps=1e-5), torch.randn(3, 4, 6), torch.randn(6))
    module = nn.RMSNorm(6)
    assert_close(module.to("tpu")(torch.arange(12.).view(2, 6).to("tpu")).cpu(), module.cpu()(torch.arange(12.).view(2, 6)))


def test_batch_norm_export_variants_match_native_batch_norm():
    x, w, b = torch.randn(4, 3, 5), torch.randn(3), torch.randn(3)
    check_grads(lambda x, w, b: torch.ops.aten._native_batch_norm_legit.no_stats(x, w, b, True, 0.1, 1e-5), x, w, b)
    stats = (torch.randn(3), torch.rand(3) + 0.5)
    differential.check(lambda x, w, b, m, v: torch.ops.aten._native_batch_norm_legit_no_training(x, w, b, m, v, 0.1, 1e-5),
          x, w, b, *stats)


BATCH_NORM_LAYOUTS = {
    "contiguous": lambda t: t,
    "channels_last": lambda t: t.to(memory_format=torch.channels_last),
    "transposed": lambda t: t.transpose(2, 3),  # CPU's generic loop: other roundings
}


@pytest.mark.parametrize("layout", BATCH_NORM_LAYOUTS)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_batch_norm_normalizes_with_statistics_as_cpu_stores_them(dtype, training, layout):
    """CPU keeps the saved statistics in the parameters' dtype (bf16 rounds them). Its vectorised kernels
    (contiguous, channels-last) apply ``x * alpha + beta`` in float; its generic loop computes
    ``((x - mean) * invstd) * weight + bias`` in the parameters' dtype. instance_norm is the former."""
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 5, 4, 6, generator=generator) * 3 + 2).to(dtype)
    weight, bias = (torch.randn(5, generator=generator) * 3).to(dtype), torch.randn(5, generator=generator).to(dtype)
    stats = (torch.randn(5, generator=generator).to(dtype), (torch.rand(5, generator=generator) + 0.5).to(dtype))
    exact = dict(atol=0, rtol=0) if dtype == torch.bfloat16 else {}
    view = BATCH_NORM_LAYOUTS[layout]
    differential.check(lambda t: torch.ops.aten.native_batch_norm(view(t), weight.to(t.device), bias.to(t.device),
                                                     *(s.to(t.device) for s in stats), training, -0.7, 0.5)[0],
          x, **exact)
    differential.check(lambda t: F.instance_norm(view(t), stats[0].to(t.device).clone(), stats[1].to(t.device).clone(),
                                    weight.to(t.device), bias.to(t.device), momentum=-1.0, eps=0.5),
          x, **exact)


@pytest.mark.parametrize("layout", BATCH_NORM_LAYOUTS)
@pytest.mark.parametrize("momentum", [0.1, -0.7])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_batch_norm_updates_running_statistics_with_cpus_arithmetic(dtype, momentum, layout):
    """CPU's vectorised path updates bf16 running statistics in bf16, rounding every operation: the running
    mean comes out bit-exact. The running variance is built from CPU's sum of squares, which it
    accumulates in an order not replayed here: within one bf16 ulp."""
    generator = torch.Generator().manual_seed(1)
    x = (torch.randn(3, 64, 4, 6, generator=generator) * 3 + 2).to(dtype)
    weight, bias = (torch.randn(64, generator=generator).to(dtype) for _ in range(2))
    stats = (torch.randn(64, generator=generator).to(dtype), (torch.rand(64, generator=generator) + 0.5).to(dtype))
    view = BATCH_NORM_LAYOUTS[layout]
    updated = {}
    for device in ("cpu", "tpu"):
        mean, var = (s.to(device, copy=True) for s in stats)
        torch.ops.aten.native_batch_norm(view(x.to(device)), weight.to(device), bias.to(device), mean, var, True,
                                         momentum, 0.5)
        updated[device] = mean.cpu(), var.cpu()
    (cpu_mean, cpu_var), (tpu_mean, tpu_var) = updated["cpu"], updated["tpu"]
    if dtype == torch.bfloat16:
        assert_close(tpu_mean, cpu_mean, atol=0, rtol=0)
        assert_close(tpu_var, cpu_var, atol=0, rtol=2 ** -7)
    else:
        assert_close(tpu_mean, cpu_mean, atol=1e-5, rtol=1e-5)
        assert_close(tpu_var, cpu_var)


@pytest.mark.parametrize("shape", [(16, 40), (8, 40, 33), (4, 8, 5, 6)])
def test_fp16_batch_norm_keeps_its_statistics_in_float32_until_it_stores_them(shape):
    """CPU's vectorised batch norm keeps an fp16 batch's mean and sum of squares in float32: the saved inverse std
    and the running averages come from the float sums (rounding them to fp16 first, as bf16 does, put a sixth of
    2-d and 3-d outputs an ulp off), and its float lanes fuse ``x * alpha + beta``. Saved statistics, running
    statistics and outputs are CPU's bits."""
    generator = torch.Generator().manual_seed(2)
    x = (torch.randn(shape, generator=generator) * 3 + 1).half()
    stats = (torch.randn(shape[1], generator=generator).half(), (torch.rand(shape[1], generator=generator) + 1).half())
    weight, bias = (torch.randn(shape[1], generator=generator).half() for _ in range(2))
    results = {}
    for device in ("cpu", "tpu"):
        running = [s.to(device, copy=True) for s in stats]
        outputs = torch.ops.aten.native_batch_norm(x.to(device), weight.to(device), bias.to(device), *running, True,
                                                   0.1, 1e-5)
        results[device] = [t.cpu() for t in (*outputs, *running)]
    for got, expected in zip(results["tpu"], results["cpu"]):
        assert torch.equal(got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batch_norm_updates_strided_running_statistics_in_their_own_memory(dtype):
    """Running statistics that hold the compute dtype are updated in their own memory: as views (every other
    element of a larger buffer) only the viewed elements change, to CPU's values; the rest stay as they were."""
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(4, 8, 5, 5, generator=generator, dtype=dtype)
    buffers = torch.randn(2, 16, generator=generator, dtype=dtype).abs() + 0.5
    updated = {}
    for device in ("cpu", "tpu"):
        held = buffers.to(device, copy=True)
        torch.ops.aten.native_batch_norm(x.to(device), None, None, held[0, ::2], held[1, 1::2], True, 0.3, 1e-5)
        updated[device] = held.cpu()
    assert_close(updated["tpu"], updated["cpu"])
    assert torch.equal(updated["tpu"][0, 1::2], buffers[0, 1::2]) and torch.equal(updated["tpu"][1, ::2], buffers[1, ::2])


@pytest.mark.parametrize("op", ["_batch_norm_with_update", "_batch_norm_no_update"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batch_norm_update_variants_keep_the_input_dtype_and_update_running_stats(op, dtype):
    x, w, b = torch.randn(4, 3, 5).to(dtype), torch.randn(3).to(dtype), torch.randn(3).to(dtype)
    stats = (torch.randn(3).to(dtype), (torch.rand(3) + 0.5).to(dtype))
    cpu_stats, tpu_stats = [s.clone() for s in stats], [s.to("tpu") for s in stats]
    kernel = getattr(torch.ops.aten, op)
    expected = kernel(x.transpose(0, 2), w, b, *cpu_stats, 0.1, 1e-5)
    got = kernel(x.to("tpu").transpose(0, 2), w.to("tpu"), b.to("tpu"), *tpu_stats, 0.1, 1e-5)
    tolerance = BF16_TOLERANCE if dtype == torch.bfloat16 else {}
    for g, e in zip([*got, *tpu_stats], [*expected, *cpu_stats]):
        assert g.dtype == e.dtype
        assert_close(g.cpu(), e, **tolerance)


BATCH_NORM_OUTS = {
    "empty": lambda: (torch.empty(0), torch.empty(0), torch.empty(0)),
    "shaped, strided, filled": lambda: (torch.full((4, 6, 5, 3), 7.0).transpose(1, 3), torch.full((3,), 7.0),
                                        torch.full((3,), 7.0)),
}


@pytest.mark.parametrize("outs", BATCH_NORM_OUTS)
@pytest.mark.parametrize("training,running_stats", [(True, True), (False, True), (True, False)])
def test_batch_norm_out_variants_write_their_outs_as_cpu_does(outs, training, running_stats):
    """``native_batch_norm.out``, ``_native_batch_norm_legit.out`` and ``.no_stats_out`` resize empty outs,
    write shaped ones through their strides, and in evaluation leave the saved statistics' outs untouched.
    (Evaluation without running statistics crashes CPU's kernel; tpu refuses it as native_batch_norm does.)"""
    x, weight, bias = torch.randn(4, 3, 5, 6), torch.randn(3), torch.randn(3)
    out, save_mean, save_invstd = BATCH_NORM_OUTS[outs]()
    if running_stats:
        for op in (torch.ops.aten._native_batch_norm_legit.out, torch.ops.aten.native_batch_norm.out):
            differential.check(lambda *a, **o: op(*a, training, 0.1, 1e-5, **o),
                               x, weight, bias, torch.randn(3), torch.rand(3) + 0.5,
                               out=out, save_mean=save_mean, save_invstd=save_invstd)
    else:
        differential.check(lambda *a, **o: torch.ops.aten._native_batch_norm_legit.no_stats_out(*a, training, 0.1, 1e-5, **o),
                           x, weight, bias, out=out, save_mean=save_mean, save_invstd=save_invstd)


@pytest.mark.parametrize("wrong", [0, 1, 2])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_out_variants_refuse_outs_of_another_dtype_in_cpus_words(wrong, training):
    def call(device):
        x, weight, bias = (t.to(device) for t in (torch.randn(4, 3, 5), torch.randn(3), torch.randn(3)))
        outs = [torch.empty(0, device=device, dtype=torch.float64 if i == wrong else torch.float32) for i in range(3)]
        stats = torch.zeros(3, device=device), torch.ones(3, device=device)
        torch.ops.aten._native_batch_norm_legit.out(x, weight, bias, *stats, training, 0.1, 1e-5, out=outs[0],
                                                    save_mean=outs[1], save_invstd=outs[2])

    check_same_error(call)


# ------------------------------------------------------------------ pooling


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1)),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True),
])
def test_max_pool2d(kwargs):
    check_grads(lambda x: F.max_pool2d(x, return_indices=True, **kwargs), torch.randn(2, 3, 9, 8))
    check_grads(lambda x: F.max_pool2d(x, **kwargs), torch.randn(3, 9, 8))  # unbatched


def test_max_pool2d_ties_nan_and_all_negative_infinity():
    x = torch.zeros(1, 1, 4, 4)  # ties: the first maximum wins
    x[0, 0, 3, 3] = float("nan")
    x[0, 0, 0, 3] = float("nan")
    x[0, 0, 2:, :2] = float("-inf")
    check_grads(lambda t: F.max_pool2d(t, 2, return_indices=True), x)
    differential.check(lambda t: F.max_pool2d(t, 3, 2, padding=1, return_indices=True), x)


@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_max_pools_winners_over_many_ties(spatial):
    """Windows full of ties, NaNs and -inf, over strides, dilations, padding and ceil mode, fixed and
    adaptive: each pass along a dim keeps the offset its winner was found at, and the indices built from
    those are CPU's (the first maximum in row-major order, the last NaN, an all -inf window's first element)."""
    generator = torch.Generator().manual_seed(spatial)
    shape = (2, 3) + (7, 6, 5)[:spatial]
    x = torch.randint(-2, 3, shape, generator=generator).float()
    draw = torch.rand(shape, generator=generator)
    x[draw < 0.05] = float("nan")
    x[(draw > 0.1) & (draw < 0.45)] = float("-inf")
    pool, adaptive = getattr(F, f"max_pool{spatial}d"), getattr(F, f"adaptive_max_pool{spatial}d")
    for kernel, stride, padding, dilation, ceil_mode in [(3, 2, 1, 1, False), (2, 1, 1, 2, True), (3, 3, 0, 1, True),
                                                         (1, 2, 0, 1, False), (3, 1, 1, 1, False)]:
        differential.check(lambda t: pool(t, kernel, stride, padding, dilation, ceil_mode, return_indices=True), x)
    differential.check(lambda t: adaptive(t, (3, 4, 2)[:spatial], return_indices=True), x)
    integers = torch.randint(-3, 3, shape, generator=generator)
    integers[draw < 0.3] = torch.iinfo(torch.int64).min
    if spatial < 3:  # CPU's 3-d max pool has no integer loop
        differential.check(lambda t: pool(t, 3, 2, 1, return_indices=True), integers)


def test_global_pools_take_cpu_winners_in_one_reduction():
    """A window covering the whole input (EfficientNet's 7x7 AvgPool2d) is one reduction: ties go to the
    first maximum, NaNs win and the last NaN wins, an all -inf window points at its first element."""
    x = torch.randn(3, 4, 5, 5)
    x[0, 0] = 1.0  # ties
    x[0, 1, 1, 2] = x[0, 1, 3, 0] = float("nan")
    x[0, 2] = float("-inf")
    check_grads(lambda t: F.max_pool2d(t, 5, return_indices=True), x)
    check_grads(lambda t: F.avg_pool2d(t, 5), x[1:])
    check_grads(lambda t: F.max_pool3d(t, (2, 5, 5), return_indices=True), x[:, :2].unsqueeze(0))
    differential.check(lambda t: F.avg_pool2d(t, 5), torch.randint(-50, 50, (2, 3, 5, 5)))


def test_max_pool2d_channels_last_and_integer():
    check_grads(lambda x: F.max_pool2d(x, 3, 2, 1), torch.randn(2, 4, 7, 7).to(memory_format=torch.channels_last))
    differential.check(lambda x: F.max_pool2d(x, 2, return_indices=True), torch.randint(-50, 50, (1, 2, 6, 6)))


def test_max_pool1d_and_3d():
    check_grads(lambda x: F.max_pool1d(x, 3, 2, 1, return_indices=True), torch.randn(2, 3, 10))
    check_grads(lambda x: F.max_pool3d(x, 2, return_indices=True), torch.randn(2, 2, 4, 5, 6))
    check_grads(lambda x: F.max_pool3d(x, (2, 3, 2), (1, 2, 2), (1, 1, 0), ceil_mode=True), torch.randn(2, 4, 5, 6))


@pytest.mark.parametrize("device", ["cpu", "tpu"])
def test_pool_argument_errors_match_cpu(device):
    with pytest.raises(RuntimeError, match="too small"):
        F.max_pool3d(torch.randn(1, 1, 2, 2, 2).to(device), 3)
    with pytest.raises(RuntimeError, match="pad should be at most half"):
        F.max_pool3d(torch.randn(1, 1, 4, 4, 4).to(device), 2, padding=2)
    with pytest.raises(RuntimeError, match="too small"):
        F.max_pool2d(torch.randn(1, 1, 2, 2).to(device), 3)


def test_max_pool_modules():
    check_grads(nn.MaxPool2d(3, stride=2, padding=1), torch.randn(2, 3, 8, 8))
    check_grads(nn.MaxPool2d(2, return_indices=True), torch.randn(1, 2, 6, 6))


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(2, 3), stride=(2, 1), divisor_override=5),
])
def test_avg_pool2d(kwargs):
    check_grads(lambda x: F.avg_pool2d(x, **kwargs), torch.randn(2, 3, 9, 8))


def test_avg_pool1d_3d_and_module():
    check_grads(lambda x: F.avg_pool1d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False), torch.randn(2, 3, 10))
    check_grads(lambda x: F.avg_pool3d(x, 3, 2, 1, ceil_mode=True), torch.randn(2, 2, 5, 6, 7))
    check_grads(lambda x: F.avg_pool3d(x, 2, divisor_override=3), torch.randn(2, 4, 4, 4))
    check_grads(nn.AvgPool2d(2), torch.randn(2, 3, 6, 6).to(memory_format=torch.channels_last))
    check_grads(nn.AvgPool2d(2), torch.randn(2, 3, 6, 6).bfloat16(), **BF16_TOLERANCE)
    differential.check(lambda x: F.avg_pool2d(x, 2, ceil_mode=True), torch.randint(-100, 100, (1, 2, 5, 5)))


@pytest.mark.parametrize("divisor", [-2, -3, 3])
def test_integer_avg_pool_truncates_toward_zero_with_any_divisor_sign(divisor):
    x = torch.randint(-9, 10, (2, 3, 6, 6))
    differential.check(lambda t: F.avg_pool2d(t, 2, divisor_override=divisor), x)
    differential.check(lambda t: F.avg_pool2d(t, 3, 1, 1, divisor_override=divisor), x.transpose(2, 3))
    differential.check(lambda t: F.avg_pool3d(t, (2, 2, 3), (2, 2, 1), divisor_override=divisor), x[None])


@pytest.mark.parametrize("in_size,out_size", [((8, 8), (4, 4)), ((7, 10), (3, 4)), ((3, 5), (5, 7)), ((6, 6), (1, 1))])
def test_adaptive_pool2d(in_size, out_size):
    x = torch.randn(2, 3, *in_size)
    check_grads(lambda t: F.adaptive_avg_pool2d(t, out_size), x)
    check_grads(lambda t: F.adaptive_max_pool2d(t, out_size, return_indices=True), x)


def test_adaptive_pool1d_and_3d():
    check_grads(lambda t: F.adaptive_avg_pool1d(t, 4), torch.randn(2, 3, 11))
    check_grads(lambda t: F.adaptive_max_pool1d(t, 4, return_indices=True), torch.randn(2, 3, 11))
    check_grads(lambda t: F.adaptive_avg_pool3d(t, (2, 3, 2)), torch.randn(2, 2, 5, 7, 4))
    check_grads(lambda t: F.adaptive_max_pool3d(t, (2, 3, 2), return_indices=True), torch.randn(2, 2, 5, 7, 4))


def exact_values_and_input_gradient(function, x):
    """``function``'s values and its input's gradient (for a fixed output gradient) on tpu equal CPU's bit for bit,
    and the gradient's strides CPU's."""
    results = []
    for device in ("cpu", "tpu"):
        t = x.detach().to(device).requires_grad_()
        values = function(t)
        gradient = torch.randn(values.shape, generator=torch.Generator().manual_seed(1)).to(x.dtype)
        values.backward(gradient.to(device))
        results.append((values.detach().cpu(), t.grad.cpu(), t.grad.stride()))
    (values, grad, stride), (expected_values, expected_grad, expected_stride) = results[1], results[0]
    assert_close(values, expected_values, atol=0, rtol=0)
    assert_close(grad, expected_grad, atol=0, rtol=0)
    assert stride == expected_stride


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("in_size,out_size", [((6, 6), (2, 3)), ((7, 10), (3, 4)), ((10, 11), (4, 3)), ((3, 5), (5, 7)),
                                              ((9, 4), (4, 4))])
def test_adaptive_avg_pool2d_is_cpus_bit_for_bit(dtype, in_size, out_size):
    """CPU's 2-d adaptive average sums each window from +0.0 in row-major order and divides by its height, then its
    width (two roundings, not one by the area); its backward adds each window's share (divided so, in the
    gradient's own dtype for bf16/fp16) to the window's elements, windows in row-major order, rounding each
    addition: equal windows, overlapping ones and windows sharing their first element (fewer inputs than outputs)."""
    x = (torch.randn(2, 3, *in_size, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    for layout in (x, x.to(memory_format=torch.channels_last), x.transpose(2, 3).contiguous().transpose(2, 3), x[0]):
        exact_values_and_input_gradient(lambda t: F.adaptive_avg_pool2d(t, out_size), layout)
    exact_values_and_input_gradient(lambda t: F.adaptive_avg_pool1d(t, out_size[1]), x[:, :, 0])


@pytest.mark.parametrize("backward,dims", [(torch.ops.aten._adaptive_avg_pool2d_backward, 2),
                                           (torch.ops.aten._adaptive_avg_pool3d_backward, 3)])
@pytest.mark.parametrize("in_size", [3, 6])  # fewer inputs than outputs (windows sharing elements), and more
def test_adaptive_avg_pool_backward_of_an_empty_batch_is_empty_as_on_cpu(backward, dims, in_size):
    """An empty batch's gradient is an empty input-shaped tensor; upsampling crashed reshaping the empty batch."""
    gradient, x = torch.randn(0, 2, *(5,) * dims), torch.randn(0, 2, *(in_size,) * dims)
    expected = backward(gradient, x)
    assert torch.equal(backward(gradient.to("tpu"), x.to("tpu")).cpu(), expected)
    assert expected.shape == x.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_adaptive_avg_pool3d_backward_is_cpus_bit_for_bit(dtype):
    x = (torch.randn(2, 2, 5, 7, 4, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    for out_size in ((2, 3, 2), (5, 7, 2), (3, 4, 6)):
        exact_values_and_input_gradient(lambda t: F.adaptive_avg_pool3d(t, out_size), x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_adaptive_avg_pool3d_sums_each_window_in_the_input_dtype_like_cpu(dtype):
    """CPU's 3-d adaptive average adds a window's elements one by one in the input's dtype (bf16 rounds
    each addition), then divides by the window's extent along each dim in turn; area interpolation of
    5-d inputs is the same op."""
    x = (torch.randn(2, 3, 8, 6, 7, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    exact = dict(atol=0, rtol=0)
    for out_size in ((5, 4, 3), (4, 3, 7), (1, 2, 1)):  # (1, 1, 1) would be mean(), another kernel
        differential.check(lambda t: F.adaptive_avg_pool3d(t, out_size), x, **exact)
        differential.check(lambda t: F.adaptive_avg_pool3d(t, out_size), x.to(memory_format=torch.channels_last_3d),
              **exact)
        differential.check(lambda t: F.adaptive_avg_pool3d(t.transpose(2, 4), out_size), x, **exact)
    differential.check(lambda t: F.interpolate(t, scale_factor=1.7, mode="area"), x[:, :, :4, :4, :4], **exact)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("mode,spatial", [("linear", (9,)), ("bilinear", (7, 9)), ("trilinear", (5, 7, 9))])
def test_linear_interpolation_of_bf16_keeps_cpu_weights(mode, spatial, align_corners):
    """CPU's 1-d and 3-d linear kernels store lambda in bf16 and take 1 - lambda from that rounded value;
    its 2-d kernel keeps float32 weights (and sums in its own order: within one bf16 rounding)."""
    x = (torch.randn(2, 3, *spatial, generator=torch.Generator().manual_seed(0)) * 3).bfloat16()
    size = tuple(s + s // 2 + 1 for s in spatial)
    exact = dict(atol=0, rtol=2 ** -7 if mode == "bilinear" else 0)
    differential.check(lambda t: F.interpolate(t, size=size, mode=mode, align_corners=align_corners), x, **exact)
    differential.check(lambda t: F.interpolate(t.flip(-1), scale_factor=0.6, mode=mode, align_corners=align_corners), x, **exact)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("mode,antialias", [("bilinear", False), ("bilinear", True), ("bicubic", True),
                                            ("bicubic", False)])
def test_uint8_image_resize_is_cpus_fixed_point(mode, antialias, align_corners):
    """CPU resizes uint8 images as Pillow does: int16 fixed-point weights, one pass per axis rounding to
    uint8. The float kernel's weights once truncated to 0 or 1 here. Plain bicubic keeps CPU's taps with
    weights computed another way: within 1 of CPU."""
    image = torch.randint(0, 256, (2, 3, 10, 13), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tolerance = dict(atol=1, rtol=0) if (mode, antialias) == ("bicubic", False) else dict(atol=0, rtol=0)
    for size in ((4, 9), (23, 31), (10, 5)):
        differential.check(lambda t: F.interpolate(t, size=size, mode=mode, antialias=antialias,
                                                   align_corners=align_corners), image, **tolerance)


@pytest.mark.parametrize("dtype,mode,spatial,antialias", [
    (dtype, *case) for dtype in (torch.int32, torch.int64, torch.bool, torch.uint8)
    for case in (("linear", 1, False), ("trilinear", 3, False), ("bilinear", 2, False), ("bicubic", 2, False),
                 ("bilinear", 2, True))
    if dtype != torch.uint8 or case[1] != 2  # uint8 images are resized in fixed point (above)
])
def test_interpolation_of_integers_is_refused_as_cpu_refuses_it(dtype, mode, spatial, antialias):
    def call(device):
        x = torch.ones(1, 2, *(5,) * spatial, dtype=dtype, device=device)
        return F.interpolate(x, scale_factor=1.5, mode=mode, antialias=antialias)

    differential.check_same_error(call)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool, torch.bfloat16, torch.complex64])
def test_average_pools_refuse_the_dtypes_cpu_has_no_loop_for(dtype):
    x = torch.ones(2, 3, 4, 4, 4, dtype=dtype)
    for pool in (lambda t: F.avg_pool2d(t[0], 2), lambda t: F.avg_pool3d(t, 2),
                 lambda t: F.adaptive_avg_pool2d(t[0], 3), lambda t: F.adaptive_avg_pool3d(t, 3)):
        try:
            expected = pool(x)
        except NotImplementedError as error:
            with pytest.raises(NotImplementedError, match=str(error)):
                pool(x.to("tpu"))
            continue
        assert_close(pool(x.to("tpu")).cpu(), expected)


def test_adaptive_max_pool_nan():
    x = torch.randn(1, 1, 5, 5)
    x[0, 0, 1, 1] = float("nan")
    differential.check(lambda t: F.adaptive_max_pool2d(t, 2, return_indices=True), x)


# ------------------------------------------------------------------ result layouts of channels-last input

CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}
IMAGE, VOLUME = (2, 6, 5, 7), (2, 6, 4, 5, 6)

# Modules whose results and input gradients CPU lays out after a channels-last input: some channels-last
# (3-d max pooling, 2-d adaptive average pooling, group norm), some contiguous (3-d adaptive average pooling).
LAYOUT_MODULES = {
    "max_pool3d": (lambda: nn.MaxPool3d(2), VOLUME),
    "max_pool3d_indices_padded_ceil": (lambda: nn.MaxPool3d(3, 2, 1, ceil_mode=True, return_indices=True), VOLUME),
    "max_pool2d_indices": (lambda: nn.MaxPool2d(2, return_indices=True), IMAGE),
    "avg_pool3d": (lambda: nn.AvgPool3d(3, 2, 1, count_include_pad=False), VOLUME),
    "adaptive_avg_pool2d": (lambda: nn.AdaptiveAvgPool2d((3, 4)), IMAGE),
    "adaptive_avg_pool3d": (lambda: nn.AdaptiveAvgPool3d((2, 3, 4)), VOLUME),
    "adaptive_max_pool3d_indices": (lambda: nn.AdaptiveMaxPool3d((2, 3, 4), return_indices=True), VOLUME),
    "lp_pool3d": (lambda: nn.LPPool3d(2, 2), VOLUME),
    "instance_norm2d": (lambda: nn.InstanceNorm2d(6, affine=True), IMAGE),
    "layer_norm": (lambda: nn.LayerNorm([5, 7]), IMAGE),
    "local_response_norm3d": (lambda: nn.LocalResponseNorm(3), VOLUME),
    "upsample_trilinear": (lambda: nn.Upsample(scale_factor=2, mode="trilinear"), VOLUME),
}


def results_and_input_gradient(module, x, gradient_format, device):
    """The module's results and the input's gradient, driven by a random gradient laid out in ``gradient_format``."""
    leaf = x.detach().to(device).requires_grad_()
    outputs = module.to(device)(leaf)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    gradient = torch.randn(outputs[0].shape, generator=torch.Generator().manual_seed(1))
    gradient = gradient.contiguous(memory_format=gradient_format).to(device)
    return [o.detach() for o in outputs], torch.autograd.grad(outputs[0], leaf, gradient)[0]


def assert_same_layouts_and_values(actual, expected):
    for tpu_tensor, cpu_tensor in zip(actual, expected):
        assert tpu_tensor.stride() == cpu_tensor.stride()
        assert_close(tpu_tensor.cpu(), cpu_tensor)


@pytest.mark.parametrize("name", LAYOUT_MODULES)
@pytest.mark.parametrize("gradient_layout", ["channels_last", "contiguous"])
def test_norm_and_pool_results_are_laid_out_as_cpu_lays_them_for_channels_last_input(name, gradient_layout):
    make_module, shape = LAYOUT_MODULES[name]
    memory_format = CHANNELS_LAST[len(shape)]
    gradient_format = memory_format if gradient_layout == "channels_last" else torch.contiguous_format
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=memory_format)
    module = make_module().double()
    cpu_outputs, cpu_gradient = results_and_input_gradient(module, x, gradient_format, "cpu")
    tpu_outputs, tpu_gradient = results_and_input_gradient(module, x, gradient_format, "tpu")
    assert_same_layouts_and_values([*tpu_outputs, tpu_gradient], [*cpu_outputs, cpu_gradient])


@pytest.mark.parametrize("shape", [IMAGE, VOLUME, (2, 6, 5)], ids=str)
def test_group_norm_lays_out_its_result_and_input_gradient_as_the_input(shape):
    """CPU allocates both in the input's suggested memory format. Through autograd the gradient cannot follow on
    tpu: PyTorch's derivative formula makes the input contiguous before the backward kernel on any device but CPU."""
    memory_format = CHANNELS_LAST.get(len(shape), torch.contiguous_format)
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=memory_format)
    module = nn.GroupNorm(3, 6).double()
    assert_same_layouts_and_values([module.to("tpu")(x.to("tpu"))], [module.cpu()(x)])
    # laid out as the input, as the derivative formula gives it on CPU (CPU's kernel reads it in X's layout)
    gradient = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=memory_format)
    statistics = torch.ops.aten.native_group_norm(x, module.weight, module.bias, shape[0], 6, x[0, 0].numel(), 3, 1e-5)

    def backward(*tensors):
        gradient, x, mean, rstd, weight = tensors
        return torch.ops.aten.native_group_norm_backward(gradient, x, mean, rstd, weight, shape[0], 6, x[0, 0].numel(),
                                                         3, [True, True, True])

    tensors = (gradient, x, statistics[1], statistics[2], module.weight.detach())
    assert_same_layouts_and_values(backward(*(t.to("tpu") for t in tensors)), backward(*tensors))


def test_max_pool3d_restrides_its_outs_to_the_input_layout_as_cpu_does():
    """CPU's 3-d max pooling resizes its ``out=`` tensors (and ``grad_input=``) to the input's memory format,
    whatever their own strides; 2-d adaptive average pooling keeps an ``out=``'s own strides."""
    window = ([2, 2, 2], [2, 2, 2], [0, 0, 0], [1, 1, 1], False)

    def pool_and_gradient(x, out, indices, gradient, grad_input):
        torch.ops.aten.max_pool3d_with_indices.out(x, *window, out=out, indices=indices)
        torch.ops.aten.max_pool3d_with_indices_backward.grad_input(gradient, x, *window, indices, grad_input=grad_input)
        return out, indices, grad_input

    pooled = (2, 6, 2, 2, 3)
    x, gradient = torch.randn(VOLUME).contiguous(memory_format=torch.channels_last_3d), torch.randn(pooled)

    def on(device):  # fresh contiguous outs on each device: CPU's run restrides its own
        return pool_and_gradient(x.to(device), torch.empty(pooled, device=device),
                                 torch.empty(pooled, dtype=torch.int64, device=device), gradient.to(device),
                                 torch.empty(VOLUME, device=device))

    expected = on("cpu")
    assert expected[0].is_contiguous(memory_format=torch.channels_last_3d)
    assert_same_layouts_and_values(on("tpu"), expected)
    image = torch.randn(IMAGE).contiguous(memory_format=torch.channels_last)
    adaptive = check(lambda x, out: torch.ops.aten._adaptive_avg_pool2d.out(x, [3, 4], out=out), image,
                     torch.empty(2, 6, 3, 4))
    assert adaptive.is_contiguous()


def test_max_pool3d_refuses_an_unbatched_channels_last_input_as_cpu_does():
    check_same_error(lambda device: F.max_pool3d(
        torch.ones(6, 4, 5, 6, device=device).contiguous(memory_format=torch.channels_last), 2))


# ------------------------------------------------------------------ dropout


def test_dropout_statistics_and_gradient():
    x = torch.ones(200, 500).to("tpu").requires_grad_()
    out = F.dropout(x, p=0.3)
    values = out.detach().cpu()
    kept = values != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    assert_close(values[kept], torch.full_like(values[kept], 1 / 0.7))
    gradient = torch.randn(200, 500)
    out.backward(gradient.to("tpu"))
    assert_close(x.grad.cpu(), gradient * kept / 0.7)


def test_dropout_is_reproducible_under_manual_seed():
    x = torch.randn(64, 64).to("tpu")
    torch.manual_seed(123)
    first = F.dropout(x, 0.5).cpu()
    second = F.dropout(x, 0.5).cpu()
    torch.manual_seed(123)
    assert torch.equal(F.dropout(x, 0.5).cpu(), first)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("p", [0.5, 0.3])
def test_in_place_dropout_keeps_what_dropout_keeps_under_one_seed_as_on_cpu(dtype, p):
    """tpu's dropout runs native_dropout and its in-place form runs empty_like(x).bernoulli_(1 - p): the two must
    draw one mask from one seed, as CPU's two paths do."""
    def both_paths(device):
        x = torch.randn(9, 13, generator=torch.Generator().manual_seed(0)).to(device, dtype)
        torch.manual_seed(42)
        functional = F.dropout(x, p, training=True)
        torch.manual_seed(42)
        in_place = F.dropout(x.clone(), p, training=True, inplace=True)
        return functional.cpu(), in_place.cpu()

    cpu_functional, cpu_in_place = both_paths("cpu")
    assert torch.equal(cpu_functional, cpu_in_place)  # the oracle: CPU's paths agree
    tpu_functional, tpu_in_place = both_paths("tpu")
    assert torch.equal(tpu_functional != 0, tpu_in_place != 0)
    # the kept values differ only by rounding: x * bf16(1 / (1 - p)) in place, x * (1 / (1 - p)) rounded once
    assert_close(tpu_in_place, tpu_functional)


def test_native_dropout_edge_cases():
    x = torch.randn(10, 10).to("tpu")
    out, mask = torch.native_dropout(x, 0.0, True)
    assert mask.dtype == torch.bool and bool(mask.cpu().all())
    assert_close(out.cpu(), x.cpu())
    out, mask = torch.native_dropout(x, 1.0, True)
    assert not bool(mask.cpu().any()) and bool((out.cpu() == 0).all())
    out, mask = torch.native_dropout(x, 0.5, False)
    assert bool(mask.cpu().all())
    assert_close(out.cpu(), x.cpu())
    for dropout in (nn.Dropout(0.5).eval(), lambda t: F.dropout(t, 0.5, training=False), nn.Dropout(0.0)):
        assert_close(dropout(x).cpu(), x.cpu())
    assert_close(F.dropout(x, 1.0).cpu(), torch.zeros(10, 10))


@pytest.mark.parametrize("dtype, p, train", [
    (torch.float32, 1.5, True), (torch.float32, -0.2, True), (torch.int64, 0.5, True), (torch.bool, 0.5, True),
    (torch.int64, 1.5, True)])
def test_native_dropout_refuses_what_cpu_refuses(dtype, p, train, paused_collector):
    """bernoulli_'s range check of the keep probability, then a float scale of an integral product, in CPU's words;
    nothing left allocated."""
    inputs = {"cpu": torch.tensor([1.0, 2.0, 3.0]).to(dtype)}
    inputs["tpu"] = inputs["cpu"].to("tpu")
    allocated = torch.tpu.memory_allocated()
    check_same_error(lambda device: torch.ops.aten.native_dropout(inputs[device], p, train))
    assert torch.tpu.memory_allocated() == allocated


def test_native_dropout_takes_what_cpu_takes_without_training_or_elements():
    check(lambda x: torch.ops.aten.native_dropout(x, 0.5, False), torch.tensor([1, 2, 3]))
    check(lambda x: torch.ops.aten.native_dropout(x, 1.5, True)[0], torch.empty(0))


F32, BF16, F16, F64 = torch.float32, torch.bfloat16, torch.float16, torch.float64
NORM_FORWARD_DTYPES = [  # (input, weight, bias): CPU takes float32 parameters beside a bf16/fp16 input, no other mix
    (F32, BF16, None), (F32, BF16, F32), (F32, F32, BF16), (F32, None, BF16), (F32, F64, None), (F32, F32, F64),
    (BF16, F32, None), (BF16, None, F32), (BF16, F32, F32), (F16, F32, F32), (BF16, F32, BF16), (BF16, BF16, F32),
    (BF16, F32, F16), (F64, F32, F32), (BF16, F16, F16)]


def _norm_tensor(shape, dtype, device, seed):
    return None if dtype is None else torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(
        device=device, dtype=dtype)


def _same_outcome_as_cpu(call):
    """``call(device)`` raises on tpu as on CPU, or returns results of CPU's dtypes and values."""
    try:
        expected = call("cpu")
    except RuntimeError:
        check_same_error(call)
        return
    actual = call("tpu")
    for got, want in zip(actual, expected):
        assert (got is None) == (want is None)
        if want is not None:
            assert got.dtype == want.dtype
            assert_close(got.cpu(), want, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtypes", NORM_FORWARD_DTYPES, ids=str)
def test_layer_and_group_norm_take_the_parameter_dtypes_cpu_takes(dtypes):
    """Mixed dtypes CPU refuses are refused in its words ("mixed dtype (CPU): ..." where the first parameter differs
    from the input, its kernel's "expected scalar type ..." where a later one does), not computed."""
    x_dtype, w_dtype, b_dtype = dtypes

    def layer_norm(device):
        x = _norm_tensor((3, 4), x_dtype, device, 0)
        return torch.ops.aten.native_layer_norm(x, [4], _norm_tensor(4, w_dtype, device, 1),
                                                _norm_tensor(4, b_dtype, device, 2), 1e-5)

    def group_norm(device):
        x = _norm_tensor((2, 4, 3), x_dtype, device, 0)
        return torch.ops.aten.native_group_norm(x, _norm_tensor(4, w_dtype, device, 1),
                                                _norm_tensor(4, b_dtype, device, 2), 2, 4, 3, 2, 1e-5)

    _same_outcome_as_cpu(layer_norm)
    _same_outcome_as_cpu(group_norm)
    _same_outcome_as_cpu(lambda device: (F.layer_norm(_norm_tensor((3, 4), x_dtype, device, 0), [4],
                                                      _norm_tensor(4, w_dtype, device, 1),
                                                      _norm_tensor(4, b_dtype, device, 2)),))


NORM_BACKWARD_DTYPES = [  # (grad, input, statistics, weight, bias, output mask)
    (F32, F32, F32, BF16, F32, [True] * 3), (F32, F32, F32, F32, BF16, [True] * 3),
    (F32, F32, F32, F32, BF16, [True, True, False]), (BF16, F32, F32, F32, F32, [True] * 3),
    (F32, F32, BF16, F32, F32, [True] * 3), (F32, F32, BF16, F32, F32, [False] * 3),
    (F32, F32, F64, F32, F32, [True] * 3), (BF16, BF16, F32, F32, F32, [True] * 3),
    (BF16, BF16, F32, F32, BF16, [True] * 3), (BF16, BF16, F32, BF16, F32, [True] * 3),
    (BF16, BF16, F32, None, None, [True, False, False]), (BF16, BF16, BF16, None, None, [True, False, False]),
    (BF16, BF16, BF16, F32, F32, [True] * 3), (F32, BF16, F32, F32, F32, [True] * 3),
    (F32, F32, F32, None, F32, [True] * 3), (F32, F32, F32, F32, None, [True] * 3),
    (F32, F32, F32, None, None, [True, False, True]), (F64, F64, F64, F32, F64, [True] * 3),
    (F32, F32, F32, F32, F32, [True] * 3)]


@pytest.mark.parametrize("dtypes", NORM_BACKWARD_DTYPES, ids=str)
def test_layer_and_group_norm_backwards_take_the_dtypes_cpu_takes(dtypes):
    grad_dtype, x_dtype, stats_dtype, w_dtype, b_dtype, mask = dtypes

    def layer_norm(device):
        x = _norm_tensor((3, 4), x_dtype, device, 0)
        mean, rstd = _norm_tensor((3, 1), stats_dtype, device, 3), _norm_tensor((3, 1), stats_dtype, device, 4).abs()
        return torch.ops.aten.native_layer_norm_backward(
            _norm_tensor((3, 4), grad_dtype, device, 5), x, [4], mean, rstd, _norm_tensor(4, w_dtype, device, 1),
            _norm_tensor(4, b_dtype, device, 2), mask)

    def group_norm(device):
        x = _norm_tensor((2, 4, 3), x_dtype, device, 0)
        mean, rstd = _norm_tensor((2, 2), stats_dtype, device, 3), _norm_tensor((2, 2), stats_dtype, device, 4).abs()
        return torch.ops.aten.native_group_norm_backward(
            _norm_tensor((2, 4, 3), grad_dtype, device, 5), x, mean, rstd, _norm_tensor(4, w_dtype, device, 1),
            2, 4, 3, 2, mask)

    _same_outcome_as_cpu(layer_norm)
    _same_outcome_as_cpu(group_norm)


DROPOUT_LAYOUTS = {
    "transposed": lambda device: torch.randn(4, 6, device=device).t(),
    "channels_last": lambda device: torch.randn(2, 3, 4, 5, device=device).to(memory_format=torch.channels_last),
    "channels_last_strided": lambda device: torch.randn(2, 3, 4, 10, device=device).to(
        memory_format=torch.channels_last)[..., ::2],
    "expanded": lambda device: torch.randn(4, 1, device=device).expand(4, 6),
    "strided": lambda device: torch.randn(4, 12, device=device)[:, ::2],
    "size_one_dims_transposed": lambda device: torch.randn(1, 5, 1, device=device).transpose(0, 2),
}


def test_dropout_of_an_empty_input_returns_it_with_a_mask_of_its_dtype_as_cpu_does():
    for device in ("cpu", "tpu"):
        x = torch.randn(0, 3, device=device).t()
        result, mask = torch.ops.aten.native_dropout(x, 0.5, True)
        assert result is x and (mask.dtype, mask.shape, mask.stride()) == (x.dtype, x.shape, (1, 3))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("layout", DROPOUT_LAYOUTS.values(), ids=DROPOUT_LAYOUTS.keys())
def test_dropout_keeps_the_inputs_layout_as_cpu_does(layout, train):
    """CPU's native_dropout makes its result and mask ``empty_like(input)`` (a dense input's own strides, else its
    suggested memory format's); its backward is laid out as the product ``grad * mask``. The values follow the
    rule (kept elements scaled by 1 / (1 - p), dropped ones 0) whatever the layout; the draws differ by device."""
    strides = {}
    for device in ("cpu", "tpu"):
        x = layout(device)
        result, mask = torch.ops.aten.native_dropout(x, 0.3, train)
        gradient = torch.ops.aten.native_dropout_backward(x, mask, 1 / 0.7)
        module = nn.Dropout(0.3).train(train)(x)
        strides[device] = result.stride(), mask.stride(), gradient.stride(), F.dropout(x, 0.3, train).stride(), \
            module.stride()
        expected = torch.where(mask, x * (1 / 0.7 if train else 1), 0).cpu()
        assert_close(result.cpu(), expected, atol=1e-6, rtol=1e-6)
        assert_close(gradient.cpu(), torch.where(mask, x * (1 / 0.7), 0).cpu(), atol=1e-6, rtol=1e-6)
    assert strides["tpu"] == strides["cpu"]


def test_dropout_bf16_backward_rounds_scale_like_cpu():
    grad, mask = torch.randn(50).bfloat16(), torch.rand(50) > 0.3
    expected = torch.ops.aten.native_dropout_backward(grad, mask, 1 / 0.7)
    assert_close(torch.ops.aten.native_dropout_backward(grad.to("tpu"), mask.to("tpu"), 1 / 0.7).cpu(), expected,
                 atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.float64])
def test_dropout_backward_promotes_integer_and_bool_gradients_like_cpu(dtype):
    grad, mask = (torch.randn(6, 5) * 5).to(dtype), torch.rand(6, 5) > 0.3
    expected = torch.ops.aten.native_dropout_backward(grad.t(), mask.t(), 1 / 0.7)
    got = torch.ops.aten.native_dropout_backward(grad.to("tpu").t(), mask.to("tpu").t(), 1 / 0.7)
    assert got.dtype == expected.dtype
    assert_close(got.cpu(), expected, atol=0, rtol=0)


# ------------------------------------------------------------------ losses


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss(reduction, weighted):
    weight = torch.rand(5) if weighted else None
    target = torch.tensor([0, 4, 2, 2, 1, 3])
    on = lambda x: None if weight is None else weight.to(x.device)  # noqa: E731
    check_grads(lambda x: F.nll_loss(x, target.to(x.device), on(x), ignore_index=2, reduction=reduction),
          torch.randn(6, 5))
    spatial_target = torch.randint(0, 5, (2, 3, 4))
    check_grads(lambda x: F.nll_loss(x, spatial_target.to(x.device), on(x), ignore_index=1, reduction=reduction),
          torch.randn(2, 5, 3, 4))
    check_grads(lambda x: F.nll_loss(x, torch.tensor(3).to(x.device), reduction=reduction), torch.randn(5))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_nll_loss_reduction_follows_cpu_cascade_sum_in_the_input_dtype(dtype, reduction):
    """CPU sums the losses and weights in the input's dtype through a cascade of partial sums, so bf16
    rounds at every addition; the tpu must give the same bits."""
    exact = dict(atol=0, rtol=0)
    generator = torch.Generator().manual_seed(0)
    for samples in (8, 300, 700, 5000):  # below and above cascade_sum.FOLD_LIMIT
        x = (torch.randn(samples, 7, generator=generator) * 4).to(dtype)
        target = torch.randint(0, 7, (samples,), generator=generator)
        weight = (torch.rand(7, generator=generator) * 9 - 3).to(dtype)
        for w in (None, weight):
            differential.check(lambda t, *rest: F.nll_loss(t, target.to(t.device), *rest, ignore_index=2, reduction=reduction),
                  x, *([] if w is None else [w]), **exact)
    spatial = (torch.randn(2, 5, 9, 3, generator=generator) * 4).to(dtype).permute(0, 3, 2, 1)
    spatial_target = torch.randint(0, 3, (2, 9, 5), generator=generator)
    differential.check(lambda t, w: F.nll_loss(t, spatial_target.to(t.device), w, ignore_index=1, reduction=reduction),
          spatial, weight[:3], **exact)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16])
def test_cascade_sum_fold_equals_the_vectorised_replay(dtype, monkeypatch):
    """Small sums take a scalar fold of the cascade; it must give the replay's bits, specials and signed zeros included."""
    rng = np.random.default_rng(0)
    dtype = np.dtype(dtype)
    for trial in range(150):
        n = int(rng.integers(0, 600))
        values = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4)
        if trial % 5 == 0 and n:
            values[rng.integers(0, n)] = [np.inf, -np.inf, np.nan, -0.0, 0.0][trial // 5 % 5]
        if trial % 7 == 0:
            values = np.full(n, -0.0)
        values = values.astype(dtype)
        counted = rng.random(n) < [1.0, 0.5, 0.05][trial % 3]
        with np.errstate(all="ignore"):
            monkeypatch.setattr(cascade_sum, "FOLD_LIMIT", n)
            folded = cascade_sum.cascade_sum(values, counted, dtype)
            monkeypatch.setattr(cascade_sum, "FOLD_LIMIT", -1)
            replayed = cascade_sum.cascade_sum(values, counted, dtype)
        assert type(folded) is type(replayed)
        assert np.asarray(folded).tobytes() == np.asarray(replayed).tobytes(), (n, trial)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, ml_dtypes.bfloat16])
def test_cascade_sum_with_every_sample_counted_equals_the_fold_and_the_general_replay(dtype, monkeypatch):
    """With no ignored target the replay groups each level's inputs by reshaping (runs of 16); it must give
    the fold's and the general replay's bits, across level boundaries (16, 256, 4096 samples), specials and
    signed zeros included."""
    rng = np.random.default_rng(1)
    dtype = np.dtype(dtype)
    sizes = [33, 34, 47, 48, 49, 255, 256, 257, 272, 273, 511, 4095, 4096, 4097, 4113, 70_000]
    for trial, n in enumerate(sizes + [int(rng.integers(33, 3000)) for _ in range(40)]):
        values = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4)
        if trial % 4 == 0:
            values[rng.integers(0, n)] = [np.inf, -np.inf, np.nan, -0.0][trial // 4 % 4]
        if trial % 9 == 0:
            values = np.full(n, -0.0)
        values = values.astype(dtype)
        counted = np.ones(n, bool)
        level_power = max(4, (n - 1).bit_length() // cascade_sum.CASCADE_LEVELS)
        with np.errstate(all="ignore"):
            regular = cascade_sum.cascade_sum(values, counted, dtype)
            folded = cascade_sum._fold(values, np.arange(n), level_power, dtype)
            monkeypatch.setattr(cascade_sum, "ALL_COUNTED_MIN", n)
            monkeypatch.setattr(cascade_sum, "FOLD_LIMIT", -1)
            replayed = cascade_sum.cascade_sum(values, counted, dtype)
            monkeypatch.undo()
        assert type(regular) is type(folded) is type(replayed)
        assert np.asarray(regular).tobytes() == np.asarray(folded).tobytes() == np.asarray(replayed).tobytes(), (n, trial)


def test_nll_loss_all_ignored_mean_is_nan_like_cpu():
    check_grads(lambda x: F.nll_loss(x, torch.tensor([1, 1]).to(x.device), ignore_index=1), torch.randn(2, 3))


@pytest.mark.parametrize("bad_target", [5, -3])
def test_nll_loss_target_out_of_range_raises_like_cpu(bad_target):
    target = torch.tensor([0, bad_target])
    with pytest.raises(IndexError, match="out of bounds"):
        F.nll_loss(torch.randn(2, 5), target)
    with pytest.raises(IndexError, match="out of bounds"):
        F.nll_loss(torch.randn(2, 5).to("tpu"), target.to("tpu"))


def test_nll_loss2d_shape_mismatch_raises():
    with pytest.raises(RuntimeError):
        torch.ops.aten.nll_loss2d_forward(
            torch.randn(2, 3, 4, 4).to("tpu"), torch.zeros(2, 4, 5, dtype=torch.long).to("tpu"), None, 1, -100
        )


def test_cross_entropy_module_ignore_index_and_label_smoothing():
    target = torch.tensor([1, 0, 3, 3, 2])
    for kwargs in (dict(), dict(ignore_index=3), dict(label_smoothing=0.2), dict(ignore_index=3, label_smoothing=0.1),
                   dict(weight=torch.rand(4), label_smoothing=0.1), dict(reduction="sum")):
        loss = nn.CrossEntropyLoss(**kwargs)
        tpu_loss = nn.CrossEntropyLoss(**kwargs).to("tpu")
        x = torch.randn(5, 4)
        expected = loss(x.requires_grad_(), target)
        x_tpu = x.detach().to("tpu").requires_grad_()
        got = tpu_loss(x_tpu, target.to("tpu"))
        assert_close(got.cpu(), expected.detach())
        expected.backward()
        got.backward()
        assert_close(x_tpu.grad.cpu(), x.grad)


def test_cross_entropy_probability_targets_and_spatial():
    probabilities = torch.rand(3, 5).softmax(-1)
    check_grads(lambda x: F.cross_entropy(x, probabilities.to(x.device), label_smoothing=0.1), torch.randn(3, 5))
    spatial = torch.randint(0, 4, (2, 3, 3))
    check_grads(lambda x: F.cross_entropy(x, spatial.to(x.device), ignore_index=0), torch.randn(2, 4, 3, 3))


def test_cross_entropy_bf16():
    target = torch.tensor([1, 0, 2])
    check_grads(lambda x: F.cross_entropy(x, target.to(x.device)), torch.randn(3, 4).bfloat16(), **BF16_TOLERANCE)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_regression_losses(reduction):
    x, y = torch.randn(4, 6) * 2, torch.randn(4, 6) * 2
    check_grads(lambda a, b: F.mse_loss(a, b, reduction=reduction), x, y)
    for beta in (0.0, 0.5, 1.0):
        check_grads(lambda a, b: F.smooth_l1_loss(a, b, reduction=reduction, beta=beta), x, y)
    for delta in (0.5, 2.0):
        check_grads(lambda a, b: F.huber_loss(a, b, reduction=reduction, delta=delta), x, y)


def test_regression_losses_non_contiguous_and_bf16():
    x, y = torch.randn(5, 4).t(), torch.randn(4, 5)
    check_grads(lambda a, b: F.mse_loss(a, b), x, y)
    check_grads(lambda a, b: F.smooth_l1_loss(a, b), x.bfloat16(), y.bfloat16(), **BF16_TOLERANCE)


SIXTEEN_BIT_LOSSES = {
    "mse": lambda a, b, reduction: F.mse_loss(a, b, reduction=reduction),
    "smooth_l1": lambda a, b, reduction: F.smooth_l1_loss(a, b, reduction=reduction, beta=0.7),
    "huber": lambda a, b, reduction: F.huber_loss(a, b, reduction=reduction, delta=0.7),
    "bce": lambda a, b, reduction: F.binary_cross_entropy(a.sigmoid(), b.sigmoid(), reduction=reduction),
    "bce_weight": lambda a, b, reduction: F.binary_cross_entropy(
        a.sigmoid(), b.sigmoid(), weight=torch.linspace(0.5, 2, 16, dtype=a.dtype, device=a.device), reduction=reduction),
}


@pytest.mark.parametrize("loss", SIXTEEN_BIT_LOSSES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_losses_of_16_bit_floats_and_their_gradients_have_cpus_bits(loss, dtype, reduction):
    """Most of CPU's 16-bit loss loops round after each operation (mse, bf16 huber, fp16 smooth_l1 forward; mse,
    huber and bce backward) and some convert to float once: rounded once everywhere, a sixth to a half of the
    bf16 losses or gradients were one ulp off CPU's."""
    x, y = (torch.randn(4, 16) * 2).to(dtype), torch.randn(4, 16).to(dtype)
    results = []
    for device in ("cpu", "tpu"):
        a = x.clone().to(device).requires_grad_()
        value = SIXTEEN_BIT_LOSSES[loss](a, y.to(device), reduction)
        value.backward(torch.linspace(-2, 3, value.numel()).view(value.shape).to(dtype).to(device))
        results.append((value.detach().cpu(), a.grad.cpu()))
    (cpu_value, cpu_grad), (tpu_value, tpu_grad) = results
    assert torch.equal(tpu_value, cpu_value) and torch.equal(tpu_grad, cpu_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("reduction", [0, 1, 2])  # none, mean, sum
@pytest.mark.parametrize("transposed", [False, True])
def test_huber_loss_backward_has_cpus_bits_in_its_vector_lanes_and_scalar_tail(dtype, reduction, transposed):
    """CPU's vector loop scales by ``norm * (+-delta)`` then the gradient (delta in the dtype); its scalar tail (the
    last ``148 % width`` elements of its contiguous result) multiplies ``norm * grad`` by the double delta and rounds
    once, comparing with the double delta too. One order everywhere, a mean's outer elements and the tail were an ulp
    off."""
    generator = torch.Generator().manual_seed(0)
    x, y, grad = (torch.randn(4, 37, generator=generator) * scale for scale in (2, 1, 3))
    if transposed:
        x, y, grad = (v.t().contiguous().t() for v in (x, y, grad))
    grad = grad.to(dtype) if reduction == 0 else torch.tensor(1.3, dtype=dtype)
    x, y = x.to(dtype), y.to(dtype)
    for delta in (0.7, 0.1):
        expected = torch.ops.aten.huber_loss_backward(grad, x, y, reduction, delta)
        result = torch.ops.aten.huber_loss_backward(grad.to("tpu"), x.to("tpu"), y.to("tpu"), reduction, delta)
        assert torch.equal(result.cpu(), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("loss", [F.mse_loss, F.smooth_l1_loss, F.huber_loss], ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape", [(4, 37), (200, 500)])
def test_the_mean_of_a_float_loss_is_cpus_sum_order_bit_for_bit(dtype, loss, shape):
    """CPU's mean of the elementwise loss is its sum kernel's (``reduction.mean_array``); NumPy's pairwise mean gave
    other bits for about half of the float32 mse losses."""
    for seed in range(6):
        generator = torch.Generator().manual_seed(seed)
        x, y = (torch.randn(shape, generator=generator, dtype=dtype) for _ in range(2))
        assert torch.equal(loss(x.to("tpu"), y.to("tpu")).cpu(), loss(x, y))


BCE_WEIGHTS = {
    "none": lambda dtype: None,
    "elementwise": lambda dtype: torch.linspace(0.5, 2, 300).to(dtype),
    "0d_float32": lambda dtype: torch.tensor(0.3),
}


@pytest.mark.parametrize("weight", BCE_WEIGHTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_binary_cross_entropy_has_cpus_bits(weight, dtype, reduction):
    """CPU's loop over 16-bit scalars rounds every operation of the loss (a third of the bf16 losses were an ulp
    off when rounded once), and its backward divides by the element count last, after the weight. The float32
    and float64 losses differ only where glibc's scalar log/log1p does from the correctly rounded one (within an
    ulp, docs/numerics.md)."""
    probabilities = torch.rand(300, generator=torch.Generator().manual_seed(1)).clamp(0.01, 0.99).to(dtype)
    probabilities[:2] = torch.tensor([0.0, 1.0])  # log clamp at -100
    target = torch.rand(300, generator=torch.Generator().manual_seed(2)).to(dtype)
    results = []
    for device in ("cpu", "tpu"):
        p = probabilities.clone().to(device).requires_grad_()
        w = BCE_WEIGHTS[weight](dtype)
        loss = F.binary_cross_entropy(p, target.to(device), None if w is None else w.to(device), reduction=reduction)
        loss.backward(torch.linspace(-2, 3, loss.numel()).view(loss.shape).to(dtype).to(device))
        results.append((loss.detach().cpu(), p.grad.cpu()))
    (cpu_loss, cpu_grad), (tpu_loss, tpu_grad) = results
    assert torch.equal(tpu_grad, cpu_grad)
    if dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(tpu_loss, cpu_loss)
    else:
        torch.testing.assert_close(tpu_loss, cpu_loss, rtol=2 * torch.finfo(dtype).eps, atol=0)


MSE_BACKWARD_MIXED_OPERANDS = {  # (grad_output, self, target): CPU rounds in their common dtype, 0-d tensors weak
    "bf16_self_float32_target": (torch.tensor(1.5), torch.randn(8, 16).bfloat16(), torch.randn(8, 16)),
    "float32_self_bf16_target": (torch.tensor(1.5), torch.randn(8, 16), torch.randn(8, 16).bfloat16()),
    "bf16_operands_0d_float32_grad": (torch.tensor(1.3), torch.randn(8, 16).bfloat16(), torch.randn(8, 16).bfloat16()),
    "fp16_operands_0d_float64_grad": (torch.tensor(1.3, dtype=torch.float64), torch.randn(8, 16).half(),
                                      torch.randn(8, 16).half()),
    "bf16_self_0d_float32_target": (torch.tensor(0.7).bfloat16(), torch.randn(8, 16).bfloat16(), torch.tensor(1.1)),
    "empty_bf16": (torch.tensor(1.5).bfloat16(), torch.randn(0, 3).bfloat16(), torch.randn(0, 3).bfloat16()),
    "empty_fp16": (torch.tensor(1.5).half(), torch.randn(0).half(), torch.randn(0).half()),
}


@pytest.mark.parametrize("reduction", [0, 1, 2], ids=["none", "mean", "sum"])
@pytest.mark.parametrize("operands", MSE_BACKWARD_MIXED_OPERANDS)
def test_mse_loss_backward_of_mixed_dtypes_rounds_in_the_common_dtype_as_cpu(operands, reduction):
    """tpu replayed CPU's bf16/fp16 rounding only by self's dtype (wrong bits for a bf16 input against a float32
    target, an unrounded float32 0-d grad), and a mean over an empty 16-bit input raised ZeroDivisionError."""
    grad, x, target = MSE_BACKWARD_MIXED_OPERANDS[operands]
    expected = torch.ops.aten.mse_loss_backward(grad, x, target, reduction)
    got = torch.ops.aten.mse_loss_backward(grad.to("tpu"), x.to("tpu"), target.to("tpu"), reduction).cpu()
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert torch.equal(got, expected)


def test_smooth_l1_gradient_at_zero_with_beta_zero():
    x = torch.zeros(3)
    check_grads(lambda a, b: F.smooth_l1_loss(a, b, beta=0.0, reduction="none"), x, torch.tensor([0.0, 1.0, -1.0]))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_binary_cross_entropy(reduction):
    probabilities = torch.rand(4, 5)
    probabilities[0, 0], probabilities[1, 1] = 0.0, 1.0  # log clamp at -100
    weight = torch.rand(4, 5)
    check_grads(lambda p, t: F.binary_cross_entropy(p, t, weight.to(p.device), reduction=reduction),
          probabilities, torch.rand(4, 5))
    check_grads(lambda p, t: F.binary_cross_entropy(p, t, reduction=reduction), torch.rand(7), torch.rand(7))


def test_binary_cross_entropy_rejects_values_outside_unit_interval():
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(torch.tensor([0.5, 1.5]).to("tpu"), torch.tensor([0.0, 1.0]).to("tpu"))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_binary_cross_entropy_with_logits(reduction):
    logits, target = torch.randn(4, 5) * 10, torch.rand(4, 5)
    check_grads(lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction=reduction), logits, target)
    weight, pos_weight = torch.rand(5), torch.rand(5) * 3
    check_grads(lambda x, t: F.binary_cross_entropy_with_logits(
        x, t, weight.to(x.device), pos_weight=pos_weight.to(x.device), reduction=reduction), logits, target)


def test_binary_cross_entropy_with_logits_bf16_rounds_each_step_like_cpu():
    """CPU builds the loss from bf16 ops (log_sigmoid, (1 - t) * x, the difference, the weighting), each
    rounding to bf16."""
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(5, 6, generator=generator) * 6).bfloat16().t()
    target = torch.rand(6, 5, generator=generator).bfloat16()
    weight = (torch.randn(5, generator=generator) * 5).bfloat16()
    exact = dict(atol=0, rtol=0)
    differential.check(lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction="none"), logits, target,
          **exact)
    differential.check(lambda x, t, w: F.binary_cross_entropy_with_logits(x, t, w, pos_weight=w.abs(), reduction="none"),
          logits, target, weight, **exact)
    check_grads(lambda x, t: F.binary_cross_entropy_with_logits(x, t, weight.to(x.device)), logits, target,
          **BF16_TOLERANCE)


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div(reduction, log_target):
    target = torch.rand(3, 4).softmax(-1)
    target = target.log() if log_target else target
    check_grads(lambda x, t: F.kl_div(x, t, reduction=reduction, log_target=log_target),
          torch.randn(3, 4).log_softmax(-1), target)


# ------------------------------------------------------------------ attention


def _qkv(batch=2, heads=4, kv_heads=None, length=5, source=6, dim=8):
    kv_heads = kv_heads or heads
    return (torch.randn(batch, heads, length, dim), torch.randn(batch, kv_heads, source, dim),
            torch.randn(batch, kv_heads, source, dim))


@pytest.mark.parametrize("kwargs", [dict(), dict(is_causal=True), dict(scale=0.3)])
def test_scaled_dot_product_attention(kwargs):
    q, k, v = _qkv(length=6)
    check_grads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kwargs), q, k, v)


def test_scaled_dot_product_attention_masks():
    q, k, v = _qkv()
    boolean = torch.rand(5, 6) > 0.3
    boolean[:, 0] = True
    additive = torch.randn(2, 1, 5, 6)
    check_grads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=boolean.to(q.device)), q, k, v)
    check_grads(lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), q, k, v, additive)


def test_scaled_dot_product_attention_fully_masked_row_gives_zeros():
    q, k, v = _qkv()
    mask = torch.ones(5, 6, dtype=torch.bool)
    mask[2] = False
    out = check_grads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.device)), q, k, v)[0]
    assert torch.equal(out[:, :, 2].cpu(), torch.zeros(2, 4, 8))


def test_scaled_dot_product_attention_gqa_and_bf16():
    q, k, v = _qkv(heads=4, kv_heads=2)
    check_grads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True, is_causal=True), q, k, v)
    check_grads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), *(t.bfloat16() for t in _qkv()),
          **BF16_TOLERANCE)


def test_scaled_dot_product_attention_dropout():
    q, k, v = (t.to("tpu").requires_grad_() for t in _qkv())
    torch.manual_seed(7)
    first = F.scaled_dot_product_attention(q, k, v, dropout_p=0.4)
    torch.manual_seed(7)
    second = F.scaled_dot_product_attention(q, k, v, dropout_p=0.4)
    assert torch.equal(first.detach().cpu(), second.detach().cpu())
    no_dropout = F.scaled_dot_product_attention(q, k, v).detach().cpu()
    assert not torch.allclose(first.detach().cpu(), no_dropout)
    first.backward(torch.randn(first.shape).to("tpu"))
    assert all(bool(t.grad.cpu().isfinite().all()) for t in (q, k, v))


def test_multihead_attention_module():
    cpu_module = nn.MultiheadAttention(8, 2)
    tpu_module = nn.MultiheadAttention(8, 2).to("tpu")
    tpu_module.load_state_dict({name: value.to("tpu") for name, value in cpu_module.state_dict().items()})
    query, key = torch.randn(5, 3, 8), torch.randn(7, 3, 8)
    expected, expected_weights = cpu_module(query, key, key)
    got, got_weights = tpu_module(query.to("tpu"), key.to("tpu"), key.to("tpu"))
    assert_close(got.cpu(), expected.detach(), atol=1e-5, rtol=1e-4)
    assert_close(got_weights.cpu(), expected_weights.detach(), atol=1e-5, rtol=1e-4)
    gradient = torch.randn(5, 3, 8)
    expected.backward(gradient)
    got.backward(gradient.to("tpu"))
    assert_close(tpu_module.in_proj_weight.grad.cpu(), cpu_module.in_proj_weight.grad, atol=1e-4, rtol=1e-4)


MIXED_LOSSES = {
    "mse": torch.nn.functional.mse_loss, "smooth_l1": torch.nn.functional.smooth_l1_loss,
    "l1": torch.nn.functional.l1_loss, "huber": torch.nn.functional.huber_loss,
}


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("loss", MIXED_LOSSES)
def test_losses_of_a_low_precision_prediction_against_a_float32_target(loss, dtype, reduction):
    """Mixed precision's commonest loss call: CPU promotes (mse, smooth L1, L1 give a float32 loss from a bf16
    prediction) or keeps the input's dtype (huber); tpu refused the promoted result before."""
    prediction = torch.tensor([0.5, 1.5, -2.0, 7.0]).to(dtype)
    target = torch.tensor([1.0, 2.0, 3.0, 0.25])
    check(lambda x, t: MIXED_LOSSES[loss](x, t, reduction=reduction), prediction, target)
    if loss != "huber":  # CPU's huber backward refuses mixed dtypes
        check_grads(lambda x: MIXED_LOSSES[loss](x, target.to(x.device), reduction=reduction), prediction)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int64, torch.bool], ids=str)
@pytest.mark.parametrize("call", [
    lambda x: torch.nn.functional.mse_loss(x, x), lambda x: torch.nn.functional.smooth_l1_loss(x, x),
    lambda x: torch.nn.functional.huber_loss(x, x),
    lambda x: torch.nn.functional.huber_loss(x, torch.ones(x.shape, device=x.device)),
    lambda x: torch.nn.functional.nll_loss(x.reshape(2, 2), torch.tensor([0, 1], device=x.device)),
    lambda x: torch.nn.functional.nll_loss(x.reshape(1, 2, 2, 1), torch.zeros(1, 2, 1, dtype=torch.long,
                                                                               device=x.device)),
], ids=["mse", "smooth_l1", "huber", "huber_float_target", "nll", "nll2d"])
def test_losses_refuse_what_cpu_refuses(call, dtype):
    check_same_error(lambda device: call(torch.ones(4, device=device).to(dtype)))


def test_threshold_in_place_writes_an_expanded_tensor_as_cpu_does():
    # idempotent, so CPU's iterator skips the overlap check that refuses other in-place ops here
    check(lambda x: torch.nn.functional.threshold_(x.expand(6, 6), 0.5, -1.0), torch.randn(1, 6))


def test_leaky_relu_in_place_with_a_negative_slope_refuses_its_backward_as_cpu_does():
    check_same_error(lambda d: torch.nn.functional.leaky_relu_(
        torch.tensor([-1.0, 1.0], device=d, requires_grad=True).clone(), -2).backward(torch.ones(2, device=d)))


# ------------------------------------------------------------------ lazy modules


LAZY_MODULES = [  # (constructor, an input that materializes it)
    (lambda: nn.LazyLinear(4), (2, 5)),
    (lambda: nn.LazyConv1d(4, 3), (2, 3, 8)),
    (lambda: nn.LazyConvTranspose2d(4, 3), (1, 2, 4, 4)),
    (lambda: nn.LazyBatchNorm1d(), (4, 3)),
]


@pytest.mark.parametrize("make, input_shape", LAZY_MODULES, ids=lambda v: "" if callable(v) else str(v))
def test_lazy_modules_move_to_tpu_before_their_first_forward(make, input_shape):
    """``module.to("tpu")`` copies a lazy module's UninitializedParameters, whose ``shape`` refuses to answer;
    the module then materializes on tpu at its first forward, with CPU's shapes and, given CPU's weights, values."""
    lazy, reference = make().to("tpu"), make()
    x = torch.randn(input_shape)
    lazy(x.to("tpu")), reference(x)  # materialize both
    assert all(p.device.type == "tpu" for p in lazy.parameters())
    lazy.load_state_dict(reference.state_dict())
    assert_close(lazy(x.to("tpu")).cpu(), reference(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make, input_shape", LAZY_MODULES, ids=lambda v: "" if callable(v) else str(v))
def test_lazy_modules_change_dtype_on_tpu_before_their_first_forward(make, input_shape):
    """``lazy.to("tpu").double()`` copies the UninitializedParameters again, now from tpu to tpu; they are empty,
    and CPU's copy returns before it reads an empty source (test_modules.py's test_grad of the lazy modules)."""
    lazy, reference = make().to("tpu").double(), make().double()
    x = torch.randn(input_shape, dtype=torch.float64)
    lazy(x.to("tpu")), reference(x)
    assert [(p.device.type, p.dtype) for p in lazy.parameters()] == [("tpu", torch.float64)] * len(list(reference.parameters()))
    lazy.load_state_dict(reference.state_dict())
    assert_close(lazy(x.to("tpu")).cpu(), reference(x))


@pytest.mark.parametrize("pool, shape", [(F.adaptive_max_pool2d, (1, 2, 4, 4)), (F.adaptive_max_pool3d, (1, 2, 3, 4, 4))])
def test_adaptive_max_pools_refuse_integers_and_take_empty_outputs_as_cpu_does(pool, shape):
    """CPU's adaptive max pools are compiled for floating types only (fixed-window max pools take integers), and
    an output size of 0 gives empty values and indices (tpu's kernel crashed on it)."""
    check_same_error(lambda device: pool(torch.arange(math.prod(shape), device=device).reshape(shape), 2))
    empty_size = (0,) + (2,) * (len(shape) - 3)
    check(lambda x: pool(x, empty_size, return_indices=True), torch.randn(shape))


def test_norms_check_parameter_dtypes_of_empty_inputs_as_cpu_does():
    """CPU's layer and group norm refuse a parameter dtype mix even with nothing to normalize."""
    for shape in ((0, 5), (2, 0, 5)):
        check_same_error(lambda d: torch.native_layer_norm(
            torch.randn(shape, dtype=torch.bfloat16).to(d), [5], torch.ones(5, dtype=torch.bfloat16, device=d),
            torch.zeros(5, device=d), 1e-5))
    check_same_error(lambda d: torch.native_group_norm(
        torch.randn(0, 4, 3, dtype=torch.bfloat16).to(d), torch.ones(4, dtype=torch.bfloat16, device=d),
        torch.zeros(4, device=d), 0, 4, 3, 2, 1e-5))


@pytest.mark.parametrize("training", [True, False])
def test_float64_batch_norm_computes_in_double(training):
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mean, var = torch.randn(6, dtype=torch.float64), torch.rand(6, dtype=torch.float64) + 0.5
    expected = torch.native_batch_norm(x, None, None, mean.clone(), var.clone(), training, 0.1, 1e-5)[0]
    actual = torch.native_batch_norm(x.to("tpu"), None, None, mean.to("tpu"), var.to("tpu"), training, 0.1, 1e-5)[0]
    torch.testing.assert_close(actual.cpu(), expected, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backward", [torch.ops.aten._softmax_backward_data, torch.ops.aten._log_softmax_backward_data])
@pytest.mark.parametrize("dim", [0, 1])
def test_softmax_backwards_refuse_integers_as_cpu_does(backward, dim):
    check_same_error(lambda d: backward(torch.ones(2, 3, dtype=torch.int64, device=d),
                                        torch.ones(2, 3, dtype=torch.int64, device=d), dim, torch.int64))


@pytest.mark.parametrize("double", ["grad_output", "total_weight", "weight"])
def test_nll_loss_refuses_operands_of_another_dtype_as_cpu_does(double):
    def call(d):
        dtype_of = lambda name: torch.float64 if name == double else torch.float32  # noqa: E731
        scores, target = torch.randn(4, 3, device=d), torch.tensor([0, 1, 2, 0], device=d)
        weight = torch.ones(3, dtype=dtype_of("weight"), device=d)
        return torch.ops.aten.nll_loss_backward(torch.tensor(1.0, dtype=dtype_of("grad_output"), device=d), scores,
                                                target, weight, 1, -100,
                                                torch.tensor(4.0, dtype=dtype_of("total_weight"), device=d))
    check_same_error(call)
    if double == "weight":
        check_same_error(lambda d: torch.ops.aten.nll_loss_forward(
            torch.randn(4, 3, device=d), torch.tensor([0, 1, 2, 0], device=d),
            torch.ones(3, dtype=torch.float64, device=d), 1, -100))


@pytest.mark.parametrize("input_dtype,parameter_dtype,statistics_dtype", [
    (torch.float32, torch.bfloat16, torch.float32), (torch.float32, torch.float64, torch.float32),
    (torch.float32, torch.float32, torch.bfloat16), (torch.bfloat16, torch.float32, torch.bfloat16),
    (torch.bfloat16, torch.float64, torch.float64)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_refuses_the_parameter_dtypes_cpu_refuses(input_dtype, parameter_dtype, statistics_dtype, training):
    check_same_error(lambda d: F.batch_norm(
        torch.randn(4, 3, 5, dtype=input_dtype).to(d), torch.zeros(3, dtype=statistics_dtype, device=d),
        torch.ones(3, dtype=statistics_dtype, device=d), torch.ones(3, dtype=parameter_dtype, device=d),
        torch.zeros(3, dtype=parameter_dtype, device=d), training))


@pytest.mark.parametrize("shape,axis", [((64, 4, 16), 2), ((16, 4, 16, 16), 3), ((300, 32), 1), ((300, 33), 1),
                                        ((8, 16), 1), ((64, 4, 16), 1), ((200, 1), 1), ((40,), 0)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_maxima_are_numpys_maxima(shape, axis, dtype):
    """``_common.row_maxima`` (the shift of softmax and attention's scores) takes many short rows' maxima along the
    first axis of a transposed copy: NumPy's maxima, NaN and -inf rows included, a transposed input too; where
    +0.0 and -0.0 tie either may come back."""
    from torch_tpu.ops._common import row_maxima

    generator = np.random.default_rng(0)
    x = generator.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[::7], flat[5:6], flat[11:13] = -np.inf, np.nan, [0.0, -0.0]
    if x.ndim > 1:
        x[(0,) * (x.ndim - 1)] = -np.inf  # a row that sees no key
    for array in (x, np.swapaxes(x, 0, -1).copy().swapaxes(0, -1)):  # contiguous and transposed
        got, want = row_maxima(array, axis), np.max(array, axis=axis, keepdims=True)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)  # NaN where NaN; +0.0 == -0.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_mse_loss_backward_scales_in_cpus_order(dtype):
    """CPU computes ``(2 / numel) * (x - t) * grad``; tpu scaled grad by 1 / numel and (x - t) by 2, which gave other
    bits in about half the elements under a non-unit upstream gradient, and inf where 2 * (x - t) overflows."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(500, dtype=dtype, generator=generator) * 10 ** torch.randint(-5, 5, (500,), generator=generator)
    x[0] = torch.finfo(dtype).max * 0.9
    target, upstream = torch.randn(500, dtype=dtype, generator=generator), torch.tensor(1.7, dtype=dtype)

    def gradient(device):
        leaf = x.to(device, copy=True).requires_grad_()
        F.mse_loss(leaf, target.to(device)).backward(upstream.to(device))
        return leaf.grad.cpu()

    cpu, tpu = gradient("cpu"), gradient("tpu")
    assert torch.isfinite(cpu[0]) and torch.equal(tpu, cpu)
