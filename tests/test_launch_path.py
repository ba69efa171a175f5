"""The short launch paths of the eager hot path agree with the general ones they stand in for.

Functional overloads of structured pointwise ops (``sigmoid``, ``gelu``, ``pow.Tensor_Scalar``, ...)
take a direct path for contiguous floating tpu operands of one shape and PyTorch's structured
wrapper otherwise: both must give CPU's values, dtypes and strides, charge the same bytes and
allocate exactly their result. So must the other short paths: binary ops on strided operands, maths written
straight into their output (``writes_out``), softmax launched without the structured wrapper, and the cached
TensorIterator layout rule.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

import torch_tpu
from torch_tpu.ops import pointwise
from differential import check, check_grads, check_same_error, make, noncontiguous

clock = torch_tpu._C.current_chip().clock

CALLS = {
    "neg": torch.neg,
    "sigmoid": torch.sigmoid,
    "exp": torch.exp,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "pow_scalar": lambda x: torch.pow(x, 3),
    "maximum": lambda x: torch.maximum(x, x.flip(0)),
    "eq": lambda x: torch.eq(x, x.flip(0)),
    "silu_backward": lambda x: torch.ops.aten.silu_backward(x, x.flip(0)),
    "remainder_number": lambda x: torch.remainder(x, 2.5),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.int32])
@pytest.mark.parametrize("name", CALLS)
def test_direct_and_structured_paths_match_cpu(name, dtype):
    if dtype == torch.int32 and name in ("sigmoid", "exp", "gelu", "gelu_tanh", "silu_backward"):
        pytest.skip("a floating-only op: the int case is an error, checked below")
    fn = CALLS[name]
    check(fn, make(6, 5, dtype=dtype))  # the direct path for floats, the wrapper for int32
    check(fn, noncontiguous(6, 5, dtype=dtype))  # the wrapper: strided operands


def test_strided_operands_give_cpu_strides():
    x = noncontiguous(6, 5)
    assert torch.sigmoid(x.to("tpu")).stride() == torch.sigmoid(x).stride()


def test_broadcasting_and_cpu_scalars_take_the_structured_wrapper():
    check(torch.maximum, make(4, 1), make(1, 5))
    check(torch.atan2, make(4, 5), torch.tensor(0.5))
    check(torch.atan2, make(4, 5, dtype=torch.float64), make(4, 5, dtype=torch.float32))


@pytest.mark.parametrize("call", [
    lambda d: F.softshrink(torch.ones(3, device=d), -0.5),
    lambda d: torch.maximum(torch.ones(3, device=d), torch.ones(4, device=d)),
    lambda d: F.gelu(torch.ones(3, device=d), approximate="cubic"),
], ids=["softshrink_lambda", "shapes", "gelu_approximate"])
def test_errors_are_pytorchs_on_either_path(call):
    check_same_error(call)


def test_direct_path_charges_what_the_out_form_charges():
    x = torch.rand(1000, device="tpu")
    before = clock.op_totals.get("sigmoid", torch_tpu._C.clock.OpTotals()).copy()
    torch.sigmoid(x)
    functional = clock.op_totals["sigmoid"]
    assert functional.count == before.count + 1 and functional.bytes == before.bytes + 8000
    out_before = clock.op_totals.get("sigmoid.out", torch_tpu._C.clock.OpTotals()).copy()
    torch.sigmoid(x, out=torch.empty(1000, device="tpu"))
    assert clock.op_totals["sigmoid.out"].bytes == out_before.bytes + 8000


@pytest.mark.usefixtures("paused_collector")
def test_direct_path_allocates_exactly_its_result():
    x = torch.rand(1000, device="tpu")
    torch.tpu.reset_peak_memory_stats()
    allocated = torch.tpu.memory_allocated()
    y = torch.exp(x)
    assert torch.tpu.memory_allocated() == allocated + 4000
    assert torch.tpu.max_memory_allocated() == allocated + 4000
    del y
    assert torch.tpu.memory_allocated() == allocated


LAYOUTS = {
    "contiguous": lambda base: base,
    "size-1 dim, odd stride": lambda base: base.reshape(30, 4)[:, :1],
    "transposed": lambda base: base.transpose(1, 3),
    "sliced": lambda base: base[:, 1:, ::2],
    "expanded": lambda base: base[0, 0, 0].expand(4, 5),
    "channels-last": lambda base: base.contiguous(memory_format=torch.channels_last),
    "conjugated": lambda base: base[0].to(torch.complex64).conj(),
    "bf16": lambda base: base.to(torch.bfloat16),
    "0-d": lambda base: base[1, 2, 3, 4],
    "empty": lambda base: base[:, :0],
}


@pytest.mark.parametrize("memory_format", [None, torch.preserve_format, torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_clone_gives_cpus_values_strides_and_version(layout, memory_format):
    """clone (and contiguous(), which clones) takes one Python call for its common layouts and PyTorch's
    composite for the rest: either way CPU's values, dtype, strides, conj bit and version counter, whether
    the source is contiguous (size-1 dims with odd strides too), transposed, sliced, expanded, channels-last,
    conjugated, 0-d or empty."""
    base = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    source, on_tpu = LAYOUTS[layout](base), LAYOUTS[layout](base.to("tpu"))
    assert on_tpu.stride() == source.stride()
    if memory_format is torch.channels_last and source.dim() != 4:
        pytest.skip("channels_last needs 4 dims")
    options = {} if memory_format is None else {"memory_format": memory_format}
    expected, actual = source.clone(**options), on_tpu.clone(**options)
    assert actual.device.type == "tpu" and actual.stride() == expected.stride()
    assert actual.is_conj() == expected.is_conj() and actual._version == expected._version
    assert_close(actual.cpu(), expected, rtol=0, atol=0)
    assert on_tpu.mT.contiguous().stride() == source.mT.contiguous().stride() if source.dim() > 1 else True


@pytest.mark.usefixtures("paused_collector")
def test_clone_is_charged_and_allocated_as_one_copy():
    """The one-call clone charges the same ``_copy_from`` launch as PyTorch's composite and allocates exactly its
    result; the profiler sees that launch."""
    x = torch.rand(64, 32, device="tpu")
    before = clock.op_totals.get("_copy_from", torch_tpu._C.clock.OpTotals()).copy()
    allocated = torch.tpu.memory_allocated()
    with torch_tpu.profiler.profile() as profile:
        y = x.clone()
        z = x.t().contiguous()
    assert torch.tpu.memory_allocated() == allocated + 2 * 64 * 32 * 4
    del y, z
    assert torch.tpu.memory_allocated() == allocated
    after = clock.op_totals["_copy_from"]
    assert after.count == before.count + 2 and after.bytes == before.bytes + 2 * 2 * 64 * 32 * 4
    assert [(row.name, row.count) for row in profile.key_averages()] == [("_copy_from", 2)]


# --- the shared launch path: views, MXU charges, the error guard --------------------------------------


def _as_strided_outcome(device, size, stride, offset):
    """What ``as_strided`` gives on a 24-element float storage of ``device``: the view's values, or its error."""
    base = torch.arange(24.0).to(device)
    try:
        return base.as_strided(size, stride, offset).cpu().tolist()
    except RuntimeError as error:
        return str(error)


def test_as_strided_checks_the_storage_as_cpu_does():
    """The view kernels' one-pass bounds check (Meta's kernel does none) accepts and refuses what CPU does,
    with CPU's words: in and out of bounds, empty, negative strides and offsets, the last element exactly."""
    generator = torch.Generator().manual_seed(0)
    cases = [((4, 6), (6, 1), 0), ((4, 6), (6, 1), 1), ((2, 3), (1, 2), 18), ((2, 3), (1, 2), 19), ((0, 5), (9, 9), 30),
             ((3,), (-1,), 0), ((3,), (1,), -1), ((), (), 23), ((), (), 24), ((5, 0), (1, 1), 24)]
    for _ in range(150):
        dims = int(torch.randint(1, 4, (), generator=generator))
        size = torch.randint(0, 5, (dims,), generator=generator).tolist()
        stride = torch.randint(0, 9, (dims,), generator=generator).tolist()
        cases.append((tuple(size), tuple(stride), int(torch.randint(0, 12, (), generator=generator))))
    for size, stride, offset in cases:
        assert _as_strided_outcome("tpu", size, stride, offset) == _as_strided_outcome("cpu", size, stride, offset), (
            size, stride, offset)


@pytest.mark.parametrize("shape", [(2, 0, 4, 5), (0,), (3, 0), (0, 0, 2), (1, 0, 1)])
def test_empty_tensors_take_cpus_strides(shape):
    """A new empty tensor's zero-size dims are strided as ATen's empty strides them (size 1 in the product)."""
    for factory in (torch.empty, torch.zeros, torch.ones):
        assert factory(*shape, device="tpu").stride() == factory(*shape).stride()


def _empty_strided_outcome(device, size, stride):
    """The storage bytes ``empty_strided`` gives on ``device`` (ATen's computeStorageNbytes), or its error."""
    try:
        return torch.empty_strided(size, stride, dtype=torch.float32, device=device).untyped_storage().nbytes()
    except RuntimeError as error:
        return str(error)


def test_strided_allocations_take_cpus_storage_size():
    """A new strided tensor's storage size: the common layout's one-pass sum and the exact unsigned arithmetic
    it stands in for agree with CPU, the last element and empty, zero-stride, overflowing and negative layouts
    included."""
    generator = torch.Generator().manual_seed(1)
    cases = [((), ()), ((0,), (5,)), ((3, 0), (1, 7)), ((4, 6), (6, 1)), ((4, 6), (0, 0)), ((2, 3), (1, 2)),
             ((3,), (-1,)), ((2, 2), (2**61, 1)), ((2, 2), (2**62, 1)), ((3,), (2**62,)), ((-1, 2), (2, 1))]
    for _ in range(150):
        dims = int(torch.randint(1, 4, (), generator=generator))
        size = torch.randint(0, 5, (dims,), generator=generator).tolist()
        stride = torch.randint(0, 40, (dims,), generator=generator).tolist()
        cases.append((tuple(size), tuple(stride)))
    for size, stride in cases:
        assert _empty_strided_outcome("tpu", size, stride) == _empty_strided_outcome("cpu", size, stride), (size, stride)


def test_views_launch_nothing_and_allocate_nothing():
    x = torch.rand(4, 6, device="tpu")
    kernels, allocated = clock.kernels_run, torch.tpu.memory_allocated()
    views = [x.t(), x.transpose(0, 1), x.permute(1, 0), x[1], x[None].expand(3, 4, 6), x.view(24), x.unsqueeze(0)]
    assert clock.kernels_run == kernels and torch.tpu.memory_allocated() == allocated
    for view in views:
        assert view.untyped_storage()._cdata == x.untyped_storage()._cdata
    x.t()[2, 1] = 7.0  # a write through a view reaches the base
    assert x[1, 2].item() == 7.0


