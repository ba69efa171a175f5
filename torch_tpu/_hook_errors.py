"""An autograd hook's exception, carried out of a tpu backward to the code that called it.

torch 2.13's autograd raises a Python hook's error (tensor, node and module backward hooks) as a C++
exception while the Python error is still pending on the autograd device thread. As the stack unwinds, a
stream guard's destructor asks the device guard for its device type: for a Python backend that is a Python
call, which fails on the pending error inside a destructor, and C++ ends the process (CPU has no stream
guard; CUDA's guard is C++). So the device guard takes any pending error out of the way first
(``_backend.TPUDeviceGuard.type_`` calls ``error_pending``, which raises it, and keeps it in ``taken``), the
backward fails without one, and the engine's ``run_backward`` raises the hook's own exception in the
caller's thread, as CPU's backward does.
"""

import ctypes

from torch.autograd.variable import Variable

# PyDLL: after the call, ctypes raises any error pending on the thread (the hook's own exception, with its
# traceback), which is how the device guard takes it; one C call when there is none
error_pending = ctypes.pythonapi.PyErr_Occurred
error_pending.restype = ctypes.c_void_p
taken = []  # exceptions taken off the autograd device thread, newest last


class _EngineRaisingHookErrors:
    """PyTorch's autograd engine, whose failed backward raises a hook's exception the device guard took."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def run_backward(self, *args, **kwargs):
        taken.clear()
        try:
            return self._engine.run_backward(*args, **kwargs)
        except SystemError:  # "returned NULL without setting an exception": the error was taken
            if not taken:
                raise
        error = taken.pop()
        taken.clear()
        raise error


def install():
    if not isinstance(Variable._execution_engine, _EngineRaisingHookErrors):
        Variable._execution_engine = _EngineRaisingHookErrors(Variable._execution_engine)
