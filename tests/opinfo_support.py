"""Run PyTorch's OpInfo samples on tpu and compare every one with the CPU.

Shared by ``tests/test_opinfo.py`` (pytest) and ``tools/op_coverage.py`` (the
coverage report), so that both judge a sample in exactly the same way.

Samples are generated on the CPU with a fixed seed and then copied to tpu
byte for byte (same sizes, strides and overlaps). Generating them on tpu would
run ``uniform_``, ``randint``, ``repeat_interleave`` and indexing kernels before
the op under test, and a gap in any of those would be charged to every op.

Per sample, a check returns an ``Outcome``:
- passed: tpu matches CPU (values within tolerance, dtype, shape), or both
  raised (the tpu error is an instance of the CPU error's class and is not a
  missing-kernel error);
- failed: anything else, with the first line of the reason;
- skipped: nothing to check (no differentiable output, say).
Ops whose values are random or undefined across devices (``has_nondeterministic_output``
or an upstream skip of ``TestCommon.test_compare_cpu``) are compared on
metadata only: shape, dtype and device of every output. So are the samples of
ops that OpInfo runs under ``wrapper_set_seed`` (its mark of a random op: randn,
randint, dropout, ...) whose tpu run draws from the tpu generator, which is not
CPU's; a sample that draws nothing (dropout in eval mode, ``item``) is compared
in full.

A tensor that a sample function leaves on the CPU whatever device it is asked
for (``tensor_split``'s ``indices_or_sections``, ``narrow``'s ``start``) stays
on the CPU, as in PyTorch's own device tests: such tensors are the ones that a
generation of the same samples for the meta device leaves on the CPU.
"""

import dataclasses
import re
from collections.abc import Iterator

import pytest
import torch
from torch.testing._internal.common_device_type import precisionOverride, toleranceOverride
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.common_utils import clear_tracked_input, set_rng_seed
from torch.testing._internal.opinfo.core import DecorateInfo
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_unflatten

DEVICE = "tpu"
SEED = 0
FORWARD = "forward"
GRAD = "grad"
FORWARD_DTYPES = (torch.float32, torch.bfloat16, torch.int64, torch.bool)
GRAD_DTYPES = (torch.float32,)

# PyTorch's own CPU-vs-device test (TestCommon.test_compare_cpu) compares with
# atol=rtol=1e-3 and lets an OpInfo's toleranceOverride loosen that further.
# bf16 keeps one rounding of slack on top (its epsilon is 7.8e-3).
# float64 outputs (of integer inputs with dtype=torch.float64, say) are held far tighter: only their last
# bits may differ, as CPU's own do from host to host (its reductions sum in SIMD-width lanes).
BASE_TOLERANCE = {  # dtype -> (atol, rtol)
    torch.float32: (1e-3, 1e-3),
    torch.complex64: (1e-3, 1e-3),
    torch.float64: (1e-7, 1e-7),
    torch.complex128: (1e-7, 1e-7),
    torch.bfloat16: (1e-2, 1.6e-2),
}
UPSTREAM_TEST = ("TestCommon", "test_compare_cpu")
RANDOM_VALUES = "random values: the tpu generator is not CPU's"

PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"
# tools/op_coverage.py's reason for an op that killed its worker process: such
# an op would kill pytest too, so tests/test_opinfo.py does not run it.
CRASH_REASON = "process crashed"
MISSING_OP_PATTERNS = (
    re.compile(r"operator '([^']+)' is not implemented"),
    re.compile(r"Could not run '([^']+)' with arguments"),
    re.compile(r"(\w+) not implemented\. You are likely triggering"),
)

OPS_BY_FULL_NAME = {op.full_name: op for op in op_db}

