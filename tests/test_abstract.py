"""Abstract mode (torch_tpu.abstract): shapes and exact HBM bytes without values.

The oracle is eager mode itself: the same program run eagerly and abstractly must allocate the
same bytes at every step, reach the same peak and charge the clock the same FLOPs. Metadata is
checked against torch CPU, and everything that needs values must fail naming what it was.
"""

import contextlib
import gc

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from models import GPT

import torch_tpu
from torch_tpu import _C
from torch_tpu._errors import NoValuesError
from torch_tpu import abstract, has_values

from conftest import run_python

GiB = 1 << 30


def _clock():
    return _C.current_chip().clock


def test_allocations_are_exact_and_take_no_host_memory(memory_baseline):
    with abstract():
        huge = torch.empty(40 * GiB // 4, device="tpu")  # 40 GiB of HBM
        half = torch.empty(3, 5, dtype=torch.bfloat16, device="tpu")
        assert memory_baseline.delta() == 40 * GiB + 30
        assert not has_values(huge)
        address = huge.data_ptr()
        assert address and address != half.data_ptr()
        del huge, half
    assert memory_baseline.delta() == 0


def test_host_memory_stays_small_for_a_model_larger_than_the_host():
    """150 GiB of parameters and their AdamW state on the chip: the process's RSS barely moves."""
    process = run_python("""
        import resource, torch, torch_tpu
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with torch_tpu.abstract():
            layers = torch.nn.Sequential(*(torch.nn.Linear(16384, 16384, device="tpu") for _ in range(36)))
            optimizer = torch.optim.AdamW(layers.parameters(), foreach=True)
            layers(torch.empty(8, 16384, device="tpu")).sum().backward()
            optimizer.step()
            allocated = torch.tpu.memory_allocated()
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
        print(allocated, grown)
    """)
    allocated, grown = map(int, process.stdout.split())
    parameters = 36 * (16384 * 16384 + 16384) * 4
    assert allocated >= 4 * parameters  # weights, gradients, two AdamW moments
    assert grown < 300 * (1 << 20)


def test_out_of_memory_is_raised_at_the_real_capacity(memory_baseline):
    capacity = _C.current_chip().hbm.capacity
    with abstract():
        first = torch.empty(capacity // 2, dtype=torch.uint8, device="tpu")
        with pytest.raises(torch.OutOfMemoryError, match="Tried to allocate"):
            torch.empty(capacity // 2 + 1, dtype=torch.uint8, device="tpu")
        del first
    assert memory_baseline.delta() == 0


def _step_trace(run_abstractly, variant):
    """HBM after each of two steps, the peak, and the MXU FLOPs, for a small GPT training step."""
    torch.manual_seed(0)
    gc.collect()
    context = abstract() if run_abstractly else contextlib.nullcontext()
    if variant == "meta":
        with torch.device("meta"):
            model = GPT(vocabulary=128, context=32, width=64, heads=4, layers=2)
    else:
        model = GPT(vocabulary=128, context=32, width=64, heads=4, layers=2)
    if variant == "checkpoint":
        for block in model.blocks:
            block.forward = (lambda forward: lambda x: checkpoint.checkpoint(forward, x, use_reentrant=False))(
                block.forward)
    if variant == "fp8":
        model = torch_tpu.fp8.convert_to_float8(model)
    base = torch.tpu.memory_allocated()
    clock = _clock()
    with context:
        model = model.to_empty(device="tpu") if variant == "meta" else model.to("tpu")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=variant == "fused")
        tokens = torch.randint(0, 128, (8, 32), device="tpu")
        torch.tpu.reset_peak_memory_stats()
        flops = clock.total_flops
        after_each_step = []
        for _ in range(2):
            with torch.autocast("tpu", dtype=torch.bfloat16) if variant in ("autocast", "fp8") else contextlib.nullcontext():
                loss = model(tokens, tokens)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            after_each_step.append(torch.tpu.memory_allocated() - base)
    return after_each_step, torch.tpu.max_memory_allocated() - base, clock.total_flops - flops


@pytest.mark.parametrize("variant", ["plain", "fused", "checkpoint", "autocast", "fp8", "meta"])
@pytest.mark.usefixtures("paused_collector")
def test_a_training_step_allocates_and_computes_as_in_eager_mode(variant):
    eager = _step_trace(False, variant)  # attention through the fused kernel, which lays its output out as Meta does
    assert _step_trace(True, variant) == eager
    assert eager[1] > eager[0][0] > 0 and eager[2] > 0


@pytest.mark.usefixtures("paused_collector")
def test_attention_allocates_and_computes_as_in_eager_mode():
    q, k, v = (torch.randn(2, heads, 64, 32, device="tpu", dtype=torch.bfloat16, requires_grad=True)
               for heads in (8, 2, 2))
    clock = _clock()

    def charges(run_abstractly):
        before, allocated = clock.totals_snapshot(), torch.tpu.memory_allocated()
        with abstract() if run_abstractly else contextlib.nullcontext():
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            held = torch.tpu.memory_allocated() - allocated
            out.sum().backward()
        q.grad = k.grad = v.grad = None
        launched = {name: t.minus(before[name]) if name in before else t for name, t in clock.totals_snapshot().items()}
        return held, {name: (t.count, t.bytes, t.flops) for name, t in launched.items() if t.count}

    assert charges(True) == charges(False)


def test_launches_are_charged_as_in_eager_mode():
    """Same kernels, same bytes, same FLOPs, hence the same simulated time (an MLP: no layout choices)."""
    def charges(run_abstractly):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 10)).to("tpu")
        x, y = torch.randn(32, 64, device="tpu"), torch.randint(0, 10, (32,), device="tpu")
        clock = _clock()
        before, busy = clock.totals_snapshot(), clock.busy_seconds
        with abstract() if run_abstractly else contextlib.nullcontext():
            F.cross_entropy(model(x), y).backward()
        after = clock.totals_snapshot()
        launched = {name: totals.minus(before[name]) if name in before else totals for name, totals in after.items()}
        return {name: (t.count, t.bytes, t.flops) for name, t in launched.items() if t.count}, clock.busy_seconds - busy
    eager, abstract_run = charges(False), charges(True)
    assert abstract_run[0] == eager[0]
    assert abstract_run[1] == pytest.approx(eager[1], rel=1e-12)


