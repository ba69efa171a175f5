"""torch.cuda's functions that cannot mean anything on the emulated chip, present under torch.tpu all the same.

Device-generic code reaches them through ``torch.get_device_module()``. A missing name would end it with an
``AttributeError`` that says nothing; these raise ``NotImplementedError`` (a ``RuntimeError``, as CUDA's own
failures are) naming the function and why, and ``hasattr`` still finds them.
"""


def unavailable(qualified_name, why):
    """A function that refuses to run: ``torch.tpu.<qualified_name>`` cannot mean anything, because ``why``."""
    def refuse(*args, **kwargs):
        raise NotImplementedError(f"torch.tpu.{qualified_name} is not available on the emulated TPU: {why}")
    refuse.__name__ = refuse.__qualname__ = qualified_name.rsplit(".", 1)[-1]
    refuse.__doc__ = f"Not available on the emulated TPU: {why}"
    return refuse


def unavailable_class(qualified_name, why):
    """A class whose construction refuses, so that ``isinstance`` checks against it still work (and say False)."""
    refuse = unavailable(qualified_name, why)

    class Unavailable:
        def __new__(cls, *args, **kwargs):
            refuse()

    Unavailable.__name__ = Unavailable.__qualname__ = qualified_name.rsplit(".", 1)[-1]
    Unavailable.__module__ = "torch.tpu"
    Unavailable.__doc__ = refuse.__doc__
    return Unavailable


def unavailable_functions(module_name, names, why):
    """``{name: refusing function}`` for each public function of a torch.cuda submodule."""
    return {name: unavailable(f"{module_name}.{name}", why) for name in names}