# The default pytest run: representative ops of every kernel family
# (pointwise, reduction, linalg, indexing/shape, nn, factory and random).
FAST_OPS = (
    # pointwise
    "abs", "neg", "exp", "log", "sqrt", "rsqrt", "sin", "tanh", "sigmoid", "floor",
    "reciprocal", "add", "sub", "mul", "div.no_rounding_mode", "pow", "maximum",
    "eq", "lt", "where", "clamp", "remainder", "atan2", "lerp",
    # reductions
    "sum", "mean", "amax", "argmax", "prod", "var", "logsumexp", "softmax",
    "log_softmax", "cumsum", "max.reduction_with_dim",
    # linalg
    "mm", "matmul", "bmm", "addmm", "linalg.vector_norm",
    # indexing and shape
    "cat", "stack", "index_select", "gather", "scatter_add", "index_add",
    "masked_fill", "__getitem__", "transpose", "permute", "reshape", "flip", "tril",
    "repeat", "narrow",
    # nn
    "nn.functional.relu", "nn.functional.gelu", "nn.functional.silu",
    "nn.functional.linear", "nn.functional.layer_norm", "nn.functional.embedding",
    "nn.functional.cross_entropy", "nn.functional.mse_loss", "nn.functional.conv2d",
    # factory and random
    "zeros_like", "full_like", "arange", "nn.functional.dropout",
)


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: str
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Policy:
    """How the samples of one (op, dtype) are compared."""

    atol: float
    rtol: float
    values_undefined: str = ""  # why values are not compared, if they are not
    seeded: bool = False  # OpInfo reseeds the RNG for each call: values compared unless tpu draws


def fast_ops():
    return [OPS_BY_FULL_NAME[name] for name in FAST_OPS]


def dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def kinds_and_dtypes(op, dtypes=FORWARD_DTYPES):
    """The (kind, dtype) checks that apply to an op: supported dtypes only."""
    forward = [(FORWARD, d) for d in dtypes if d in op.supported_dtypes("cpu")]
    grad = [(GRAD, d) for d in GRAD_DTYPES if d in dtypes and d in op.supported_backward_dtypes("cpu")]
    return forward + grad


# ---------------------------------------------------------------- policy ----


def _upstream_decorators(op, dtype):
    """Decorators PyTorch applies to its CPU-vs-device comparison for this op on any device."""
    cls_name, test_name = UPSTREAM_TEST
    params = {"op": op, "dtype": dtype}
    for info in op.decorators:
        if not isinstance(info, DecorateInfo):
            yield info  # a bare decorator applies to every test
        elif info.device_type is None and info.is_active(cls_name, test_name, None, dtype, params):
            yield from info.decorators


def _skip_reason(decorator):
    def probe():
        pass

    try:
        decorated = decorator(probe)
    except Exception:  # a decorator that needs a real test: it is not a skip
        return ""
    return getattr(decorated, "__unittest_skip_why__", "") if getattr(decorated, "__unittest_skip__", False) else ""


def _is_seeded(op):
    """OpInfo wraps random ops in ``wrapper_set_seed``, which seeds the RNG before each call."""
    code = getattr(op.op, "__code__", None)
    return code is not None and "wrapper_set_seed" in code.co_names


def policy_for(op, dtype):
    atol, rtol = BASE_TOLERANCE.get(dtype, (0.0, 0.0))
    undefined = "has_nondeterministic_output" if op.has_nondeterministic_output else ""
    for decorator in _upstream_decorators(op, dtype):
        if isinstance(decorator, toleranceOverride) and dtype in decorator.d:
            atol, rtol = max(atol, decorator.d[dtype].atol), max(rtol, decorator.d[dtype].rtol)
        elif isinstance(decorator, precisionOverride) and dtype in decorator.d:
            atol = max(atol, decorator.d[dtype])
        elif not undefined:
            undefined = _skip_reason(decorator)
    return Policy(atol, rtol, undefined, seeded=_is_seeded(op))


# ------------------------------------------------------- moving samples ----


