"""Indexing kernels: advanced indexing, gather/scatter, masks, embedding."""
