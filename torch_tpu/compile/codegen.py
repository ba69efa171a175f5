"""Code generation: one Python function per FX graph, calling the kernels' NumPy maths directly.

Every value of the graph gets a home, decided here once:

- graph inputs are the caller's tensors, read through NumPy views;
- a value only its own kernel uses is a host scratch array: on the chip it never leaves the
  kernel, so it costs no HBM allocation and no HBM traffic;
- a value a later kernel reads lives in an HBM **buffer** planned from liveness: allocated where
  its first value is made, handed on to a later value of the same size once its value is dead,
  released after its last value's last use. HBM then holds what eager mode would hold (no
  program-long arena on top of the outputs), and ``memory_allocated`` stays exact;
- a graph output is a new tpu tensor of its own, the kernel writing straight into it;
- an eager node's results are the tensors its eager kernel returns.

The source reads top to bottom as the graph does: each computation is one call
``k_<node>(out, *inputs)`` (or the ufunc itself, ``out=`` its buffer), each view one NumPy expression.
Each fused kernel's cost is computed here; the program hands the chip's clock their precomputed sum at
its end (``Clock.run_program``), or, while a profiler records, each kernel's own record as it ends.
``program.source`` holds it.
"""

import dataclasses
import math
import operator

import numpy as np
import torch

from .. import _C
from .._tensor import NUMPY_DTYPE, numpy_dtype
from .batching import (HELPERS as BATCH_HELPERS, batched_lines, holds_like, host_batch_lines, host_copies_line,
                       plan_batches, plan_colocation, plan_host_batches, plan_host_copies, scalar_group)
from .fusion import fuse, horizontal_launches
from .lowering import EAGER, POINTWISE, VIEW, is_tpu_node, lower, nbytes_of, tensor_inputs, value_of
from .runtime import BufferHome



@dataclasses.dataclass
class Generated:
    source: str
    namespace: dict
    buffer_bytes: int  # HBM of the planned buffers, summed (each is live only over its values' lifetimes)
    kernels: list  # (name, node names, KernelCost)
    eager_nodes: list  # (node name, op, reason)
    refusals: list
    homes: dict  # node name -> "input", "scratch", "buffer", "inplace", "host", "output", "eager", "view"


REUSE_WINDOW = 3  # graph steps: a buffer waits at most this long for its next value, else it is released


def plan_buffers(intervals):
    """Buffers for values alive over [first, last] steps: a value takes the buffer of a value of the
    same size that died just before it (within REUSE_WINDOW steps: a buffer kept waiting longer would
    hold HBM eager mode frees), else a new one. ``intervals`` maps a name to (first, last, nbytes);
    returns ({name: buffer index}, [(nbytes, first step, last step) of each buffer])."""
    assignment, buffers = {}, []
    for name, (first, last, nbytes) in sorted(intervals.items(), key=lambda item: item[1][0]):
        free = next((i for i, (size, _, end) in enumerate(buffers)
                     if size == nbytes and end < first <= end + REUSE_WINDOW), None)
        if free is None:
            buffers.append((nbytes, first, last))
            free = len(buffers) - 1
        else:
            buffers[free] = (nbytes, buffers[free][1], last)
        assignment[name] = free
    return assignment, buffers


class _Writer:
    def __init__(self):
        self.lines, self.namespace, self.counter = [], {}, 0
        self.wrapped = set()  # planned buffers that have a tensor over them (bt<index>)

    def constant(self, prefix, value):
        self.counter += 1
        name = f"{prefix}{self.counter}"
        self.namespace[name] = value
        return name

    def line(self, text):
        self.lines.append("    " + text)


