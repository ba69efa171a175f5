"""Batched horizontal launches: the per-parameter kernels of one foreach launch (fusion rule 7) run as
one NumPy call per op over all parameters' elements, instead of one Python line per parameter and op.

A launch is batched when its kernels are **isomorphic** (the same ops in the same order, the same
constants, dtypes and internal wiring, every tensor of a kernel shaped like its elements) and running
the whole launch where its last node stands changes nothing else in the program (see ``plan_batch``).
The batched code then:

1. gathers each input the kernels read from outside (a parameter, a gradient, a moment) into one flat
   array (``np.concatenate``), once per distinct input;
2. runs each op once, with the first kernel's own lowering, over flat scratch arrays made when the
   program is generated: elementwise maths on the concatenated elements gives each element the value
   the per-parameter call gives it, bit for bit;
3. writes each in-place result back into its graph input through a view of the flat array.

From the second call on, the inputs a launch updates in place live in flat arrays of their own (``Colocation``):
the launch reads and updates them there, with no gather and no write-back.

A per-parameter scalar read as a number (an optimizer's step count on the host, or its bias correction as a
one-element device tensor when the step was traced with its state present) must be the same for all
kernels: a run-time check compares their bytes and falls back to the unrolled code when they differ.
A class of isomorphic kernels over more than ``BATCH_ELEMENTS`` elements batches in runs of at most that many.
Charges and HBM are untouched: the launch is charged as before, and batching needs no HBM
(its flat arrays are host scratch, as the values inside a fused kernel are).

The host scalars themselves (an optimizer's step + 1, its bias corrections and their square roots: one
per parameter and op) batch the same way, with no run-time check (``plan_host_batches``): the values of
one foreach op's per-parameter host nodes lie side by side in one flat array, each member's host array
being a view of its part, so one ufunc call computes all of them and every reader (the unrolled kernels,
the check above) finds its own value where it always did.
"""

import dataclasses

import numpy as np
import torch

from .. import _C, _tensor
from .._tensor import numpy_dtype
from .lowering import POINTWISE, VIEW, is_tpu_node, tensor_inputs, value_of

# homes of nodes that allocate or free HBM: none may run between a batched launch's first and last node
_ALLOCATING = frozenset({"buffer", "output", "eager", "multi"})
HOST_ALIGNMENT = _C.hbm.HOST_ALIGNMENT  # where every HBM allocation's host memory starts, a moved one's too


@dataclasses.dataclass
class BatchPlan:
    members: list  # per kernel, its nodes in graph order (the same op sequence in each)
    start: int  # graph position of the launch's first node
    end: int  # graph position of its last node: the batched code is emitted there
    reads: set  # roots (graph inputs, host values) the launch reads from outside
    writes: set  # the graph inputs it updates in place
    scalars: list  # per host-scalar operand, the nodes each kernel reads it from: checked equal at run time


def plan_batches(siblings, lowered, homes, position, root, nodes, last_use):
    """BatchPlans for the kernels of one horizontal launch: one per class of at least two isomorphic
    kernels (a launch over bfloat16 and float32 parameters batches each dtype on its own), or per run of a
    class's kernels when they hold more than ``BATCH_ELEMENTS`` elements together."""
    classes = {}
    for group in siblings:
        signature = _signature(group.nodes, lowered, homes)
        if signature is not None:
            classes.setdefault(tuple(signature), []).append(list(group.nodes))
    chunks = (chunk for members in classes.values() for chunk in _chunks(members))
    plans = (_plan(chunk, lowered, homes, position, root, nodes, last_use) for chunk in chunks if len(chunk) > 1)
    return [plan for plan in plans if plan is not None]


# the elements of one batched launch at most: its float64 temporaries (the fused multiply-add's) then fit the host's
# 2 MiB L2; a launch over more runs 2-4 times slower per element than over this many (docs/performance.md)
BATCH_ELEMENTS = 2 ** 21 // 8


def _chunks(members):
    """Isomorphic kernels in graph order, split into consecutive runs of at most ``BATCH_ELEMENTS`` elements (a
    kernel larger than that alone), each batched on its own."""
    chunks, size = [[]], 0
    for nodes_of in members:
        count = value_of(nodes_of[0]).numel()
        if chunks[-1] and size + count > BATCH_ELEMENTS:
            chunks.append([])
            size = 0
        chunks[-1].append(nodes_of)
        size += count
    return chunks


