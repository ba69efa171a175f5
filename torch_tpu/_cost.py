"""What each kernel launch costs on the chip, and charging it to the roofline clock.

Every registered kernel is one launch. A launch reads the bytes of its tensor inputs and
writes the bytes of its tensor outputs (an in-place op reads and writes ``self``; ops that
overwrite ``self`` without reading it, such as ``fill_`` or ``normal_``, only write it; a
host transfer moves only the bytes on the chip's side). Matmul-like ops add MXU FLOPs, keyed
by the lhs input type: the clock turns that into time with the chip's peak for that type.
Kernels that only allocate or reshape metadata cost nothing.

This runs after every kernel, so the common path computes only what the clock needs
(bytes and FLOPs); shapes, dtypes and VPU element counts are worked out only while a
profiler is recording.
"""

import functools
import math
import threading
import time

import numpy as np
import torch

from . import _C, _abstract, _abstract_launch
from ._errors import NoValuesError
from ._tensor import DTYPE_NAME

# Kernels run out of sight of torch function modes, as C++ kernels do (ops._registry.unseen_by_function_modes)
function_modes_active = torch._C._is_torch_function_mode_enabled
without_torch_function = torch._C.DisableTorchFunction

Tensor = torch.Tensor
_SEQUENCES = (list, tuple)
FREE_OPS = frozenset({
    "_fused_sdp_choice", "_has_compatible_shallow_copy_type", "_to_copy", "empty.memory_format", "empty_strided", "resize_", "set_", "set_.source_Storage",
    "set_.source_Storage_storage_offset", "set_.source_Tensor",
})
# Ops that overwrite their first argument without reading it.
WRITE_ONLY_SELF = frozenset({
    "fill_", "zero_", "copy_", "normal_", "uniform_", "exponential_", "log_normal_", "cauchy_",
    "geometric_", "bernoulli_", "random_",
})
# Copies whose one side may be host memory, which the chip's HBM traffic leaves out: op -> (sources, destinations)
COPIES = {
    "_copy_from": lambda args: ((args[0],), (args[1],)),
    "_copy_from_and_resize": lambda args: ((args[0],), (args[1],)),
    "_foreach_copy_": lambda args: (args[1], args[0]),
}

_perf_counter_ns = time.perf_counter_ns
_thread_id = threading.get_native_id


def _tensor_bytes(values):
    """The bytes of the tensors among ``values`` and in their lists and tuples. A schema's list holds one type, so its
    first element tells: an int[] (sizes, strides, dims: convolutions and reductions pass several a launch) is skipped
    unread, a list of tensors (a foreach list, ``cat``'s; a Tensor?[] may hold None) summed in one pass."""
    total = 0
    for value in values:
        if isinstance(value, Tensor):
            total += value.nbytes
        elif type(value) is list:
            if value and isinstance(value[0], Tensor):
                total += sum([tensor.nbytes for tensor in value if isinstance(tensor, Tensor)])
            elif value and type(value[0]) is not int:
                total += _tensor_bytes(value)
        elif type(value) is tuple:
            total += _tensor_bytes(value)
    return total


def _flat_tensor_bytes(values):
    """``_tensor_bytes`` of the arguments of an op whose schema has no list of tensors: one flat pass."""
    return sum([value.nbytes for value in values if isinstance(value, Tensor)])


@functools.cache
def _takes_tensor_lists(name):
    """Whether aten ``name`` has an argument that is a list of tensors (``cat``, ``index``, the foreach ops)."""
    packet, _, overload = name.partition(".")
    try:
        schema = getattr(getattr(torch.ops.aten, packet), overload or "default")._schema
    except AttributeError:  # not an aten overload: look into every list
        return True
    return any(isinstance(argument.type, torch.ListType) and "Tensor" in str(argument.type.getElementType())
               for argument in schema.arguments)


@functools.cache
def _written_arguments(name):
    """The names of aten ``name``'s output arguments (``out``, or ``output``/``total_weight``, ``values``/
    ``indices``, ``grad_input`` of structured out= overloads): written by the launch, never read."""
    packet, _, overload = name.partition(".")
    try:
        schema = getattr(getattr(torch.ops.aten, packet), overload or "default")._schema
    except AttributeError:  # not an aten overload: only ``out`` is known to be one
        return frozenset({"out"})
    return frozenset({"out"}) | {argument.name for argument in schema.arguments if argument.is_out}


