"""Random kernels, drawn from the chip's counter-based generator."""