def tensor_to_tpu(tensor):
    """An exact tpu copy: same values, sizes, strides (overlaps included), storage offset and requires_grad.

    The whole storage is copied, so a view keeps the elements around it: ``as_strided`` with an
    explicit storage offset reads the same bytes on both devices.
    """
    if tensor.layout != torch.strided:  # sparse samples: whatever the backend makes of them
        return tensor.detach().to(DEVICE).requires_grad_(tensor.requires_grad)
    with torch.no_grad():
        cpu = tensor.detach().resolve_conj().resolve_neg()
        elements = cpu.untyped_storage().nbytes() // cpu.element_size()
        storage = cpu.as_strided((elements,), (1,), 0)
        copy = storage.to(DEVICE).as_strided(cpu.shape, cpu.stride(), cpu.storage_offset())
    return copy.requires_grad_(tensor.requires_grad)


def _value_to_tpu(value):
    """Tensors and device arguments ("cpu" or torch.device("cpu")) move to tpu."""
    if isinstance(value, torch.Tensor):
        return tensor_to_tpu(value)
    if isinstance(value, torch.device) and value.type == "cpu":
        return torch.device(DEVICE)
    if isinstance(value, str) and value == "cpu":
        return DEVICE
    return value


def _leaves(sample):
    return tree_flatten((sample.input, sample.args, sample.kwargs))


def sample_to_tpu(sample, cpu_side=frozenset()):
    """The sample with every tensor on tpu, except the leaves (positions in its flattened
    input, args and kwargs) in ``cpu_side``."""
    leaves, spec = _leaves(sample)
    moved = [leaf if position in cpu_side else _value_to_tpu(leaf) for position, leaf in enumerate(leaves)]
    tpu_input, tpu_args, tpu_kwargs = tree_unflatten(moved, spec)
    return type(sample)(
        tpu_input,
        args=tpu_args,
        kwargs=tpu_kwargs,
        output_process_fn_grad=sample.output_process_fn_grad,
        broadcasts_input=sample.broadcasts_input,
        name=sample.name,
    )


def cpu_side_leaves(op, dtype, kind, generated):
    """Per generated sample, the positions of the tensors its sample function keeps on the CPU
    whatever the device: those still on the CPU when the same samples are made for meta.
    Nothing stays on the CPU where that generation fails or differs in structure."""
    nothing = [frozenset()] * len(generated)
    try:
        set_rng_seed(SEED)
        probes = list(op.sample_inputs("meta", dtype, requires_grad=kind == GRAD, set_seed=False))
    except Exception:  # sample functions that read values cannot run on meta
        return nothing
    finally:
        clear_tracked_input()
    if len(probes) != len(generated):
        return nothing
    return [_cpu_side(sample, probe) for sample, probe in zip(generated, probes)]


def _cpu_side(sample, probe):
    (leaves, spec), (probe_leaves, probe_spec) = _leaves(sample), _leaves(probe)
    if spec != probe_spec:
        return frozenset()
    return frozenset(
        position
        for position, (leaf, probe_leaf) in enumerate(zip(leaves, probe_leaves))
        if isinstance(leaf, torch.Tensor) and isinstance(probe_leaf, torch.Tensor) and probe_leaf.device.type == "cpu"
    )


# --------------------------------------------------------------- checks ----


def missing_op(reason):
    """The aten op a failure reason says has no tpu kernel, or None."""
    for pattern in MISSING_OP_PATTERNS:
        match = pattern.search(reason)
        if match:
            return match.group(1)
    return None


def first_line(error):
    """``Type: first line of the message``, with missing-kernel errors cut to the op's name."""
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ""
    missing = missing_op(message) if isinstance(error, NotImplementedError) else None
    if missing:
        message = f"operator '{missing}' is not implemented for tpu"
    return f"{type(error).__name__}: {message}"


def _tensors(tree):
    return [leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, torch.Tensor)]


