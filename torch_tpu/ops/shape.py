"""Shape kernels: cat, stack, flip, roll, pad, repeat, tril/triu, sort, topk, unique."""
