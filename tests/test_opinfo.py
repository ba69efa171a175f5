"""OpInfo conformance: PyTorch's op_db samples on tpu, each compared with the CPU.

The default run covers ``opinfo_support.FAST_OPS`` in float32 (forward and
input gradients). ``-m opinfo_full`` runs every op in op_db with float32,
bfloat16, int64 and bool forward plus float32 gradients; tools/op_coverage.py
runs the same checks sample by sample and writes docs/op_coverage.md.

Known failures live in tests/opinfo_expected_failures.py (written by
tools/op_coverage.py). They are strict: a listed test that passes every sample
fails, so that a fixed op gets its entry removed.
"""

import pytest
import torch
from torch.testing._internal.common_device_type import OpDTypes, instantiate_device_type_tests, ops
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.common_utils import TestCase

import opinfo_support as support
from opinfo_expected_failures import EXPECTED_FAILURES

FAST_OPS = support.fast_ops()
FULL_SWEEP = (pytest.mark.opinfo_full, pytest.mark.slow)


def full_sweep(test):
    for mark in FULL_SWEEP:
        test = mark(test)
    return test


class TestOpInfo(TestCase):
    def check(self, op, dtype, kind):
        key = support.expectation_key(op, dtype, kind)
        expected = EXPECTED_FAILURES.get(key)
        if expected and expected.startswith(support.CRASH_REASON):
            pytest.xfail(f"not run: {expected}")
        support.judge(list(support.run(op, dtype, kind)), expected, key,
                      "tests/opinfo_expected_failures.py; rerun tools/op_coverage.py")

    @ops(FAST_OPS, allowed_dtypes=(torch.float32,))
    def test_forward(self, device, dtype, op):
        self.check(op, dtype, support.FORWARD)

    @ops(FAST_OPS, dtypes=OpDTypes.supported_backward, allowed_dtypes=support.GRAD_DTYPES)
    def test_grad(self, device, dtype, op):
        self.check(op, dtype, support.GRAD)

    @full_sweep
    @ops(op_db, allowed_dtypes=support.FORWARD_DTYPES)
    def test_forward_full(self, device, dtype, op):
        self.check(op, dtype, support.FORWARD)

    @full_sweep
    @ops(op_db, dtypes=OpDTypes.supported_backward, allowed_dtypes=support.GRAD_DTYPES)
    def test_grad_full(self, device, dtype, op):
        self.check(op, dtype, support.GRAD)


instantiate_device_type_tests(TestOpInfo, globals(), only_for="privateuse1")


# The harness judging itself: stand-in ops built from copies only, so that these
# checks hold whatever kernels exist.

EXACT = support.Policy(atol=0.0, rtol=0.0)


def _sample(*shape, requires_grad=False):
    from torch.testing._internal.opinfo.core import SampleInput

    return SampleInput(torch.randn(*shape, requires_grad=requires_grad))


def _on_tpu(x):
    return x.device.type == support.DEVICE


def test_identical_results_pass():
    assert support.check_forward(lambda x: x, _sample(3, 4), EXACT) == support.Outcome(support.PASSED)


def test_different_values_fail():
    op = lambda x: (x.cpu() + _on_tpu(x)).to(x.device)  # noqa: E731
    outcome = support.check_forward(op, _sample(3), EXACT)
    assert outcome.status == support.FAILED and "Tensor-likes are not close" in outcome.reason


def test_float_results_of_integer_samples_get_float_tolerance():
    from torch.testing._internal.opinfo.core import SampleInput

    op = lambda x: (x.cpu().float() * (1 + 1e-6 * _on_tpu(x))).to(x.device)  # noqa: E731
    assert support.check_forward(op, SampleInput(torch.arange(1, 5)), EXACT).status == support.PASSED


def test_result_left_on_cpu_fails():
    outcome = support.check_forward(lambda x: x.cpu(), _sample(3), EXACT)
    assert outcome.status == support.FAILED and "not on tpu" in outcome.reason