def _quiet_and_profiled_charges(call):
    """What one more ``call()`` adds to the clock's totals, by kernel name: outside a profile (no KernelCost
    built) and inside one (each launch's KernelCost charged)."""
    call()  # a first launch names the ops in the totals

    def added(profiled):
        before = {name: totals.copy() for name, totals in clock.op_totals.items()}
        if profiled:
            with torch_tpu.profiler.profile():
                call()
        else:
            call()
        return {name: totals.minus(before[name]) for name, totals in clock.op_totals.items()
                if totals.count != before[name].count}

    return added(False), added(True)


def _assert_charged_alike(quiet, profiled):
    assert quiet.keys() == profiled.keys() and quiet
    for name in quiet:  # the float fields are differences of running sums: equal to rounding
        for field in ("count", "bytes", "flops"):
            assert getattr(quiet[name], field) == getattr(profiled[name], field), (name, field)
        for field in ("seconds", "compute_seconds"):
            assert getattr(quiet[name], field) == pytest.approx(getattr(profiled[name], field), rel=1e-9), (name, field)


@pytest.mark.parametrize("call", [
    lambda a, b, bias: torch.mm(a, b.t()),
    lambda a, b, bias: torch.addmm(bias, a, b.t()),
    lambda a, b, bias: torch.bmm(a[None], b.t()[None]),
    lambda a, b, bias: F.conv2d(a[None, None], b[None, None, :3, :3]),
], ids=["mm", "addmm", "bmm", "conv2d"])
@pytest.mark.parametrize("precision", ["highest", "medium"])
def test_mxu_launches_are_charged_as_their_kernel_cost(call, precision):
    """Outside a profile an MXU launch is charged without a KernelCost; a profile charges the KernelCost
    itself. Both must add the same seconds, MXU seconds, FLOPs and bytes to the clock's totals."""
    a, b, bias = torch.rand(8, 16, device="tpu"), torch.rand(12, 16, device="tpu"), torch.rand(12, device="tpu")
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        quiet, profiled = _quiet_and_profiled_charges(lambda: call(a, b, bias))
    finally:
        torch.set_float32_matmul_precision(previous)
    _assert_charged_alike(quiet, profiled)
    assert any(totals.flops for totals in quiet.values())


def _layer_norm_forward_and_backward():
    x = torch.rand(4, 6, 8, device="tpu", requires_grad=True)
    weight, bias = torch.rand(8, device="tpu", requires_grad=True), torch.rand(8, device="tpu", requires_grad=True)
    F.layer_norm(x, (8,), weight, bias).sum().backward()


@pytest.mark.parametrize("call", [
    _layer_norm_forward_and_backward,
    lambda: F.nll_loss(torch.rand(6, 5, device="tpu").log_softmax(1), torch.tensor([4, 0, 1, 2, 4, 1], device="tpu")),
], ids=["layer_norm", "nll_loss"])
def test_launches_with_several_results_are_charged_as_their_kernel_cost(call):
    """A launch returning several new tensors (layer norm's output, mean and rstd) is charged inline outside a
    profile: its inputs read and every result written, what its KernelCost charges."""
    quiet, profiled = _quiet_and_profiled_charges(call)
    _assert_charged_alike(quiet, profiled)
    several = {"native_layer_norm", "native_layer_norm_backward", "nll_loss_forward"} & quiet.keys()
    assert several and all(quiet[name].bytes for name in several)


def test_ignoring_fp_errors_restores_numpys_error_state():
    import numpy as np

    from torch_tpu._C import vpu

    with np.errstate(divide="raise"):
        with vpu.ignoring_fp_errors():
            assert np.float32(1) / np.float32(0) == np.inf
        with pytest.raises(ZeroDivisionError), vpu.ignoring_fp_errors():
            raise ZeroDivisionError  # the state comes back on the way out of an error too
        with pytest.raises(FloatingPointError):
            np.float32(1) / np.float32(0)


def test_views_under_a_torch_function_mode():
    """The backward's view kernels run with the user's torch function mode active (autograd carries it to its
    thread): the mode's Python runs inside them, and its own ops must still reach the tpu, not Meta."""
    seen = []

    class Recording(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if isinstance(result, torch.Tensor) and result.device.type == "tpu":
                seen.append(result.detach().sum().item())  # a real tpu op inside the mode
            return result

    weights = torch.arange(12.0)
    x = torch.arange(12.0, device="tpu", requires_grad=True)
    with Recording():
        loss = (x.view(3, 4).t().as_strided((2, 2), (1, 3), 1) * weights.view(4, 3)[1:3, 1:3].to("tpu")).sum()
        loss.backward()
    expected = torch.arange(12.0, requires_grad=True)
    (expected.view(3, 4).t().as_strided((2, 2), (1, 3), 1) * weights.view(4, 3)[1:3, 1:3]).sum().backward()
    assert torch.equal(x.grad.cpu(), expected.grad)
    assert seen and all(isinstance(value, float) for value in seen)


# --- round three: strided binary ops, maths written into out=, softmax without the structured wrapper ---------


STRIDED_BINARY = {
    "add_transposed": lambda x: x.t() + x.t().contiguous(),
    "sub_alpha_transposed": lambda x: torch.sub(x.t(), x.t().contiguous(), alpha=2),
    "mul_number": lambda x: x.t() * 0.35,
    "div_expanded": lambda x: x.t() / x[:1].t().expand(5, 6),
    "rsub_number": lambda x: 1.5 - x.t(),
    "add_int": lambda x: (x * 10).to(torch.int32).t() + 3,
}


@pytest.mark.parametrize("name", STRIDED_BINARY)
def test_strided_binary_ops_give_cpus_values_and_strides(name):
    fn = STRIDED_BINARY[name]
    x = make(6, 5)
    result = check(fn, x)
    assert result.stride() == fn(x).stride()


def test_strided_binary_op_is_charged_and_allocated_as_one_launch():
    x = torch.rand(40, 30, device="tpu").t()
    before = clock.op_totals.get("mul.Tensor", torch_tpu._C.clock.OpTotals()).copy()
    allocated = torch.tpu.memory_allocated()
    y = x * 0.5
    totals = clock.op_totals["mul.Tensor"]
    assert totals.count == before.count + 1 and totals.bytes == before.bytes + 2 * 4800
    assert torch.tpu.memory_allocated() == allocated + 4800
    del y


WRITES_OUT = {
    "relu_": lambda x: torch.relu_(x),
    "hardtanh_view": lambda x: F.hardtanh(x[:, 1:], -0.5, 0.5, inplace=True),
    "silu_": lambda x: F.silu(x, inplace=True),
    "sigmoid_": lambda x: x.sigmoid_(),
    "add_self_alpha": lambda x: x.add_(x, alpha=-2),
    "sub_out": lambda x: torch.sub(x, x.flip(0), alpha=3, out=torch.empty_like(x)),
    "gelu_out": lambda x: torch.ops.aten.gelu.out(x, out=torch.empty_like(x)),
    "threshold_backward": lambda x: torch.ops.aten.threshold_backward(x, x.flip(0), 0.1),
    "hardswish_strided": lambda x: F.hardswish(x.t()),
}


@pytest.mark.parametrize("name", WRITES_OUT)
def test_maths_written_into_out_match_cpu(name):
    check(WRITES_OUT[name], make(6, 5))


def test_writing_into_out_keeps_the_temporary_routes_bits():
    """add with alpha, written into its output by each route (functional, out=, foreach), is CPU's fused
    ``a + alpha * b`` (one rounding), bit for bit."""
    a, b = torch.randn(64, 33, device="tpu"), torch.randn(64, 33, device="tpu")
    direct = torch.add(a, b, alpha=-0.37)
    via_out = torch.add(a, b, alpha=-0.37, out=torch.empty_like(a))
    via_foreach = torch._foreach_add([a], [b], alpha=-0.37)[0]
    expected = torch.add(a.cpu(), b.cpu(), alpha=-0.37)
    for result in (direct, via_out, via_foreach):
        assert_close(result.cpu(), expected, rtol=0, atol=0)


SOFTMAX_CALLS = {
    "softmax": lambda x: torch.softmax(x, -1),
    "log_softmax": lambda x: torch.log_softmax(x, 0),
    "log_softmax_backward": lambda x: torch.ops.aten._log_softmax_backward_data(x, torch.log_softmax(x, 1), 1,
                                                                                x.dtype),
    "softmax_backward": lambda x: torch.ops.aten._softmax_backward_data(x, torch.softmax(x, 1), 1, x.dtype),
    "softmax_strided": lambda x: torch.softmax(x.t(), 1),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", SOFTMAX_CALLS)
def test_softmax_launched_directly_matches_cpu(name, dtype):
    fn = SOFTMAX_CALLS[name]
    x = make(6, 5, dtype=dtype)
    result = check(fn, x, atol=1e-2 if dtype == torch.bfloat16 else None, rtol=1e-2 if dtype == torch.bfloat16 else None)
    assert result.stride() == fn(x).stride()


def test_softmax_errors_are_pytorchs():
    check_same_error(lambda d: torch._softmax(torch.ones(3, 4, device=d), 2, False))
    check_same_error(lambda d: torch.log_softmax(torch.ones(3, 4, device=d), -3))
    # the out= forms still check their output (the functional launches store into new tensors themselves)
    check_same_error(lambda d: torch.ops.aten._log_softmax.out(torch.ones(3, 4, device=d), 1, False,
                                                               out=torch.empty(3, 4, dtype=torch.float64, device=d)))
    check_same_error(lambda d: torch.ops.aten._log_softmax_backward_data.out(
        torch.ones(3, 4, device=d), torch.ones(3, 4, device=d), 1, torch.float32,
        out=torch.empty(3, 4, dtype=torch.int64, device=d)))


@pytest.mark.usefixtures("paused_collector")
def test_the_loss_launches_allocate_exactly_their_results():
    """log_softmax, nll_loss and their backwards, launched without the wrapper: each allocates its results and
    nothing else (no peak above them)."""
    x, target = torch.randn(4, 10, device="tpu"), torch.randint(0, 10, (4,), device="tpu")
    log_probs = torch.log_softmax(x, 1)
    loss, total = torch.ops.aten.nll_loss_forward(log_probs, target, None, 1, -100)
    one = torch.tensor(1.0, device="tpu")
    calls = {
        "_log_softmax": (lambda: [torch.ops.aten._log_softmax(x, 1, False)], 160),
        "_log_softmax_backward_data": (lambda: [torch.ops.aten._log_softmax_backward_data(
            log_probs, log_probs, 1, torch.float32)], 160),
        "nll_loss_forward": (lambda: list(torch.ops.aten.nll_loss_forward(log_probs, target, None, 1, -100)), 8),
        "nll_loss_backward": (lambda: [torch.ops.aten.nll_loss_backward(one, log_probs, target, None, 1, -100,
                                                                        total)], 160),
    }
    for name, (call, result_bytes) in calls.items():
        torch.tpu.reset_peak_memory_stats()
        start = torch.tpu.memory_allocated()
        results = call()
        assert torch.tpu.memory_allocated() - start == result_bytes, name
        assert torch.tpu.max_memory_allocated() - start == result_bytes, name
        del results


def test_softmax_launch_is_charged_what_its_out_form_charges():
    x = torch.rand(50, 20, device="tpu")
    before = clock.op_totals.get("_log_softmax", torch_tpu._C.clock.OpTotals()).copy()
    torch.log_softmax(x, 1)
    functional = clock.op_totals["_log_softmax"]
    assert functional.count == before.count + 1 and functional.bytes == before.bytes + 8000
    out_before = clock.op_totals.get("_log_softmax.out", torch_tpu._C.clock.OpTotals()).copy()
    torch.ops.aten._log_softmax.out(x, 1, False, out=torch.empty(50, 20, device="tpu"))
    assert clock.op_totals["_log_softmax.out"].bytes == out_before.bytes + 8000


# --- round four: NLL loss without the structured wrapper -------------------------------------------------------

TARGET = torch.tensor([4, 0, -100, 2, 4, 1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_launched_directly_matches_cpu(dtype, reduction, weighted):
    """The loss and total weight (forward) and the input's gradient (backward), each one launch."""
    weight = torch.rand(5, dtype=dtype) if weighted else None
    tolerance = dict(atol=1e-2, rtol=1e-2) if dtype == torch.bfloat16 else {}
    log_probs, results = make(6, 5, dtype=dtype).log_softmax(1), {}
    for device in ("cpu", "tpu"):
        x = log_probs.to(device)
        w = None if weight is None else weight.to(device)
        loss, total = torch.ops.aten.nll_loss_forward(x, TARGET.to(device), w, 1 if reduction == "mean" else 2, -100)
        gradient = torch.ops.aten.nll_loss_backward(torch.tensor(0.7, dtype=dtype, device=device), x,
                                                    TARGET.to(device), w, 1 if reduction == "mean" else 2, -100, total)
        results[device] = [t.cpu() for t in (loss, total, gradient)]
    for expected, actual in zip(results["cpu"], results["tpu"]):
        assert_close(actual, expected, **tolerance)
        assert actual.dtype == expected.dtype and actual.stride() == expected.stride()


@pytest.mark.parametrize("call", [
    lambda d: F.nll_loss(torch.randn(3, 4, device=d), torch.tensor([0, 4, 1], device=d)),  # out of bounds
    lambda d: F.nll_loss(torch.randn(3, 4, device=d), torch.tensor([0, 1], device=d)),  # batch sizes differ
    lambda d: F.nll_loss(torch.randn(3, 4, device=d), torch.tensor([0, 1, 2], device=d).int()),  # target dtype
    lambda d: F.nll_loss(torch.randn(3, 4, device=d), torch.tensor([0, 1, 2], device=d), torch.ones(3, device=d)),
    lambda d: torch.ops.aten.nll_loss_backward(torch.ones(2, device=d), torch.randn(3, 4, device=d),
                                               torch.tensor([0, 1, 2], device=d), None, 1, -100,
                                               torch.tensor(3.0, device=d)),  # grad_output of two elements
])
def test_nll_loss_errors_are_pytorchs(call):
    check_same_error(call)


def test_nll_loss_with_a_cpu_target_keeps_the_wrappers_device_check():
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        F.nll_loss(torch.randn(3, 4, device="tpu"), torch.tensor([0, 1, 2]))


def test_nll_loss_launches_are_charged_what_their_out_forms_charge():
    x, target = torch.randn(8, 10, device="tpu"), torch.randint(0, 10, (8,), device="tpu")
    grad = torch.tensor(1.0, device="tpu")

    def charged(name, call):
        before = clock.op_totals.get(name, torch_tpu._C.clock.OpTotals()).copy()
        call()
        after = clock.op_totals[name]
        return after.count - before.count, after.bytes - before.bytes

    loss, total = torch.empty((), device="tpu"), torch.empty((), device="tpu")
    forward = charged("nll_loss_forward", lambda: torch.ops.aten.nll_loss_forward(x, target, None, 1, -100))
    forward_out = charged("nll_loss_forward.output", lambda: torch.ops.aten.nll_loss_forward.output(
        x, target, None, 1, -100, output=loss, total_weight=total))
    assert forward == forward_out == (1, 320 + 64 + 8)
    backward = charged("nll_loss_backward",
                       lambda: torch.ops.aten.nll_loss_backward(grad, x, target, None, 1, -100, total))
    backward_out = charged("nll_loss_backward.grad_input", lambda: torch.ops.aten.nll_loss_backward.grad_input(
        grad, x, target, None, 1, -100, total, grad_input=torch.empty(8, 10, device="tpu")))
    assert backward == backward_out == (1, 4 + 320 + 64 + 4 + 320)


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int32, torch.int64, torch.bool])
@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "add_", "sub_", "mul_"])
def test_integer_scalars_on_the_hot_path_match_cpu(dtype, name):
    """Integer numbers and CPU scalars with integer tensors (batch norm's ``num_batches_tracked += 1``) go
    straight to one ufunc, converted as C++ casts them (wrapping); bool scalars, float numbers and numbers
    past int64 keep the general path. Values, dtypes and errors are CPU's."""
    x = torch.tensor([0, 5, 121, 100, 127, 1], dtype=torch.int64).to(dtype)
    for scalar in (1, -1, 300, 2 ** 40, 2 ** 63 - 1, True, 2.5, torch.tensor(7, dtype=torch.uint8),
                   torch.tensor(-3, dtype=torch.int32), torch.tensor(True)):
        check_same_outcome(lambda d: getattr(x.clone().to(d), name)(scalar))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "add_", "sub_", "mul_", "div_"])
