"""Known differences between torch.compile(backend="tpu") and tpu eager on OpInfo samples.

(op name, variant test name, dtype, kind) -> the reason. Strict: tests/test_compile_opinfo.py fails a
listed check that passes every sample, so a fixed op gets its entry removed.
"""

EXPECTED_FAILURES = {
}