def generate(graph, name):
    """The program of one FX graph (after AOTAutograd and foreach unrolling)."""
    nodes = list(graph.nodes)
    lowered = {n: lower(n) for n in nodes if n.op == "call_function"}
    fusion = fuse(lowered)
    output_node = next(n for n in nodes if n.op == "output")
    outputs = output_node.args[0]
    output_set = {o for o in outputs if isinstance(o, torch.fx.Node)}
    position = {n: i for i, n in enumerate(nodes)}
    # a multi-output kernel writes each tpu result something reads into a home of its own, planned like any
    # value's: the result's first getitem node that has users stands for it
    result_node = {}  # (multi-output node, result position) -> its getitem node
    for node in nodes:
        source = node.args[0] if node.target is operator.getitem else None
        if source in lowered and lowered[source].multi and node.args[1] in lowered[source].results and node.users:
            result_node.setdefault((source, node.args[1]), node)
    made_by = {getitem: source for (source, _), getitem in result_node.items()}

    def root(node):
        """The value whose memory ``node`` views (an eager node's tuple of results has none)."""
        while node in lowered and lowered[node].kind == VIEW and node not in made_by:
            source = lowered[node].inputs[0]
            if node.target is operator.getitem and source in lowered and _returns_tensors(lowered[source]):
                return result_node.get((source, node.args[1]), node)
            node = source
        return node

    def holder(node):
        """The value whose tensor holds ``node``'s: through views and in-place writes (an input ``copy_``
        wrote, which the graph may return as the mutated input)."""
        node = root(node)
        while node in lowered and lowered[node].writes is not None:
            node = root(lowered[node].writes)
        return node

    # users, looking through views and in-place writes: a value is alive while any view of it is
    last_use = {}
    for node in nodes:
        for arg in tensor_inputs((node.args, node.kwargs)):
            for alive in {arg, root(arg), holder(arg)}:
                last_use[alive] = max(last_use.get(alive, 0), position[node])

    viewed_by_outputs = {root(o) for o in output_set}
    homes = {}
    for node in nodes:
        if node.op == "placeholder":
            homes[node] = "input"
        elif node in made_by:
            homes[node] = "output" if node in output_set or node in viewed_by_outputs else "buffer"
        elif node.op == "call_function":
            low = lowered[node]
            if low.kind == VIEW:
                homes[node] = "view"
            elif low.kind == EAGER:
                homes[node] = "eager"
            elif low.multi:
                homes[node] = "multi"
            elif low.writes is not None:
                homes[node] = "inplace"
            elif low.host:
                homes[node] = "host"
            elif node in output_set or node in viewed_by_outputs:  # outputs, and what outputs view, are tensors
                homes[node] = "output"
            elif _internal(node, fusion, lowered, output_set, root):
                homes[node] = "scratch"
            else:
                homes[node] = "buffer"
    written_into = _written_in_place(nodes, lowered, homes, position, root)
    batch_of = {}  # node -> the BatchPlan of the launch it belongs to
    for siblings in horizontal_launches(fusion.groups):
        for plan in plan_batches(siblings, lowered, homes, position, root, nodes, last_use):
            batch_of.update((n, plan) for nodes_of in plan.members for n in nodes_of)
            for base in plan.reads | plan.writes:  # what a batched launch reads or writes lives until it has run
                if plan.start <= last_use.get(base, -1) < plan.end:
                    last_use[base] = plan.end
    made_at = {n: position[made_by.get(n, n)] for n in nodes}  # a kernel's results are made where it runs
    intervals = {n.name: (made_at[n], last_use.get(n, position[n]), nbytes_of(value_of(n)))
                 for n, home in homes.items() if home == "buffer"}
    assignment, buffers = plan_buffers(intervals)
    released = {}
    for index, (_, _, last) in enumerate(buffers):
        released.setdefault(last, []).append(index)

    w = _Writer()
    helpers = _runtime_helpers()
    w.namespace.update(helpers)
    w.namespace.update(BATCH_HELPERS)
    w.namespace["chip"] = chip = _C.current_chip()
    w.namespace["input_views"] = [None] * sum(n.op == "placeholder" for n in nodes)  # runtime.input_view's
    buffer_homes = {}  # planned buffer index -> its BufferHome's block, and the block's name in the program
    at_home_of = {}  # node -> its buffer's index and its array when the buffer is in its home (views included)
    w.line("clock = chip.clock; recording = clock.recorders  # a profiler wants each kernel's record")
    kernels, eager_nodes = [], []
    last_of_group = {group.nodes[-1]: group for group in fusion.groups}
    launch_of = {group.index: siblings for siblings in horizontal_launches(fusion.groups) for group in siblings}
    pending = {}  # id of a horizontal launch -> the costs of its kernels emitted so far
    first_call = next((n for n in nodes if n.op == "call_function"), None)
    tensor_of = {}  # node -> expression of a tensor holding it, where one exists
    deletions = {}  # position -> eager result tensors to drop after it
    host_batch_of = plan_host_batches(nodes, lowered, homes, position)  # node -> its HostBatch
    launches = list({id(p): p for p in batch_of.values()}.values())  # the BatchPlans, once each
    # copy_ -> its HostCopies
    host_copies_of = plan_host_copies(nodes, lowered, homes, position, root, host_batch_of, launches)
    colocation_of = {id(plan): plan_colocation(plan, lowered, root) for plan in launches}
    # the graph inputs a launch updates where they live, read by no node outside it: viewed only where it gathers
    viewed_late = {member for plan in launches if colocation_of[id(plan)] is not None
                   for group in colocation_of[id(plan)].groups for member in group
                   if all(batch_of.get(user) is plan for user in member.users)}

    def drop_after_last_use(node):
        dies = last_use.get(node, position[node])
        if node not in output_set and dies != position[output_node]:  # outputs live on; the rest die early
            deletions.setdefault(dies, []).append(node.name)

    def emit_home(node, home, v):
        """The lines making a new output's tensor or a planned buffer's array, for ``node``'s value ``v``."""
        value = value_of(node)
        if home == "output":
            shape, dtype = w.constant("shape_", tuple(value.shape)), w.constant("dtype_", value.dtype)
            strides = _eager_strides(value)
            if strides is None:
                w.line(f"t_{node.name}, {v} = new_output({shape}, {dtype})")
            else:  # laid out as eager lays it out (channels_last, a permuted input's order)
                w.line(f"t_{node.name}, {v} = new_output({shape}, {dtype}, {w.constant('strides_', strides)})")
            tensor_of[node] = f"t_{node.name}"
            return
        index = assignment[node.name]
        if buffers[index][1] == made_at[node]:  # the buffer's first value: allocated here, in its home when free
            home = BufferHome(buffers[index][0], chip.hbm)
            buffer_homes[index] = (home.block, w.constant("block_", home.block))
            w.line(f"b{index} = new_buffer({buffers[index][0]}, {w.constant('home_', home)}); B{index} = b{index}.array")
        shape, dtype = tuple(value.shape), numpy_dtype(value.dtype)
        strides = _eager_strides(value)
        # laid out as eager lays it out (channels_last, fused attention's results): a reduction or convolution reading
        # it sums in eager's order, and the views after it stay views
        byte_strides = None if strides is None else tuple(s * value.element_size() for s in strides)
        block, block_name = buffer_homes[index]
        at_home_of[node] = index, np.ndarray(shape, dtype, block, 0, byte_strides)
        at_home = w.constant("at_home_", at_home_of[node][1])
        slot = w.constant("slot_", (shape, dtype))
        built = f"ndarray(*{slot}, B{index})" if strides is None else \
            f"ndarray(*{slot}, B{index}, 0, {w.constant('strides_', byte_strides)})"
        w.line(f"{v} = {at_home} if B{index} is {block_name} else {built}")

    def emit(node, low, home, v):
        """The lines computing one node's value (``v``)."""
        if node in made_by:  # made by its kernel, into the home emitted there
            return
        if home == "view":
            viewed = f"{w.constant('view_', low.run)}(v_{low.inputs[0].name})"
            if low.inputs[0] in at_home_of:  # a view of a buffer in its home: made once, as the buffer's array is
                index, base = at_home_of[low.inputs[0]]
                at_home_of[node] = index, low.run(base)
                viewed = f"{w.constant('at_home_', at_home_of[node][1])} if B{index} is {buffer_homes[index][1]} " \
                         f"else {viewed}"
            w.line(f"{v} = {viewed}")
            if node.target is operator.getitem and low.inputs[0] in tensor_of:
                w.line(f"t_{node.name} = t_{low.inputs[0].name}[{node.args[1]}]")
                tensor_of[node] = f"t_{node.name}"
            elif node.target is operator.getitem and homes[low.inputs[0]] == "multi" and \
                    isinstance(value_of(node), torch.Tensor) and root(node) is node:  # a host result (a philox seed)
                w.line(f"t_{node.name} = {v}")
                tensor_of[node] = f"t_{node.name}"
            return
        if home == "eager":
            tensors = ", ".join(_tensor_expression(arg, tensor_of, homes, root, assignment, w) for arg in low.inputs)
            w.line(f"t_{node.name} = {w.constant('eager_', _eager_call(node))}({tensors})")
            w.line(f"{v} = arrays_of(t_{node.name})")
            tensor_of[node] = f"t_{node.name}"
            eager_nodes.append((node.name, str(node.target), low.reason))
            drop_after_last_use(node)
            return
        if home == "multi":  # several results, each written into its own home (None: nothing reads it)
            outs = []
            for index in range(len(value_of(node))):
                result = result_node.get((node, index))
                if result is not None:
                    emit_home(result, homes[result], f"v_{result.name}")
                outs.append("None" if result is None else f"v_{result.name}")
            arguments = "".join(f", v_{a.name}" for a in low.inputs)
            w.line(f"{v} = {w.constant(f'k_{node.name}_', low.run)}(({', '.join(outs)},){arguments})")
            arrays_only.add(node.name)
            drop_after_last_use(node)
            charge(node)
            return
        value = value_of(node)
        if home == "inplace":
            w.line(f"{v} = v_{low.writes.name}")
            if low.writes in tensor_of:
                tensor_of[node] = tensor_of[low.writes]
            if written_into.get(low.inputs[0]) is low.writes:  # its value was computed right there
                charge(node)
                return
        elif node in written_into:
            w.line(f"{v} = v_{written_into[node].name}  # computed into the input it is copied to")
        elif home in ("output", "buffer"):
            emit_home(node, home, v)
        elif home == "host":
            w.line(f"{v} = {w.constant('host_', _host_array(value))}")  # as scratch
        elif home == "scratch" and low.value is not None and low.inline is None:  # the maths' own result array
            w.line(f"{v} = {w.constant(f'k_{node.name}_', low.value)}({', '.join('v_' + a.name for a in low.inputs)})")
            charge(node)
            return
        elif home == "scratch" and low.constant:  # read-only inside its kernel: filled now, once
            array = np.empty(tuple(value.shape), numpy_dtype(value.dtype))
            low.run(array)
            w.line(f"{v} = {w.constant('constant_', array)}")
            charge(node)
            return
        else:  # scratch
            w.line(f"{v} = {w.constant('scratch_', _host_array(value))}")
        if low.inline is not None:  # one ufunc: called from the source itself, into the planned buffer
            ufunc, operands = low.inline
            arguments = [f"v_{o.name}" if isinstance(o, torch.fx.Node) else w.constant("c_", o) for o in operands]
            w.line(f"{w.constant(f'{ufunc.__name__}_', ufunc)}({', '.join(arguments)}, out={v})")
        else:
            w.line(f"{w.constant(f'k_{node.name}_', low.run)}({v}{''.join(', v_' + a.name for a in low.inputs)})")
        charge(node)

    def charge(node):
        """After a kernel's last node: one charge of the whole kernel's cost."""
        group = last_of_group.get(node)
        if group is None:
            return
        cost, names = _group_cost(group, lowered, homes, root), [n.name for n in group.nodes]
        siblings = launch_of.get(group.index)
        if siblings is not None:  # one launch for all: charged after the last of them
            done = pending.setdefault(id(siblings), [])
            done.append((cost, names))
            if len(done) < len(siblings):
                return
            cost, names = _launch_cost([c for c, _ in done]), [n for _, group_names in done for n in group_names]
        kernels.append((cost.name, names, cost))
        w.line(f"if recording: clock.charge({w.constant('cost_', cost)}, clock.current_stream)")

    def emit_batched(plan):
        """A batched launch, where its last node stands: one call per op over all kernels' elements, and
        the unrolled kernels as the fallback when their host scalars differ."""
        members = sorted((n for nodes_of in plan.members for n in nodes_of), key=position.__getitem__)
        batched = batched_lines(plan, lowered, w.constant)
        colocation, views = colocation_of.get(id(plan)), []
        if colocation is not None:  # the launch where its inputs live, else gathered and then laid out for next time
            inputs = [member for group in colocation.groups for member in group]
            tensors = "".join(f"t_{n.name}, " for n in inputs)
            views = [f"v_{n.name} = input_view(t_{n.name}, input_views, {input_index[n]})"
                     for n in inputs if n in viewed_late]  # only these branches read them
            name = w.constant("colocation_", colocation)
            laid_out = f"{name}.lay_out(({tensors}), input_views, {w.constant('indices_', [input_index[n] for n in inputs])})"
            batched = ([f"if {name}.holds(({tensors})):  # where they live"]
                       + ["    " + b for b in batched_lines(plan, lowered, w.constant, colocation)]
                       + ["else:"] + ["    " + b for b in views + batched + [laid_out]])
        mark = len(w.lines)
        if plan.scalars:
            for node in members:
                emit(node, lowered[node], homes[node], f"v_{node.name}")
        else:
            for node in members:
                charge(node)
        unrolled, w.lines[mark:] = w.lines[mark:], []
        # the launch's one charge (if this batch ends it), after whichever code ran
        charge_line = unrolled.pop() if unrolled and "clock.charge(" in unrolled[-1] else None
        if plan.scalars:
            groups = ", ".join(names if flat is None else w.constant("flat_", flat)
                               for flat, names in (scalar_group(args, host_batch_of) for args in plan.scalars))
            w.line(f"if same_scalars({groups}):  # one call per op over the {len(plan.members)} kernels")
            w.lines.extend("    " + line for line in ["    " + b for b in batched])
            w.line("else:")
            w.lines.extend("    " + line for line in ["    " + view for view in views] + unrolled)
        else:
            w.line(f"# one call per op over the {len(plan.members)} kernels of this launch")
            w.lines.extend("    " + b for b in batched)
        if charge_line is not None:
            w.lines.append(charge_line)

    # a graph input gets a NumPy view if a lowered node reads or writes it as an array (a view of it is one)
    read_as_arrays = {n for n in nodes if n.op == "placeholder" and any(
        user in lowered and lowered[user].kind != EAGER and (n in lowered[user].inputs or n is lowered[user].writes)
        for user in n.users)}

    tensors_only = {n.name for n in nodes if n.op == "placeholder" and (n not in read_as_arrays or n in viewed_late)}
    arrays_only = set()  # multi-output kernels' results: arrays and host values, no tensor

    def dropped(name):
        if name in arrays_only:
            return f"del v_{name}"
        return f"del t_{name}" if name in tensors_only else f"del t_{name}, v_{name}"

    input_index = {node: index for index, node in enumerate(n for n in nodes if n.op == "placeholder")}
    for node in nodes:
        v = f"v_{node.name}"
        if node.op == "placeholder":
            index = input_index[node]
            w.line(f"t_{node.name} = args[{index}]")
            if node not in read_as_arrays:
                pass  # only eager kernels take it, as a tensor: no view to build (nor to trust: fused attention's
                #       philox seed is a CPU scalar whose fake value says tpu)
            elif node in viewed_late:
                pass
            elif is_tpu_node(node):  # its view of the last call, if the input lies where that one did
                w.line(f"{v} = input_view(t_{node.name}, input_views, {index})")
            elif _numpy_host_tensor(node):  # a CPU tensor (guarded so): its NumPy view, without host_view's checks;
                #                               detached only if it requires grad (guarded too; detach costs a tensor)
                detach = ".detach()" if value_of(node).requires_grad else ""
                w.line(f"{v} = t_{node.name}{detach}.numpy()")
            else:  # a host scalar read (and written) through its NumPy view; anything else as it is
                w.line(f"{v} = host_view(t_{node.name})")
            tensor_of[node] = f"t_{node.name}"
            drop_after_last_use(node)
            continue
        if node.op != "call_function":
            continue
        if node is first_call:
            w.line("args.clear()  # AOTAutograd hands its references over: inputs die at their last use")
        plan, host_batch, host_copies = batch_of.get(node), host_batch_of.get(node), host_copies_of.get(node)
        if host_batch is not None:
            if node is host_batch.members[0]:  # the whole batch, where its first member stands
                for line in host_batch_lines(host_batch, host_batch_of, lowered, w.constant):
                    w.line(line)
        elif host_copies is not None:
            if node is host_copies.copies[0]:  # all of them, where the first stands
                w.line(host_copies_line(host_copies, w.constant))
            written = lowered[node].writes  # the copy's value is its input's, as an in-place node's is
            w.line(f"{v} = v_{written.name}")
            if written in tensor_of:
                tensor_of[node] = tensor_of[written]
            charge(node)
        elif plan is None:
            emit(node, lowered[node], homes[node], v)
        elif position[node] == plan.end:
            emit_batched(plan)
        for dead in deletions.pop(position[node], ()):
            w.line(dropped(dead))
        for index in released.pop(position[node], ()):
            w.line(f"del b{index}, B{index}" + (f", bt{index}" if index in w.wrapped else ""))
            w.wrapped.discard(index)
    for dead in (name for names in deletions.values() for name in names):
        w.line(dropped(dead))  # unused inputs
    returned_roots = [root(o) for o in outputs if isinstance(o, torch.fx.Node)]
    results = [tensor_of[root(o)] if _whole_view_of_new_output(o, root, homes, returned_roots)
               else _output_expression(o, tensor_of, homes, root, w, assignment) for o in outputs]
    if kernels:  # else the program's kernels reach the clock at once, as launching them one by one would
        summary = w.constant("program_cost_", chip.clock.program_cost([cost for _, _, cost in kernels]))
        w.line(f"if not recording: clock.run_program({summary}, clock.current_stream)")
    w.line(f"return [{', '.join(results)}]")
    body = "\n".join("    " + line for line in w.lines)
    # NumPy's floating-point warnings are off for the whole program, as the VPU's kernels turn them off
    source = (f"def {name}(args):\n    token = ignore_fp_errors()\n    try:\n{body}\n"
              "    finally:\n        restore_fp_errors(token)\n")
    return Generated(source, w.namespace, sum(size for size, _, _ in buffers), kernels, eager_nodes, fusion.refusals,
                     {n.name: h for n, h in homes.items()})


