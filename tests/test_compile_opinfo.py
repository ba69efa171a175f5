"""OpInfo through ``torch.compile(backend="tpu")``: every sample compiled equals tpu eager (issue 9 §4).

The default run covers a representative slice: the eager sweep's FAST_OPS in float32 (the first
``FAST_SAMPLES`` samples of each), their gradients through the compiled backward, a few ops in float16,
int32, uint8 and bool, a few gradients with ``loss.backward()`` inside the compiled function, and the in-place
and ``out=`` variants of a few. ``-m compile_opinfo_full`` runs every op in op_db with float32, bfloat16,
float16, int64, int32, uint8 and bool (functional, in-place and ``out=`` variants) plus float32 gradients in
both forms, every sample.
tests/compile_opinfo_support.py says how a sample is judged.

Known differences live in tests/compile_opinfo_expected_failures.py. They are strict: a listed check that
passes every sample fails, so that a fixed op gets its entry removed.
"""

import pytest
import torch
from torch.testing._internal.common_device_type import OpDTypes, instantiate_device_type_tests, ops
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.common_utils import TestCase

import compile_opinfo_support as compiled
import opinfo_support as support
from compile_opinfo_expected_failures import EXPECTED_FAILURES

FAST_SAMPLES = 2
# the eager sweep's fast ops, less those whose sample generation alone takes seconds
FAST_OPS = [op for op in support.fast_ops() if op.name not in ("__getitem__", "nn.functional.embedding", "reshape")]
FAST_GRAD_OPS = [support.OPS_BY_FULL_NAME[name] for name in (
    "mul", "div.no_rounding_mode", "tanh", "where", "sum", "amax", "log_softmax", "addmm", "gather",
    "nn.functional.layer_norm", "nn.functional.cross_entropy")]
# every dtype of the issue on a few ops whose semantics differ most between dtypes (integer division and
# remainder, promotion of a bool or uint8 operand, overflow of a sum)
FAST_DTYPE_OPS = [support.OPS_BY_FULL_NAME[name] for name in ("add", "div.no_rounding_mode", "remainder", "sum")]
FAST_DTYPES = (torch.float16, torch.int32, torch.uint8, torch.bool)
# loss.backward() inside the compiled function
FAST_TRACED_GRAD_OPS = [support.OPS_BY_FULL_NAME[name] for name in ("mul", "tanh", "log_softmax", "addmm")]
FAST_VARIANT_OPS = [support.OPS_BY_FULL_NAME[name] for name in ("add", "mul", "clamp", "exp", "mm", "index_select")]
LISTED_IN = "tests/compile_opinfo_expected_failures.py"


def full_sweep(test):
    return pytest.mark.slow(pytest.mark.compile_opinfo_full(test))


class TestCompileOpInfo(TestCase):
    def check(self, op, dtype, kind, limit=None):
        key = compiled.expectation_key(op, dtype, kind)
        if compiled.variant(op, kind) is None:
            pytest.skip(f"{op.name} has no {kind} variant")
        outcomes, expected = list(compiled.run(op, dtype, kind, limit)), EXPECTED_FAILURES.get(key)
        if limit is not None and expected and not support.failure_summary(outcomes):
            return  # the samples the entry is about lie beyond the slice
        support.judge(outcomes, expected, key, LISTED_IN)

    @ops(FAST_OPS, allowed_dtypes=(torch.float32,))
    def test_forward(self, device, dtype, op):
        self.check(op, dtype, compiled.FORWARD, FAST_SAMPLES)

    @ops(FAST_GRAD_OPS, dtypes=OpDTypes.supported_backward, allowed_dtypes=compiled.GRAD_DTYPES)
    def test_grad(self, device, dtype, op):
        self.check(op, dtype, compiled.GRAD, FAST_SAMPLES)

    @ops(FAST_DTYPE_OPS, allowed_dtypes=FAST_DTYPES)
    def test_forward_dtypes(self, device, dtype, op):
        self.check(op, dtype, compiled.FORWARD, FAST_SAMPLES)

    @ops(FAST_TRACED_GRAD_OPS, dtypes=OpDTypes.supported_backward, allowed_dtypes=compiled.GRAD_DTYPES)
    def test_traced_grad(self, device, dtype, op):
        self.check(op, dtype, compiled.TRACED_GRAD, FAST_SAMPLES)

    @ops(FAST_VARIANT_OPS, allowed_dtypes=(torch.float32,))
    def test_inplace(self, device, dtype, op):
        self.check(op, dtype, compiled.INPLACE, FAST_SAMPLES)

    @ops(FAST_VARIANT_OPS, allowed_dtypes=(torch.float32,))
    def test_out(self, device, dtype, op):
        self.check(op, dtype, compiled.OUT, FAST_SAMPLES)

    @full_sweep
    @ops(op_db, allowed_dtypes=compiled.FORWARD_DTYPES)
    def test_forward_full(self, device, dtype, op):
        self.check(op, dtype, compiled.FORWARD)

    @full_sweep
    @ops(op_db, allowed_dtypes=compiled.FORWARD_DTYPES)
    def test_inplace_full(self, device, dtype, op):
        self.check(op, dtype, compiled.INPLACE)

    @full_sweep
    @ops(op_db, allowed_dtypes=compiled.FORWARD_DTYPES)
    def test_out_full(self, device, dtype, op):
        self.check(op, dtype, compiled.OUT)

    @full_sweep
    @ops(op_db, dtypes=OpDTypes.supported_backward, allowed_dtypes=compiled.GRAD_DTYPES)
    def test_grad_full(self, device, dtype, op):
        self.check(op, dtype, compiled.GRAD)

    @full_sweep
    @ops(op_db, dtypes=OpDTypes.supported_backward, allowed_dtypes=compiled.GRAD_DTYPES)
    def test_traced_grad_full(self, device, dtype, op):
        self.check(op, dtype, compiled.TRACED_GRAD)


