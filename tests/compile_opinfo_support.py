"""Run PyTorch's OpInfo samples through ``torch.compile(backend="tpu")`` and compare each with tpu eager.

The samples are opinfo_support's: generated on the CPU from a fixed seed and copied to tpu byte for
byte. Each sample is copied twice, one copy for eager and one for the compiled call, so that an
in-place op mutates its own inputs in each run. Per (op, dtype, kind) Dynamo starts afresh
(``torch._dynamo.reset()``) and compiles the op's call with ``fullgraph=False, dynamic=False``; each
sample of another shape recompiles (the recompile limit is lifted for the sweep, else Dynamo would
quietly run the later samples eagerly).

A sample passes when the compiled call
- returns what eager returns: the same values (bit for bit in integer and bool dtypes, within
  ``COMPILED_TOLERANCE`` in floating ones, NaNs where eager has them), dtypes, shapes, strides and
  devices (tpu);
- leaves its tensor arguments as eager leaves them (in-place variants, ``out=``);
- or raises an error of eager's class where eager raises (Dynamo's wrapper of a backend failure is
  looked through, and a missing kernel is never parity);
- never runs an op on the CPU (``torch_tpu.fallback_counts()`` unchanged).
Gradients (kind ``grad``) are those of the compiled forward's outputs, through the compiled backward,
against the same cotangents as eager's. Kind ``traced_grad`` calls ``loss.backward()`` inside the compiled
function (``torch._dynamo.config.trace_autograd_ops``: forward, backward and the accumulation into ``.grad``
in one graph) and compares the inputs' ``.grad`` with eager's. Ops that draw random numbers are seeded by OpInfo before each
call (``wrapper_set_seed``); compiled code draws from the tpu generator as eager does, so their values
are compared too. Values eager leaves undefined (``has_nondeterministic_output``: ``empty``) are
compared on metadata only.

Nodes with no NumPy lowering run their eager kernels inside the program; the sweep collects them per
op (``Tally.eager_nodes``) with Dynamo's graph breaks, so the report says what still runs eagerly.
"""

import collections
import dataclasses
import functools

import torch
import torch_tpu
from torch.utils._pytree import tree_flatten, tree_map

import opinfo_support as support

FORWARD, INPLACE, OUT, GRAD = "forward", "inplace", "out", "grad"
TRACED_GRAD = "traced_grad"  # loss.backward() inside the compiled function (trace_autograd_ops)
KINDS = (FORWARD, INPLACE, OUT, GRAD, TRACED_GRAD)
# every dtype of the issue: promotion inside fused kernels, integer division, overflow and shifts, bool arithmetic
FORWARD_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.int64, torch.int32, torch.uint8, torch.bool)
GRAD_DTYPES = support.GRAD_DTYPES  # float32

# Compiled against eager on the same device: float32 within 1e-6 (issue 9 §4), other floating dtypes
# within one rounding of their own; integers and bools exactly.
COMPILED_TOLERANCE = {  # dtype -> (atol, rtol)
    torch.float32: (1e-6, 1e-6),
    torch.complex64: (1e-6, 1e-6),
    torch.float64: (1e-12, 1e-12),
    torch.complex128: (1e-12, 1e-12),
    torch.bfloat16: (1e-5, 2 ** -7),
    torch.float16: (1e-5, 2 ** -10),
}


@dataclasses.dataclass
class Tally:
    """What a sweep saw, beyond pass and fail: for docs/compile.md and the debug report."""

    samples: int = 0
    bit_exact: int = 0  # passed with every floating value bit for bit equal to eager's
    eager_nodes: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # aten op -> count
    graph_breaks: collections.Counter = dataclasses.field(default_factory=collections.Counter)


TALLY = Tally()


# --------------------------------------------------------------- variants ----


def variant(op, kind):
    """The callable a kind compiles, or None if the op has no such variant."""
    if kind == INPLACE:
        return op.inplace_variant
    if kind == OUT:
        return op.op if op.supports_out else None
    return op.op