def _numpy_host_tensor(node):
    """Whether a graph input is a CPU tensor of a dtype NumPy holds (bfloat16 is not one): an optimizer's step count."""
    value = value_of(node)
    return isinstance(value, torch.Tensor) and value.device.type == "cpu" and value.dtype != torch.bfloat16 and \
        value.dtype in NUMPY_DTYPE


def _written_in_place(nodes, lowered, homes, position, root):
    """Elementwise values computed only to be copied into a graph input (an optimizer's new parameter and
    moments), mapped to that input: each is computed straight into it when nothing reads the input's old value
    afterwards (the producer itself may, element by element), so the copy moves nothing. Homes and charges
    stay as they are."""
    readers = {}  # graph input -> (node, argument) of each read, through views
    for node in nodes:
        for arg in tensor_inputs((node.args, node.kwargs)):
            readers.setdefault(root(arg), []).append((node, arg))
    found = {}
    for node in nodes:
        low = lowered.get(node)
        if low is None or homes[node] != "inplace" or not low.inputs or low.writes.op != "placeholder":
            continue
        source, destination = low.inputs[0], low.writes
        if homes.get(source) != "scratch" or lowered[source].kind != POINTWISE or lowered[source].constant or \
                source in found:
            continue
        if not holds_like(destination, source):
            continue
        if all(reader is node or position[reader] < position[source] or (reader is source and arg is destination)
               for reader, arg in readers.get(destination, ())):
            found[source] = destination
    return found


