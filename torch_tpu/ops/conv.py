"""Convolution forward and backward, lowered to MXU matmuls."""