def _assert_on_tpu(actual):
    for tensor in _tensors(actual):
        if tensor.device.type != DEVICE:
            raise AssertionError(f"an output is on {tensor.device}, not on {DEVICE}")


def _assert_same_metadata(actual, expected):
    actual_tensors, expected_tensors = _tensors(actual), _tensors(expected)
    if len(actual_tensors) != len(expected_tensors):
        raise AssertionError(f"{len(actual_tensors)} output tensors, CPU gives {len(expected_tensors)}")
    for a, e in zip(actual_tensors, expected_tensors):
        if (a.shape, a.dtype) != (e.shape, e.dtype):
            raise AssertionError(f"output {tuple(a.shape)} {a.dtype}, CPU gives {tuple(e.shape)} {e.dtype}")


def _tolerance(policy, expected):
    """The policy's tolerance, loosened to that of any float output (int inputs of cos give floats)."""
    output_tolerances = [BASE_TOLERANCE.get(t.dtype, (0.0, 0.0)) for t in _tensors(expected)]
    return max([policy.atol, *(atol for atol, _ in output_tolerances)]), max(
        [policy.rtol, *(rtol for _, rtol in output_tolerances)]
    )


def compare(actual, expected, policy):
    _assert_on_tpu(actual)
    if policy.values_undefined:
        _assert_same_metadata(actual, expected)
        return
    atol, rtol = _tolerance(policy, expected)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, equal_nan=True, check_device=False)


def _error_parity(cpu_error, run_on_tpu):
    try:
        run_on_tpu()
    except Exception as tpu_error:
        missing = isinstance(tpu_error, NotImplementedError) and not isinstance(cpu_error, NotImplementedError)
        if isinstance(tpu_error, type(cpu_error)) and not missing:
            return Outcome(PASSED)
        return Outcome(FAILED, f"{first_line(tpu_error)} (CPU raised {first_line(cpu_error)})")
    return Outcome(FAILED, f"tpu did not raise; CPU raised {first_line(cpu_error)}")


class _RandomOpWatch(TorchDispatchMode):
    """Notes whether an aten op that draws random numbers (tagged nondeterministic_seeded) runs."""

    def __init__(self):
        super().__init__()
        self.drew = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.drew = self.drew or torch.Tag.nondeterministic_seeded in func.tags
        return func(*args, **(kwargs or {}))


def _run_seeded(tpu_run, policy):
    """Run a seeded op on tpu; the policy to judge it by: values undefined if it drew random numbers."""
    with _RandomOpWatch() as watch:
        result = tpu_run()
    return result, dataclasses.replace(policy, values_undefined=RANDOM_VALUES) if watch.drew else policy


def _judged(cpu_run, tpu_run, policy):
    """Run the CPU reference, then tpu, and compare; every exception becomes an Outcome."""
    try:
        expected = cpu_run()
    except Exception as cpu_error:
        return _error_parity(cpu_error, tpu_run)
    if expected is SKIPPED:
        return Outcome(SKIPPED, "no differentiable output")
    try:
        if policy.seeded and not policy.values_undefined:
            actual, policy = _run_seeded(tpu_run, policy)
        else:
            actual = tpu_run()
        compare(actual, expected, policy)
    except Exception as error:
        return Outcome(FAILED, first_line(error))
    return Outcome(PASSED)


def _touches_tpu(sample):
    leaves = tree_flatten((sample.input, sample.args, sample.kwargs))[0]
    return any(
        isinstance(leaf, torch.Tensor) or leaf == DEVICE or (isinstance(leaf, torch.device) and leaf.type == DEVICE)
        for leaf in leaves
    )


def _untouched(sample):
    return None if _touches_tpu(sample) else Outcome(SKIPPED, "sample has no tpu tensor or device")


def _call(op, sample):
    return sample.output_process_fn_grad(op(sample.input, *sample.args, **sample.kwargs))