def _returns_tensors(low):
    return low.kind == EAGER or low.multi


def _internal(node, fusion, lowered, output_set, root):
    """Whether every consumer of ``node`` (through views) is in its own kernel."""
    group = fusion.group_of.get(node)
    if group is None:
        return False
    pending = list(node.users)
    while pending:
        user = pending.pop()
        if user.op == "output":
            return False
        if user in lowered and lowered[user].kind == VIEW:
            pending.extend(user.users)
            continue
        if fusion.group_of.get(user) is not group:
            return False
    return True


def _group_cost(group, lowered, homes, root):
    """One launch: MXU FLOPs of its matmuls, HBM bytes of what crosses its boundary only."""
    members = set(group.nodes)
    read, flops, seen = 0, {}, set()
    for node in group.nodes:
        low = lowered[node]
        for name, count in low.flops.items():
            flops[name] = flops.get(name, 0) + count
        for arg in low.inputs:
            base = root(arg)
            if base in members or base in seen or not is_tpu_node(arg):
                continue
            seen.add(base)
            read += min(nbytes_of(value_of(arg)), nbytes_of(value_of(base)) or nbytes_of(value_of(arg)))
    results = [v for n in group.nodes if homes[n] != "scratch" for v in _tensors_of(value_of(n))]
    written = sum(nbytes_of(v) for v in results)
    elements = sum(math.prod(v.shape) for n in group.nodes for v in _tensors_of(value_of(n)))
    cost = _C.clock.KernelCost(group.name, flops, elements, read, written)
    cost.shapes = tuple(tuple(v.shape) for v in results)
    if flops:
        from .._cost import float32_passes

        cost.float32_passes = float32_passes()
    return cost