@pytest.mark.parametrize("case", [
    lambda x, y: x + y[0, :4],
    lambda x, y: x.t() * 2,
    lambda x, y: x.t() @ y,
    lambda x, y: torch.cat([x, y], 1),
    lambda x, y: x.sum(0, keepdim=True),
    lambda x, y: x.max(1),
    lambda x, y: x.to(torch.bfloat16).softmax(-1),
    lambda x, y: x.transpose(0, 1).contiguous(),
    lambda x, y: torch.where(x > 0, x, y[:, :4]),
    lambda x, y: x.half().mean(),
    lambda x, y: torch.stack([x, x]).unbind(1),
    lambda x, y: F.layer_norm(x, (4,)),
    lambda x, y: x.flip(0)[:, None, 1:],
    lambda x, y: torch.topk(x, 2),
], ids=lambda case: "")
def test_output_metadata_matches_cpu(case):
    x, y = torch.randn(3, 4), torch.randn(3, 5)
    expected = case(x, y)
    tx, ty = x.to("tpu"), y.to("tpu")
    with abstract():
        got = case(tx, ty)
    for e, g in zip(*(r if isinstance(r, tuple) else (r,) for r in (expected, got))):
        assert (g.shape, g.dtype, g.stride(), g.device.type) == (e.shape, e.dtype, e.stride(), "tpu")


@pytest.mark.parametrize("parameter_dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("norm", [
    lambda x, p: torch.ops.aten.native_layer_norm(x, [5], p(5), p(5), 1e-5),
    lambda x, p: torch.ops.aten.native_layer_norm(x, [5], None, None, 1e-5),
    lambda x, p: torch.ops.aten.native_batch_norm(x, p(6), p(6), p(6), p(6), True, 0.1, 1e-5),
    lambda x, p: torch.ops.aten._native_batch_norm_legit(x, p(6), p(6), p(6), p(6), True, 0.1, 1e-5),
    lambda x, p: torch.ops.aten._native_batch_norm_legit(x, p(6), p(6), True, 0.1, 1e-5),
    lambda x, p: torch.ops.aten.native_batch_norm(x, p(6), p(6), p(6), p(6), False, 0.1, 1e-5),
    lambda x, p: torch.ops.aten._native_batch_norm_legit(x, p(6), p(6), p(6), p(6), False, 0.1, 1e-5),
    lambda x, p: torch.ops.aten._native_batch_norm_legit_no_training(x, p(6), p(6), p(6), p(6), 0.1, 1e-5),
], ids=["layer", "layer-no-affine", "batch", "batch-legit", "batch-no-stats", "batch-eval", "batch-legit-eval",
        "batch-legit-no-training"])
