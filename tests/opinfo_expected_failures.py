"""Known OpInfo failures on tpu: (op name, variant, dtype, kind) -> first failure reason.

Written by tools/op_coverage.py from a real run; do not edit by hand.
"""

EXPECTED_FAILURES = {}