def test_random_ops_compare_metadata_only():
    undefined = support.Policy(atol=0.0, rtol=0.0, values_undefined="random")
    different_values = lambda x: (x.cpu() + _on_tpu(x)).to(x.device)  # noqa: E731
    different_shape = lambda x: x[: 1 + _on_tpu(x)]  # noqa: E731
    assert support.check_forward(different_values, _sample(3), undefined).status == support.PASSED
    assert support.check_forward(different_shape, _sample(3), undefined).status == support.FAILED


def _raising(cpu_error, tpu_error):
    def op(x):
        error = tpu_error if _on_tpu(x) else cpu_error
        if error:
            raise error("bad input")
        return x

    return op


@pytest.mark.parametrize(
    "cpu_error, tpu_error, status",
    [
        (ValueError, ValueError, support.PASSED),
        (RuntimeError, IndexError, support.FAILED),
        (RuntimeError, NotImplementedError, support.FAILED),  # a missing kernel is no error parity
        (RuntimeError, None, support.FAILED),
        (None, RuntimeError, support.FAILED),
    ],
)
def test_error_parity(cpu_error, tpu_error, status):
    assert support.check_forward(_raising(cpu_error, tpu_error), _sample(2), EXACT).status == status


@pytest.mark.parametrize("tpu_factor, status", [(2.0, support.PASSED), (3.0, support.FAILED)])
def test_gradients_are_compared(tpu_factor, status):
    op = lambda x: x.cpu() * (tpu_factor if _on_tpu(x) else 2.0)  # noqa: E731
    assert support.check_grad(op, _sample(2, 3, requires_grad=True), EXACT).status == status


def test_sample_without_differentiable_output_is_skipped():
    op = lambda x: x.detach()  # noqa: E731
    assert support.check_grad(op, _sample(3, requires_grad=True), EXACT).status == support.SKIPPED


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(4, 5).t(),
        lambda: torch.randn(6, 8)[1::2, ::3],
        lambda: torch.randn(3, 1).expand(3, 4),
        lambda: torch.randn(0, 3),
        lambda: torch.tensor(2.5),
    ],
    ids=["transposed", "sliced", "expanded", "empty", "0-d"],
)
def test_samples_reach_tpu_with_their_layout(make):
    cpu = make()
    tpu = support.tensor_to_tpu(cpu)
    assert (tpu.device.type, tpu.shape, tpu.stride()) == (support.DEVICE, cpu.shape, cpu.stride())
    torch.testing.assert_close(tpu.cpu(), cpu, atol=0, rtol=0)


def test_missing_kernel_errors_name_the_op():
    error = NotImplementedError("The operator 'aten::add.out' is not implemented for the tpu device (...)")
    reason = support.first_line(error)
    assert support.missing_op(reason) == "aten::add.out"


def test_expected_failures_name_real_checks():
    checks = {
        support.expectation_key(op, dtype, kind) for op in op_db for kind, dtype in support.kinds_and_dtypes(op)
    }
    assert not set(EXPECTED_FAILURES) - checks


def test_tensors_a_sample_function_keeps_on_the_cpu_stay_there():
    op = support.OPS_BY_FULL_NAME["tensor_split"]
    generated = support.samples(op, torch.float32, support.FORWARD)
    kept = support.cpu_side_leaves(op, torch.float32, support.FORWARD, generated)
    first = support.sample_to_tpu(generated[0], kept[0])  # tensor_split(x, tensor([1, 2, 3]))
    assert first.input.device.type == support.DEVICE and first.args[0].device.type == "cpu"
    assert all(not cpu_side for sample, cpu_side in zip(generated, kept) if not isinstance(sample.args[0], torch.Tensor))


def test_seeded_random_ops_compare_values_only_when_they_draw():
    from torch.testing._utils import wrapper_set_seed

    seeded = support.Policy(atol=0.0, rtol=0.0, seeded=True)
    noise = lambda x: wrapper_set_seed(lambda t: t + torch.rand(t.shape, device=t.device), x)  # noqa: E731
    wrong_without_drawing = lambda x: wrapper_set_seed(lambda t: t + _on_tpu(t), x)  # noqa: E731
    assert support.check_forward(noise, _sample(3), seeded).status == support.PASSED
    assert support.check_forward(wrong_without_drawing, _sample(3), seeded).status == support.FAILED