def test_integer_numbers_with_float_tensors_take_the_hot_path(monkeypatch, dtype, name):
    """An integer number beside a float tensor (a mean's backward: ``grad.expand(...) / count``) goes straight to
    one ufunc as the float C++'s int64 cast makes of it, on contiguous and expanded operands; numbers past 2**53,
    which a double would round before float32 does, keep the general path. Values, dtypes and strides are CPU's."""
    base = torch.randn(4, 8, 1, 1, generator=torch.Generator().manual_seed(0), dtype=dtype) * 1000
    operands = [base] if name.endswith("_") else [base, base.expand(4, 8, 7, 7)]
    numbers = (49, 196, 3, -7, 0, 2 ** 24 + 1, 2 ** 31 - 1, 2 ** 53)
    general = []
    monkeypatch.setattr(pointwise, "prepare_out", lambda *args, **kwargs: general.append(args))
    for x in operands:
        for number in numbers:
            expected = getattr(x.clone(), name)(number)
            actual = getattr(x.to("tpu"), name)(number).cpu()
            assert actual.dtype == expected.dtype and actual.stride() == expected.stride()
            assert torch.equal(actual.view(torch.uint8), expected.view(torch.uint8))  # bit for bit, NaN included
    assert general == []  # no call took the structured .out kernel
    monkeypatch.undo()
    check_same_outcome(lambda d: getattr(base.clone().to(d), name)(2 ** 53 + 1))


def check_same_outcome(call):
    """``call`` gives CPU's values and dtype on the tpu, or raises what it raises on CPU."""
    try:
        expected = call("cpu")
    except Exception:
        check_same_error(call)
        return
    actual = call("tpu").cpu()
    assert actual.dtype == expected.dtype and torch.equal(actual, expected)


def test_iterator_strides_cache_answers_as_pytorchs_rule():
    from torch._prims_common import compute_elementwise_output_strides
    from torch_tpu.ops._common import iterator_strides

    for make_operands in (lambda d: (torch.ones(2, 3, 4, device=d).permute(2, 0, 1), torch.ones(4, 2, 3, device=d)),
                          lambda d: (torch.ones(3, 1, device=d).expand(3, 5), torch.ones(5, 3, device=d).t()),
                          lambda d: (torch.ones(2, 3, 4, 5, device=d).contiguous(memory_format=torch.channels_last),)):
        tpu_operands, cpu_operands = make_operands("tpu"), make_operands("cpu")
        shape = tuple(tpu_operands[0].shape)
        expected = tuple(compute_elementwise_output_strides(*cpu_operands))
        for _ in range(2):  # computed, then cached
            strides = iterator_strides(shape, tpu_operands)
            assert (strides or torch_tpu._tensor.contiguous_strides(shape)) == expected


# --- round four: cat without the structured wrapper ----------------------------------------------------

CAT_CALLS = {
    "rows": lambda a, b: torch.cat([a, b]),
    "columns": lambda a, b: torch.cat([a, b], -1),
    "stack": lambda a, b: torch.stack([a, b], 1),
    "three parts": lambda a, b: torch.cat([a, b, a], 1),
    "mixed dtypes": lambda a, b: torch.cat([a, b.double()]),
    "transposed part": lambda a, b: torch.cat([a, b.t().contiguous().t()]),
    "skipped empty part": lambda a, b: torch.cat([a, torch.empty(0, device=a.device), b]),
    "4-d channels-last": lambda a, b: torch.cat([t.reshape(1, 3, 2, 2).contiguous(memory_format=torch.channels_last)
                                                 for t in (a, b)], 1),
}


@pytest.mark.parametrize("name", CAT_CALLS)
def test_cat_launched_directly_matches_cpu(name):
    fn = CAT_CALLS[name]
    a, b = make(3, 4), make(3, 4)
    result = check(fn, a, b, atol=0, rtol=0)
    assert result.stride() == fn(a, b).stride() and result.dtype == fn(a, b).dtype


@pytest.mark.parametrize("parts", [
    lambda d: [torch.ones(3, 4, device=d), torch.ones(3, 5, device=d)],
    lambda d: [torch.ones(3, 4, device=d), torch.ones(4, device=d)],
    lambda d: [],
])
def test_cat_errors_are_pytorchs(parts):
    check_same_error(lambda d: torch.cat(parts(d)))
    check_same_error(lambda d: torch.cat([torch.ones(3, 4, device=d)] * 2, 2))


def test_cat_launch_is_charged_and_allocated_as_one_launch():
    a, b = torch.rand(50, 20, device="tpu"), torch.rand(30, 20, device="tpu")
    before = clock.op_totals.get("cat", torch_tpu._C.clock.OpTotals()).copy()
    allocated = torch.tpu.memory_allocated()
    torch.tpu.reset_peak_memory_stats()
    joined = torch.cat([a, b])
    totals = clock.op_totals["cat"]
    assert totals.count == before.count + 1 and totals.bytes == before.bytes + 2 * 80 * 20 * 4
    assert torch.tpu.memory_allocated() == torch.tpu.max_memory_allocated() == allocated + joined.nbytes