def _plan(members, lowered, homes, position, root, nodes, last_use):
    """A BatchPlan for isomorphic kernels, or None when running them where the last one ends could
    change what another node sees."""
    launch = {node for nodes_of in members for node in nodes_of}
    reads, writes, scalars = set(), {}, {}
    for nodes_of in members:
        for node in nodes_of:
            low = lowered[node]
            if homes[node] == "inplace":
                if any(user not in launch for user in node.users):  # the written value is read only inside
                    return None
                if low.writes in writes:
                    return None
                writes[low.writes] = position[node]
            for index, arg in enumerate(low.inputs):
                if arg in nodes_of:
                    continue
                base = root(arg)
                if base in launch or not (base.op == "placeholder" or homes.get(base) == "host" or
                                          homes.get(base) == "buffer" and _is_number(arg, node)):
                    return None
                reads.add(base)
                if _is_number(arg, node):
                    scalars.setdefault((nodes_of.index(node), index), []).append(arg)
    # a kernel reads what it writes only before writing it: gathered inputs hold the old values
    for nodes_of in members:
        for node in nodes_of:
            for arg in lowered[node].inputs:
                if arg not in nodes_of and root(arg) in writes and position[node] > writes[root(arg)]:
                    return None
    start = min(position[n] for n in launch)
    end = max(position[n] for n in launch)
    # the launch's per-kernel scalars computed on the chip (an optimizer's bias corrections from step counts on the
    # device) are planned buffers made inside it: they may be allocated there, but no buffer the launch reads may
    # die before one is (it lives until the launch has run: a later death would raise the peak)
    read_buffers = {base for base in reads if homes.get(base) == "buffer"}
    for node in nodes[start + 1:end]:
        if node in launch or node not in lowered:
            continue
        if homes[node] in _ALLOCATING and not (homes[node] == "buffer" and
                                                all(last_use[b] >= position[node] for b in read_buffers)):
            return None
        touched = {root(a) for a in tensor_inputs((node.args, node.kwargs))}
        written = lowered[node].writes
        if touched & set(writes) or (written is not None and root(written) in reads | set(writes)):
            return None
    return BatchPlan(members, start, end, reads, set(writes), [tuple(args) for args in scalars.values()])


def _is_number(arg, node):
    """A one-element CPU tensor a device op reads as a number (a step count), or a one-element device tensor it
    broadcasts (a bias correction from a step count on the device: an optimizer traced with its state present)."""
    value = value_of(arg)
    if not is_tpu_node(node) or not isinstance(value, torch.Tensor):
        return False
    return value.device.type == "cpu" or value.numel() == 1 and tuple(value.shape) != tuple(value_of(node).shape)


def _signature(nodes_of, lowered, homes):
    """What must be equal between two kernels for one call per op to compute both, or None when a kernel
    is not a plain elementwise loop over tensors of one shape."""
    shape = tuple(value_of(nodes_of[0]).shape)
    index = {node: i for i, node in enumerate(nodes_of)}
    signature = []
    for node in nodes_of:
        low, value = lowered[node], value_of(node)
        if homes[node] not in ("scratch", "inplace") or low.kind == VIEW or low.multi or low.host:
            return None
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            return None
        if homes[node] == "inplace":
            source = low.inputs[0] if low.inputs else None
            if low.writes.op != "placeholder" or source not in index or value_of(source).dtype != value.dtype:
                return None
        inputs = []
        for arg in low.inputs:
            if arg in index:
                inputs.append(("internal", index[arg]))
                continue
            held = value_of(arg)
            if not isinstance(held, torch.Tensor):
                return None
            if _is_number(arg, node):
                if held.numel() != 1:
                    return None
                inputs.append(("number", held.dtype))
            elif tuple(held.shape) != shape:
                return None
            else:
                inputs.append(("array", held.dtype, held.device.type))
        signature.append((node.target, value.dtype, homes[node], low.kind, low.constant, low.inline is not None,
                          _literals(node.args, index), _literals(node.kwargs, index), tuple(inputs)))
    return signature