def test_norm_statistics_have_the_kernels_dtype_and_cost(norm, parameter_dtype):
    """Meta saves mean and rstd in float32 (CUDA's choice), and in evaluation CUDA's running statistics; CPU's
    kernels, and tpu's, in a bf16 input's dtype unless float32 parameters make the norm mixed, and none (empty)
    in evaluation. Abstract mode must allocate and charge what the kernel does."""
    x = torch.randn(4, 6, 5, dtype=torch.bfloat16, device="tpu")

    def run(run_abstractly):
        before = _clock().totals_snapshot()
        with abstract() if run_abstractly else contextlib.nullcontext():
            results = norm(x, lambda n: torch.ones(n, dtype=parameter_dtype, device="tpu"))
        after = _clock().totals_snapshot()
        launched = {name: totals.minus(before[name]) if name in before else totals for name, totals in after.items()}
        charged = {name: (t.count, t.bytes) for name, t in launched.items() if t.count}
        return [(r.dtype, r.shape, r.stride()) for r in results], charged

    assert run(True) == run(False)


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "channels_last"])
def test_dropout_backward_is_laid_out_as_in_eager_mode(layout):
    """Eager lays the gradient out as TensorIterator lays out ``grad * mask``; Meta's is contiguous."""
    def gradient_layout(run_abstractly):
        with abstract() if run_abstractly else contextlib.nullcontext():
            grad = torch.ones(4, 8, 6, 6, device="tpu")
            grad = {"contiguous": grad, "transposed": grad.transpose(1, 3),
                    "channels_last": grad.contiguous(memory_format=torch.channels_last)}[layout]
            result = torch.ops.aten.native_dropout_backward(grad, torch.ones_like(grad, dtype=torch.bool), 2.0)
            return result.dtype, result.shape, result.stride()

    assert gradient_layout(True) == gradient_layout(False)


@pytest.mark.parametrize("softmax", [torch.ops.aten._softmax, torch.ops.aten._log_softmax])
def test_half_to_float_softmax_is_refused_as_in_eager_mode(softmax):
    """Meta takes (or refuses in its own words) what the tpu kernel refuses with CUDA's error."""
    x, half = torch.randn(3, 4, dtype=torch.bfloat16, device="tpu"), torch.randn(3, 4, dtype=torch.float16, device="tpu")
    for run_abstractly in (False, True):
        with abstract() if run_abstractly else contextlib.nullcontext():
            with pytest.raises(RuntimeError, match="conversion is supported for Half type only"):
                softmax(x, 1, True)
            assert softmax(half, 1, True).dtype == torch.float32


def test_views_in_place_and_out_keep_their_aliasing(memory_baseline):
    with abstract():
        x = torch.empty(4, 6, device="tpu")
        view = x[1:].t()
        assert view.add_(1) is view and view.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
        out = torch.empty(0, device="tpu")
        before = torch.tpu.memory_allocated()
        assert torch.mul(x, 2, out=out) is out
        assert out.shape == (4, 6) and torch.tpu.memory_allocated() - before == 96  # out= grew by its new size
        values, indices = torch.empty(0, device="tpu"), torch.empty(0, dtype=torch.long, device="tpu")
        assert torch.max(x, 1, out=(values, indices))[0] is values and indices.shape == (4,)
        del x, view, out, values, indices