# --- round five: index_select's functional overload without the out= checks ----------------------------

INDEX_SELECT_CASES = {
    "rows (embedding)": lambda d: (torch.arange(40.0, device=d).reshape(10, 4), 0, torch.tensor([3, 0, 9, 3], device=d)),
    "last dim, int32 index": lambda d: (torch.arange(24, device=d).reshape(2, 3, 4), -1,
                                        torch.tensor([3, 1], dtype=torch.int32, device=d)),
    "transposed self": lambda d: (torch.arange(12.0, device=d).reshape(3, 4).t(), 1, torch.tensor([2, 2], device=d)),
    "bf16": lambda d: (torch.randn(5, 3, generator=torch.Generator().manual_seed(0)).to(d, torch.bfloat16), 0,
                       torch.tensor([4, 1], device=d)),
    "bool": lambda d: (torch.tensor([[True, False], [False, True]], device=d), 1, torch.tensor([1, 0, 1], device=d)),
    "conjugated complex": lambda d: (torch.tensor([1 + 2j, 3 - 1j], device=d).conj(), 0, torch.tensor([1, 0], device=d)),
    "complex32": lambda d: (torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex32, device=d), 0,
                            torch.tensor([1], device=d)),
    "0-d self": lambda d: (torch.tensor(2.5, device=d), 0, torch.tensor([0], device=d)),
    "0-d index": lambda d: (torch.arange(6.0, device=d).reshape(2, 3), 1, torch.tensor(2, device=d)),
    "empty index": lambda d: (torch.arange(6.0, device=d).reshape(2, 3), 0, torch.tensor([], dtype=torch.long, device=d)),
}


@pytest.mark.parametrize("name", INDEX_SELECT_CASES)
def test_index_select_launched_directly_matches_cpu(name):
    expected = torch.index_select(*INDEX_SELECT_CASES[name]("cpu"))
    actual = torch.index_select(*INDEX_SELECT_CASES[name]("tpu"))
    assert actual.dtype == expected.dtype and actual.shape == expected.shape and actual.stride() == expected.stride()
    widened = torch.complex64 if expected.dtype == torch.complex32 else expected.dtype  # CPU cannot compare complex32
    assert torch.equal(actual.cpu().to(widened), expected.to(widened))


def test_index_select_out_form_keeps_its_checks():
    source, index = torch.arange(12.0).reshape(3, 4), torch.tensor([2, 0])
    for out in (lambda d: torch.empty(4, 2, device=d).t(), lambda d: torch.empty(0, device=d)):
        expected = torch.index_select(source, 0, index, out=out("cpu"))
        actual = torch.index_select(source.to("tpu"), 0, index.to("tpu"), out=out("tpu"))
        assert actual.stride() == expected.stride() and torch.equal(actual.cpu(), expected)
    check_same_error(lambda d: torch.index_select(source.to(d), 0, index.to(d), out=torch.empty(2, 4, device=d,
                                                                                                dtype=torch.int64)))
    check_same_error(lambda d: (lambda s: torch.index_select(s, 0, index.to(d), out=s))(source.to(d)))


@pytest.mark.parametrize("call", [
    lambda d: torch.index_select(torch.ones(3, 2, device=d), 0, torch.tensor([0, 3], device=d)),
    lambda d: torch.index_select(torch.ones(3, 2, device=d), 0, torch.tensor([-1, 0], device=d)),
    lambda d: torch.index_select(torch.ones(3, 2, device=d), 2, torch.tensor([0], device=d)),
    lambda d: torch.index_select(torch.ones(3, 2, device=d), 0, torch.tensor([[0]], device=d)),
    lambda d: torch.index_select(torch.ones(3, 2, device=d), 0, torch.tensor([0.0], device=d)),
    lambda d: torch.index_select(torch.ones(3, 2, device=d), 0, torch.tensor([0], dtype=torch.int16, device=d)),
    lambda d: torch.nn.functional.embedding(torch.tensor([[0, 5]], device=d), torch.ones(5, 2, device=d)),
], ids=["past the end", "negative", "dim", "2-d index", "float index", "int16 index", "embedding"])
def test_index_select_errors_are_pytorchs(call):
    check_same_error(call)


@pytest.mark.usefixtures("paused_collector")
def test_index_select_is_charged_what_its_out_form_charges_and_allocates_its_result():
    table, index = torch.rand(50, 8, device="tpu"), torch.tensor([3, 7, 3, 49, 0], device="tpu")
    before = clock.op_totals.get("index_select", torch_tpu._C.clock.OpTotals()).copy()
    allocated = torch.tpu.memory_allocated()
    torch.tpu.reset_peak_memory_stats()
    rows = torch.index_select(table, 0, index)
    assert torch.tpu.memory_allocated() == torch.tpu.max_memory_allocated() == allocated + rows.nbytes
    functional = clock.op_totals["index_select"]
    out_before = clock.op_totals.get("index_select.out", torch_tpu._C.clock.OpTotals()).copy()
    torch.index_select(table, 0, index, out=torch.empty(5, 8, device="tpu"))
    out_form = clock.op_totals["index_select.out"]
    assert functional.count == before.count + 1 and out_form.count == out_before.count + 1
    assert functional.bytes - before.bytes == out_form.bytes - out_before.bytes > 0


# --- round five: batch norm reads back the statistics it stored through the views that came with them, and lays
# its output and input gradient out as CPU does (``empty_like(input, input.suggest_memory_format())``) ------------

BATCH_NORM_INPUTS = {
    "contiguous": lambda: make(3, 6, 5, 4),
    "channels-last": lambda: make(3, 6, 5, 4).contiguous(memory_format=torch.channels_last),
    "channels-last 3-d": lambda: make(2, 3, 2, 4, 5).contiguous(memory_format=torch.channels_last_3d),
    "bf16": lambda: make(8, 6, 3, dtype=torch.bfloat16),
    "generic loop": lambda: make(3, 4, 5, 6).permute(0, 3, 2, 1),
    "channels-last, sliced": lambda: make(3, 6, 8, 4).contiguous(memory_format=torch.channels_last)[:, :, ::2],
    "bf16, generic loop": lambda: make(8, 3, 6, dtype=torch.bfloat16).transpose(1, 2),
}


@pytest.mark.parametrize("name", BATCH_NORM_INPUTS)
def test_batch_norm_matches_cpus_statistics_and_layout(name):
    """The output, saved statistics, running statistics and input gradient have CPU's strides and dtypes, the values
    CPU's within rounding (its sums run in orders of their own: docs/numerics.md)."""
    x = BATCH_NORM_INPUTS[name]()
    channels = x.shape[1]
    weight, bias = make(channels, dtype=x.dtype), make(channels, dtype=x.dtype)
    outcomes = []
    for device in ("cpu", "tpu"):
        running = torch.zeros(channels, dtype=x.dtype, device=device), torch.ones(channels, dtype=x.dtype, device=device)
        operands = [t.to(device) for t in (x, weight, bias)]
        output, save_mean, save_invstd = torch.ops.aten.native_batch_norm(*operands, *running, True, 0.1, 1e-5)
        grad_input = torch.ops.aten.native_batch_norm_backward(output, operands[0], operands[1], *running, save_mean,
                                                               save_invstd, True, 1e-5, [True, True, True])[0]
        outcomes.append(([t.stride() for t in (output, save_mean, save_invstd, grad_input)],
                         [t.cpu() for t in (save_mean, save_invstd, *running)], output.cpu()))
    (cpu_strides, cpu_statistics, cpu_output), (tpu_strides, tpu_statistics, tpu_output) = outcomes
    assert tpu_strides == cpu_strides
    assert_close(tpu_statistics, cpu_statistics)  # dtypes too
    assert_close(tpu_output, cpu_output)


@pytest.mark.usefixtures("paused_collector")
def test_batch_norm_allocates_exactly_its_results_and_is_charged_one_launch():
    x = torch.rand(4, 8, 5, 5, device="tpu").contiguous(memory_format=torch.channels_last)
    running_mean, running_var = torch.zeros(8, device="tpu"), torch.ones(8, device="tpu")
    before = clock.op_totals.get("native_batch_norm", torch_tpu._C.clock.OpTotals()).copy()
    allocated = torch.tpu.memory_allocated()
    torch.tpu.reset_peak_memory_stats()
    results = torch.ops.aten.native_batch_norm(x, None, None, running_mean, running_var, True, 0.1, 1e-5)
    assert torch.tpu.memory_allocated() == torch.tpu.max_memory_allocated() == allocated + (x.numel() + 2 * 8) * 4
    totals = clock.op_totals["native_batch_norm"]
    assert totals.count == before.count + 1
    assert totals.bytes - before.bytes == sum(t.nbytes for t in (x, running_mean, running_var, *results))


def test_batch_norm_out_form_is_charged_every_output_argument():
    """An out= launch with several output arguments is charged each as written (not only ``out``), as the
    functional launch is charged its results."""
    x = torch.rand(4, 8, 5, 5, device="tpu")
    running_mean, running_var = torch.zeros(8, device="tpu"), torch.ones(8, device="tpu")
    outputs = {"out": torch.empty_like(x), "save_mean": torch.empty(8, device="tpu"),
               "save_invstd": torch.empty(8, device="tpu")}
    before = clock.op_totals.get("native_batch_norm.out", torch_tpu._C.clock.OpTotals()).copy()
    torch.ops.aten.native_batch_norm.out(x, None, None, running_mean, running_var, True, 0.1, 1e-5, **outputs)
    totals = clock.op_totals["native_batch_norm.out"]
    assert totals.count == before.count + 1
    assert totals.bytes - before.bytes == sum(t.nbytes for t in (x, running_mean, running_var, *outputs.values()))


# --- round six: views that rearrange their input's elements skip as_strided's bounds check -------------------


DERIVED_VIEWS = {
    "t": lambda x: x[0].t(),
    "transpose": lambda x: x.transpose(0, 2),
    "transpose_negative_dims": lambda x: x.transpose(-1, -3),
    "permute": lambda x: x.permute(2, 0, 1),
    "select": lambda x: x[1],
    "select_negative": lambda x: x.select(2, -1),
    "expand": lambda x: x[:, :1].expand(3, 4, 5),
    "expand_new_dims": lambda x: x.expand(2, 3, 4, 5),
    "unsqueeze": lambda x: x.unsqueeze(1),
    "squeeze": lambda x: x[:1, :, :1].squeeze(),
    "squeeze_dim": lambda x: x[:1].squeeze(0),
    "squeeze_dims": lambda x: x[:1, :, :1].squeeze((0, 2)),
    "unbind": lambda x: x.unbind(2)[3],
    "of_a_slice": lambda x: x[1:, ::2].transpose(0, 1)[1],
    "of_a_transposed_view": lambda x: x.transpose(0, 1).unsqueeze(0).permute(3, 1, 0, 2),
    "t_of_a_conj": lambda x: torch.complex(x, -x)[0].conj().t(),
    "of_an_empty_tensor": lambda x: x[:, :0].transpose(0, 2).unsqueeze(0),
    "diagonal": lambda x: x.diagonal(),
    "diagonal_offset_dims": lambda x: torch.diagonal(x, 1, 2, 0),
    "diagonal_past_the_edge": lambda x: x.diagonal(7, -1, -2),
}