def _literals(template, index):
    """The non-node arguments of a call, with nodes replaced by where they come from (repr keeps -0.0 and 0.0 apart)."""
    if isinstance(template, torch.fx.Node):
        return ("node", index.get(template, "outside"))
    if isinstance(template, (list, tuple)):
        return tuple(_literals(t, index) for t in template)
    if isinstance(template, dict):
        return tuple((k, _literals(v, index)) for k, v in sorted(template.items()))
    return repr(template)


def same_scalars(*groups):
    """Whether each group holds one value, byte for byte: a tuple of one-element host arrays, or a host batch's
    flat array (its members' values side by side, compared in one call instead of one ``tobytes`` per member)."""
    for group in groups:
        if isinstance(group, np.ndarray):
            rows = group.view(np.uint8).reshape(group.size, group.itemsize)
            if not (rows == rows[0]).all():
                return False
            continue
        first = group[0].tobytes()
        if any(a.tobytes() != first for a in group[1:]):
            return False
    return True


def scalar_group(args, batches):
    """How ``same_scalars`` reads the host scalars ``args`` (one per kernel): (the flat array of the host batch whose
    members they are, in order, None), else (None, the source of the tuple of their arrays)."""
    batch = batches.get(args[0])
    if batch is not None and batch.members == list(args):
        return batch.flat, None
    return None, "(" + "".join(f"v_{a.name}, " for a in args) + ")"


def batched_lines(plan, lowered, constant, colocation=None):
    """The source lines of a batched launch (the charge is not among them). ``constant(prefix, value)``
    names a value in the program's namespace. The flat arrays of results and gathered inputs are reused
    once their last reader has run (``FlatArrays``). With a ``Colocation`` the lines are those run while it
    holds the inputs the launch updates: their flat arrays are read where they are, and each result is computed
    into its input's flat array when no later op reads the old value, else copied there in one call."""
    first = plan.members[0]
    spans, total = _spans(plan) if colocation is None else (colocation.spans, colocation.total)
    operands_of = [_operands(i, node, plan.members, lowered) for i, node in enumerate(first)]
    last_reads = _last_reads(first, lowered, operands_of)
    scratch = FlatArrays(total)
    homes = {} if colocation is None else {group: constant("colocated_", flat)
                                           for group, flat in zip(colocation.groups, colocation.flats)}
    into = _computed_into(first, lowered, plan.members, homes, last_reads)  # op index -> its input's flat array
    lines, flat, gathered, arrays = [], {}, {}, {}  # flat: node index -> name of its flat array
    for i, node in enumerate(first):
        low = lowered[node]
        dtype = numpy_dtype(value_of(node).dtype)
        if low.writes is not None:  # an in-place copy's value is its source's (same dtype)
            flat[i] = flat[first.index(low.inputs[0])]
            continue
        if low.constant:  # filled once, now: each kernel's own fill, side by side (never reused)
            array = np.ones(total, dtype)  # (ones in the gaps between the kernels' spans, if any)
            for nodes_of, (start, stop) in zip(plan.members, spans):
                member_node = nodes_of[i]
                lowered[member_node].run(array[start:stop].reshape(tuple(value_of(member_node).shape)))
            flat[i] = constant("batched_", array)
            arrays[flat[i]] = array
            continue
        operands = []
        for kind, source in operands_of[i]:
            if kind == "internal":
                operands.append(flat[source])
            elif kind == "number":
                operands.append(f"v_{source.name}")  # equal in every kernel (checked)
            elif source in homes:
                operands.append(homes[source])
            else:
                if source not in gathered:
                    array = scratch.take(numpy_dtype(value_of(source[0]).dtype), i, last_reads[source])
                    gathered[source] = constant("gathered_", array)
                    lines.append(f"concatenate(({_gathered_parts(source, spans, array.dtype, constant)}), "
                                 f"out={gathered[source]})")
                operands.append(gathered[source])
        if i in into:
            flat[i] = name = into[i]
        else:
            array = scratch.take(dtype, i, last_reads.get(i, i))
            flat[i] = name = constant("batched_", array)
            arrays[name] = array
        if low.inline is not None:
            ufunc, inline_operands = low.inline
            arguments = [operands[low.inputs.index(o)] if isinstance(o, torch.fx.Node) else constant("c_", o)
                         for o in inline_operands]
            lines.append(f"{constant(f'{ufunc.__name__}_', ufunc)}({', '.join(arguments)}, out={name})")
        else:
            lines.append(f"{constant(f'k_batched_{node.name}_', low.run)}({name}, {', '.join(operands)})"
                         if operands else f"{constant(f'k_batched_{node.name}_', low.run)}({name})")
    for i, node in enumerate(first):  # the results, back into the graph inputs they update
        if lowered[node].writes is None:
            continue
        group = _written(i, plan.members, lowered)
        if group in homes:
            if flat[i] != homes[group]:
                lines.append(f"copyto({homes[group]}, {flat[i]})")
            continue
        for nodes_of, (start, stop) in zip(plan.members, spans):
            member_node = nodes_of[i]
            part = arrays[flat[i]][start:stop].reshape(tuple(value_of(member_node).shape))
            lines.append(f"copyto(v_{lowered[member_node].writes.name}, {constant('part_', part)})")
    return lines


