"""``torch.compile(model, backend="tpu")``: FX graphs lowered to fused programs on the emulated chip.

The backend is found through the ``torch_dynamo_backends`` entry point, so no import is needed.
Files, one job each: ``registration`` (how torch finds the backend, Dynamo's device interface,
default Inductor on tpu tensors), ``pipeline`` (Dynamo -> AOTAutograd -> programs), ``lowering``
(FX node -> NumPy maths), ``fusion`` (which nodes share a kernel), ``codegen`` (the program's
Python source and memory plan), ``runtime`` (running it), ``debug`` (what users see).
See docs/compile.md.
"""


def last_programs():
    """The most recent compiled programs (``.dump()``, ``.source``, ``.kernels``, ...), oldest first."""
    from . import debug

    return debug.last_programs()


def backend(gm, example_inputs, **kwargs):
    """The backend itself, for ``torch.compile(model, backend=torch_tpu.compile.backend)``."""
    from .pipeline import backend as compile_backend

    return compile_backend(gm, example_inputs, **kwargs)
