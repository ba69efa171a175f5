"""The roofline clock: per-kernel costs against hand calculation, streams and events."""

import pytest
import torch

import torch_tpu
from torch_tpu import _C, _cost
from torch_tpu._C.clock import LAUNCH_OVERHEAD_SECONDS, kernel_seconds

IRONWOOD = _C.CHIPS["ironwood"]
clock = _C.current_chip().clock


def cost_of(name, *args, result, **kwargs):
    return _cost.kernel_cost(name, args, kwargs, result)


def elapsed_seconds(fn):
    """Simulated seconds ``fn`` adds to the current stream, measured with timing events."""
    start, end = torch.tpu.Event(enable_timing=True), torch.tpu.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    return start.elapsed_time(end) / 1e3


def test_chip_under_test_is_ironwood():
    assert clock.spec is IRONWOOD


def test_bf16_4096_matmul_is_compute_bound_at_peak():
    a = torch.empty(4096, 4096, dtype=torch.bfloat16, device="tpu")
    out = torch.empty(4096, 4096, dtype=torch.bfloat16, device="tpu")
    cost = cost_of("mm", a, a, result=out)
    assert cost.mxu_flops == {"bfloat16": 2 * 4096**3}
    assert cost.bytes_read == 2 * 4096 * 4096 * 2 and cost.bytes_written == 4096 * 4096 * 2
    assert kernel_seconds(cost, IRONWOOD) == pytest.approx(2 * 4096**3 / 2307e12 + LAUNCH_OVERHEAD_SECONDS, rel=1e-12)


def test_large_elementwise_add_is_hbm_bound():
    n = 1 << 22
    a, b = torch.ones(n, device="tpu"), torch.ones(n, device="tpu")
    seconds = elapsed_seconds(lambda: a + b)
    assert seconds == pytest.approx(3 * 4 * n / 7.38e12 + LAUNCH_OVERHEAD_SECONDS, rel=1e-9)


def test_float32_matmul_is_charged_by_bf16_passes():
    a = torch.empty(512, 512, device="tpu")
    passes = {"highest": 6, "high": 3, "medium": 1}
    previous = torch.get_float32_matmul_precision()
    try:
        for precision, count in passes.items():
            torch.set_float32_matmul_precision(precision)
            cost = cost_of("mm", a, a, result=a)
            assert kernel_seconds(cost, IRONWOOD) == pytest.approx(
                max(2 * 512**3 * count / 2307e12, 3 * 512 * 512 * 4 / 7.38e12) + LAUNCH_OVERHEAD_SECONDS)
    finally:
        torch.set_float32_matmul_precision(previous)


def test_batched_and_fp8_matmul_flops():
    lhs = torch.empty(3, 64, 32, dtype=torch.bfloat16, device="tpu")
    rhs = torch.empty(3, 32, 16, dtype=torch.bfloat16, device="tpu")
    assert cost_of("bmm", lhs, rhs, result=rhs).mxu_flops == {"bfloat16": 2 * 3 * 64 * 32 * 16}
    fp8 = torch.empty(64, 32, dtype=torch.float8_e4m3fn, device="tpu")
    cost = cost_of("_scaled_mm", fp8, fp8.t(), result=lhs)
    assert cost.mxu_flops == {"float8_e4m3fn": 2 * 64 * 32 * 64}
    assert _C.clock.compute_seconds(cost, IRONWOOD) == pytest.approx(2 * 64 * 32 * 64 / 4614e12)


def test_convolution_flops_match_hand_count():
    x = torch.randn(2, 3, 10, 10, device="tpu")
    w = torch.randn(8, 3, 3, 3, device="tpu")
    with torch_tpu_profile() as records:
        torch.nn.functional.conv2d(x, w)
    conv = [r.cost for r in records if r.cost.name.startswith("convolution")]
    assert len(conv) == 1
    assert conv[0].flops == 2 * (2 * 8 * 8 * 8) * (3 * 3 * 3)


def test_traffic_of_in_place_write_only_and_host_copies():
    x = torch.ones(1000, device="tpu")
    add_ = cost_of("add_.Tensor", x, x, result=x)
    assert (add_.bytes_read, add_.bytes_written) == (8000, 4000)
    fill = cost_of("fill_.Scalar", x, 1.0, result=x)
    assert (fill.bytes_read, fill.bytes_written) == (0, 4000)
    upload = cost_of("_copy_from", torch.ones(1000), x, result=x)
    assert (upload.bytes_read, upload.bytes_written) == (0, 4000)
    download = cost_of("_copy_from", x, torch.ones(1000), result=None)
    assert (download.bytes_read, download.bytes_written) == (4000, 0)