def _arguments_bytes(name):
    """The function summing the bytes of the tensors among a launch's arguments, chosen once per op."""
    return _tensor_bytes if _takes_tensor_lists(name) else _flat_tensor_bytes


def _tensors(values):
    for value in values:
        if isinstance(value, Tensor):
            yield value
        elif type(value) in _SEQUENCES:
            yield from _tensors(value)


# --- MXU FLOPs of matmul-like ops: functions of the kernel's own arguments ---------------

def _matmul_flops(lhs, rhs):
    """2*M*N*K for (..., M, K) @ (..., K, N), with batch dimensions broadcast."""
    a, b = lhs.shape, rhs.shape
    m = a[-2] if len(a) > 1 else 1
    n = b[-1] if len(b) > 1 else 1
    # NumPy's broadcasting rule is PyTorch's, at a tenth of torch.broadcast_shapes' cost (the kernel has checked the shapes)
    batch = math.prod(np.broadcast_shapes(a[:-2], b[:-2])) if len(a) > 2 or len(b) > 2 else 1
    return {DTYPE_NAME[lhs.dtype]: 2 * batch * m * n * a[-1]}


def _vector_flops(a, b, *rest, **kwargs):
    return {DTYPE_NAME[a.dtype]: 2 * a.numel()}


MXU_FLOPS = {
    "mm": lambda a, b, *rest, **kw: _matmul_flops(a, b),
    "bmm": lambda a, b, *rest, **kw: _matmul_flops(a, b),
    "addmm": lambda bias, a, b, *rest, **kw: _matmul_flops(a, b),
    "baddbmm": lambda bias, a, b, *rest, **kw: _matmul_flops(a, b),
    "addbmm": lambda bias, a, b, *rest, **kw: _matmul_flops(a, b),
    "addmv": lambda bias, a, v, *rest, **kw: _matmul_flops(a, v.unsqueeze(-1)),
    "mv": lambda a, v, *rest, **kw: _matmul_flops(a, v.unsqueeze(-1)),
    "dot": _vector_flops,
    "vdot": _vector_flops,
    "_scaled_mm": lambda a, b, *rest, **kw: _matmul_flops(a, b),
}


def _convolution_flops(input, weight, output, transposed):
    """Each output element of a convolution is a dot product of length C_in/groups * prod(kernel).

    A transposed convolution is the backward of a convolution: each *input* element meets
    C_out/groups * prod(kernel) weights.
    """
    per_element = math.prod(weight.shape[1:])
    return 2 * (input.numel() if transposed else output.numel()) * per_element


def _convolution_result_flops(args, result):
    input, weight, transposed = args[0], args[1], args[6]
    return {DTYPE_NAME[input.dtype]: _convolution_flops(input, weight, result, transposed)}


def _convolution_backward_flops(transposed_index, mask_index):
    """grad_input and grad_weight each cost one forward convolution, when ``output_mask`` asks for them."""

    def flops(args, result):
        grad_output, input, weight = args[0], args[1], args[2]
        transposed, output_mask = args[transposed_index], args[mask_index]
        convolutions = int(output_mask[0]) + int(output_mask[1])
        return {DTYPE_NAME[input.dtype]: convolutions * _convolution_flops(input, weight, grad_output, transposed)}

    return flops


RESULT_FLOPS = {
    "convolution": _convolution_result_flops,
    "convolution_overrideable": _convolution_result_flops,
    "convolution_backward": _convolution_backward_flops(transposed_index=7, mask_index=10),
    "convolution_backward_overrideable": _convolution_backward_flops(transposed_index=6, mask_index=9),
}


# Fused kernels whose traffic is not simply their arguments' and results' bytes (host-side results, scratch
# that stays on chip): op packet -> function (args, kwargs, result) -> (MXU FLOPs by dtype, bytes read,
# bytes written). The kernel's module fills it in before registering the kernel.
FUSED_COSTS = {}


def float32_passes():
    """The bf16 passes a float32 matmul is charged at the user's precision (the numerics' own table)."""
    passes, _ = _C.mxu.FLOAT32_PRECISION[torch.get_float32_matmul_precision()]
    return passes