def kinds_and_dtypes(op, dtypes=FORWARD_DTYPES):
    """The (kind, dtype) checks that apply to an op: its variants, in dtypes CPU supports."""
    checks = []
    for kind, dtype in support.kinds_and_dtypes(op, dtypes):
        if kind == support.GRAD:
            checks.append((GRAD, dtype))
            continue
        checks += [(k, dtype) for k in (FORWARD, INPLACE, OUT) if variant(op, k) is not None]
    return checks


def expectation_key(op, dtype, kind):
    return (op.name, op.variant_test_name, support.dtype_name(dtype), kind)


# ------------------------------------------------------------ comparisons ----


def _tensors(tree):
    return [leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, torch.Tensor)]


def _tolerance(dtype):
    return COMPILED_TOLERANCE.get(dtype, (0.0, 0.0))


def _same_layout(actual, expected, what):
    if actual.device.type != expected.device.type:  # tpu, but for CPU tensors a sample function passes
        raise AssertionError(f"{what} is on {actual.device}, eager's on {expected.device}")
    if (actual.dtype, actual.shape) != (expected.dtype, expected.shape):
        raise AssertionError(f"{what}: compiled gives {tuple(actual.shape)} {actual.dtype}, "
                             f"eager {tuple(expected.shape)} {expected.dtype}")
    if actual.layout == torch.strided and expected.numel() > 1 and _observable(actual) != _observable(expected):
        raise AssertionError(f"{what}: compiled strides {actual.stride()}, eager {expected.stride()}")


def _observable(tensor):
    """The strides that address something: those of dimensions longer than 1."""
    return [stride for size, stride in zip(tensor.shape, tensor.stride()) if size > 1]


def _bits(tensor):
    flat = tensor.detach().cpu().contiguous().view(-1)  # shapes and strides are compared apart; an expanded
    # or transposed tensor's reshape(-1) may keep a stride other than 1, which view(torch.uint8) refuses
    return flat.view(torch.uint8) if flat.dtype.is_floating_point else flat


def compare(actual, expected, what="output", values=True):
    """Compiled against eager: every tensor's device, dtype, shape, strides and (if ``values``) values.
    Returns whether every value is bit for bit eager's."""
    actual_tensors, expected_tensors = _tensors(actual), _tensors(expected)
    if len(actual_tensors) != len(expected_tensors):
        raise AssertionError(f"compiled gives {len(actual_tensors)} {what} tensors, eager {len(expected_tensors)}")
    exact = True
    for i, (a, e) in enumerate(zip(actual_tensors, expected_tensors)):
        _same_layout(a, e, f"{what} {i}")
        if not values or a.layout != torch.strided:
            continue
        a_cpu, e_cpu = a.detach().cpu(), e.detach().cpu()
        atol, rtol = _tolerance(e.dtype)
        torch.testing.assert_close(a_cpu, e_cpu, atol=atol, rtol=rtol, equal_nan=True,
                                   msg=lambda m, i=i: f"{what} {i}: {m}")
        exact = exact and torch.equal(_bits(a_cpu), _bits(e_cpu)) if not a.is_complex() else exact
    return exact


def _error_of(error):
    """The user's error inside Dynamo's wrapper of a backend failure."""
    from torch._dynamo.exc import BackendCompilerFailed

    return error.inner_exception if isinstance(error, BackendCompilerFailed) else error


def error_parity(eager_error, compiled_run):
    try:
        compiled_run()
    except Exception as raised:
        error = _error_of(raised)
        missing = isinstance(error, NotImplementedError) and not isinstance(eager_error, NotImplementedError)
        if isinstance(error, type(eager_error)) and not missing:
            return support.Outcome(support.PASSED)
        return support.Outcome(support.FAILED,
                               f"compiled raised {support.first_line(error)} (eager raised {support.first_line(eager_error)})")
    return support.Outcome(support.FAILED, f"compiled did not raise; eager raised {support.first_line(eager_error)}")


# ------------------------------------------------------------------ runs ----