def _spans(plan, alignment=1):
    """Where each kernel's elements lie in the launch's flat arrays, (start, stop) per kernel in order, and the
    arrays' size: side by side, each start at a multiple of ``alignment`` elements (no kernel reads the gaps)."""
    spans, stop = [], 0
    for nodes_of in plan.members:
        start = -(-stop // alignment) * alignment
        stop = start + value_of(nodes_of[0]).numel()
        spans.append((start, stop))
    return spans, stop


def _gathered_parts(source, spans, dtype, constant):
    """The arrays ``concatenate`` lays side by side to gather the inputs ``source`` (one per kernel) at their spans:
    each input's elements, and ones in the gaps (values no kernel reads; ones keep the fused multiply-add off its
    path for subnormal sums)."""
    parts, end = [], 0
    for node, (start, stop) in zip(source, spans):
        if start > end:
            parts.append(constant("gap_", np.ones(start - end, dtype)))
        parts.append(f"v_{node.name}.ravel()")
        end = stop
    return "".join(f"{part}, " for part in parts)


def _written(i, members, lowered):
    """The graph inputs the ``i``-th node of each kernel (an in-place copy) writes, one per kernel."""
    return tuple(lowered[nodes_of[i]].writes for nodes_of in members)


def _computed_into(first, lowered, members, homes, last_reads):
    """{op index: the flat array of the inputs its result is copied to}, for the results computed right there: the
    inputs' old values are read by no later op (the op itself may, element by element, as a pointwise kernel
    computed into the input it is copied to does in the unrolled code: ``codegen._written_in_place``), and the
    result is copied to no other input, and each kernel's result has its input's dtype and shape (``holds_like``)."""
    targets = {}
    for i, node in enumerate(first):
        if lowered[node].writes is not None:
            targets.setdefault(first.index(lowered[node].inputs[0]), []).append(_written(i, members, lowered))
    return {source: homes[groups[0]] for source, groups in targets.items()
            if len(groups) == 1 and groups[0] in homes and (last_reads.get(groups[0], -1) < source or (
                last_reads[groups[0]] == source and lowered[first[source]].kind == POINTWISE))
            and all(holds_like(written, nodes_of[source]) for written, nodes_of in zip(groups[0], members))}


def _operands(i, node, members, lowered):
    """Where the batched op of the first kernel's ``node`` (its ``i``-th) reads each operand: ("internal", index
    of the op computing it), ("number", the host scalar node) or ("gathered", the members' input nodes)."""
    first = members[0]
    operands = []
    for k, arg in enumerate(lowered[node].inputs):
        if arg in first:
            operands.append(("internal", first.index(arg)))
        elif _is_number(arg, node):
            operands.append(("number", arg))
        else:
            operands.append(("gathered", tuple(lowered[nodes_of[i]].inputs[k] for nodes_of in members)))
    return operands


_TO_THE_END = float("inf")


def _last_reads(first, lowered, operands_of):
    """{op index or gathered key: index of the last op reading it}; a result an in-place copy writes back is
    read by the copies after the launch, so it lives to the end."""
    last = {}
    for i, operands in enumerate(operands_of):
        for kind, source in operands:
            if kind != "number":
                last[source] = max(last.get(source, i), i)
        if lowered[first[i]].writes is not None:
            last[first.index(lowered[first[i]].inputs[0])] = _TO_THE_END
    return last


def plan_colocation(plan, lowered, root):
    """A Colocation for the graph inputs a batched launch updates in place (one group per in-place copy: the
    inputs it writes, one per kernel), or None when it has none, or when a kernel reads one of them otherwise than
    as its group (a view of it, say): computing a result into the inputs' memory would change what that read sees."""
    first = plan.members[0]
    groups = [_written(i, plan.members, lowered) for i, node in enumerate(first) if lowered[node].writes is not None]
    if not groups or any(not is_tpu_node(member) for group in groups for member in group):
        return None
    for i, node in enumerate(first):
        for kind, source in _operands(i, node, plan.members, lowered):
            if kind == "gathered" and source not in groups and any(root(arg) in plan.writes for arg in source):
                return None
    itemsize = min(numpy_dtype(value_of(group[0]).dtype).itemsize for group in groups)
    return Colocation(groups, *_spans(plan, HOST_ALIGNMENT // itemsize))


class Colocation:
    """Where a batched launch's in-place inputs (an optimizer's parameters and moments) live from its first call
    on: the HBM buffers of each group side by side in one flat host array, each backed by its part, which starts
    64 bytes-aligned as every allocation's host memory does (``HBM.rehome``: no allocation, no free, the HBM
    accounting as it was). The launch then reads and updates them where they are, with no gather and no copy
    back. Each call checks that every input's HBM buffer is backed by its part (``holds``); a call where one is
    not (the first, a ``.data =``, an input moved by another program, one that could not move yet) gathers as
    before and then moves what it can into its part (``lay_out``). The program builds those inputs' NumPy views
    only where it gathers."""

    def __init__(self, groups, spans, total):
        self.groups = groups  # per group, the graph inputs (one per kernel) in the launch's order
        self.spans, self.total = spans, total  # per kernel, (start, stop) in the flat arrays; their size
        self.flats, self.views = [], []  # per group its flat array; per input, its view of its part
        for group in groups:
            values = [value_of(member) for member in group]
            dtype = numpy_dtype(values[0].dtype)
            self.flats.append(flat := _C.hbm.aligned_block(total * dtype.itemsize).view(dtype))
            flat.fill(1)  # the gaps between the parts: values no kernel reads (as ``_gathered_parts``)
            self.views.extend(flat[start:stop].reshape(tuple(value.shape))
                              for value, (start, stop) in zip(values, spans))
        # the host blocks the buffers get; None for an empty input, which has no bytes to hold
        self.parts = [view.reshape(-1).view(np.uint8) if view.size else None for view in self.views]
        self.holders = [None] * len(self.parts)  # per part, the id of the HBM buffer last moved into it
        self.taken_back = set()  # ids of the buffers moved here out of another program's part

    def holds(self, tensors):
        """Whether each input's HBM buffer is backed by its part. Its sizes and strides are those the program was
        generated for (guarded), so a buffer of exactly its bytes holds it from its start: its elements are where
        the flat arrays have them."""
        for tensor, part in zip(tensors, self.parts):
            if part is not None and tensor.untyped_storage()._tpu_hbm_buffer.array is not part:
                return False
        return True

    def lay_out(self, tensors, input_views, indices):
        """Move each input's host memory into its part where it is not there yet, when the input fills its own HBM
        buffer (``whole_buffer_array``) and the part backs no other live buffer (the old tensor of a ``.data =``
        that the caller still holds); no input when two share a buffer. Every call that gathers tries again, so
        a refusal that passes (memory history recorded, a storage resized to nothing) is made good later. Each
        moved input's cached view (``input_views[index]``, as ``runtime.input_view`` keeps it) becomes the view
        over its part, for the calls that gather."""
        buffers = [_whole_buffer(tensor) for tensor in tensors]
        known = [id(buffer) for buffer in buffers if buffer is not None]
        if len(set(known)) != len(known):
            return
        for k, (tensor, buffer, part, index) in enumerate(zip(tensors, buffers, self.parts, indices)):
            if part is None or buffer is None or buffer.array is part or self._taken(k, buffer.allocator):
                continue
            if buffer.id in buffer.allocator.unpooled:
                # another program's part holds it (a recompiled step, or a second optimizer over the same
                # parameters): taken from there once, so two programs called in turn do not copy it every call
                if buffer.id in self.taken_back:
                    continue
                self.taken_back.add(buffer.id)
            if buffer.allocator.rehome(buffer, part):
                self.holders[k] = buffer.id
                input_views[index] = (part, 0, tensor.stride(), self.views[k])

    def _taken(self, k, allocator):
        """Whether the ``k``-th part still backs the live buffer last moved into it."""
        holder = self.holders[k]
        return holder is not None and allocator.live.get(holder) is self.parts[k]


def _whole_buffer(tensor):
    """The HBM buffer of a tpu tensor whose elements fill it (``_tensor.whole_buffer_array``), else None."""
    if _tensor.whole_buffer_array(tensor, numpy_dtype(tensor.dtype)) is None:
        return None
    buffer = tensor.untyped_storage()._tpu_hbm_buffer
    return buffer if buffer.allocator is not None else None


class FlatArrays:
    """The flat host arrays of one batched launch, each reused by a later op once its last reader has run:
    fewer distinct arrays, so the launch's passes find their output in cache more often. An op never writes
    into an array one of its own operands is in (its reader's index is its own, not below it)."""

    def __init__(self, size):
        self.size = size
        self.arrays = []  # [array, index of its last reader]

    def take(self, dtype, index, last_read):
        for entry in self.arrays:
            if entry[1] < index and entry[0].dtype == dtype:
                entry[1] = last_read
                return entry[0]
        array = np.empty(self.size, dtype)
        self.arrays.append([array, last_read])
        return array


@dataclasses.dataclass
class HostBatch:
    members: list  # the host nodes of one foreach op, one per parameter, in graph order (one block)
    flat: np.ndarray  # their values side by side
    parts: list  # per member, its view of ``flat``: the host array the member's readers read


def plan_host_batches(nodes, lowered, homes, position):
    """{host node: its HostBatch} for the foreach ops whose per-parameter host nodes are one ufunc each,
    isomorphic, and consecutive in the graph (so computing all of them where the first stands moves no read
    past a write: nothing else runs in between, and no member reads another)."""
    by_origin = {}
    for node in nodes:
        low = lowered.get(node)
        if low is not None and homes.get(node) == "host" and low.inline is not None and node.meta.get("foreach"):
            by_origin.setdefault(node.meta["foreach"], []).append(node)
    batches = {}
    for members in by_origin.values():
        if len(members) < 2 or position[members[-1]] - position[members[0]] != len(members) - 1 or \
                not all(_same_host_op(member, members, lowered) for member in members):
            continue
        value = value_of(members[0])
        shape, count = tuple(value.shape), value.numel()
        flat = np.empty(len(members) * count, numpy_dtype(value.dtype))
        parts = [flat[i * count:(i + 1) * count].reshape(shape) for i in range(len(members))]
        batch = HostBatch(members, flat, parts)
        batches.update((member, batch) for member in members)
    return batches


def _same_host_op(member, members, lowered):
    """Whether ``member`` is the first member's ufunc on operands laid out like its own: equal constants,
    and tensors of its value's shape and of the first member's dtypes, none of them another member."""
    first = members[0]
    ufunc, operands = lowered[first].inline
    mine, theirs = lowered[member].inline, value_of(member)
    if mine[0] is not ufunc or len(mine[1]) != len(operands) or theirs.dtype != value_of(first).dtype or \
            theirs.shape != value_of(first).shape:
        return False
    for operand, reference in zip(mine[1], operands):
        if isinstance(reference, torch.fx.Node):
            if not isinstance(operand, torch.fx.Node) or operand in members or is_tpu_node(operand):
                return False
            held = value_of(operand)
            if not isinstance(held, torch.Tensor) or held.shape != theirs.shape or \
                    held.dtype != value_of(reference).dtype or held.dtype == torch.bfloat16:  # bfloat16: no NumPy view
                return False
        elif isinstance(operand, torch.fx.Node) or operand.dtype != reference.dtype or \
                operand.tobytes() != reference.tobytes():
            return False
    return True


def host_batch_lines(batch, batches, lowered, constant):
    """The lines of a host batch: each member's name bound to its part of the flat array, then one ufunc call.
    An operand is another batch's flat array when that batch's members line up with these, else the members'
    operands gathered into one array."""
    lines = [f"v_{member.name} = {constant('host_', part)}" for member, part in zip(batch.members, batch.parts)]
    ufunc, operands = lowered[batch.members[0]].inline
    arguments = []
    for k, operand in enumerate(operands):
        if not isinstance(operand, torch.fx.Node):
            arguments.append(constant("c_", operand))
            continue
        sources = [lowered[member].inline[1][k] for member in batch.members]
        source_batch = batches.get(sources[0])
        if source_batch is not None and source_batch.members == sources:
            arguments.append(constant("flat_", source_batch.flat))
            continue
        gathered = constant("gathered_", np.empty(batch.flat.size, numpy_dtype(value_of(operand).dtype)))
        lines.append(f"concatenate(({''.join(f'v_{s.name}.ravel(), ' for s in sources)}), out={gathered})")
        arguments.append(gathered)
    result = constant("flat_", batch.flat)
    lines.append(f"{constant(f'{ufunc.__name__}_', ufunc)}({', '.join(arguments)}, out={result})"
                 f"  # one call over the {len(batch.members)} host scalars")
    return lines


@dataclasses.dataclass
class HostCopies:
    copies: list  # the copy_ nodes, in graph order
    targets: list  # the host arrays' graph inputs they write, in the order of the batch's members
    batch: HostBatch  # whose members, one each, are the copies' sources


def plan_host_copies(nodes, lowered, homes, position, root, host_batches, launches):
    """{copy_ node: its HostCopies} for the ``copy_`` nodes that write each member of one host batch back into a
    host graph input of its dtype and shape (an optimizer's new step counts into its 0-d CPU tensors): one store
    per member from the batch's flat array, where the first copy stands, instead of one kernel call each. No
    other node between the first copy and the last may touch those inputs, nor may a batched launch (of the
    BatchPlans ``launches``) that runs there, where its last member stands (the stores would move past it)."""
    by_batch = {}
    for node in nodes:
        low = lowered.get(node)
        if node.target is torch.ops.aten.copy_.default and low is not None and low.writes is not None and \
                homes.get(node) == "inplace" and not is_tpu_node(low.writes) and low.inputs[0] in host_batches:
            by_batch.setdefault(id(host_batches[low.inputs[0]]), []).append(node)
    plans = {}
    for copies in by_batch.values():
        batch = host_batches[lowered[copies[0]].inputs[0]]
        source_of = {lowered[copy].inputs[0]: lowered[copy].writes for copy in copies}
        targets = set(source_of.values())
        first, last = position[copies[0]], position[copies[-1]]
        between = (n for n in nodes[first + 1:last] if n not in copies)
        if len(copies) != len(batch.members) or set(source_of) != set(batch.members) or \
                not all(holds_like(source_of[member], member) for member in batch.members) or \
                any({root(a) for a in tensor_inputs((n.args, n.kwargs))} & targets for n in between) or \
                any(first < launch.end < last and (launch.reads | launch.writes) & targets for launch in launches):
            continue
        plan = HostCopies(copies, [source_of[member] for member in batch.members], batch)
        plans.update((copy, plan) for copy in copies)
    return plans


def holds_like(target, member):
    """Whether the graph input ``target`` takes ``member``'s value by a plain store: same dtype and shape."""
    held, value = value_of(target), value_of(member)
    return isinstance(held, torch.Tensor) and held.dtype == value.dtype and held.shape == value.shape


def host_copies_line(plan, constant):
    """The line storing each member of the plan's host batch into its host array."""
    targets = "".join(f"v_{target.name}, " for target in plan.targets)
    return (f"copy_each(({targets}), {constant('flat_', plan.batch.flat)})"
            f"  # the {len(plan.targets)} host scalars back into their inputs")


def copy_each(targets, flat):
    """Each one-element host array of ``targets`` set to its element of ``flat`` (same dtype: the bits as they are)."""
    for target, value in zip(targets, flat):
        target[...] = value


HELPERS = {"concatenate": np.concatenate, "copyto": np.copyto, "same_scalars": same_scalars, "copy_each": copy_each}