def _outputs_model(name):
    """The function giving the tensors one launch of aten ``name`` writes: every output argument given (``out``
    and, for ops with several, ``indices``, ``save_mean``, ...), else its result."""
    written_arguments = _written_arguments(name)

    def outputs(args, kwargs, result):
        if kwargs:
            written = [value for key, value in kwargs.items() if key in written_arguments and value is not None]
            if written:
                return written
        if result is None or (type(result) in _SEQUENCES and not result):
            return args[:1]  # in-place list ops (foreach, amp) return nothing and write their first argument
        return (result,)

    return outputs


def _transfer_traffic(sources, destinations):
    """Copies, each of a source into a destination: only the chip's side of each touches HBM (a number copied in,
    ``copy_(float("inf"))``, is the host's)."""
    return (sum(t.nbytes for t in sources if isinstance(t, Tensor) and not t.is_cpu), sum(t.nbytes for t in destinations if not t.is_cpu))


def _traffic_model(name):
    """The function giving (bytes read, bytes written) of one launch of aten ``name``."""
    packet = name.partition(".")[0]
    copied = COPIES.get(packet)
    write_only_self = packet in WRITE_ONLY_SELF
    arguments_bytes = _arguments_bytes(name)
    written_arguments = _written_arguments(name)

    def traffic(args, kwargs, outputs):
        if copied is not None:
            return _transfer_traffic(*copied(args))
        read = arguments_bytes(args)
        if kwargs:
            read += _tensor_bytes(v for k, v in kwargs.items() if k not in written_arguments)
        if write_only_self:
            read -= args[0].nbytes
        return read, _tensor_bytes(outputs)

    return traffic


def _work_model(name):
    """The function giving (MXU FLOPs by dtype or None, bytes read, bytes written) of one launch of aten ``name``.

    Everything that depends only on the op is looked up once here, not on every launch.
    """
    packet = name.partition(".")[0]
    flops_of_arguments = MXU_FLOPS.get(packet)
    flops_of_result = RESULT_FLOPS.get(packet)
    fused = FUSED_COSTS.get(packet)
    traffic = _traffic_model(name)

    def work(args, kwargs, result, outputs):
        if fused is not None:
            return fused(args, kwargs, result)
        read, written = traffic(args, kwargs, outputs)
        if flops_of_arguments is not None:
            return flops_of_arguments(*args, **kwargs), read, written
        if flops_of_result is not None:
            return flops_of_result(args, result), read, written
        return None, read, written

    return work


def _outputs_of_model(name):
    """``_outputs_model`` with its commonest case first: one new tensor and no keyword arguments."""
    outputs = _outputs_model(name)

    def outputs_of(args, kwargs, result):
        return (result,) if type(result) is Tensor and not kwargs else outputs(args, kwargs, result)

    return outputs_of


def cost_model(name):
    """The function giving the KernelCost of one launch of aten ``name``."""
    work = _work_model(name)
    written_by = _outputs_of_model(name)
    make_cost = _C.clock.KernelCost

    def cost(args, kwargs, result, detailed=False):
        """``detailed`` adds shapes, dtypes and VPU element counts (for profiles)."""
        outputs = written_by(args, kwargs, result)
        flops, read, written = work(args, kwargs, result, outputs)
        kernel = make_cost(name, flops or {}, 0, read, written)
        if flops:
            kernel.float32_passes = float32_passes()
        if detailed:
            inputs = list(_tensors(args))
            kernel.shapes = tuple(tuple(t.shape) for t in inputs)
            kernel.dtypes = tuple(DTYPE_NAME.get(t.dtype, str(t.dtype)) for t in inputs)
            # one VPU op per output element of an MXU op (its epilogue), else per element of the
            # largest tensor touched (a reduction works on its input, a broadcast on its output)
            output_elements = sum(t.numel() for t in _tensors(outputs))
            kernel.vpu_ops = output_elements if flops else max([output_elements, *(t.numel() for t in inputs)])
        return kernel

    return cost


def kernel_cost(name, args, kwargs, result, detailed=False):
    """The KernelCost of one launch of aten ``name``."""
    return cost_model(name)(args, kwargs, result, detailed)


