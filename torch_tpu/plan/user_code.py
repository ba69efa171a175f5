"""The user's side of a plan: their ``module:function``, and running their program as the planner does.

``call_model_function("pkg.mod:build", batch=8, seq=2048)`` imports the function and calls it with
the keyword arguments it accepts. ``running(job_name, mesh)`` wraps the planned program: under it
``torch.compile`` directives are ignored (the planner charges the eager program, and compiled programs
do not run in abstract mode), warnings about the planner's own wrapping of the model are silenced, and
an error the program raises carries notes saying what was being planned, in which module's forward it
was raised and, where the planner can tell, how to proceed.
"""

import contextlib
import importlib
import inspect
import sys
import warnings

import torch
from torch.nn.modules import module as nn_module

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


# What reads values in PyTorch's own modules, and how to write the call so that it does not.
_MASK_CHECK = ("{module} compares a mask's values with a causal mask when it is not told whether the mask is "
               "causal: pass {argument}=True with a causal mask (or a mask of another kind with {argument}=False).")
MODULES_READING_VALUES = {
    "TransformerDecoder": _MASK_CHECK.format(module="nn.TransformerDecoder", argument="tgt_is_causal"),
    "TransformerDecoderLayer": _MASK_CHECK.format(module="nn.TransformerDecoderLayer", argument="tgt_is_causal"),
    "TransformerEncoder": _MASK_CHECK.format(module="nn.TransformerEncoder", argument="is_causal"),
    "Transformer": _MASK_CHECK.format(module="nn.Transformer", argument="tgt_is_causal"),
}


def _tensor_parallel_hint(error, mesh_shape):
    tp = mesh_shape.get("tp", 1)
    if tp > 1 and isinstance(error, RuntimeError) and "shape" in str(error):
        return (f"With tensor parallelism (tp={tp}) each chip's projections hold 1/{tp} of the heads and FFN "
                "columns, and the modules see local shapes: reshape by head size (view(batch, length, -1, "
                "head_dim)), not by the whole model's head count.")
    return None


# Warnings about what the planner itself does to the model, never about the user's code: FSDP2 warns that the
# root module it wraps returns a view (an in-place op on it would skip FSDP's hooks; the planner's loss makes
# none); Dynamo warns that a compiled module of the user's fires global module hooks twice (ModulePath's, which
# pushes and pops as often). Filtered by their exact wording, so the user's own warnings still reach them.
PLANNERS_OWN_WARNINGS = (r"FSDP2-wrapped module \(.*\) returned a view tensor",
                         r"Using `torch\.compile\(module\)` when there are global hooks on modules \(e\.g\., from "
                         r"`register_module_forward_hook`\)")

# Modules the planner's wrapping puts between a model's own: their names are left out of a module's path.
WRAPPERS = frozenset({"_checkpoint_wrapped_module", "_orig_mod", "_fsdp_wrapped_module"})


_RAISED_IN = "_torch_tpu_planner_modules_running"  # the attribute an error keeps ModulePath's stack in


class ModulePath:
    """The modules whose forward is running, outermost first: while it is installed, every module call pushes
    its module and every return or raise pops it (a module whose error its parent caught is off the stack). An
    error keeps the stack as it stood when it left the module it was raised in (``running_when``)."""

    def __init__(self):
        self.stack = []

    @contextlib.contextmanager
    def installed(self):
        handles = (nn_module.register_module_forward_pre_hook(self._entered),
                   nn_module.register_module_forward_hook(self._left, always_call=True))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _entered(self, module, args):
        self.stack.append(module)  # a hook returning something would replace the arguments

    def _left(self, module, args, output):
        error = sys.exc_info()[1]  # the error this module is left by, if any
        if error is not None and not hasattr(error, _RAISED_IN):  # the first module it leaves raised it
            setattr(error, _RAISED_IN, tuple(self.stack))  # on the error: a caught one takes it along when freed
        self.stack.pop()  # ... or the output

    def running_when(self, error):
        """The modules running when ``error`` was raised, outermost first (taken off the error)."""
        return error.__dict__.pop(_RAISED_IN, tuple(self.stack))


def describe(stack):
    """"blocks.1.attention (Attention)": the innermost module of ``stack`` named in the outermost, or None."""
    if not stack:
        return None
    names = []
    for parent, child in zip(stack, stack[1:]):
        name = next((name for name, module in parent.named_modules() if module is child), None)
        if name is None:  # called by a module that does not own it: start again from it
            names = [_own_class_name(child)]
        else:
            names += [part for part in name.split(".") if part not in WRAPPERS]
    innermost = stack[-1]
    return f"{'.'.join(names) or 'the model'} ({_own_class_name(innermost)})"


def _own_class_name(module):
    """The class the user wrote: FSDP2 makes ``FSDP<class>`` subclasses of the modules it wraps."""
    fsdp_module = "torch.distributed.fsdp._fully_shard._fully_shard"
    classes = [cls for cls in type(module).__mro__ if cls.__module__ != fsdp_module]
    return next((cls.__name__ for cls in classes if not cls.__name__.startswith("FSDP")), type(module).__name__)


@contextlib.contextmanager
def running(job_name, mesh_shape):
    """The planned program of ``job_name`` on a mesh of ``mesh_shape`` ({dimension: size}) runs under this."""
    path = ModulePath()
    try:
        with torch.compiler.set_stance("force_eager"), warnings.catch_warnings(), path.installed():
            for message in PLANNERS_OWN_WARNINGS:
                warnings.filterwarnings("ignore", message=message, category=UserWarning)
            yield
    except Exception as error:
        mesh = ",".join(f"{name}={size}" for name, size in mesh_shape.items())
        error.add_note(f"(raised while planning {job_name} on mesh {mesh} in abstract mode)")
        modules = path.running_when(error)
        where = describe(modules)
        if where:
            error.add_note(f"(in the forward of {where})")
        if isinstance(error, NoValuesError):
            hints = [MODULES_READING_VALUES.get(_own_class_name(module)) for module in reversed(modules)]
            hint = next((hint for hint in hints if hint), NO_VALUES_HINT)
        else:
            hint = _tensor_parallel_hint(error, mesh_shape)
        if hint:
            error.add_note(hint)
        raise
