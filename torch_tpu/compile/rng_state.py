"""``torch.utils.checkpoint`` inside a compiled model on tpu: the RNG wrappers AOTAutograd puts around a random op
that the backward recomputes.

The partitioner replaces such an op (dropout, fused attention: any op tagged ``nondeterministic_seeded``) by
``run_and_save_rng_state`` in the forward and ``run_with_rng_state`` in the backward, so that the recomputation
draws what the forward drew. torch implements both higher-order ops for cpu, cuda, hpu and xpu only, in a
BackendSelect kernel whose table of devices its fake and tracing kernels share; every other device fails
with "Backend not supported for tpu". Here that kernel gains the tpu: the state is the tpu generator's
(``torch.tpu.get_rng_state``), saved before the op runs and put back around its recomputation.
"""

import torch
from torch._C import DispatchKey


def _device_of(args, kwargs):
    from torch._prims.rng_prims import get_device

    return get_device(args, kwargs)


def _run_and_save(op, *args, **kwargs):
    return torch.tpu.get_rng_state(), op(*args, **kwargs)


def _run_with(rng_state, op, *args, **kwargs):
    current = torch.tpu.get_rng_state()
    torch.tpu.set_rng_state(rng_state)
    try:
        return op(*args, **kwargs)
    finally:
        torch.tpu.set_rng_state(current)


def _selecting_tpu(select, tpu_kernel, leading):
    """``select`` (torch's BackendSelect kernel) sending tpu operands to ``tpu_kernel``; ``leading`` arguments
    (the op, and the state for ``run_with_rng_state``) come before the op's own."""
    def select_with_tpu(*args, **kwargs):
        if _device_of(args[leading:], kwargs) == "tpu":
            return tpu_kernel(*args, **kwargs)
        return select(*args, **kwargs)

    return select_with_tpu


def _install(hop, tpu_kernel, leading):
    select = hop.py_kernels[DispatchKey.BackendSelect]
    replacement = _selecting_tpu(select, tpu_kernel, leading)
    hop.py_kernels[DispatchKey.BackendSelect] = replacement
    # the fake and tracing kernels of run_and_save_rng_state call the BackendSelect kernel by its local name in
    # the function that defined them: the closure cell they share takes the replacement too
    for kernel in (*hop.python_key_table.values(), *_fake_kernels(hop)):
        for cell in getattr(kernel, "__closure__", None) or ():
            if cell.cell_contents is select:
                cell.cell_contents = replacement
    hop._dispatch_cache.clear()


def _fake_kernels(hop):
    from torch._higher_order_ops.utils import registered_hop_fake_fns

    return (registered_hop_fake_fns[hop],) if hop in registered_hop_fake_fns else ()


def install(rng_prims):
    """Give ``torch._prims.rng_prims``'s two wrappers their tpu kernels (called once it is imported)."""
    _install(rng_prims.run_and_save_rng_state, _run_and_save, leading=1)
    _install(rng_prims.run_with_rng_state, _run_with, leading=2)