def _launch_cost(costs):
    """Kernels that launch together (rule 7): their FLOPs and boundary bytes, one launch."""
    flops = {}
    for cost in costs:
        for name, count in cost.mxu_flops.items():
            flops[name] = flops.get(name, 0) + count
    launch = _C.clock.KernelCost(f"{costs[0].name}_x{len(costs)}", flops, sum(c.vpu_ops for c in costs),
                                 sum(c.bytes_read for c in costs), sum(c.bytes_written for c in costs))
    launch.shapes = tuple(shape for cost in costs for shape in cost.shapes)
    launch.float32_passes = costs[0].float32_passes
    return launch


def _tensors_of(value):
    """The tensors of a node's value (one, or the several results of a multi-output op)."""
    if isinstance(value, torch.Tensor):
        return [value]
    return [v for v in value if isinstance(v, torch.Tensor)] if isinstance(value, (list, tuple)) else []


def _eager_call(node):
    """``node.target(*args)`` with the fx Nodes in its arguments replaced by the tensors passed in."""
    target, args, kwargs = node.target, node.args, node.kwargs

    def fill(template, tensors):
        if isinstance(template, torch.fx.Node):
            return next(tensors)
        if isinstance(template, (list, tuple)):
            return type(template)(fill(t, tensors) for t in template)
        if isinstance(template, dict):
            return {k: fill(v, tensors) for k, v in template.items()}
        return template

    def call(*tensors):
        supply = iter(tensors)
        return target(*fill(args, supply), **fill(kwargs, supply))

    return call