def compiled(function):
    """``function`` through the tpu backend, as the issue asks: graph breaks allowed, static shapes."""
    return torch.compile(function, backend="tpu", fullgraph=False, dynamic=False)


class _Watch:
    """Counts the programs, eager nodes, graph breaks and CPU fallbacks of the compiled calls it wraps."""

    def __enter__(self):
        from torch._dynamo.utils import counters

        self.breaks = collections.Counter(counters["graph_break"])
        self.programs = torch_tpu.compile.last_programs()
        self.fallbacks = dict(torch_tpu.fallback_counts())
        return self

    def __exit__(self, *exc):
        from torch._dynamo.utils import counters

        for record in torch_tpu.compile.last_programs():
            if not any(record is old for old in self.programs):
                TALLY.eager_nodes.update(op for _, op, _ in record.eager_nodes)
        TALLY.graph_breaks.update(collections.Counter(counters["graph_break"]) - self.breaks)
        if dict(torch_tpu.fallback_counts()) != self.fallbacks and exc[0] is None:
            raise AssertionError(f"an op ran on the CPU: {torch_tpu.fallback_counts()}")
        return False


def _call(function, sample, **kwargs):
    return sample.output_process_fn_grad(function(sample.input, *sample.args, **sample.kwargs, **kwargs))


def _out_tensors(result):
    """Fresh tensors shaped like ``result``'s for an ``out=`` call (eager and compiled each get their own)."""
    return tree_map(lambda t: torch.empty_like(t) if isinstance(t, torch.Tensor) else t, result)


class Runner:
    """Runs one (op, dtype, kind)'s samples eagerly and compiled, and judges each."""

    def __init__(self, op, dtype, kind):
        self.op, self.dtype, self.kind = op, dtype, kind
        self.function = variant(op, kind)
        self.values = not op.has_nondeterministic_output
        function = self.function

        def call(*args, **kwargs):  # a frame of its own: Dynamo compiles it, whatever the variant is
            return function(*args, **kwargs)

        def loss_backward(input, args, kwargs, process):  # the loss's backward inside the frame Dynamo compiles
            outputs = _differentiable(process(function(input, *args, **kwargs)))
            if outputs:
                sum((output * _cotangent(output)).sum() for output in outputs).backward()
            return bool(outputs)

        self.eager = loss_backward if kind == TRACED_GRAD else call
        self.compiled = compiled(self.eager)

    def run(self, sample, cpu_side):
        eager_sample, compiled_sample = (support.sample_to_tpu(sample, cpu_side) for _ in range(2))
        TALLY.samples += 1
        if self.kind == TRACED_GRAD:
            return self._judged(lambda: _grads_after_backward(self.eager, eager_sample),
                                lambda: _grads_after_backward(self.compiled, compiled_sample, traced=True),
                                eager_sample, compiled_sample)
        if self.kind == GRAD:
            return self._judged(lambda: _input_grads(self.eager, eager_sample),
                                lambda: _input_grads(self.compiled, compiled_sample), eager_sample, compiled_sample)
        if self.kind == OUT:
            return self._judged_out(eager_sample, compiled_sample)
        return self._judged(lambda: _call(self.eager, eager_sample), lambda: _call(self.compiled, compiled_sample),
                            eager_sample, compiled_sample)

    def _judged_out(self, eager_sample, compiled_sample):
        try:
            shapes = _call(self.eager, support.sample_to_tpu(eager_sample))
        except Exception:
            return support.Outcome(support.SKIPPED, "the functional call raises")
        if not isinstance(shapes, torch.Tensor):
            return support.Outcome(support.SKIPPED, "out= takes one tensor here")
        eager_out, compiled_out = _out_tensors(shapes), _out_tensors(shapes)
        return self._judged(lambda: (_call(self.eager, eager_sample, out=eager_out), eager_out),
                            lambda: (_call(self.compiled, compiled_sample, out=compiled_out), compiled_out),
                            eager_sample, compiled_sample)

    def _judged(self, eager_run, compiled_run, eager_sample, compiled_sample):
        try:
            expected = eager_run()
        except Exception as eager_error:
            with _Watch():
                return error_parity(eager_error, compiled_run)
        if expected is support.SKIPPED:
            return support.Outcome(support.SKIPPED, "no differentiable output")
        try:
            with _Watch():
                actual = compiled_run()
            exact = compare(actual, expected, values=self.values)
            exact = compare(_arguments(compiled_sample), _arguments(eager_sample), "argument", self.values) and exact
        except Exception as error:
            return support.Outcome(support.FAILED, support.first_line(_error_of(error)))
        TALLY.bit_exact += exact
        return support.Outcome(support.PASSED)