@pytest.mark.parametrize("needs_values, what", [
    (lambda t: t.sum().item(), "Tensor.item()"),
    (lambda t: float(t[0, 0]), "Tensor.item()"),
    (lambda t: bool(t.sum() > 0), "Tensor.item()"),
    (lambda t: t.cpu(), "Copying a tpu tensor to the cpu"),
    (lambda t: t.tolist(), "Copying a tpu tensor to the cpu"),
    (lambda t: torch.nonzero(t), "aten.nonzero"),
    (lambda t: t[t > 0], "aten.index.Tensor"),
    (lambda t: torch.unique(t), "aten._unique2"),
    (lambda t: torch.equal(t, t), "torch.equal"),
])
def test_what_needs_values_raises_naming_it(needs_values, what):
    with abstract():
        t = torch.ones(2, 3, device="tpu")
        with pytest.raises(NoValuesError, match=what.replace("(", r"\(").replace(")", r"\)")):
            needs_values(t)


def test_printing_shows_metadata_instead_of_values():
    with abstract():
        t = torch.ones(2, 3, dtype=torch.bfloat16, device="tpu", requires_grad=True) * 2
        assert repr(t) == ("tensor(..., size=(2, 3), device='tpu:0', dtype=torch.bfloat16,\n"
                           "       grad_fn=<MulBackward0>)")
        assert repr(torch.empty(0, device="tpu")) == "tensor([], device='tpu:0')"
        assert torch.empty(0, 3, device="tpu").cpu().shape == (0, 3)  # no values needed


def test_a_real_tensor_keeps_its_values_until_abstract_mode_writes_it():
    real = torch.arange(4.0).to("tpu")
    other = torch.ones(4, device="tpu")
    with abstract():
        result = real * 2
        other.add_(1)
    assert real.tolist() == [0.0, 1.0, 2.0, 3.0]  # only read: still has its values
    assert not has_values(result) and not has_values(other)
    with pytest.raises(NoValuesError, match="aten.add.Tensor"):
        other + 1  # outside abstract mode a kernel would read values that are gone
    with pytest.raises(NoValuesError):
        other.cpu()


def test_moving_a_real_cpu_model_drops_its_bytes():
    model = torch.nn.Linear(8, 4)
    with abstract():
        model.to("tpu")
    assert model.weight.device.type == "tpu" and not has_values(model.weight)


def test_errors_are_those_of_eager_mode():
    x = torch.ones(3, 4, device="tpu")
    for run_abstractly in (False, True):
        with abstract() if run_abstractly else contextlib.nullcontext():
            with pytest.raises(RuntimeError, match="same device|expected device"):
                x + torch.ones(3, 4)
            with pytest.raises(RuntimeError, match="size of tensor a|broadcast a dimension of length 5"):
                x + torch.ones(5, device="tpu")
            with pytest.raises(RuntimeError, match="cannot be multiplied|same reduction dim"):
                x @ x


def test_fp8_matmul_follows_the_tpu_kernel_rules():
    a = torch.randn(16, 32, device="tpu").to(torch.float8_e4m3fn)
    b = torch.randn(32, 24, device="tpu").to(torch.float8_e4m3fn)  # row-major: CUDA refuses it, CPU and tpu accept it
    one = torch.tensor(1.0, device="tpu")
    with abstract():
        out = torch._scaled_mm(a, b, one, one, out_dtype=torch.bfloat16)
        assert (out.shape, out.dtype) == ((16, 24), torch.bfloat16)
        with pytest.raises(RuntimeError):
            torch._scaled_mm(a, b.t(), one, one, out_dtype=torch.bfloat16)


def test_environment_variable_makes_the_whole_process_abstract():
    process = run_python("""
        import torch, torch_tpu
        x = torch.ones(1 << 28, device="tpu")  # 1 GiB
        print(torch_tpu.is_abstract(), torch.tpu.memory_allocated(), torch_tpu.has_values(x))
    """, env={"TORCH_TPU_ABSTRACT": "1"})
    assert process.stdout.split() == ["True", str(1 << 30), "False"]


_LIBRARY = torch.library.Library("torch_tpu_abstract_test", "DEF")
_LIBRARY.define("double(Tensor x) -> Tensor")
_LIBRARY.impl("double", lambda x: x * 2, "CPU")
_LIBRARY.impl("double", lambda x: torch.empty_like(x), "Meta")


