"""Known OpInfo failures on tpu: (op name, variant, dtype, check) -> most common failure reason.

Written by tools/op_coverage.py from a real run; regenerate rather than edit by hand.
"""

EXPECTED_FAILURES = {
    ('matrix_exp', '', 'bfloat16', 'forward'): 'AssertionError: Tensor-likes are not close!',
    ('sparse.mm', 'reduce', 'bfloat16', 'forward'): "NotImplementedError: operator 'aten::_sparse_mm_reduce_impl.default' is not implemented for tpu",
    ('sparse.mm', 'reduce', 'float32', 'forward'): "NotImplementedError: operator 'aten::_sparse_mm_reduce_impl.default' is not implemented for tpu",
    ('sparse.mm', 'reduce', 'float32', 'grad'): "NotImplementedError: operator 'aten::_sparse_mm_reduce_impl.default' is not implemented for tpu",
    ('sparse.sampled_addmm', '', 'float32', 'forward'): "NotImplementedError: operator 'aten::sparse_sampled_addmm.default' is not implemented for tpu",
    ('sparse.sampled_addmm', '', 'float32', 'grad'): "NotImplementedError: operator 'aten::sparse_sampled_addmm.default' is not implemented for tpu",
}