def test_output_arguments_of_out_overloads_are_written_not_read():
    # structured out= overloads name their outputs ``values``/``indices``, ``output``/``total_weight``:
    # like ``out``, the launch writes them and never reads them
    x = torch.randn(64, 1000, device="tpu")
    target = torch.randint(0, 1000, (64,), device="tpu")
    values, indices = torch.empty(64, 5, device="tpu"), torch.empty(64, 5, dtype=torch.long, device="tpu")
    loss, total_weight = torch.empty((), device="tpu"), torch.empty((), device="tpu")
    with torch_tpu.profiler.profile() as prof:
        torch.topk(x, 5, dim=1, out=(values, indices))
        torch.ops.aten.nll_loss_forward.output(x, target, None, 1, -100, output=loss, total_weight=total_weight)
        torch.nn.functional.nll_loss(x, target)  # launched without the structured wrapper: charged the same
    costs = {record.cost.name: record.cost for record in prof.kernel_records}
    topk = costs["topk.values"]
    assert (topk.bytes_read, topk.bytes_written) == (x.nbytes, values.nbytes + indices.nbytes)
    for nll in costs["nll_loss_forward.output"], costs["nll_loss_forward"]:
        assert (nll.bytes_read, nll.bytes_written) == (x.nbytes + target.nbytes, 4 + 4)  # the loss and total weight


def test_integer_matmul_without_mxu_path_is_charged_as_float32():
    a = torch.ones(4, 4, dtype=torch.int64, device="tpu")
    assert torch.equal((a @ a).cpu(), torch.full((4, 4), 4))
    cost = cost_of("mm", a, a, result=a)
    assert _C.clock.compute_seconds(cost, IRONWOOD) == pytest.approx(2 * 64 / (2307e12 / 6))


def test_ridge_point_is_peak_over_bandwidth():
    assert IRONWOOD.ridge_point("bfloat16") == pytest.approx(2307e12 / 7380e9) and abs(IRONWOOD.ridge_point() - 313) < 1
    assert _C.clock.ridge_point(IRONWOOD, "bfloat16") == IRONWOOD.ridge_point("bfloat16")


def test_v5e_ridge_point_and_clock(python_subprocess):
    process = python_subprocess("""
        import torch
        from torch_tpu import _C
        spec = _C.current_chip().clock.spec
        a, b = torch.ones(1 << 20, device="tpu"), torch.ones(1 << 20, device="tpu")
        start, end = torch.tpu.Event(enable_timing=True), torch.tpu.Event(enable_timing=True)
        start.record(); a + b; end.record()
        print(spec.name, spec.ridge_point("bfloat16"), repr(start.elapsed_time(end)))
    """, env={"TORCH_TPU_CHIP": "v5e"})
    name, ridge, milliseconds = process.stdout.split()
    assert name == "v5e" and float(ridge) == pytest.approx(197e12 / 819e9) and abs(float(ridge) - 240) < 1
    assert float(milliseconds) == pytest.approx((3 * 4 * (1 << 20) / 819e9 + LAUNCH_OVERHEAD_SECONDS) * 1e3)


def test_event_elapsed_time_is_the_simulated_time_of_the_kernels_between():
    a = torch.randn(256, 256, dtype=torch.bfloat16, device="tpu")
    start, end = torch.tpu.Event(enable_timing=True), torch.tpu.Event(enable_timing=True)
    with torch_tpu_profile() as records:
        start.record()
        b = (a @ a).relu() + 1
        end.record()
    assert len(records) == 3
    assert start.elapsed_time(end) == pytest.approx(sum(r.seconds for r in records) * 1e3, rel=1e-12)
    assert b.shape == (256, 256)


def test_streams_have_their_own_time_lines():
    side = torch.tpu.Stream()
    assert isinstance(side, torch.Stream) and side != torch.tpu.default_stream()
    x = torch.ones(1 << 20, device="tpu")
    torch.tpu.synchronize()
    main_before, side_before = clock.now(0), clock.now(side.stream_id)
    with torch.tpu.stream(side):
        assert torch.tpu.current_stream() == side and clock.current_stream == side.stream_id
        x * 2
    assert torch.tpu.current_stream() == torch.tpu.default_stream() and clock.current_stream == 0
    assert clock.now(0) == main_before
    assert clock.now(side.stream_id) > side_before
    event = side.record_event(torch.tpu.Event(enable_timing=True))
    torch.tpu.current_stream().wait_event(event)
    assert clock.now(0) == clock.now(side.stream_id)


