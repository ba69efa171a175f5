"""``torch.tpu.jiterator``: torch.cuda.jiterator compiles C++ source into CUDA kernels at run time. The emulated
chip's kernels are NumPy, so there is no compiler to hand the source to."""

from ._unavailable import unavailable_functions

globals().update(unavailable_functions(
    "jiterator", ["_create_jit_fn", "_create_multi_output_jit_fn"],
    "it compiles CUDA C++ source into a GPU kernel, and the emulated chip runs NumPy; write the function with torch "
    "ops (or compile it with torch.compile(..., backend='tpu'))"))