def _tensor_expression(node, tensor_of, homes, root, assignment, w):
    """A tensor holding ``node``'s value: its own, or a view over the tensor its root lives in."""
    if node in tensor_of:
        return tensor_of[node]
    if node.op == "get_attr":  # a subgraph that a higher-order op (torch.cond) runs: the module itself
        return w.constant("module_", torch.fx.graph_module._get_attr(node.graph.owning_module, node.target))
    base = root(node)
    if base in tensor_of:
        return _view_expression(node, base, tensor_of[base], f"v_{base.name}", homes, w)
    if homes.get(base) == "buffer":
        index = assignment[base.name]
        if index not in w.wrapped:  # a tensor over the buffer, made where an eager kernel or an output first needs it
            w.line(f"bt{index} = tensor_over(b{index})")
            w.wrapped.add(index)
        return _view_expression(node, base, f"bt{index}", f"B{index}", homes, w)
    if homes.get(base) == "host":  # a host scalar an eager CPU node reads (the 0 of a mask's where on the CPU)
        return f"host_tensor(v_{node.name})"
    raise AssertionError(f"{node.name} has no tensor to view")  # scratch values never leave their kernel


def _whole_view_of_new_output(node, root, homes, returned_roots):
    """Whether output ``node`` is a view laid out exactly as the new output tensor it views (a weight gradient
    transposed twice), returned by nothing else: that tensor is then returned as it is, instead of a new tensor
    over the same bytes with the same sizes, strides and offset."""
    if not isinstance(node, torch.fx.Node):
        return False
    base = root(node)
    if base is node or homes.get(base) != "output" or returned_roots.count(base) != 1:
        return False
    layout = _static_layout(value_of(node))
    return layout is not None and layout == _static_layout(value_of(base))


