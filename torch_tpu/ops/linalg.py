"""Linear algebra kernels: the matmul family through the MXU, and torch.linalg."""