@pytest.mark.parametrize("name", DERIVED_VIEWS)
def test_derived_views_match_cpu_and_alias_their_base(name):
    """The views registered directly (Meta's kernel through the Tensor method) give CPU's sizes, strides, offsets,
    values and conj bit, share their base's storage, and a write through them reaches the base."""
    view_of = DERIVED_VIEWS[name]
    base = torch.arange(60.0).reshape(3, 4, 5)
    on_tpu = base.to("tpu")
    expected, view = view_of(base), view_of(on_tpu)
    assert (view.shape, view.stride(), view.storage_offset()) == (expected.shape, expected.stride(),
                                                                  expected.storage_offset())
    assert view.is_conj() == expected.is_conj()
    assert torch.equal(view.cpu(), expected)
    if view.is_conj():  # a view of a new complex tensor, not of the base
        return
    assert view.untyped_storage()._cdata == on_tpu.untyped_storage()._cdata
    if view.numel():
        view.view(-1)[0].fill_(-1.0) if view.is_contiguous() else view.fill_(-1.0)
        expected.view(-1)[0].fill_(-1.0) if expected.is_contiguous() else expected.fill_(-1.0)
        assert torch.equal(on_tpu.cpu(), base)


def test_derived_views_carry_gradients_as_on_cpu():
    weights = torch.linspace(-1, 1, 60).reshape(3, 4, 5)

    def loss(x):
        w = weights.to(x.device)
        return ((x.transpose(0, 2) * w.transpose(0, 2)).sum() + (x.permute(1, 2, 0)[1].t() ** 2).sum()
                + x[:, :1].expand(3, 4, 5).unsqueeze(0).squeeze(0).mul(w).sum() + x.select(1, -1).sum())

    x = torch.arange(60.0, requires_grad=True)
    loss(x.view(3, 4, 5)).backward()
    on_tpu = torch.arange(60.0, device="tpu", requires_grad=True)
    loss(on_tpu.view(3, 4, 5)).backward()
    assert_close(on_tpu.grad.cpu(), x.grad)


@pytest.mark.parametrize("call", [
    lambda d: torch.ones(3, 4, device=d).transpose(0, 2),
    lambda d: torch.ones(3, 4, device=d).permute(0, 0),
    lambda d: torch.ones(3, 4, device=d).select(1, 4),
    lambda d: torch.ones(3, 4, device=d).expand(2, 3),
    lambda d: torch.ones(3, 4, device=d).unsqueeze(3),
    lambda d: torch.ones(3, 4, 5, device=d).t(),
    lambda d: torch.ones(3, 4, device=d).squeeze(2),
    lambda d: torch.ones(3, 4, device=d).diagonal(0, 1, 1),
])
def test_derived_view_errors_are_cpus(call):
    check_same_error(call)


SHRUNK_STORAGE_VIEWS = [lambda x: x.t(), lambda x: x.transpose(0, 1), lambda x: x.permute(1, 0), lambda x: x[1],
                        lambda x: x[2, :1], lambda x: x[:, 3], lambda x: x.unsqueeze(0), lambda x: x.expand(2, 3, 4),
                        lambda x: x.squeeze(0), lambda x: x[:, :0].t(), lambda x: x.view(12), lambda x: x.diagonal(),
                        lambda x: x.diagonal(3), lambda x: x.transpose(0, 0), lambda x: x.transpose(1, -1),
                        lambda x: x.swapdims(1, 1), lambda x: x.view(12).t(), lambda x: x[0, 0].t(),
                        # element counts past int64: CPU checks the storage first, then the count
                        lambda x: x.expand(2 ** 62, 3, 4), lambda x: x.expand(2 ** 40, 2 ** 30, 3, 4),
                        lambda x: x[:1].expand(2 ** 62, -1), lambda x: x[:1, :1].expand(2 ** 40, 2 ** 40)]


@pytest.mark.parametrize("kept", [0, 8, 20, 44, 48])
def test_views_of_a_shrunk_storage_are_checked_as_cpu_checks_them(kept):
    """A storage resized below its tensors' reach holds tensors past its end: views of them get CPU's bounds
    check and error (or its view, where the view itself fits)."""
    outcomes = {}
    for device in ("cpu", "tpu"):
        x = torch.arange(12.0, device=device).view(3, 4)
        x.untyped_storage().resize_(kept)
        outcomes[device] = []
        for view_of in SHRUNK_STORAGE_VIEWS:
            try:
                view = view_of(x)
                outcomes[device].append((tuple(view.shape), view.stride(), view.storage_offset()))
            except RuntimeError as error:
                outcomes[device].append(str(error))
    assert outcomes["tpu"] == outcomes["cpu"]


def test_views_of_a_reshape_alias_past_the_storage_are_checked_as_cpu_checks_them():
    """``_reshape_alias`` (reshape's internal view) takes any layout unchecked, as on CPU; views of a tensor it
    put past its storage's end then fail as CPU's do, and views of in-bounds layouts stay unchecked."""
    for device in ("cpu", "tpu"):
        inside = torch.ops.aten._reshape_alias(torch.arange(6.0, device=device), [2, 3], [3, 1])
        assert inside.t().stride() == (1, 3)
        assert not hasattr(inside.untyped_storage(), torch_tpu._tensor.OVERRUN_ATTRIBUTE)
    check_same_error(lambda d: torch.ops.aten._reshape_alias(torch.arange(3.0, device=d), [10], [1]).unsqueeze(0))
    check_same_error(lambda d: torch.ops.aten._reshape_alias(torch.arange(3.0, device=d), [2, 2], [2, 1]).t())


# --- round seven: select's and slice's gradients in one launch ------------------------------------------------

INT64_MAX = 2 ** 63 - 1


def seeded(*shape, dtype=torch.float32):
    """The same random values on each device's call of a case."""
    return make(*shape, dtype=dtype, generator=torch.Generator().manual_seed(0))


VIEW_BACKWARD_CASES = {
    "select, first dim": lambda d: torch.ops.aten.select_backward(seeded(4, 5).to(d), [3, 4, 5], 0, 1),
    "select, negative dim and index": lambda d: torch.ops.aten.select_backward(seeded(3, 4).to(d), [3, 4, 2], -1, -2),
    "select of a 1-d input": lambda d: torch.ops.aten.select_backward(torch.tensor(2.5, device=d), [3], 0, 2),
    "select, transposed gradient": lambda d: torch.ops.aten.select_backward(seeded(6, 4).t().to(d), [4, 3, 6], 1, 0),
    "select, bf16": lambda d: torch.ops.aten.select_backward(seeded(2, 3, dtype=torch.bfloat16).to(d), [2, 2, 3], 1, 1),
    "select, bool": lambda d: torch.ops.aten.select_backward(torch.tensor([True, False], device=d), [2, 2], 0, 1),
    "select, int64": lambda d: torch.ops.aten.select_backward(torch.arange(6, device=d).reshape(2, 3), [4, 2, 3], 0, 3),
    "select, empty": lambda d: torch.ops.aten.select_backward(torch.ones(0, 3, device=d), [0, 2, 3], 1, 1),
    "select, conjugated": lambda d: torch.ops.aten.select_backward(
        torch.tensor([1 + 2j, 3 - 1j], device=d).conj(), [2, 2], 0, 0),
    "select, complex32": lambda d: torch.ops.aten.select_backward(
        torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex32, device=d), [3, 2], 0, 1),
    "slice, middle": lambda d: torch.ops.aten.slice_backward(seeded(4, 3, 5).to(d), [4, 8, 5], 1, 2, 5, 1),
    "slice, step": lambda d: torch.ops.aten.slice_backward(seeded(4, 3).to(d), [4, 8], 1, 1, 8, 3),
    "slice, negative start and end": lambda d: torch.ops.aten.slice_backward(seeded(2, 3).to(d), [6, 3], 0, -4, -2, 1),
    "slice, end past the dim": lambda d: torch.ops.aten.slice_backward(seeded(3, 2).to(d), [5, 2], 0, 2, INT64_MAX, 1),
    "slice, start past the end": lambda d: torch.ops.aten.slice_backward(torch.ones(0, 2, device=d), [5, 2], 0, 7, 3, 1),
    "slice, start before the dim": lambda d: torch.ops.aten.slice_backward(seeded(2, 2).to(d), [2, 2], 0, -9, 2, 1),
    "slice, transposed gradient": lambda d: torch.ops.aten.slice_backward(seeded(4, 3).t().to(d), [3, 9], 1, 0, 8, 2),
}


@pytest.mark.parametrize("name", VIEW_BACKWARD_CASES)
def test_view_backwards_match_cpu(name):
    expected, actual = VIEW_BACKWARD_CASES[name]("cpu"), VIEW_BACKWARD_CASES[name]("tpu")
    assert actual.dtype == expected.dtype and actual.shape == expected.shape and actual.stride() == expected.stride()
    widened = torch.complex64 if expected.dtype == torch.complex32 else expected.dtype  # CPU cannot compare complex32
    assert torch.equal(actual.cpu().to(widened), expected.to(widened))
    assert not actual.is_conj()


@pytest.mark.parametrize("call", [
    lambda d: torch.ops.aten.select_backward(torch.ones(4, device=d), [3, 4], 0, 3),
    lambda d: torch.ops.aten.select_backward(torch.ones(4, device=d), [3, 4], 0, -4),
    lambda d: torch.ops.aten.select_backward(torch.ones(4, device=d), [3, 4], 2, 0),
    lambda d: torch.ops.aten.select_backward(torch.ones(5, device=d), [3, 4], 0, 0),
    lambda d: torch.ops.aten.select_backward(torch.ones((), device=d), [], 0, 0),
    lambda d: torch.ops.aten.slice_backward(torch.ones(2, 4, device=d), [3, 4], 0, 0, 3, 1),
    lambda d: torch.ops.aten.slice_backward(torch.ones(3, 4, device=d), [3, 4], 0, 0, 3, 0),
    lambda d: torch.ops.aten.slice_backward(torch.ones(3, 4, device=d), [3, 4], 0, 3, 0, -1),
    lambda d: torch.ops.aten.slice_backward(torch.ones(3, 4, device=d), [3, 4], -3, 0, 3, 1),
    lambda d: torch.ops.aten.slice_backward(torch.ones((), device=d), [], 0, 0, 1, 1),
], ids=["index past the end", "index before the start", "dim", "shape", "0-d", "slice shape", "zero step",
        "negative step", "slice dim", "slice of 0-d"])
