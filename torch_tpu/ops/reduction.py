"""Reduction kernels: sum, mean, prod, min/max, arg-reductions, var/std, norms, scans."""
