"""``torch.tpu.set_sync_debug_mode``: warn about, or refuse, the operations that make the host wait for the chip.

As torch.cuda's does, it covers the operations whose result the host must read before it can go on: a tensor's value
(``.item()``, ``_local_scalar_dense``), a blocking copy to the host (``.cpu()``, ``.tolist()``, printing) and the
operations whose output's size is the data's, which the host must know to allocate it: ``nonzero``, indexing by a
boolean mask (``x[mask]``), ``masked_select``, ``unique`` and its variants, ``repeat_interleave`` of a repeats tensor
without ``output_size``. Emulated kernels finish as they are launched, so nothing waits here, but on a TPU each of
these stalls the pipeline: the mode finds them before the program runs on one.
"""

from ._errors import warn_at_the_users_line

MODE_NUMBERS = {"default": 0, "warn": 1, "error": 2}
mode = 0
MESSAGE = "called a synchronizing TPU operation"  # torch.cuda's words, with the device's name


def set_sync_debug_mode(debug_mode):
    """``"default"``/0 says nothing, ``"warn"``/1 warns (UserWarning), ``"error"``/2 raises RuntimeError."""
    global mode
    if isinstance(debug_mode, str):
        if debug_mode not in MODE_NUMBERS:
            raise RuntimeError("invalid value of debug_mode, expected one of `default`, `warn`, `error`")
        debug_mode = MODE_NUMBERS[debug_mode]
    elif not isinstance(debug_mode, int):
        raise RuntimeError("invalid argument to set_sync_debug_mode")  # torch.cuda's words
    elif debug_mode not in MODE_NUMBERS.values():
        raise RuntimeError("invalid value of debug_mode, expected one of 0,1,2")
    mode = debug_mode


def get_sync_debug_mode():
    return mode


def host_waits():
    """Called by each operation that makes the host wait for the chip."""
    if not mode:
        return
    if mode >= 2:
        raise RuntimeError(MESSAGE)
    if mode == 1:
        warn_at_the_users_line(MESSAGE)
