"""Where torch_tpu replays an implementation detail of PyTorch's CPU build, and why.

The tpu device promises CPU's exact bits wherever CPU's result is defined by its own algorithm
rather than by the op's mathematics: the order a non-stable sort leaves tied keys in, the order a
sum rounds in, which elements a SIMD loop converts. Each replay lives in one named place:

- ``libstdcxx_order``: libstdc++'s introsort, introselect and partial_sort orderings, behind
  ``sort(stable=False)``, ``topk``, ``kthvalue``, ``median`` and ``mode`` indices where keys tie;
- ``cascade_sum``: the multi-level accumulation of CPU's sum kernel, behind ``nll_loss``'s total
  (bf16 rounds after every addition);
- ``sum_kernel``: the same kernel's ``cascade_sum`` over any layout (TensorIterator's reduction layout, the loop
  its two innermost strides choose, the column sums' order into their outputs, the thread splits past
  GRAIN_SIZE), behind ``sum``, ``mean`` and ``nansum``, eager and compiled; its accumulation steps (vectors four
  abreast through cascade levels, every fourth element into one of four accumulators) are ``inner_sum``'s;
- ``reduce_vec``: ``binary_kernel_reduce_vec`` under TensorIterator (a contiguous reduced run in four 32-byte
  accumulators, combined pairwise, their lanes in order, then the tail; other layouts element by element; a single
  output's thread chunks past GRAIN_SIZE), behind ``prod`` of every real floating dtype (bf16/fp16 rounding every
  product);
- ``norm_kernel``: the vector norm kernel (the 2-norm's vector loop over a contiguous innermost run, every other
  norm's terms one by one, a single output's thread chunks), behind ``linalg.vector_norm`` and ``norm``;
- ``thread_buffers``: the two-pass column sums through per-thread buffers of layer norm's backward (bf16/fp16
  buffers round every addition), behind its 16-bit weight and bias gradients;
- ``add``/``sub`` with an ``alpha`` round ``a + alpha * b`` once, as CPU's ``vec::fmadd`` does in float32 and
  float64: through the chip's ``vpu.fused_multiply_add`` (csrc_py/vpu.py), which ``linspace``'s
  float64 steps and linalg share;
- ``csrc_py/cpu_loops.py`` (on the chip side, since casts are the chip's): TensorIterator's loop
  layout, ``at::parallel_for`` chunks and SIMD-vector versus scalar-tail elements, behind casts
  (NaN payloads, out-of-range float-to-integer), ``arange``'s vectorised fill (ops/factory.py), and the
  elementwise kernels whose vector loop and scalar tail give different bits (``pointwise.in_vector_lanes``
  over ``cpu_loops.kernel_vec_lanes``, which also vectorises a row with one broadcast input and reads an
  ``out=`` tensor's layout: softshrink's -0.0 and bf16 NaNs, hardtanh_backward of a NaN).

Everything else is computed from the mathematics, in the dtype CPU computes in.
"""