def test_wait_stream_and_synchronize():
    side = torch.tpu.Stream()
    x = torch.ones(1 << 20, device="tpu")
    with torch.tpu.stream(side):
        for _ in range(3):
            x + 1
    torch.tpu.current_stream().wait_stream(side)
    assert clock.now(0) >= clock.now(side.stream_id)
    with torch.tpu.stream(side):
        x + 1
    torch.tpu.synchronize()
    assert clock.now(0) == clock.now(side.stream_id) == clock.device_now()
    assert torch.tpu.Stream().query() and torch.tpu.current_stream().query()


def test_record_stream_of_a_side_stream_result():
    """CUDA-style prefetching marks tensors used on a side stream; tpu streams never hold a tensor back."""
    side = torch.tpu.Stream()
    x = torch.ones(4, device="tpu")
    with torch.tpu.stream(side):
        y = x * 2
    y.record_stream(side)
    x.record_stream(torch.tpu.current_stream())
    assert y.cpu().tolist() == [2.0] * 4


def test_set_stream_routes_kernels():
    side = torch.tpu.Stream()
    torch.tpu.set_stream(side)
    try:
        with torch_tpu_profile() as records:
            torch.ones(4, device="tpu") + 1
    finally:
        torch.tpu.set_stream(torch.tpu.default_stream())
    assert {r.stream for r in records} == {side.stream_id}


def test_clock_totals_per_kernel_name():
    before = clock.op_totals.get("mul.Tensor", _C.clock.OpTotals()).copy()
    kernels = clock.kernels_run
    x = torch.ones(1000, device="tpu")
    x * x
    after = clock.op_totals["mul.Tensor"]
    assert after.count == before.count + 1 and after.bytes == before.bytes + 12000
    assert clock.kernels_run >= kernels + 2


class torch_tpu_profile:
    """The KernelRecords charged inside the block, through the clock's recorder hook."""

    def __enter__(self):
        self.records = []
        clock.recorders.append(self.records)
        return self.records

    def __exit__(self, *exc):
        clock.recorders.remove(self.records)


@pytest.mark.parametrize("precision", ["highest", "high", "medium"])
def test_one_precision_table_sets_float32_matmul_cost_and_numerics(precision):
    """The passes a float32 matmul is charged and the passes its numerics run come from one table."""
    import numpy as np

    from torch_tpu._C import mxu

    charged, computed = mxu.FLOAT32_PRECISION[precision]
    a, b = torch.randn(8, 32), torch.randn(32, 4)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        product = (a.to("tpu") @ b.to("tpu")).cpu().numpy()
        assert _cost.kernel_cost("mm", (a, b), {}, torch.empty(8, 4)).float32_passes == charged
    finally:
        torch.set_float32_matmul_precision(previous)
    np.testing.assert_array_equal(product, mxu.matmul(a.numpy(), b.numpy(), precision_passes=computed))


def test_mxu_charges_follow_the_chip_the_clock_became():
    """``advance_mxu`` looks each MXU peak up once per chip, input type and float32 passes: after ``Chip.become``
    (the clock's spec replaced) a launch is charged at the new chip's peak, exactly as ``mxu_seconds`` gives it."""
    from torch_tpu._C.clock import Clock, mxu_seconds

    fresh = Clock(IRONWOOD)
    flops = {"float32": 3 * 10**12, "bfloat16": 10**12}
    for spec in (IRONWOOD, _C.CHIPS["v5e"], IRONWOOD):
        fresh.spec = spec
        for passes in (1, 6):
            before = fresh.op_totals["mm"].compute_seconds if "mm" in fresh.op_totals else 0.0
            start, end = fresh.advance_mxu("mm", 64, flops, passes)
            compute = mxu_seconds(flops, passes, spec)
            assert end - start == pytest.approx(compute + LAUNCH_OVERHEAD_SECONDS, rel=1e-12)
            assert fresh.op_totals["mm"].compute_seconds - before == pytest.approx(compute, rel=1e-12)