def test_view_backward_errors_are_cpus(call):
    check_same_error(call)


def test_view_gradients_through_autograd_match_cpu():
    check_grads(lambda x: x[1] * 2 + x[:, 1:4:2].sum() + x[..., -1].sum(), make(3, 5, 4))


@pytest.mark.usefixtures("paused_collector")
@pytest.mark.parametrize("name, call", [
    ("select_backward", lambda grad: torch.ops.aten.select_backward(grad, [3, 40, 16], 0, 2)),
    ("slice_backward", lambda grad: torch.ops.aten.slice_backward(grad, [50, 16], 0, 5, 45, 1)),
])
def test_view_backward_is_one_launch_charged_its_traffic_and_allocates_its_result(name, call):
    """One launch reads the gradient and writes the new tensor: ATen's composite was two (``zero_`` writing the
    tensor, ``_copy_from`` reading the gradient and writing it again)."""
    grad = torch.rand(40, 16, device="tpu")
    launches = {op: clock.op_totals.get(op, torch_tpu._C.clock.OpTotals()).copy()
                for op in (name, "zero_", "_copy_from")}
    allocated = torch.tpu.memory_allocated()
    torch.tpu.reset_peak_memory_stats()
    result = call(grad)
    assert torch.tpu.memory_allocated() == torch.tpu.max_memory_allocated() == allocated + result.nbytes
    totals = {op: clock.op_totals.get(op, torch_tpu._C.clock.OpTotals()) for op in launches}
    assert totals[name].count == launches[name].count + 1
    assert totals[name].bytes == launches[name].bytes + grad.nbytes + result.nbytes
    assert all(totals[op].count == launches[op].count for op in ("zero_", "_copy_from"))

# --- zoo round seven: 2-d max pooling's backward without the structured wrapper ---------------------------------------------

MAX_POOLS = [
    dict(kernel_size=3, stride=2, padding=1),  # ResNet's stem
    dict(kernel_size=2),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), dilation=(1, 2)),
    dict(kernel_size=3, stride=2, ceil_mode=True),
]


def max_pool_results(x, kwargs):
    """Values, indices and the input's gradient of one 2-d max pool, with each result's stride."""
    x = x.detach().requires_grad_()
    values, indices = F.max_pool2d(x, return_indices=True, **kwargs)
    values.backward(torch.arange(values.numel(), dtype=x.dtype, device=x.device).reshape(values.shape) / 7)
    return [(t.detach().cpu(), t.stride()) for t in (values, indices, x.grad)]


def pool_input(dtype, layout):
    """A (2, 3, 9, 10) input laid out as the pools' direct launch and structured wrapper each take it."""
    wide = torch.randn(2, 3, 9, 20, generator=torch.Generator().manual_seed(7)).to(dtype)
    x = wide[..., :10].contiguous()
    return {"contiguous": x, "strided": wide[..., ::2], "channels_last": x.to(memory_format=torch.channels_last),
            "unbatched": x[0]}[layout]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kwargs", MAX_POOLS)
@pytest.mark.parametrize("layout", ["contiguous", "strided", "channels_last", "unbatched"])
def test_max_pool2d_launched_directly_matches_cpu(kwargs, dtype, layout):
    """The forward and the backward of a contiguous batched input each take one launch; so do a strided one's (the
    kernels read any strides); channels-last and unbatched inputs keep the structured wrapper: all give CPU's values,
    indices, gradients and strides."""
    x = pool_input(dtype, layout)
    expected, actual = max_pool_results(x, kwargs), max_pool_results(x.to("tpu"), kwargs)
    for (want, want_stride), (got, got_stride) in zip(expected, actual):
        assert_close(got, want, atol=0, rtol=0.01 if dtype is torch.bfloat16 else 1e-6)  # overlapping windows' sums
        assert got.dtype == want.dtype and got_stride == want_stride


@pytest.mark.parametrize("call", [
    lambda d: F.max_pool2d(torch.ones(1, 1, 2, 2, device=d), 3),  # output too small
    lambda d: F.max_pool2d(torch.ones(1, 1, 6, 6, device=d), 2, padding=2),  # padding over half the kernel
    lambda d: F.max_pool2d(torch.ones(1, 1, 6, 6, device=d), 3, stride=0),
    lambda d: F.max_pool2d(torch.ones(1, 1, 6, 6, device=d), (3, 3, 3)),
    lambda d: F.max_pool2d(torch.ones(1, 2, 6, 6, dtype=torch.bool, device=d), 2),
    lambda d: F.max_pool2d(torch.ones(1, 0, 6, 6, device=d), 2),
    lambda d: torch.ops.aten.max_pool2d_with_indices_backward(  # the gradient's size is not the output's
        torch.ones(1, 1, 3, 2, device=d), torch.ones(1, 1, 6, 6, device=d), [2, 2], [2, 2], [0, 0], [1, 1], False,
        torch.zeros(1, 1, 3, 3, dtype=torch.int64, device=d)),
    lambda d: torch.ops.aten.max_pool2d_with_indices_backward(  # the gradient's dtype is not the input's
        torch.ones(1, 1, 3, 3, dtype=torch.float64, device=d), torch.ones(1, 1, 6, 6, device=d), [2, 2], [2, 2],
        [0, 0], [1, 1], False, torch.zeros(1, 1, 3, 3, dtype=torch.int64, device=d)),
])
def test_max_pool2d_errors_are_pytorchs(call):
    check_same_error(call)


def test_max_pool2d_launches_are_charged_and_allocated_as_their_out_forms():
    """The direct forward and backward launches are each charged one launch with the bytes their out= forms are
    charged (every output argument of the forward's out= form as written: values and indices), and allocate
    exactly their results."""
    x = torch.randn(4, 8, 28, 28, device="tpu")
    args = ([3, 3], [2, 2], [1, 1], [1, 1], False)
    held = []

    def charged(name, call):
        before = clock.op_totals.get(name, torch_tpu._C.clock.OpTotals()).copy()
        allocated = torch.tpu.memory_allocated()
        held.append(call())  # alive while the allocation is read
        after = clock.op_totals[name]
        return after.count - before.count, after.bytes - before.bytes, torch.tpu.memory_allocated() - allocated

    forward = charged("max_pool2d_with_indices", lambda: torch.ops.aten.max_pool2d_with_indices(x, *args))
    values, indices = held[0]
    out, out_indices = torch.empty_like(values), torch.empty_like(indices)
    forward_out = charged("max_pool2d_with_indices.out", lambda: torch.ops.aten.max_pool2d_with_indices.out(
        x, *args, out=out, indices=out_indices))
    charge = (1, x.nbytes + values.nbytes + indices.nbytes)
    assert forward == (*charge, values.nbytes + indices.nbytes) and forward_out == (*charge, 0)
    grad = torch.randn(values.shape, device="tpu")
    gradient = torch.empty_like(x)
    backward = charged("max_pool2d_with_indices_backward",
                       lambda: torch.ops.aten.max_pool2d_with_indices_backward(grad, x, *args, indices))
    backward_out = charged("max_pool2d_with_indices_backward.grad_input",
                           lambda: torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
                               grad, x, *args, indices, grad_input=gradient))
    charge = (1, grad.nbytes + x.nbytes + indices.nbytes + x.nbytes)
    assert backward == (*charge, x.nbytes) and backward_out == (*charge, 0)


AVG_POOLS = [
    dict(kernel_size=7),  # EfficientNet's global pool
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), count_include_pad=False),
    dict(kernel_size=3, stride=2, ceil_mode=True, divisor_override=5),
]


