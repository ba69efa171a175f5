"""What the compiler did, for people: programs, fusion groups, refusals, graph breaks, recompiles.

``torch_tpu.compile.last_programs()`` returns the programs of the latest compilations (newest
last); ``TORCH_TPU_COMPILE_DEBUG=1`` prints each one as it is made. A dump shows the program's
source, its kernels with what they fuse and cost, the nodes left to eager kernels, the fusions
refused and why, and the Dynamo graph it came from (its graph-break and recompile reasons).
"""

import collections
import dataclasses
import os
import sys

KEPT = 32  # programs remembered
_programs = collections.deque(maxlen=KEPT)
_dynamo_graphs = []


@dataclasses.dataclass
class DynamoGraph:
    """One graph Dynamo handed to the backend: the n-th of this process."""

    index: int
    nodes: int
    graph_breaks: list  # the graph breaks Dynamo made since the previous graph (torch._dynamo.utils.counters)
    recompile_reasons: list  # guard failures that led to this compilation


@dataclasses.dataclass
class ProgramRecord:
    name: str
    kind: str  # forward, backward, inference
    program: object
    dynamo_graph: DynamoGraph

    @property
    def source(self):
        return self.program.generated.source

    @property
    def kernels(self):
        return self.program.generated.kernels

    @property
    def eager_nodes(self):
        return self.program.generated.eager_nodes

    @property
    def refusals(self):
        return self.program.generated.refusals

    def dump(self, source=True):
        generated = self.program.generated
        lines = [f"== {self.name} ({self.kind}): {len(generated.kernels)} kernels, "
                 f"{len(generated.eager_nodes)} eager nodes, buffers {generated.buffer_bytes} bytes"]
        for name, nodes, cost in generated.kernels:
            flops = sum(cost.mxu_flops.values())
            lines.append(f"kernel {name}: {', '.join(nodes)}; read {cost.bytes_read} B, written {cost.bytes_written} B"
                         + (f", {flops} FLOPs" if flops else ""))
        for node, op, reason in generated.eager_nodes:
            lines.append(f"eager {node}: {op} ({reason})")
        for consumer, producer, reason in generated.refusals:
            lines.append(f"not fused: {consumer} into {producer}: {reason}")
        if self.dynamo_graph is not None:
            for reason in self.dynamo_graph.recompile_reasons:
                lines.append(f"recompiled because: {reason}")
            for reason in self.dynamo_graph.graph_breaks:
                lines.append(f"graph break: {reason}")
        if source:
            lines.append(generated.source)
        return "\n".join(lines)


def last_programs():
    """The most recent compiled programs (up to 32), oldest first."""
    return list(_programs)


def clear():
    _programs.clear()


_breaks_seen = {}


def _graph_breaks():
    """The graph breaks Dynamo made since the previous graph reached the backend."""
    from torch._dynamo.utils import counters

    new = [f"{reason} (x{count - _breaks_seen.get(reason, 0)})" for reason, count in counters["graph_break"].items()
           if count > _breaks_seen.get(reason, 0)]
    _breaks_seen.clear()
    _breaks_seen.update(counters["graph_break"])
    return new


def _recompile_reasons():
    """Why Dynamo is compiling this frame again: the guard failure it recorded for the compilation
    under way (its metrics context; the same text ``TORCH_LOGS=recompiles`` prints)."""
    from torch._dynamo.utils import get_metrics_context

    reason = getattr(get_metrics_context(), "_metrics", {}).get("recompile_reason")
    return [line.strip() for line in reason.splitlines() if line.strip()] if reason else []


def record_dynamo_graph(gm):
    graph = DynamoGraph(len(_dynamo_graphs), len(gm.graph.nodes), _graph_breaks(), _recompile_reasons())
    _dynamo_graphs.append(graph)


def current_dynamo_graph():
    return _dynamo_graphs[-1] if _dynamo_graphs else None


def record_program(program, kind, gm, dynamo_graph):
    record = ProgramRecord(program.name, kind, program, dynamo_graph)
    _programs.append(record)
    if os.environ.get("TORCH_TPU_COMPILE_DEBUG") == "1":
        print(record.dump(), file=sys.stderr)
    return record