def _eager_strides(value):
    """The strides of a new output whose value is laid out otherwise than contiguously, or None (contiguous, or
    strides that are not plain numbers or not dense: the kernel then writes a contiguous tensor)."""
    from torch._prims_common import is_non_overlapping_and_dense_or_false

    strides = tuple(value.stride())
    if value.is_contiguous() or not all(type(n) is int for n in (*value.shape, *strides)):
        return None
    return strides if is_non_overlapping_and_dense_or_false(value) else None


def _host_array(value):
    """A host array for ``value``, laid out as eager lays it out (a channels_last intermediate stays channels_last,
    so that a reduction or convolution reading it inside its kernel sums in eager's order)."""
    shape, dtype, strides = tuple(value.shape), numpy_dtype(value.dtype), _eager_strides(value)
    if strides is None:
        return np.empty(shape, dtype)
    itemsize = np.dtype(dtype).itemsize
    return np.ndarray(shape, dtype, np.empty(value.numel() * itemsize, np.uint8), 0,
                      tuple(s * itemsize for s in strides))


def _static_layout(value):
    """(dtype, storage offset, sizes, strides) of a FakeTensor whose layout is plain numbers, else None."""
    if not isinstance(value, torch.Tensor):
        return None
    layout = (value.dtype, value.storage_offset(), tuple(value.shape), tuple(value.stride()))
    numbers = (layout[1], *layout[2], *layout[3])
    return layout if all(isinstance(n, int) for n in numbers) else None


