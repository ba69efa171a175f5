"""Fusion: which computations of a graph run as one kernel on the chip.

The rules (docs/compile.md explains them; they follow XLA's instruction fusion):

1. **Loop fusion.** An elementwise node joins the kernel of an elementwise producer when both
   iterate over the same number of elements.
2. **Input fusion.** A reduction joins the elementwise kernel that produces its input (the
   reduction becomes the kernel's root). A kernel holds at most one reduction.
3. **Output fusion.** An elementwise node of the matmul's own output shape (bias, activation,
   residual) joins the matmul's kernel as its epilogue.
4. **Nothing is recomputed.** A node belongs to exactly one kernel; a value that a later kernel
   also needs is written out by its own kernel, so no expensive op (exp, log, tanh, matmul,
   reduction) ever runs twice.
5. A node never joins a kernel that one of its other inputs depends on (the kernel could not
   start before that input exists). Opaque and eager nodes, and the consumers of a reduction,
   start kernels of their own.
6. **Multi-output loop fusion.** When an elementwise node combines the values of two loop kernels
   over the same elements, neither reading the other (an optimizer's two moment updates, a fill
   and its use), the two become one kernel: each value then crosses HBM at most once.
7. **Horizontal fusion.** The per-tensor loop kernels of the same ``_foreach_*`` ops (one per
   parameter of an optimizer step) share no data: they launch as one kernel, as eager's foreach
   kernel does, so unrolling a foreach op never adds launches.
8. **Sibling fusion.** Kernels that read the same computed value and do not depend on one another
   (a backward's weight and input gradients and its bias-gradient sum, all reading one output
   gradient) run as one multi-output kernel that reads the value once (XLA's sibling multi-output
   fusion); each sibling keeps its own root, so such a kernel may hold several reductions. Graph
   inputs are not shared values: each parameter has its own readers.
9. **Row-wise roots.** Softmax, log-softmax, their backward and layer norm reduce each row and then
   pass over it again: like a reduction (rule 2) they may end the kernel that produces their input,
   when it iterates over the same elements (a loop kernel, a matmul's output and epilogue, or a
   single-result opaque kernel such as NLL loss's backward), so that input never crosses HBM
   on its way in.

Each refusal is recorded with its reason, for the debug output.
"""

import dataclasses
import math

import torch

from .lowering import FUSIBLE, MATMUL, OPAQUE, POINTWISE, REDUCTION, VIEW, value_of


@dataclasses.dataclass
class Group:
    index: int
    nodes: list
    kind: str  # "loop", "input" (a reduction at its root), "output" (a matmul at its root), "opaque", "eager"
    elements: int  # the iteration space of its elementwise part
    matmul_shape: tuple = None

    @property
    def name(self):
        """Named after what it fuses: the ops of its nodes, in order."""
        ops = []
        for node in self.nodes:
            op = getattr(node.target, "__name__", str(node.target)).split(".")[0]
            if op not in ops:
                ops.append(op)
        return "fused_" + "_".join(ops) if len(self.nodes) > 1 else ops[0]


@dataclasses.dataclass
class Fusion:
    groups: list
    group_of: dict  # node -> Group
    refusals: list  # (consumer name, producer kernel name, reason)


def _elements(node):
    return math.prod(value_of(node).shape)


def fuse(lowered):
    """Group the computations of ``lowered`` (node -> Lowered, in graph order) into kernels."""
    groups, group_of, refusals = [], {}, []
    depends = {}  # group index -> indices of the groups it reads from (directly)
    order = {node: i for i, node in enumerate(lowered)}

    def producer(node):
        """The computation behind a value, looking through views."""
        while node in lowered and lowered[node].kind == VIEW and lowered[node].inputs:
            node = lowered[node].inputs[0]
        return node

    def reaches(start, target):
        stack, seen = [start], set()
        while stack:
            index = stack.pop()
            if index == target:
                return True
            if index not in seen:
                seen.add(index)
                stack.extend(depends[index])
        return False

    for node, low in lowered.items():
        if low.kind == VIEW or low.host:  # views are free; host scalars never reach the chip
            continue
        producers = [producer(arg) for arg in low.inputs]
        joined = None
        if (low.kind in FUSIBLE and low.kind != MATMUL) or low.rowwise:  # a matmul always starts a kernel (rule 3)
            for candidate in reversed(producers[:1] if low.rowwise else producers):
                group = group_of.get(candidate)
                if group is None or group is joined:
                    continue
                reason = _refusal(group, node, low)
                if reason is None:
                    others = {group_of[p].index for p in producers if p in group_of and group_of[p] is not group}
                    if any(reaches(other, group.index) for other in others):
                        reason = "another of its inputs is computed after this kernel starts"
                if reason is None:
                    joined = group
                    break
                refusals.append((node.name, group.name, reason))
        if joined is None:
            joined = Group(len(groups), [], _kind(low), _elements(node) if low.kind == POINTWISE else 0)
            if low.kind == MATMUL:
                joined.matmul_shape = tuple(value_of(node).shape)
            if low.kind == REDUCTION:
                joined.elements = _elements(low.inputs[0])
            groups.append(joined)
            depends[joined.index] = set()
        elif low.kind == REDUCTION or low.rowwise:
            joined.kind = "input"
        joined.nodes.append(node)
        group_of[node] = joined
        depends[joined.index] |= {group_of[p].index for p in producers if p in group_of and group_of[p] is not joined}
        if joined.kind == "loop":
            for sibling in {group_of[p].index: group_of[p] for p in producers if p in group_of}.values():
                if sibling is not joined and _siblings(joined, sibling, depends, reaches):
                    _merge(sibling, joined, group_of, depends, order)
    _fuse_siblings(lowered, group_of, depends, order, producer, reaches, refusals)
    return Fusion([g for g in groups if g.nodes], group_of, refusals)


