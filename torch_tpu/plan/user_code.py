"""The user's side of a plan: their ``module:function``, and running their program as the planner does.

``call_model_function("pkg.mod:build", batch=8, seq=2048)`` imports the function and calls it with
the keyword arguments it accepts. ``running(job_name, mesh)`` wraps the planned program: under it
``torch.compile`` directives are ignored (the planner charges the eager program, and compiled programs
do not run in abstract mode), and an error the program raises carries a note saying what was being
planned and, where the planner can tell, how to proceed.
"""

import contextlib
import importlib
import inspect

import torch

from .._errors import NoValuesError

NO_VALUES_HINT = (
    "The planner runs the model on shapes alone. Computations whose shapes depend on values (torch.where(mask), "
    "nonzero, boolean-mask indexing, unique: MoE routing written this way, say) or that read values (.item(), "
    ".tolist(), Python branches on tensors) cannot be planned: write them with fixed shapes, e.g. mixture-of-"
    "experts dispatch with a fixed capacity per expert (docs/planning.md, \"Data-dependent shapes\").")


def call_model_function(spec, **offered):
    """Import ``module:function`` and call it with those of ``offered`` that it accepts: (its result, the
    names passed)."""
    module_name, _, function_name = spec.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"--model {spec}: cannot load {function_name!r} from {module_name!r} ({error}); "
                         "is its directory on PYTHONPATH?") from None
    passed = accepted_names(function, offered)
    return function(**{name: offered[name] for name in passed}), passed


def accepted_names(function, offered):
    """Those of the names in ``offered`` that ``function`` takes (all of them if it takes ``**``)."""
    accepted = inspect.signature(function).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    return {name for name in offered if takes_any or name in accepted}


def call_accepting(function, **offered):
    """``function`` called with those of ``offered`` that it takes by name (all of them if it takes ``**``)."""
    return function(**{name: offered[name] for name in accepted_names(function, offered)})


def _tensor_parallel_hint(error, mesh_shape):
    tp = mesh_shape.get("tp", 1)
    if tp > 1 and isinstance(error, RuntimeError) and "shape" in str(error):
        return (f"With tensor parallelism (tp={tp}) each chip's projections hold 1/{tp} of the heads and FFN "
                "columns, and the modules see local shapes: reshape by head size (view(batch, length, -1, "
                "head_dim)), not by the whole model's head count.")
    return None


@contextlib.contextmanager
def running(job_name, mesh_shape):
    """The planned program of ``job_name`` on a mesh of ``mesh_shape`` ({dimension: size}) runs under this."""
    try:
        with torch.compiler.set_stance("force_eager"):
            yield
    except Exception as error:
        mesh = ",".join(f"{name}={size}" for name, size in mesh_shape.items())
        error.add_note(f"(raised while planning {job_name} on mesh {mesh} in abstract mode)")
        hint = NO_VALUES_HINT if isinstance(error, NoValuesError) else _tensor_parallel_hint(error, mesh_shape)
        if hint:
            error.add_note(hint)
        raise