instantiate_device_type_tests(TestCompileOpInfo, globals(), only_for="privateuse1")


# The harness judging itself: stand-in ops that behave otherwise while Dynamo traces them, so that these
# checks hold whatever the compiler does.

def _stand_in(function, inplace=None, supports_out=False):
    from types import SimpleNamespace

    return SimpleNamespace(op=function, inplace_variant=inplace, supports_out=supports_out,
                           has_nondeterministic_output=False)


def _judged(function, kind=compiled.FORWARD, **variants):
    from torch.testing._internal.opinfo.core import SampleInput

    sample = SampleInput(torch.randn(3, 4), args=(torch.randn(3, 4),))
    return compiled.Runner(_stand_in(function, **variants), torch.float32, kind).run(sample, frozenset())


def _tracing():
    return torch.compiler.is_compiling()


def test_same_results_pass():
    assert _judged(torch.add).status == support.PASSED


@pytest.mark.parametrize("function, reason", [
    (lambda x, y: x + y * (1 + 1e-3 * _tracing()), "not close"),
    (lambda x, y: (x + y).t().contiguous().t() if _tracing() else x + y, "strides"),
    (lambda x, y: (x + y).double() if _tracing() else x + y, "torch.float64"),
], ids=["values", "strides", "dtype"])
def test_compiled_results_unlike_eager_fail(function, reason):
    outcome = _judged(function)
    assert outcome.status == support.FAILED and reason in outcome.reason


def test_inputs_mutated_unlike_eager_fail():
    def add_(x, y):
        x.add_(y)
        if _tracing():
            y.mul_(2)
        return x

    outcome = _judged(None, compiled.INPLACE, inplace=add_)
    assert outcome.status == support.FAILED and "argument 1" in outcome.reason


@pytest.mark.parametrize("compiled_error, status", [(ValueError, support.PASSED), (TypeError, support.FAILED)])
def test_errors_compared_by_class(compiled_error, status):
    def refuse(x, y):
        if _tracing():
            raise compiled_error("refused")
        raise ValueError("refused")

    assert _judged(refuse).status == status


def test_gradients_of_a_backward_inside_the_compiled_function_are_compared():
    from torch.testing._internal.opinfo.core import SampleInput

    scaled = lambda x: x * (3.0 if _tracing() else 2.0)  # noqa: E731
    sample = SampleInput(torch.randn(3, requires_grad=True))
    outcome = compiled.Runner(_stand_in(scaled), torch.float32, compiled.TRACED_GRAD).run(sample, frozenset())
    assert outcome.status == support.FAILED and "not close" in outcome.reason
    same = compiled.Runner(_stand_in(torch.tanh), torch.float32, compiled.TRACED_GRAD).run(sample, frozenset())
    assert same.status == support.PASSED


def test_gradients_through_the_compiled_backward_are_compared():
    from torch.testing._internal.opinfo.core import SampleInput

    scaled = lambda x: x * (3.0 if _tracing() else 2.0)  # noqa: E731
    sample = SampleInput(torch.randn(3, requires_grad=True))
    outcome = compiled.Runner(_stand_in(scaled), torch.float32, compiled.GRAD).run(sample, frozenset())
    assert outcome.status == support.FAILED and "not close" in outcome.reason