def _fuse_siblings(lowered, group_of, depends, order, producer, reaches, refusals):
    """Rule 8: the kernels reading one computed value, pairwise independent, merged into the first of them."""
    readers = {}  # computed value -> the nodes reading it from HBM, in graph order
    for node, low in lowered.items():
        group = group_of.get(node)
        for value in {producer(arg) for arg in low.inputs}:
            if group is not None and value in group_of and group_of[value] is not group:
                readers.setdefault(value, []).append(node)
    for value, nodes in readers.items():
        kernels = _current_kernels(nodes, group_of, besides=group_of[value])  # merges so far moved nodes
        if len(kernels) < 2:
            continue
        first = kernels[0]
        for other in kernels[1:]:
            if other.kind in ("opaque", "eager") or first.kind in ("opaque", "eager"):
                continue
            if reaches(other.index, first.index) or reaches(first.index, other.index):
                refusals.append((other.nodes[0].name, first.name, f"both read {value.name}, but one depends on the other"))
                continue
            _merge(other, first, group_of, depends, order)
            if other.kind != first.kind:
                first.kind = "sibling"


def _current_kernels(nodes, group_of, besides):
    """The distinct kernels ``nodes`` belong to now, in order, leaving out ``besides``."""
    kernels = []
    for node in nodes:
        group = group_of[node]
        if group is not besides and not any(group is k for k in kernels):
            kernels.append(group)
    return kernels


def horizontal_launches(groups):
    """Rule 7: lists of loop kernels made of the same foreach ops' per-tensor nodes, each list one launch."""
    by_origin = {}
    for group in groups:
        origins = frozenset(node.meta.get("foreach") for node in group.nodes) - {None}  # (and write-backs)
        if group.kind == "loop" and origins:
            by_origin.setdefault(origins, []).append(group)
    return [siblings for siblings in by_origin.values() if len(siblings) > 1]


def _siblings(group, other, depends, reaches):
    """Rule 6 (multi-output loop fusion): a loop kernel over the same elements that ``group`` reads only
    directly (through no third kernel) and that does not read ``group`` runs as part of it."""
    if other.kind != "loop" or other.elements != group.elements or reaches(other.index, group.index):
        return False
    direct = depends[group.index]
    return not any(reaches(index, other.index) for index in direct if index != other.index)


def _merge(source, target, group_of, depends, order):
    """Move ``source``'s nodes into ``target`` (kept in graph order); kernels that read ``source`` now read ``target``."""
    target.nodes = sorted(target.nodes + source.nodes, key=order.__getitem__)
    for node in source.nodes:
        group_of[node] = target
    source.nodes = []
    depends[target.index] |= depends.pop(source.index) - {target.index}
    for reads in depends.values():
        if source.index in reads:
            reads.discard(source.index)
            reads.add(target.index)
    depends[target.index].discard(target.index)


def _kind(low):
    return {POINTWISE: "loop", REDUCTION: "input", MATMUL: "output", OPAQUE: "opaque"}.get(low.kind, "eager")


def _refusal(group, node, low):
    """Why ``node`` may not join ``group`` (None: it may)."""
    if low.rowwise:
        return _rowwise_refusal(group, low)
    if group.kind in ("opaque", "eager"):
        return f"{group.kind} kernels do not fuse"
    if low.kind == MATMUL:
        return "a matmul starts its own kernel (only its epilogue fuses)"
    if group.kind == "input":
        return "a reduction ends its kernel: its consumers start a new one"
    if low.kind == REDUCTION:
        if group.kind == "output":
            return "a reduction does not fuse into a matmul kernel"
        if _elements(low.inputs[0]) != group.elements:
            return f"the reduction reads {_elements(low.inputs[0])} elements, the kernel iterates over {group.elements}"
        return None
    if group.kind == "output":
        if _elements(node) != math.prod(group.matmul_shape):  # a view of the output (a reshape) is the same epilogue
            return (f"epilogue of shape {list(value_of(node).shape)} is not elementwise on the matmul output "
                    f"{list(group.matmul_shape)}")
        return None
    if _elements(node) != group.elements:
        return f"{_elements(node)} elements against the kernel's {group.elements}"
    return None


def _rowwise_refusal(group, low):
    """Rule 9: why a row-wise op may not end ``group`` (None: it may)."""
    if group.kind == "input":
        return "a reduction ends its kernel: its consumers start a new one"
    if group.kind == "loop":
        elements = group.elements
    elif group.kind == "output":
        elements = math.prod(group.matmul_shape)
    elif group.kind == "opaque" and len(group.nodes) == 1 and isinstance(value_of(group.nodes[0]), torch.Tensor):
        elements = _elements(group.nodes[0])
    else:
        return f"a row-wise op fuses only into a loop, matmul or one-result opaque kernel, not {group.kind}"
    if _elements(low.inputs[0]) != elements:
        return f"the row-wise op reads {_elements(low.inputs[0])} elements, the kernel makes {elements}"
    return None