def avg_pool_results(x, kwargs):
    """Values and the input's gradient of one 2-d average pool, with each result's stride."""
    x = x.detach().requires_grad_()
    values = F.avg_pool2d(x, **kwargs)
    values.backward(torch.arange(values.numel(), dtype=x.dtype, device=x.device).reshape(values.shape) / 7)
    return [(t.detach().cpu(), t.stride()) for t in (values, x.grad)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kwargs", AVG_POOLS)
@pytest.mark.parametrize("layout", ["contiguous", "strided", "channels_last", "unbatched"])
def test_avg_pool2d_launched_directly_matches_cpu(kwargs, dtype, layout):
    """As the max pools: contiguous and strided batched inputs take one launch forward and one backward, channels-last
    and unbatched ones the structured wrapper; all give CPU's values, gradients and strides, bit for bit (every
    window summed in CPU's order; a bf16/fp16 gradient divided and added in its own dtype, each step rounded)."""
    x = pool_input(dtype, layout)
    expected, actual = avg_pool_results(x, kwargs), avg_pool_results(x.to("tpu"), kwargs)
    for (want, want_stride), (got, got_stride) in zip(expected, actual):
        assert_close(got, want, atol=0, rtol=0)
        assert got.dtype == want.dtype and got_stride == want_stride
    out_form = torch.ops.aten.avg_pool2d.out(x.to("tpu"), **kwargs, out=torch.empty(0, dtype=dtype, device="tpu"))
    assert torch.equal(actual[0][0], out_form.cpu())  # the direct launch computes what the out= kernel does


@pytest.mark.parametrize("call", [
    lambda d: F.avg_pool2d(torch.ones(1, 1, 2, 2, device=d), 3),  # output too small
    lambda d: F.avg_pool2d(torch.ones(1, 1, 6, 6, device=d), 2, padding=2),  # padding over half the kernel
    lambda d: F.avg_pool2d(torch.ones(1, 1, 6, 6, device=d), 2, divisor_override=0),
    lambda d: F.avg_pool2d(torch.ones(1, 0, 6, 6, device=d), 2),
    lambda d: torch.ops.aten.avg_pool2d_backward(  # the gradient's size is not the output's
        torch.ones(1, 1, 3, 2, device=d), torch.ones(1, 1, 6, 6, device=d), [2, 2], [2, 2], [0, 0], False, True, None),
    lambda d: torch.ops.aten.avg_pool2d_backward(  # a zero divisor
        torch.ones(1, 1, 3, 3, device=d), torch.ones(1, 1, 6, 6, device=d), [2, 2], [2, 2], [0, 0], False, True, 0),
])
def test_avg_pool2d_errors_are_pytorchs(call):
    check_same_error(call)


def test_avg_pool2d_launches_are_charged_and_allocated_as_their_out_forms(paused_collector):
    """EfficientNet's global pool and its backward: each one launch charged under the functional op's name with the
    bytes its out= form is charged, allocating exactly its result (no empty through the dispatcher, no out= check)."""
    x = torch.randn(4, 32, 7, 7, device="tpu")
    held = []

    def charged(name, call):
        before = clock.op_totals.get(name, torch_tpu._C.clock.OpTotals()).copy()
        allocated = torch.tpu.memory_allocated()
        held.append(call())
        after = clock.op_totals.get(name, torch_tpu._C.clock.OpTotals())
        return after.count - before.count, after.bytes - before.bytes, torch.tpu.memory_allocated() - allocated

    forward = charged("avg_pool2d", lambda: torch.ops.aten.avg_pool2d(x, [7, 7]))
    values = held[0]
    forward_out = charged("avg_pool2d.out", lambda: torch.ops.aten.avg_pool2d.out(x, [7, 7], out=torch.empty_like(values)))
    assert forward == (1, x.nbytes + values.nbytes, values.nbytes) and forward_out[:2] == forward[:2]
    grad = torch.randn(values.shape, device="tpu")
    args = ([7, 7], [7, 7], [0, 0], False, True, None)
    backward = charged("avg_pool2d_backward", lambda: torch.ops.aten.avg_pool2d_backward(grad, x, *args))
    backward_out = charged("avg_pool2d_backward.grad_input", lambda: torch.ops.aten.avg_pool2d_backward.grad_input(
        grad, x, *args, grad_input=torch.empty_like(x)))
    assert backward == (1, grad.nbytes + x.nbytes + x.nbytes, x.nbytes) and backward_out[:2] == backward[:2]


# --- zoo round seven: activations written straight into their new tensor ------------------------------------------

ACTIVATIONS = {
    "relu": torch.relu,
    "relu6": lambda x: F.hardtanh(x, 0.0, 6.0),
    "hardtanh": F.hardtanh,
    "relu6_backward": lambda x: torch.ops.aten.hardtanh_backward(x * 3 - 1, x * 4, 0.0, 6.0),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "channels_last", "scalar"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activations_written_directly_match_cpu(name, layout, dtype):
    """float32/float64 operands of one dtype and shape take the direct path, others the general one: both give
    CPU's values (NaN and infinities included, but for ReLU6's backward), dtype and strides."""
    x = torch.tensor([-7.0, -0.0, 0.0, 0.5, 6.0, 7.5, float("nan"), float("inf"), -float("inf"), 1.0, -1.0, 2.0])
    x = torch.cat([x, torch.randn(36, generator=torch.Generator().manual_seed(3)) * 5]).to(dtype).reshape(2, 3, 4, 2)
    if name == "relu6_backward":  # CPU zeroes the gradient of a NaN in its SIMD lanes and keeps it in its scalar tail
        x = x.nan_to_num(2.0)
    x = {"contiguous": x, "transposed": x.transpose(1, 3), "scalar": x[0, 1, 2, 1],
         "channels_last": x.contiguous(memory_format=torch.channels_last)}[layout]
    expected, actual = ACTIVATIONS[name](x), ACTIVATIONS[name](x.to("tpu"))
    assert_close(actual.cpu(), expected, atol=0, rtol=0, equal_nan=True)
    assert actual.dtype == expected.dtype and actual.stride() == expected.stride()


def test_activation_launched_directly_is_charged_and_allocated_as_before():
    """One launch charged its operands read and its result written, allocating exactly that result."""
    x = torch.randn(4, 32, 14, 14, device="tpu")
    before = clock.op_totals.get("hardtanh_backward", torch_tpu._C.clock.OpTotals()).copy()
    allocated = torch.tpu.memory_allocated()
    gradient = torch.ops.aten.hardtanh_backward(x, x, 0.0, 6.0)
    after = clock.op_totals["hardtanh_backward"]
    assert (after.count - before.count, after.bytes - before.bytes) == (1, 3 * x.nbytes)
    assert torch.tpu.memory_allocated() - allocated == gradient.nbytes == x.nbytes


# --- zoo round ten: activations' maths written into their result -----------------------------------------------

WRITTEN_INTO_RESULT = {
    "hardsigmoid": lambda g, x: F.hardsigmoid(x),
    "hardsigmoid_backward": torch.ops.aten.hardsigmoid_backward,
    "hardswish_backward": torch.ops.aten.hardswish_backward,
    "silu_backward": torch.ops.aten.silu_backward,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "scalar"])
@pytest.mark.parametrize("name", WRITTEN_INTO_RESULT)
def test_activation_maths_written_into_their_result_match_cpu(name, layout, dtype):
    """The MobileNetV3/EfficientNet activations whose maths write their last step into the result (no temporary,
    no copy): CPU's values, NaN and infinities included, in every layout; bit for bit but for SiLU's backward,
    whose sigmoid is NumPy's exp, not CPU's (as before this round). CPU's bf16 hardswish backward passes a NaN
    input's gradient through (its scalar conversion), where the tpu gives NaN: no NaN there."""
    x = torch.tensor([-7.0, -3.0, -0.0, 0.0, 0.5, 3.0, 7.5, float("nan"), float("inf"), -float("inf"), 1.0, -1.0])
    x = torch.cat([x, torch.randn(36, generator=torch.Generator().manual_seed(4)) * 5]).to(dtype).reshape(2, 3, 4, 2)
    if name == "hardswish_backward" and dtype is torch.bfloat16:
        x = x.nan_to_num(2.0)
    grad = (torch.randn(48, generator=torch.Generator().manual_seed(5)) * 2).to(dtype).reshape(2, 3, 4, 2)
    pick = {"contiguous": lambda t: t, "transposed": lambda t: t.transpose(1, 3), "scalar": lambda t: t[0, 1, 2, 1]}
    x, grad = pick[layout](x), pick[layout](grad)
    expected, actual = WRITTEN_INTO_RESULT[name](grad, x), WRITTEN_INTO_RESULT[name](grad.to("tpu"), x.to("tpu"))
    exact = {} if name == "silu_backward" else dict(atol=0, rtol=0)
    assert_close(actual.cpu(), expected, equal_nan=True, **exact)
    assert actual.dtype == expected.dtype and actual.stride() == expected.stride()


@pytest.mark.parametrize("name", ["silu_backward", "hardsigmoid_backward"])
def test_activation_backward_into_its_own_gradient_matches_cpu(name):
    """``grad_input=`` the incoming gradient itself: the maths read each element before writing it."""
    x = torch.randn(4, 8, 5, 5, generator=torch.Generator().manual_seed(6)) * 4
    results = []
    for device in ("cpu", "tpu"):
        grad = torch.randn(4, 8, 5, 5, generator=torch.Generator().manual_seed(7)).to(device)
        getattr(torch.ops.aten, name).grad_input(grad, x.to(device), grad_input=grad)
        results.append(grad.cpu())
    assert_close(results[1], results[0], **({} if name == "silu_backward" else dict(atol=0, rtol=0)))


def _fill_or_error(value, dtype, device):
    try:
        return torch.empty(2, dtype=dtype, device=device).fill_(value).cpu()
    except RuntimeError as error:
        return str(error)


# Equal numbers of different types that c10 tells apart: the int overflows int64 and its float does not
# (C++ compares a double with the limit converted to double); -1 wraps into uint8 and -1.0 does not fit it.
@pytest.mark.parametrize("first, second, dtype", [
    (2**63, 2.0**63, torch.int64), (2.0**63, 2**63, torch.int64),
    (-1, -1.0, torch.uint8), (-1.0, -1, torch.uint8),
    (6.0, 6, torch.uint8), (1e39, 1e39, torch.float64),
], ids=["int_then_float", "float_then_int", "wraps_then_refused", "refused_then_wraps", "six", "float64"])
def test_cached_scalar_overflow_checks_keep_each_values_type(first, second, dtype):
    """The Scalar overflow check is cached (a model passes the same Scalars every launch): a value checked
    once must not answer for an equal one of another type or for another dtype."""
    for value, in_dtype in [(first, dtype), (second, dtype), (1e39, torch.float32), (first, dtype)]:
        expected = _fill_or_error(value, in_dtype, "cpu")
        got = _fill_or_error(value, in_dtype, "tpu")
        if isinstance(expected, str):
            assert got == expected
        else:
            assert torch.equal(got, expected)


class _Spy(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


aten = torch.ops.aten


@pytest.mark.parametrize("call", [
    lambda a, b: aten.t(a), lambda a, b: aten.select(a, 0, 1), lambda a, b: aten.complex(a, b),
    lambda a, b: aten.add(a, b), lambda a, b: aten.sort(a, 0)[0], lambda a, b: aten.polar(a.abs(), b),
    lambda a, b: aten.linalg_vector_norm(a),
], ids=["t", "select", "complex", "add", "sort", "polar", "norm"])
def test_kernels_are_invisible_to_torch_function_modes(call):
    """A torch function mode sees the calls the user makes, on tpu as on CPU, whose kernels are C++: the dispatcher
    ran tpu's Python kernels with the mode on its stack, so the mode also saw (and could refuse) the torch calls
    those kernels make themselves."""
    a, b = torch.randn(3, 3), torch.randn(3, 3)
    on_tpu = a.to("tpu"), b.to("tpu")
    with _Spy() as on_cpu:
        expected = call(a, b)
    with _Spy() as spy:
        actual = call(*on_tpu)
    assert spy.seen == on_cpu.seen
    assert_close(actual.cpu(), expected)


@pytest.mark.parametrize("call", [lambda a, b: torch.complex(a, b), lambda a, b: torch.polar(a.abs(), b)],
                         ids=["complex", "polar"])
def test_torch_refs_mode_runs_the_references_on_tpu(call):
    """test_ops.py's test_python_ref runs a reference under TorchRefsMode(strict=True), which refuses any torch call
    without a reference: tpu's view kernels' own calls were refused ("no _refs support for torch.Tensor.select")."""
    from torch._prims.context import TorchRefsMode

    a, b = torch.randn(4), torch.randn(4)
    on_tpu = a.to("tpu"), b.to("tpu")
    with TorchRefsMode(strict=True):
        actual = call(*on_tpu)
    assert_close(actual.cpu(), call(a, b))


# --- zoo round fourteen: the per-launch floor ---------------------------------------------------------------------

def _refuse(*args, **kwargs):
    raise AssertionError("the general path was taken")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.int32, torch.uint8])
def test_operands_of_real_dtypes_are_read_with_one_test(monkeypatch, dtype):
    """A tpu operand of a dtype NumPy reads as stored, with no negation bit, is its ``as_numpy`` view after one test
    of its dtype and storage: ``is_tpu`` and the conjugate, bool and complex32 handling are not asked."""
    from torch_tpu.ops import _common

    x = (torch.arange(-6, 6) * 3).to(dtype).reshape(3, 4)
    on_tpu = x.to("tpu")
    monkeypatch.setattr(torch_tpu._tensor, "is_tpu", _refuse)
    for operand in (on_tpu, on_tpu.t(), on_tpu[1:, ::2]):
        array = _common.operand(operand)
        assert array.dtype.itemsize == dtype.itemsize and array.shape == tuple(operand.shape)
    assert (torch.from_numpy(_common.operand(on_tpu.t()).copy()) == x.t()).all()
    assert (torch.from_numpy(_common.opmath_operand(on_tpu).copy()) == x).all()