def check_forward(op, sample, policy, cpu_side=frozenset()):
    tpu_sample = sample_to_tpu(sample, cpu_side)  # before the CPU run, which may mutate its inputs
    return _untouched(tpu_sample) or _judged(lambda: _call(op, sample), lambda: _call(op, tpu_sample), policy)


def _grad_inputs(sample):
    return [t for t in _tensors((sample.input, sample.args, sample.kwargs)) if t.requires_grad]


def _differentiable(outputs):
    return [t for t in _tensors(outputs) if t.requires_grad and t.dtype.is_floating_point]


def _input_grads(op, sample, grad_outputs):
    """Gradients of the sample's differentiable inputs, or SKIPPED if nothing is differentiable."""
    outputs = _differentiable(_call(op, sample))
    inputs = _grad_inputs(sample)
    if not outputs or not inputs:
        return SKIPPED
    cotangents = grad_outputs(outputs)
    return torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True)


def check_grad(op, sample, policy, cpu_side=frozenset()):
    tpu_sample = sample_to_tpu(sample, cpu_side)
    cotangents = []

    def cpu_cotangents(outputs):
        generator = torch.Generator().manual_seed(SEED)
        cotangents[:] = [torch.randn(o.shape, dtype=o.dtype, generator=generator) for o in outputs]
        return cotangents

    def tpu_cotangents(outputs):
        if not cotangents:  # the CPU raised before making them
            cpu_cotangents(outputs)
        return [c.to(o.device) for c, o in zip(cotangents, outputs)]

    return _untouched(tpu_sample) or _judged(
        lambda: _input_grads(op, sample, cpu_cotangents),
        lambda: _input_grads(op, tpu_sample, tpu_cotangents),
        policy,
    )


CHECKS = {FORWARD: check_forward, GRAD: check_grad}


def samples(op, dtype, kind):
    """The op's samples for one dtype, generated on the CPU from a fixed seed."""
    set_rng_seed(SEED)
    generated = list(op.sample_inputs("cpu", dtype, requires_grad=kind == GRAD, set_seed=False))
    clear_tracked_input()  # a test judges all samples at once: no single one is "the" failing input
    return generated


def run(op, dtype, kind) -> Iterator[Outcome]:
    """One Outcome per sample; a failure to generate samples is one failed outcome."""
    try:
        op_samples = samples(op, dtype, kind)
        policy = policy_for(op, dtype)
    except Exception as error:
        yield Outcome(FAILED, f"sample generation failed: {first_line(error)}")
        return
    check = CHECKS[kind]
    for sample, cpu_side in zip(op_samples, cpu_side_leaves(op, dtype, kind, op_samples)):
        try:
            outcome = check(op, sample, policy, cpu_side)
        except Exception as error:  # copying the sample to tpu, say
            outcome = Outcome(FAILED, first_line(error))
        yield outcome


def failure_summary(outcomes):
    """Distinct failure reasons with their counts, most common first."""
    counts = {}
    for outcome in outcomes:
        if outcome.status == FAILED:
            counts[outcome.reason] = counts.get(outcome.reason, 0) + 1
    return sorted(counts.items(), key=lambda item: -item[1])


def failure_report(failures, outcomes):
    lines = [f"{len(failures)} distinct failures over {len(outcomes)} samples:"]
    lines += [f"  {count} x {reason}" for reason, count in failures]
    return "\n".join(lines)


def judge(outcomes, expected, key, listed_in):
    """Fail on unexpected failures, xfail on expected ones, fail an entry that passes although listed."""
    failures = failure_summary(outcomes)
    if expected is None:
        if failures:
            pytest.fail(failure_report(failures, outcomes), pytrace=False)
    elif failures:
        pytest.xfail(expected)
    else:
        pytest.fail(f"XPASS(strict): {key} passed all {len(outcomes)} samples but is listed in {listed_in} ({expected})")


def expectation_key(op, dtype, kind):
    return (op.name, op.variant_test_name, dtype_name(dtype), kind)
