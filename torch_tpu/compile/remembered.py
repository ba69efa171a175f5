"""Host values a forward program computes and its backward would compute again from the same operand.

GELU's backward recomputes the Gaussian CDF (an ``erf``) of the input the forward saved, and that erf
is the most expensive host maths of a GELU layer. The chip recomputes it too, cheaply, rather than
keep it in HBM: the graph, its HBM buffers and its clock charge stay as AOTAutograd partitioned them.
Only the emulator's host work is shared. A forward program keeps each CDF it computes, with a copy of
the operand it came from, in a slot named after the saved value the operand views; the backward
program takes the slot and uses the CDF only when its own operand has the same bits (a content check,
about 30 times cheaper than the erf), so a value written in between, a second forward before the
backward, or a backward run twice compute the CDF again and never get a stale one. A program that holds both
(``loss.backward()`` traced into it) skips the copy and the check where the operand is a value it computed
itself and whose GELU comes before its backward in the graph: a functional graph writes no such value, and each
call keeps the CDF before taking it.

One ``Remembered`` serves the forward and backward programs of one AOTAutograd graph, or the one program
of a graph that holds both (``loss.backward()`` traced into it); it holds at most one entry per GELU node
(its host memory: twice that node's input, until the backward takes it).
"""

import numpy as np
import torch

from ..ops import pointwise

aten = torch.ops.aten
SLOT = "tpu_remembered_slot"  # node.meta key: (Remembered, slot name) of a node whose maths shares a value
_VIEWS = frozenset({aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.alias.default})


def same_bits(a, b):
    """Whether two arrays hold the same elements bit for bit (NaN payloads and signed zeros included)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    unsigned = np.dtype(f"u{a.dtype.itemsize}")
    return bool(np.array_equal(a.view(unsigned), b.view(unsigned)))


class Remembered:
    """The slots of one forward/backward pair: slot name -> (copy of the operand, the value computed from it)."""

    def __init__(self):
        self._slots = {}

    def keep(self, slot, operand, value):
        """Keep ``value`` with a copy of ``operand``, or with None when the program vouches for its operand."""
        self._slots[slot] = (None if operand is None else np.array(operand, copy=True), value)

    def take(self, slot, operand):
        """The value kept for ``slot`` if it was computed from an operand with the same bits (or one the program
        vouched for), else None."""
        entry = self._slots.pop(slot, None)
        if entry is None or (entry[0] is not None and not same_bits(entry[0], operand)):
            return None
        return entry[1]

    def gelu(self, slot, vouched=False):
        """GELU's maths that keeps the CDF it computes (the forward program's); ``vouched``: without a copy of its
        operand, which its own program's backward reads unwritten."""
        @pointwise.writes_out
        def gelu(x, approximate="none", out=None):
            cdf = pointwise.gaussian_cdf(x)
            self.keep(slot, None if vouched else x, cdf)  # a copy of x, taken before out (which may be x) is written
            return pointwise.gelu_of_cdf(x, cdf, out=np.empty_like(cdf) if out is None else out)

        return gelu

    def gelu_backward(self, slot):
        """GELU's backward maths, with the forward's CDF when its operand is the forward's (the backward program's)."""
        def gelu_backward(grad, x, approximate="none"):
            cdf = self.take(slot, x)
            return pointwise.gelu_backward_of_cdf(grad, x, pointwise.gaussian_cdf(x) if cdf is None else cdf)

        return gelu_backward


def saved_root(node):
    """The node a value views (through reshapes), whose name the forward and backward graphs share."""
    while node.op == "call_function" and node.target in _VIEWS:
        node = node.args[0]
    return node


_KEEPS, _TAKES = aten.gelu.default, aten.gelu_backward.default


def mark(graph, kind, remembered):
    """Mark the exact-GELU nodes of a forward (they keep their CDF) or backward graph (their backward takes it);
    in a graph holding both (a ``loss.backward()`` traced into it), the GELUs whose backward it also holds."""
    slots, computed_here, first_use = {}, set(), {}
    for node in graph.nodes:
        operands = {_KEEPS: 1, _TAKES: 2}.get(node.target) if node.op == "call_function" else None
        if operands is None:
            continue
        approximate = node.args[operands] if len(node.args) > operands else node.kwargs.get("approximate", "none")
        if approximate != "none":
            continue
        operand = node.args[operands - 1]
        root = saved_root(operand)
        slots[node] = slot = f"{root.name}:{tuple(operand.meta['val'].shape)}"
        first_use.setdefault(slot, node.target)
        if kind == "inference" and root.op == "call_function":  # computed here; only inputs are written (copy_)
            computed_here.add(node)
    marked = {"forward": (_KEEPS,), "backward": (_TAKES,), "inference": (_KEEPS, _TAKES)}.get(kind, ())
    taken = {slot for node, slot in slots.items() if node.target is _TAKES}
    for node, slot in slots.items():
        if node.target in marked and (kind != "inference" or slot in taken):
            # vouched only where this call's GELU keeps the slot before its backward takes it: a backward first
            # would take the previous call's CDF
            vouched = node in computed_here and first_use[slot] is _KEEPS
            node.meta[SLOT] = (remembered, slot, vouched)