def test_operands_off_the_one_test_are_read_as_before():
    """Negated views, bools viewed from other bytes, conjugates, complex32 and CPU tensors keep their handling."""
    from torch_tpu.ops import _common

    x = torch.tensor([[1.5, -2.0], [0.0, 3.0]])
    assert (_common.operand(torch._neg_view(x.to("tpu"))) == -x.numpy()).all()
    as_bool = torch.tensor([0, 2, 255, 1], dtype=torch.uint8).to("tpu").view(torch.bool)
    assert _common.operand(as_bool).tolist() == [False, True, True, True]
    z = torch.complex(x, x.flip(0))
    assert (_common.operand(z.to("tpu").conj()) == z.conj().resolve_conj().numpy()).all()
    assert _common.operand(z.to(torch.complex32).to("tpu")).dtype == "complex64"
    assert _common.operand(torch.tensor(2.5)) == 2.5
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        _common.operand(x)
    assert _common.opmath_operand(x.to(torch.bfloat16).to("tpu")).dtype == "float32"


DIRECT_STRUCTURED = {
    "neg": torch.neg,
    "exp": torch.exp,
    "sigmoid": torch.sigmoid,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "threshold_backward": lambda x: torch.ops.aten.threshold_backward(x.flip(0), x, 0.25),
    "silu_backward": lambda x: torch.ops.aten.silu_backward(x, x.flip(0)),
    "sqrt": torch.sqrt,
    "reciprocal": torch.reciprocal,
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", DIRECT_STRUCTURED)
def test_structured_functionals_of_native_floats_are_written_into_their_result(monkeypatch, name, dtype):
    """Tensors of one float32/float64 dtype and shape: the maths write straight into the new tensor's array, with no
    promotion or conversion (``compute_into`` is not called), and give CPU's values (to the transcendentals' usual
    tolerance: the general path gave the same bits), dtype and strides. No infinities: CPU's float32 GELU of inf is NaN
    in its vector loop and inf in its scalar tail, on either path."""
    x = torch.tensor([-7.0, -0.0, 0.0, 0.25, 0.5, 6.0, float("nan"), 30.0, -30.0, 1.0, -1.0, 2.0])
    x = torch.cat([x, torch.randn(36, generator=torch.Generator().manual_seed(5)) * 4]).to(dtype).reshape(12, 4)
    on_tpu = x.to("tpu")
    monkeypatch.setattr(pointwise, "compute_into", _refuse)
    expected, actual = DIRECT_STRUCTURED[name](x), DIRECT_STRUCTURED[name](on_tpu)
    assert_close(actual.cpu(), expected, equal_nan=True)
    assert actual.dtype == expected.dtype and actual.stride() == expected.stride()


def test_structured_functionals_written_directly_keep_their_checks_charges_and_allocation():
    """The direct path refuses what CPU refuses (a Scalar past the dtype's range), is charged its operands read and
    its result written, and allocates exactly its result."""
    check_same_error(lambda d: torch.ops.aten.threshold_backward(torch.ones(3, device=d), torch.ones(3, device=d),
                                                                 1e300))
    x = torch.randn(64, 8, device="tpu")
    before = clock.op_totals.get("threshold_backward", torch_tpu._C.clock.OpTotals()).copy()
    allocated = torch.tpu.memory_allocated()
    gradient = torch.ops.aten.threshold_backward(x, x, 0.0)
    after = clock.op_totals["threshold_backward"]
    assert (after.count - before.count, after.bytes - before.bytes) == (1, 3 * x.nbytes)
    assert torch.tpu.memory_allocated() - allocated == gradient.nbytes == x.nbytes


def test_functionals_of_tensors_alone_skip_the_numbers_test(monkeypatch):
    """Only a call with numbers asks whether its tensors are all 0-d; numbers beside 0-d tensors still launch."""
    x = torch.randn(5)
    on_tpu = x.to("tpu")
    original = pointwise.numbers_beside_scalars
    monkeypatch.setattr(pointwise, "numbers_beside_scalars", _refuse)
    assert_close(torch.sigmoid(on_tpu).cpu(), torch.sigmoid(x), atol=0, rtol=0)
    assert_close(torch.maximum(on_tpu, on_tpu.flip(0)).cpu(), torch.maximum(x, x.flip(0)), atol=0, rtol=0)
    monkeypatch.setattr(pointwise, "numbers_beside_scalars", original)
    check(lambda t: torch.pow(t, 2), torch.tensor(3, dtype=torch.int8))
    check(lambda t: torch.remainder(t, 2.5), torch.tensor(7.0))


# --- zoo round fifteen b: F.batch_norm goes straight to native_batch_norm through autograd, without the composite's
# _batch_norm_impl_index and its empty reserve launch ---------------------------------------------------------------

COMPOSITE = torch._C.DispatchKey.CompositeImplicitAutograd


def _batch_norm_calls(training):
    """F.batch_norm and, beside it, the composite kernel CPU runs for it: each a function of (x, weight, bias,
    running_mean, running_var)."""
    return {
        "direct": lambda *a: F.batch_norm(a[0], a[3], a[4], a[1], a[2], training, 0.1, 1e-5),
        "composite": lambda *a: torch.ops.aten.batch_norm.default._op_dk(COMPOSITE, a[0], a[1], a[2], a[3], a[4],
                                                                         training, 0.1, 1e-5, False),
    }


BATCH_NORM_CASES = {
    "4-d, training": (lambda: make(4, 8, 5, 5), True, True, True),
    "channels-last, training": (lambda: make(4, 8, 5, 5).contiguous(memory_format=torch.channels_last), True, True,
                                True),
    "2-d, no affine": (lambda: make(6, 3), False, True, True),
    "3-d, no running statistics": (lambda: make(2, 4, 6), True, False, True),
    "evaluation": (lambda: make(3, 4, 2, 2), True, True, False),
    "float64, transposed": (lambda: make(5, 4, 3, dtype=torch.float64).transpose(0, 2).transpose(1, 2), True, True,
                            True),
}


def _batch_norm_outcome(call, x, affine, tracked, device):
    channels = x.shape[1]
    leaves = [x.detach().to(device).requires_grad_()]
    leaves += [make(channels, dtype=x.dtype).to(device).requires_grad_() if affine else None for _ in range(2)]
    running = ([torch.linspace(-1, 1, channels, dtype=x.dtype, device=device),
                torch.linspace(0.5, 2, channels, dtype=x.dtype, device=device)] if tracked else [None, None])
    output = call(*leaves, *running)
    output.backward(torch.linspace(-3, 3, output.numel(), dtype=x.dtype, device=device).reshape(output.shape))
    tensors = [output, *(t.grad for t in leaves if t is not None), *(r for r in running if r is not None)]
    return type(output.grad_fn).__name__, output.stride(), [t.detach().cpu() for t in tensors]


@pytest.mark.parametrize("case", BATCH_NORM_CASES)
def test_batch_norm_is_the_composites_bit_for_bit_and_cpus(case):
    """The output, every gradient and the running statistics are the composite's on tpu bit for bit (the same
    native_batch_norm and backward kernels), with CPU's node and strides, and CPU's values within rounding."""
    make_input, affine, tracked, training = BATCH_NORM_CASES[case]
    calls = _batch_norm_calls(training)
    outcomes = []
    for kind, device in (("direct", "tpu"), ("composite", "tpu"), ("direct", "cpu")):
        torch.manual_seed(0)  # the same input and parameters each time
        outcomes.append(_batch_norm_outcome(calls[kind], make_input(), affine, tracked, device))
    direct, composite, cpu = outcomes
    assert direct[:2] == composite[:2] == cpu[:2]
    for ours, theirs in zip(direct[2], composite[2]):
        assert torch.equal(ours, theirs)
    assert_close(direct[2], cpu[2])


def test_batch_norm_launches_native_batch_norm_alone():
    """One aten launch below F.batch_norm where the composite makes three (the index op, an empty reserve and the
    kernel); tracing (a dispatch mode) still sees CPU's ops."""
    x = torch.rand(4, 8, 5, 5, device="tpu", requires_grad=True)
    running = torch.zeros(8, device="tpu"), torch.ones(8, device="tpu")
    with torch.profiler.profile() as profile:
        F.batch_norm(x, *running, training=True)
    names = [event.name for event in profile.events()]
    assert "aten::native_batch_norm" in names
    assert "aten::_batch_norm_impl_index" not in names and "aten::empty" not in names

    seen = []

    class Recorder(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with Recorder():
        F.batch_norm(x, *running, training=True)
    assert seen == ["aten.empty.memory_format", "aten.native_batch_norm.default"]


@pytest.mark.parametrize("call", [
    lambda d: F.batch_norm(torch.ones(2, 3, 4, device=d), torch.zeros(4, device=d), torch.ones(3, device=d)),
    lambda d: F.batch_norm(torch.ones(2, 3, device=d), None, None, training=False),
    lambda d: F.batch_norm(torch.ones(2, 3, device=d), None, None, torch.ones(2, device=d), training=True),
    lambda d: F.batch_norm(torch.ones(2, 3, device=d, dtype=torch.float64), None, None, torch.ones(3, device=d),
                           training=True),
])
def test_batch_norm_errors_are_cpus(call):
    check_same_error(call)


def test_batch_norm_of_an_empty_batch_is_cpus():
    """The composite's own path for an empty input (a copy scaled by the weight's first element), on either device."""
    check_grads(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), make(0, 3, 4), make(3), make(3))


# --- zoo round fifteen c: the unstructured activations' direct path --------------------------------------------


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_activation_backward_direct_path_views_its_new_result_once(monkeypatch, layout):
    """ReLU6's backward on float32 operands of one layout: a contiguous result comes with its NumPy view
    (``empty_with_array``), so only the two operands are viewed; a strided one is viewed after its allocation. The
    values and strides are CPU's either way."""
    x = torch.randn(4, 8, 5, 5, generator=torch.Generator().manual_seed(8)) * 4
    grad = torch.randn(4, 8, 5, 5, generator=torch.Generator().manual_seed(9))
    if layout == "channels_last":
        x, grad = (t.contiguous(memory_format=torch.channels_last) for t in (x, grad))
    on_tpu = x.to("tpu"), grad.to("tpu")
    viewed = []
    as_numpy = pointwise.as_numpy
    monkeypatch.setattr(pointwise, "as_numpy", lambda t: viewed.append(t) or as_numpy(t))
    actual = torch.ops.aten.hardtanh_backward(on_tpu[1], on_tpu[0], 0.0, 6.0)
    monkeypatch.undo()
    assert len(viewed) == (2 if layout == "contiguous" else 3)
    expected = torch.ops.aten.hardtanh_backward(grad, x, 0.0, 6.0)
    assert actual.stride() == expected.stride()
    assert torch.equal(actual.cpu().view(torch.int32), expected.view(torch.int32))
