"""Neural-network kernels: softmax, normalization, pooling, dropout, losses, attention."""
