"""The _foreach_* kernels the optimizers use."""