def charged(kernel, name, guard=None):
    """Wrap ``kernel`` so that every launch advances the chip's clock by its roofline time.

    Outside a profile no KernelCost is built: an op without MXU work is charged by its traffic alone
    (most launches, and the small ones are dominated by this overhead), a matmul-like op by its FLOPs
    and traffic (``Clock.advance_mxu``). In abstract mode (``torch_tpu.abstract``) the op's shape function stands in for the kernel,
    and the launch is charged alike. ``guard(error, args, kwargs)``, when given, is the error the
    user sees instead of one escaping the launch (the registry's, ``_registry.guard``): it runs in
    the launch's own frame, so that a launch is one Python frame around the kernel.
    """
    if name in FREE_OPS:
        return kernel
    chip = _C.current_chip()
    clock = chip.clock
    cost_of = cost_model(name)
    packet = name.partition(".")[0]
    traffic = _traffic_model(name)
    arguments_bytes = _arguments_bytes(name)
    plain = packet not in COPIES and packet not in WRITE_ONLY_SELF
    by_traffic = not (packet in MXU_FLOPS or packet in RESULT_FLOPS or packet in FUSED_COSTS)
    # a matmul-like op whose FLOPs its arguments give (``work``'s rule: a fused cost comes first)
    flops_of_arguments = None if packet in FUSED_COSTS else MXU_FLOPS.get(packet)
    advance = clock.advance
    advance_mxu = clock.advance_mxu
    work = _work_model(name)
    outputs = _outputs_model(name)
    written_by = _outputs_of_model(name)
    lost_in_fork = _C.chip.ChipLostInFork

    def charge(args, kwargs, result):
        if not by_traffic:  # what clock.charge(cost_of(...)) charges, with no KernelCost built
            flops, read, written = work(args, kwargs, result, written_by(args, kwargs, result))
            if flops:
                advance_mxu(name, read + written, flops, float32_passes(), clock.current_stream)
            else:
                advance(name, read + written, clock.current_stream)
        elif plain and not kwargs and type(result) is Tensor:  # the commonest launch: inputs read, one new output
            advance(name, arguments_bytes(args) + result.nbytes, clock.current_stream)
        else:
            read, written = traffic(args, kwargs, outputs(args, kwargs, result))
            advance(name, read + written, clock.current_stream)

    def launch(*args, **kwargs):
        if function_modes_active():  # out of sight of the user's torch function modes, as a C++ kernel is
            with without_torch_function():
                return launch(*args, **kwargs)
        try:
            if chip.lost_in_fork:  # a child forked after the tpu was used: the chip is its parent's
                raise lost_in_fork()
            try:
                if clock.recorders or abstract_mode.depth:
                    return _special_launch(kernel, name, charge, cost_of, clock, args, kwargs)
                result = kernel(*args, **kwargs)
            except NoValuesError as error:
                raise error.naming(f"aten.{name}") from None
            # charge's commonest cases, inline: inputs read, one new output (or several: layer norm's three)
            if plain and not kwargs and type(result) is Tensor:
                if by_traffic:
                    advance(name, arguments_bytes(args) + result.nbytes, clock.current_stream)
                elif flops_of_arguments is not None:  # mm, addmm, bmm
                    advance_mxu(name, arguments_bytes(args) + result.nbytes, flops_of_arguments(*args),
                                float32_passes(), clock.current_stream)
                else:
                    charge(args, kwargs, result)
            elif by_traffic and plain and not kwargs and type(result) is tuple and result:
                advance(name, arguments_bytes(args) + _tensor_bytes(result), clock.current_stream)
            else:
                charge(args, kwargs, result)
            return result
        except Exception as error:
            if guard is None:
                raise
            replacement = guard(error, args, kwargs)
            del args, kwargs  # this frame stays in the traceback: it must not keep the tensors alive
            if replacement is error:
                del replacement  # else the frame in error's traceback would hold error: a cycle only gc frees
                raise
        # A replaced error is raised outside the handler, so it carries no context (the failed kernel's traceback and
        # its tensors), and the local is dropped so that its traceback's frame does not hold it in a cycle.
        try:
            raise replacement.with_traceback(None)
        finally:
            del replacement

    launch.__name__ = kernel.__name__
    launch.__wrapped__ = kernel
    return launch


abstract_mode = _abstract.MODE


def _special_launch(kernel, name, charge, cost_of, clock, args, kwargs):
    """A launch in abstract mode, or while a profiler records (which also times the emulation on the host)."""
    run = _abstract_launch.kernel(name, kernel) if abstract_mode.depth else kernel
    if not clock.recorders:
        result = run(*args, **kwargs)
        charge(args, kwargs, result)
        return result
    host_start = _perf_counter_ns()
    result = run(*args, **kwargs)
    host_end = _perf_counter_ns()
    clock.charge(cost_of(args, kwargs, result, detailed=True), clock.current_stream, host_start, host_end,
                 _thread_id())
    return result