def _view_expression(node, base, base_tensor, base_array, homes, w):
    """A tensor over ``base_tensor``'s storage holding view ``node`` of ``base``. When the program made the
    base itself, laid out as its FakeTensor says (a new output or a lowered multi-output kernel's result:
    contiguous from offset 0; a planned buffer: its value starts at its offset 0) and the layouts are
    static, the view's sizes, strides and offset are the ones its FakeTensor gives, known now; else they are
    read from the NumPy view at run time."""
    layout, made = _static_layout(value_of(node)), _static_layout(value_of(base))
    made_here = homes.get(base) in ("output", "buffer")
    # a view typed otherwise than its base (a result retyped to eager's dtype after tracing: layer norm's bf16
    # statistics) takes its dtype from the array at run time
    if layout is not None and made is not None and made_here and made[1] == 0 and value_of(base).is_contiguous() \
            and layout[0] == made[0]:
        return f"tensor_at({base_tensor}, *{w.constant('layout_', layout)})"
    return f"tensor_view({base_tensor}, {base_array}, v_{node.name})"


def _output_expression(node, tensor_of, homes, root, w, assignment):
    """An output: its tensor, or a view of the tensor or buffer it lives in (a planned buffer viewed by
    an output is never handed on: its last use is the output)."""
    if not isinstance(node, torch.fx.Node):
        return w.constant("const_", node)
    if node in tensor_of or homes.get(root(node)) == "buffer":
        return _tensor_expression(node, tensor_of, homes, root, assignment, w)
    base = root(node)
    if base in tensor_of:
        return _view_expression(node, base, tensor_of[base], f"v_{base.name}", homes, w)
    if not is_tpu_node(node):
        return f"host_tensor(v_{node.name})"
    value = value_of(node)
    return f"materialize(v_{node.name}, {w.constant('dtype_', value.dtype)})"


def _runtime_helpers():
    from . import runtime

    return runtime.HELPERS