def test_the_opt_in_cpu_fallback_gives_shapes_from_meta(monkeypatch):
    """An op with no tpu kernel would run on the CPU with TORCH_TPU_CPU_FALLBACK=1: it needs no values here."""
    monkeypatch.setenv("TORCH_TPU_CPU_FALLBACK", "1")
    with abstract():
        doubled = torch.ops.torch_tpu_abstract_test.double(torch.ones(2, 3, device="tpu"))
    assert (doubled.shape, doubled.device.type, has_values(doubled)) == ((2, 3), "tpu", False)
    monkeypatch.setenv("TORCH_TPU_CPU_FALLBACK", "0")
    with abstract(), pytest.raises(NotImplementedError, match="torch_tpu_abstract_test::double"):
        torch.ops.torch_tpu_abstract_test.double(torch.ones(2, 3, device="tpu"))


def test_checks_of_values_pass_and_metadata_queries_answer_as_in_eager_mode():
    with abstract():
        torch._assert_async(torch.ones(1, device="tpu").sum() > 0)  # nothing to check: no values
        inverse = torch.linalg.inv(torch.ones(3, 3, device="tpu"))  # linalg's error-code check likewise
        assert inverse.shape == (3, 3) and not has_values(inverse)
    q = torch.ones(1, 2, 8, 4, device="tpu")

    def choice():
        try:
            return torch._fused_sdp_choice(q, q, q)
        except Exception as error:  # no fused attention on this branch: the same error both ways
            return type(error)

    with abstract():
        abstractly = choice()
    assert abstractly == choice()


def test_list_ops_run_element_by_element_with_the_results_of_the_whole_list(memory_baseline):
    shapes = [(3, 4), (5,), (3, 4), (2, 1, 6), (5,)]
    cpu = [torch.randn(shape).t() if len(shape) == 2 else torch.randn(shape) for shape in shapes]
    expected = torch._foreach_addcmul(cpu, cpu, cpu, value=0.5)
    with abstract():
        tensors = [t.to("tpu") for t in cpu]
        before = torch.tpu.memory_allocated()
        for _ in range(2):  # the second launch reuses the whole list's recipe
            results = torch._foreach_addcmul(tensors, tensors, tensors, value=0.5)
            assert [(r.shape, r.stride(), r.dtype) for r in results] == [(e.shape, e.stride(), e.dtype) for e in expected]
            assert torch.tpu.memory_allocated() - before == sum(t.nbytes for t in cpu)
            del results
        torch._foreach_mul_(tensors, 2.0)
        assert not any(has_values(t) for t in tensors)
        del tensors


def _cpu_error(function, *args):
    with pytest.raises(RuntimeError) as caught:
        function(*args)
    return str(caught.value)


@pytest.mark.parametrize("function, dtypes", [
    (F.linear, (torch.float32, torch.bfloat16, torch.bfloat16)),  # a float32 activation into bf16 weights
    (F.linear, (torch.bfloat16, torch.bfloat16, torch.float32)),
    (torch.bmm, (torch.float32, torch.bfloat16)),
    (lambda x, w, b, mean, var: F.batch_norm(x, mean, var, w, b, training=True),  # bf16 weights, float32 statistics
     (torch.bfloat16, torch.bfloat16, torch.bfloat16, torch.float32, torch.float32)),
    (lambda x, w: F.layer_norm(x, x.shape[-1:], w), (torch.bfloat16, torch.float16)),
])
def test_operands_of_mixed_dtypes_are_refused_as_cpu_refuses_them(function, dtypes):
    """Meta takes these mixes and answers a dtype; CPU's kernels (and tpu's) refuse them: abstract mode must not
    plan a program that cannot run."""
    shapes = {2: [(2, 4, 8), (2, 8, 3)], 3: [(3, 8), (5, 8), (5,)], 5: [(2, 4, 3, 3), (4,), (4,), (4,), (4,)]}
    cpu = [torch.ones(shape, dtype=dtype) for shape, dtype in zip(shapes.get(len(dtypes), [(3, 8), (8,)]), dtypes)]
    expected = _cpu_error(function, *cpu)
    with abstract():
        with pytest.raises(RuntimeError) as caught:
            function(*(tensor.to("tpu") for tensor in cpu))
    assert str(caught.value) == expected
