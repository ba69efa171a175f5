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


def _failure_report(failures, outcomes):
    lines = [f"{len(failures)} distinct failures over {len(outcomes)} samples:"]
    lines += [f"  {count} x {reason}" for reason, count in failures]
    return "\n".join(lines)


class TestOpInfo(TestCase):
    def check(self, op, dtype, kind):
        outcomes = list(support.run(op, dtype, kind))
        failures = support.failure_summary(outcomes)
        key = support.expectation_key(op, dtype, kind)
        expected = EXPECTED_FAILURES.get(key)
        if expected is None:
            self.assertFalse(failures, _failure_report(failures, outcomes))
        elif failures:
            pytest.xfail(expected)
        else:
            self.fail(
                f"XPASS(strict): {key} passed all {len(outcomes)} samples but is listed in "
                f"tests/opinfo_expected_failures.py ({expected}); rerun tools/op_coverage.py"
            )

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
