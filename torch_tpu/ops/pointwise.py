"""Pointwise kernels: unary, binary and ternary ops with PyTorch broadcasting and type promotion."""
