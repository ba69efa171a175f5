"""An autograd hook's exception, carried out of a tpu backward to the code that called it.

torch 2.13's autograd raises a Python hook's error (tensor, node and module backward hooks) as a C++
exception while the Python error is still pending on the autograd device thread. As the stack unwinds, a
stream guard's destructor asks the device guard for its device type: for a Python backend that is a Python
call, which fails on the pending error inside a destructor, and C++ ends the process (CPU has no stream
guard; CUDA's guard is C++). So the device guard takes any pending error out of the way first
(``take_pending_error``), the backward fails without one, and the engine's ``run_backward`` raises the
hook's own exception in the caller's thread, as CPU's backward does.
"""

import ctypes

from torch.autograd.variable import Variable

_fetch = ctypes.pythonapi.PyErr_Fetch
_restore = ctypes.pythonapi.PyErr_Restore
# prebuilt pointers: ctypes' conversion of other arguments looks for a pending error and would raise it
_kind, _value, _traceback = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
_slots = (ctypes.byref(_kind), ctypes.byref(_value), ctypes.byref(_traceback))
_taken = []  # (kind, value, traceback) references PyErr_Fetch handed over, newest last


def take_pending_error():
    """Move an error pending on this thread into ``_taken`` (one C call when there is none)."""
    _fetch(_slots[0], _slots[1], _slots[2])
    if _kind.value:
        _taken.append((_kind.value, _value.value, _traceback.value))


def _raise_taken():
    """Raise the newest taken error: PyErr_Restore takes its references, and ctypes raises what is pending."""
    kind, value, traceback = _taken.pop()
    _taken.clear()
    _restore(ctypes.c_void_p(kind), ctypes.c_void_p(value), ctypes.c_void_p(traceback))


class _EngineRaisingHookErrors:
    """PyTorch's autograd engine, whose failed backward raises a hook's exception the device guard took."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def run_backward(self, *args, **kwargs):
        _taken.clear()
        try:
            return self._engine.run_backward(*args, **kwargs)
        except SystemError:  # "returned NULL without setting an exception": the error was taken
            if not _taken:
                raise
        _raise_taken()


def install():
    if not isinstance(Variable._execution_engine, _EngineRaisingHookErrors):
        Variable._execution_engine = _EngineRaisingHookErrors(Variable._execution_engine)