def _arguments(sample):
    return (sample.input, sample.args, sample.kwargs)


def _differentiable(result):
    return [t for t in _tensors(result) if t.requires_grad and t.dtype.is_floating_point]


def _cotangent(output):
    """A cotangent every element of which differs, made alike in eager and compiled code (no generator)."""
    return torch.arange(output.numel(), dtype=output.dtype, device=output.device).reshape(output.shape).cos()


def _grads_after_backward(loss_backward, sample, traced=False):
    """The ``.grad`` of the sample's differentiable inputs after ``loss_backward`` ran, or SKIPPED."""
    import torch._dynamo

    inputs = [t for t in _tensors(_arguments(sample)) if t.requires_grad]
    if not inputs:
        return support.SKIPPED
    with torch._dynamo.config.patch(trace_autograd_ops=traced):
        if not loss_backward(sample.input, sample.args, sample.kwargs, sample.output_process_fn_grad):
            return support.SKIPPED
    return [t.grad for t in inputs]


def _input_grads(function, sample):
    """Gradients of the sample's differentiable inputs for seeded cotangents, or SKIPPED."""
    outputs = [t for t in _tensors(_call(function, sample)) if t.requires_grad and t.dtype.is_floating_point]
    inputs = [t for t in _tensors(_arguments(sample)) if t.requires_grad]
    if not outputs or not inputs:
        return support.SKIPPED
    generator = torch.Generator().manual_seed(support.SEED)
    cotangents = [torch.randn(o.shape, dtype=o.dtype, generator=generator).to(o.device) for o in outputs]
    return torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True)


@functools.cache
def _lift_recompile_limits():
    """Every sample of another shape recompiles: without this Dynamo would run the ninth one eagerly."""
    import torch._dynamo

    torch._dynamo.config.recompile_limit = 1 << 20
    torch._dynamo.config.accumulated_recompile_limit = 1 << 20


def run(op, dtype, kind, limit=None):
    """One Outcome per sample (the first ``limit`` samples); a failure to generate samples is one failed outcome."""
    import torch._dynamo

    _lift_recompile_limits()
    grad = kind in (GRAD, TRACED_GRAD)
    sample_kind = support.GRAD if grad else support.FORWARD
    try:
        generated = support.samples(op, dtype, sample_kind)
        cpu_side = support.cpu_side_leaves(op, dtype, sample_kind, generated)[:limit]
    except Exception as error:
        yield support.Outcome(support.FAILED, f"sample generation failed: {support.first_line(error)}")
        return
    torch._dynamo.reset()  # the op's code compiles afresh: no guard of an earlier op's is consulted
    runner = Runner(op, dtype, kind)
    for sample, cpu_side_leaves in zip(generated, cpu_side):
        try:
            outcome = runner.run(sample, cpu_side_leaves)
        except Exception as error:  # copying the sample to tpu, say
            outcome = support.Outcome(support.FAILED, support.first_line(error))
        yield outcome


def report():
    """The ops that ran as eager nodes and the graph breaks, most frequent first."""
    lines = [f"{TALLY.samples} samples, {TALLY.bit_exact} passed bit for bit"]
    lines += [f"  eager node {op}: {count}" for op, count in TALLY.eager_nodes.most_common()]
    lines += [f"  graph break {reason}: {count}" for reason, count in TALLY.graph_breaks.most_common()]
    return "\n".join(lines)
