"""The "ici" process group: c10d collectives between tpu chips, charged on the ICI cost model.

PyTorch cannot subclass its C++ c10d ``Backend`` in Python, but it can subclass
``dist.ProcessGroup``, and ``init_process_group`` then uses the Python group as the whole process
group, for every device. So this group takes tpu tensors (handed to the transport as host views of
their HBM bytes, see ``_host``, and charged on the simulated ICI) and CPU tensors (handed to the
transport as they are, uncharged: with the gloo transport they behave exactly as under
``backend="gloo"``).

Every collective goes the same way: check the arguments on this rank, agree with the other ranks
on what is being called (``checks``), start the transport, charge the collective on this group's
ICI stream of the simulated clock, and return a ``Work``. Only the transport differs between a
real run (gloo) and a simulated world (``transport.SimulatedTransport``).

Reductions in bfloat16, float16 and FP8 are computed in float32 and rounded once (see ``_host``);
``ReduceOp.PREMUL_SUM`` scales the inputs in that type, then sums. Other dtypes reduce as gloo
reduces them, so results equal gloo's on CPU tensors bit for bit.
"""

import collections
import contextlib
import datetime
import itertools
import os
import weakref

import torch
import torch.distributed as dist
from torch._C._distributed_c10d import AllgatherOptions

from .. import _C
from .._C import ici
from .._C.clock import CollectiveCost
from . import BACKEND_NAME, c10d_kernels, checks, envelope
from ._host import HostTensor, has_bytes
from .transport import SimulatedTransport, gloo_transport
from .work import Work

DEFAULT_TIMEOUT = datetime.timedelta(seconds=60)
TIMEOUT_VARIABLE = "TORCH_TPU_DIST_TIMEOUT"
RedOpType = dist.ReduceOp.RedOpType

# the c10d collective -> the ICI formula it is charged with, and how its bytes (V) are counted
COST_KIND = {
    "all_reduce": "all_reduce", "all_reduce_coalesced": "all_reduce", "broadcast": "broadcast",
    "all_gather": "all_gather", "all_gather_into_tensor": "all_gather", "reduce_scatter": "reduce_scatter",
    "reduce_scatter_tensor": "reduce_scatter", "all_to_all_single": "all_to_all", "all_to_all": "all_to_all",
    "scatter": "scatter", "gather": "gather", "reduce": "reduce",
}


def resolve_timeout(requested):
    """The group's timeout: ``TORCH_TPU_DIST_TIMEOUT`` (seconds), else what init_process_group was
    given, except that torch's 30-minute default becomes 60 s: a stuck peer should fail a test, not stall it."""
    configured = os.environ.get(TIMEOUT_VARIABLE)
    if configured:
        try:
            return datetime.timedelta(seconds=float(configured))
        except ValueError:
            raise ValueError(f"{TIMEOUT_VARIABLE}={configured!r} is not a number of seconds") from None
    if requested is None or requested == dist.default_pg_timeout:
        return DEFAULT_TIMEOUT
    return requested


def _as_concatenation(whole, part, world):
    """c10d's stacked form of an all-gather's output (a reduce-scatter's input), ``(world, *part.shape)``,
    as the concatenation ``(world * part.shape[0], *part.shape[1:])`` gloo takes (it refuses the stack)."""
    if whole is None or part is None or part.dim() == 0 or whole.dim() != part.dim() + 1:
        return whole
    return whole.view(world * part.shape[0], *part.shape[1:])


def _nbytes(tensors):
    return sum(t.nbytes for t in tensors)


def _reduce_op(options):
    return options.reduceOp.op


def _milliseconds(options):
    """An option object's timeout as a c10d op takes it: milliseconds, -1 for the group's own."""
    return int(options.timeout.total_seconds() * 1000)


class ProcessGroupICI(dist.ProcessGroup):
    """A group of ranks (one chip each) on the torus ``torus``; ``global_ranks`` are its members."""

    def __init__(self, rank, size, transport, torus, global_ranks=()):
        super().__init__(rank, size)
        self._transport = transport
        self._torus = torus
        self._global_ranks = list(global_ranks) or list(range(size))
        self._axes = torus.axes_of(self._global_ranks)
        self._group_name = ""
        self._group_desc = "undefined"
        self._stream = None
        self._sequence = itertools.count()
        self._coalesced = None  # the works issued between _start_coalescing and _end_coalescing
        self._op_works = None  # the works c10d_kernels hands back to _dispatch
        self._refusals = []  # refused sends' messages to their receivers, until gloo has sent them
        self._receive_lines = collections.defaultdict(envelope.ReceiveLine)  # by tag

    # --- what c10d asks of every process group ---------------------------------------------------

    def getBackendName(self):
        return BACKEND_NAME

    def getGroupName(self):
        return self._group_name

    def setGroupName(self, name):
        self._group_name = name

    def getGroupDesc(self):
        return self._group_desc

    def setGroupDesc(self, description):
        self._group_desc = description

    @property
    def _device_types(self):
        """The devices this group carries. c10d's own answer lists the C++ backends registered with a group, none
        here; PyTorch's state-dict broadcast (``broadcast_from_rank0``), ``_get_pg_default_device`` and async
        checkpoint saving read it."""
        return [torch.device("cpu"), torch.device("tpu")]

    @property
    def torus_axes(self):
        """The torus axes this group's collectives run on, e.g. ``["x:4 ring", "y:2 line"]``."""
        return self._torus.describe_axes(self._axes)

    @property
    def simulated(self):
        return isinstance(self._transport, SimulatedTransport)

    def shutdown(self):
        """Release the transport (gloo's threads and sockets) now: after destroy_process_group(),
        PyTorch may still hold this object (functions that took ``group.WORLD`` as a default, meshes)."""
        self._deliver_refusals()
        transport, self._transport = self._transport, _Destroyed(self._label())
        transport.shutdown()

    def abort(self):
        self.shutdown()

    def _deliver_refusals(self):
        """A refused send's message reaches its receiver before the transport goes (within the timeout)."""
        for work in self._refusals:
            try:
                work.wait()
            except RuntimeError:
                pass  # the receiver is gone or never came: nothing left to tell
        self._refusals = []

    # --- the shared path of every collective ----------------------------------------------------

    def _label(self):
        return self._group_desc if self._group_desc not in ("", "undefined") else self._group_name

    def _error(self, name):
        return checks.CollectiveError(name, self.rank(), self._label())

    @contextlib.contextmanager
    def _start(self, name, tensors, signature_of=None, **signature):
        """``with self._start(...) as (error builder, on tpu?):`` around a collective's checks on this rank
        and the host views of its tensors; then every rank of the group agrees that the call can go ahead
        (``_agree``). Whatever the body raises is told to the other ranks, which raise it too, instead of
        waiting for a collective this rank will not run."""
        error = self._error(name)
        call = checks.signature(next(self._sequence), name, signature_of, **signature)
        try:
            yield error, self._on_tpu(error, tensors)
        except Exception as failure:
            try:
                self._agree(error, call, failure)
            except RuntimeError:
                pass  # a peer gone too: this rank's own error says more
            raise
        self._agree(error, call)

    def _on_tpu(self, error, tensors):
        """Whether the call's tensors are tpu tensors (else CPU ones), after checking that they can move."""
        checks.same_device(error, tensors)
        on_tpu = bool(tensors) and tensors[0].device.type == "tpu"
        if on_tpu and not self.simulated and not all(has_bytes(t) for t in tensors):
            raise error("these tensors have no bytes (abstract mode): run collectives on them under torch_tpu.simulate()")
        return on_tpu

    def _has_peers(self):
        """Whether there are other ranks to agree with (none in a simulated world)."""
        return self.size() > 1 and not self.simulated and checks.exchange_enabled()

    def _exchange(self, error, values):
        """Every rank's ``values`` (a list of ints of the same length on every rank)."""
        mine = torch.tensor(values, dtype=torch.int64)
        everyone = [torch.empty_like(mine) for _ in range(self.size())]
        pending = self._transport.allgather([everyone], [mine], AllgatherOptions())
        try:
            if pending is not None:
                pending.wait()
        except RuntimeError as failure:
            raise error(f"not every rank of the group reached this collective: {failure}", type(failure)) from failure
        return [other.tolist() for other in everyone]

    def _agree(self, error, call, failure=None):
        """Every rank of the group must be making the same call (see ``checks``), and none may have failed its
        checks (``failure``, this rank's): the ranks whose checks passed raise the first failed rank's error."""
        if not self._has_peers():
            return
        everyone = self._exchange(error, [*call, *checks.failure_code(failure)])
        codes = [values[len(call):] for values in everyone]
        failed = [rank for rank, (kind, _) in enumerate(codes) if kind]
        if failed:
            texts = self._exchange(error, checks.failure_text_codes(failure, max(length for _, length in codes)))
            if failure is None:
                raise checks.peer_failure(error, failed[0], codes[failed[0]], texts[failed[0]])
            return
        if any(values[:len(call)] != call for values in everyone):
            calls = "; ".join(f"rank {r}: {checks.describe_signature(v[:len(call)])}" for r, v in enumerate(everyone))
            raise error(f"the ranks of the group called different collectives: {calls}")

    def _agree_on_splits(self, error, input_splits, output_splits):
        """What rank j sends rank r (its input split r) must be what r expects from j (output split j)."""
        if not self._has_peers() or (not input_splits and not output_splits):
            return
        sizes = self._exchange(error, [len(input_splits), len(output_splits)])
        if any(s != [self.size(), self.size()] for s in sizes):
            raise error("every rank must pass split sizes when one does (one size per rank, for input and output)")
        everyone = self._exchange(error, [*input_splits, *output_splits])
        world = self.size()
        for receiver, splits in enumerate(everyone):
            for sender in range(world):
                sent, expected = everyone[sender][receiver], splits[world + sender]
                if sent != expected:
                    raise error(f"rank {sender} sends {sent} rows to rank {receiver}, which expects {expected} "
                                "(input and output split sizes disagree across ranks)")

    def _ici_stream(self, clock):
        if self._stream is None:
            self._stream = clock.collective_stream(f"ICI {self._label()} ({', '.join(self.torus_axes) or 'one chip'})")
        return self._stream

    def _charge(self, name, nbytes, tensors, seconds=None):
        """Put the collective on this group's ICI stream; returns when it ends (simulated seconds)."""
        torus, kind = self._torus, COST_KIND.get(name, name)
        if seconds is None:
            seconds = ici.COLLECTIVE_SECONDS[kind](nbytes, self._axes.values(), torus.link_bandwidth, torus.hop_latency)
        cost = CollectiveCost(
            kind, ici_bytes=nbytes, seconds=seconds, axes=tuple(self.torus_axes),
            algorithm=ici.ALGORITHMS[kind], group=self._label(),
            shapes=tuple(tuple(t.shape) for t in tensors), dtypes=tuple(str(t.dtype).removeprefix("torch.") for t in tensors),
        )
        clock = _C.current_chip().clock
        return clock.charge_collective(cost, self._ici_stream(clock), clock.current_stream)[1]

    def _launch(self, name, error, on_tpu, launch, hosts, result, nbytes, charged=None, source_rank=-1):
        """Start the transport (``launch()``), charge the ICI, return the Work."""
        try:
            pending = launch()
        except RuntimeError as failure:
            raise error(str(failure), type(failure)) from failure
        pending = pending if isinstance(pending, list) else [pending]
        ends_at = None
        if on_tpu:
            ends_at = charged if charged is not None else self._charge(name, nbytes, result or [h.tensor for h in hosts])
        work = Work(str(error), pending, hosts, result, ends_at, source_rank)
        if self._coalesced is not None:
            self._coalesced.append(work)
        return work

    def _reducing_hosts(self, error, tensors, options, role="in place"):
        """Host views of tensors a reduction reads and writes ("in place"), reads ("input") or writes ("output")."""
        op = _reduce_op(options)
        checks.reduce_op_takes(error, op, tensors)
        if op == RedOpType.PREMUL_SUM and tensors and tensors[0].device.type == "cpu":
            raise error("ReduceOp.PREMUL_SUM is not supported for CPU tensors (gloo)")
        unsigned_order = op in (RedOpType.MAX, RedOpType.MIN)
        return [HostTensor(t, written=role != "input", reducing=True, unsigned_order=unsigned_order and t.dtype == torch.uint64)
                for t in tensors]

    @staticmethod
    def _premultiplied(hosts, options, role="in place"):
        """The options for the transport: PREMUL_SUM scales what is read (once every rank has agreed to go
        ahead, since an in-place tensor is scaled where it is), then sums."""
        if _reduce_op(options) != RedOpType.PREMUL_SUM:
            return options
        factor = options.reduceOp.factor
        factor = factor.cpu() if isinstance(factor, torch.Tensor) else factor
        for host in hosts:
            if host.host is not None:  # an input is not the caller's to change: scale a copy
                host.host = host.host.mul_(factor) if role == "in place" else host.host * factor
        summing = type(options)()
        summing.reduceOp, summing.timeout = dist.ReduceOp.SUM, options.timeout
        return summing

    @staticmethod
    def _hosts(tensors, written):
        return [HostTensor(t, written) for t in tensors]

    # --- collectives ----------------------------------------------------------------------------

    def _all_reduce(self, tensors, opts):
        return self._all_reduce_as("all_reduce", tensors, opts, dist.AllreduceOptions, "allreduce")

    def _all_reduce_coalesced(self, tensors, opts):
        # Each tensor is reduced on its own; a transport's plain allreduce of several tensors would
        # reduce them into one another too (c10d's one-tensor-per-device lists).
        return self._all_reduce_as("all_reduce_coalesced", tensors, opts, dist.AllreduceCoalescedOptions,
                                   "allreduce_coalesced")

    def _all_reduce_as(self, name, tensors, opts, options_type, transport_call):
        with self._start(name, tensors, tensors[0] if tensors else None, op=_reduce_op(opts), count=len(tensors)) as (error, on_tpu):
            hosts = self._reducing_hosts(error, tensors, opts)
        opts = self._premultiplied(hosts, opts)
        options = options_type()
        options.reduceOp, options.timeout = opts.reduceOp, opts.timeout
        reduce = getattr(self._transport, transport_call)
        return self._launch(name, error, on_tpu, lambda: reduce([h.host for h in hosts], options),
                            hosts, tensors, _nbytes(tensors))

    def _broadcast(self, tensors, opts):
        with self._start("broadcast", tensors, tensors[0] if tensors else None, root=opts.rootRank) as (error, on_tpu):
            checks.rank_in_group(error, opts.rootRank, self.size(), "the root")
            hosts = self._hosts(tensors, written=True)
        return self._launch("broadcast", error, on_tpu, lambda: self._transport.broadcast([h.host for h in hosts], opts),
                            hosts, tensors, _nbytes(tensors))

    def _allgather(self, output_lists, inputs, opts):
        outputs = [t for group in output_lists for t in group]
        with self._start("all_gather", [*inputs, *outputs], inputs[0] if inputs else None) as (error, on_tpu):
            checks.one_per_rank(error, inputs, output_lists, self.size(), "output")
            hosts = [self._hosts(group, written=True) for group in output_lists]
            sources = self._hosts(inputs, written=False)
        return self._launch(
            "all_gather", error, on_tpu,
            lambda: self._transport.allgather([[h.host for h in group] for group in hosts], [h.host for h in sources], opts),
            [*sources, *(h for group in hosts for h in group)], outputs, _nbytes(outputs))

    def _all_gather_single(self, output, tensor, opts):
        with self._start("all_gather_into_tensor", [output, tensor], tensor) as (error, on_tpu):
            checks.same_dtype(error, tensor, [output])
            checks.sized(error, output, tensor, self.size(), "output", "input")
            target, source = HostTensor(output, written=True), HostTensor(tensor, written=False)
        gathered = _as_concatenation(target.host, source.host, self.size()) if on_tpu else target.host
        return self._launch("all_gather_into_tensor", error, on_tpu,
                            lambda: self._transport._allgather_base(gathered, source.host, opts),
                            [target, source], [output], output.nbytes)

    def _all_gather_single_coalesced(self, outputs, inputs, opts):
        return self._coalesce([self._all_gather_single(o, i, opts) for o, i in zip(outputs, inputs)], outputs)

    def _allgather_coalesced(self, output_lists, inputs, opts):
        """``output_lists[r][i]`` receives rank r's ``inputs[i]`` (one list per rank, as gloo takes them)."""
        with self._start("all_gather_coalesced", [], count=len(inputs)) as (error, _):
            checks.list_length(error, output_lists, self.size(), "output")
            for outputs in output_lists:
                if len(outputs) != len(inputs):
                    raise error(f"each rank's output list must hold one tensor per input ({len(inputs)}), got {len(outputs)}")
        per_input = [list(outputs) for outputs in zip(*output_lists)]
        return self._coalesce([self._allgather([outputs], [t], opts) for outputs, t in zip(per_input, inputs)],
                              [t for outputs in output_lists for t in outputs])

    def _reduce_scatter(self, outputs, input_lists, opts):
        inputs = [t for group in input_lists for t in group]
        with self._start("reduce_scatter", [*outputs, *inputs], outputs[0] if outputs else None,
                         op=_reduce_op(opts)) as (error, on_tpu):
            checks.one_per_rank(error, outputs, input_lists, self.size(), "input")
            targets = self._reducing_hosts(error, outputs, opts, "output")
            sources = self._reducing_hosts(error, inputs, opts, "input")
        opts = self._premultiplied(sources, opts, "input")
        grouped = [[h.host for h in sources[i * self.size():(i + 1) * self.size()]] for i in range(len(outputs))]
        return self._launch("reduce_scatter", error, on_tpu,
                            lambda: self._transport.reduce_scatter([h.host for h in targets], grouped, opts),
                            [*targets, *sources], outputs, _nbytes(inputs))

    def _reduce_scatter_single(self, output, tensor, opts):
        with self._start("reduce_scatter_tensor", [output, tensor], output, op=_reduce_op(opts)) as (error, on_tpu):
            checks.same_dtype(error, tensor, [output])
            checks.sized(error, tensor, output, self.size(), "input", "output")
            (target,) = self._reducing_hosts(error, [output], opts, "output")
            (source,) = self._reducing_hosts(error, [tensor], opts, "input")
        opts = self._premultiplied([source], opts, "input")
        scattered = _as_concatenation(source.host, target.host, self.size()) if on_tpu else source.host
        return self._launch("reduce_scatter_tensor", error, on_tpu,
                            lambda: self._transport._reduce_scatter_base(target.host, scattered, opts),
                            [target, source], [output], tensor.nbytes)

    def _reduce_scatter_single_coalesced(self, outputs, inputs, opts):
        return self._coalesce([self._reduce_scatter_single(o, i, opts) for o, i in zip(outputs, inputs)], outputs)

    def _all_to_all_single(self, output, tensor, output_splits, input_splits, opts):
        with self._start("all_to_all_single", [output, tensor], tensor, shape=tuple(tensor.shape[1:])) as (error, on_tpu):
            checks.same_dtype(error, tensor, [output])
            checks.splits(error, tensor, input_splits, self.size(), "input")
            checks.splits(error, output, output_splits, self.size(), "output")
            target, source = HostTensor(output, written=True), HostTensor(tensor, written=False)
        self._agree_on_splits(error, list(input_splits), list(output_splits))
        return self._launch(
            "all_to_all_single", error, on_tpu,
            lambda: self._transport.alltoall_base(target.host, source.host, list(output_splits), list(input_splits), opts),
            [target, source], [output], tensor.nbytes * self.size())

    def _alltoall(self, outputs, inputs, opts):
        with self._start("all_to_all", [*outputs, *inputs], inputs[0] if inputs else None,
                         shape=(), count=len(inputs)) as (error, on_tpu):
            checks.list_length(error, inputs, self.size(), "input")
            checks.list_length(error, outputs, self.size(), "output")
            checks.same_dtype(error, inputs[0], [*inputs, *outputs], "tensor")
            checks.same_shape(error, inputs[0], [*inputs, *outputs], "tensor")  # gloo's rule, found before any rank waits
            targets, sources = self._hosts(outputs, written=True), self._hosts(inputs, written=False)
        return self._launch("all_to_all", error, on_tpu,
                            lambda: self._transport.alltoall([h.host for h in targets], [h.host for h in sources], opts),
                            [*targets, *sources], outputs, _nbytes(inputs) * self.size())

    def _scatter(self, outputs, input_lists, opts):
        inputs = [t for group in input_lists for t in group]
        with self._start("scatter", [*outputs, *inputs], outputs[0] if outputs else None, root=opts.rootRank) as (error, on_tpu):
            checks.root_list(error, opts.rootRank, self.rank(), self.size(), outputs, input_lists, "scatter")
            targets = self._hosts(outputs, written=True)
            sources = [self._hosts(group, written=False) for group in input_lists]
        return self._launch(
            "scatter", error, on_tpu,
            lambda: self._transport.scatter([h.host for h in targets], [[h.host for h in g] for g in sources], opts),
            [*targets, *(h for g in sources for h in g)], outputs, _nbytes(outputs) * self.size())

    def _gather(self, output_lists, inputs, opts):
        outputs = [t for group in output_lists for t in group]
        with self._start("gather", [*inputs, *outputs], inputs[0] if inputs else None, root=opts.rootRank) as (error, on_tpu):
            checks.root_list(error, opts.rootRank, self.rank(), self.size(), inputs, output_lists, "gather")
            targets = [self._hosts(group, written=True) for group in output_lists]
            sources = self._hosts(inputs, written=False)
        return self._launch(
            "gather", error, on_tpu,
            lambda: self._transport.gather([[h.host for h in g] for g in targets], [h.host for h in sources], opts),
            [*sources, *(h for g in targets for h in g)], inputs, _nbytes(inputs) * self.size())

    # --- the same, as Python callers reach them: through their c10d op -------------------------------
    # A C++ group's methods dispatch c10d ops (c10d::scatter_, c10d::broadcast_, ...), which dispatcher
    # modes see: CommDebugMode counts them, the profiler records them. A Python group's methods are
    # called directly, so on tpu tensors these dispatch the op themselves and its PrivateUse1 kernel
    # (c10d_kernels) runs the collective above. A reduction's op takes a ReduceOp script object
    # (c10d_kernels.script_reduce_op); PREMUL_SUM has none and runs directly.

    def allreduce(self, tensors, opts):
        script_op = self._reducing_through_c10d_op(tensors, opts)
        if script_op is None:
            return self._all_reduce(tensors, opts)
        return self._dispatch("allreduce_", tensors, self.boxed(), script_op, None, True, _milliseconds(opts))

    def allreduce_coalesced(self, tensors, opts):
        script_op = self._reducing_through_c10d_op(tensors, opts)
        if script_op is None:
            return self._all_reduce_coalesced(tensors, opts)
        return self._dispatch("allreduce_coalesced_", tensors, self.boxed(), script_op, True, _milliseconds(opts))

    def reduce(self, tensors, opts):
        script_op = self._reducing_through_c10d_op(tensors, opts)
        if script_op is None:
            return self._reduce(tensors, opts)
        return self._dispatch("reduce_", tensors, self.boxed(), script_op, opts.rootRank, opts.rootTensor, True,
                              _milliseconds(opts))

    def reduce_scatter(self, outputs, input_lists, opts):
        script_op = self._reducing_through_c10d_op([*outputs, *(t for group in input_lists for t in group)], opts)
        if script_op is None:
            return self._reduce_scatter(outputs, input_lists, opts)
        return self._dispatch("reduce_scatter_", outputs, input_lists, self.boxed(), script_op, True, _milliseconds(opts))

    def reduce_scatter_single(self, output, tensor, opts):
        script_op = self._reducing_through_c10d_op([output, tensor], opts)
        if script_op is None:
            return self._reduce_scatter_single(output, tensor, opts)
        return self._dispatch("_reduce_scatter_base_", output, tensor, self.boxed(), script_op, True, _milliseconds(opts))

    _reduce_scatter_base = reduce_scatter_single  # the name C++ callers (functional collectives) use

    def reduce_scatter_tensor_coalesced(self, outputs, inputs, opts):
        script_op = self._reducing_through_c10d_op([*outputs, *inputs], opts)
        if script_op is None:
            return self._reduce_scatter_single_coalesced(outputs, inputs, opts)
        return self._dispatch("reduce_scatter_tensor_coalesced_", outputs, inputs, self.boxed(), script_op, True,
                              _milliseconds(opts))

    reduce_scatter_single_coalesced = reduce_scatter_tensor_coalesced

    def allgather_into_tensor_coalesced(self, outputs, inputs, opts):
        if not self._through_c10d_op([*outputs, *inputs]):
            return self._all_gather_single_coalesced(outputs, inputs, opts)
        return self._dispatch("allgather_into_tensor_coalesced_", outputs, inputs, self.boxed(), True)

    all_gather_single_coalesced = allgather_into_tensor_coalesced

    def allgather_coalesced(self, output_lists, inputs, opts):
        if not self._through_c10d_op([*inputs, *(t for group in output_lists for t in group)]):
            return self._allgather_coalesced(output_lists, inputs, opts)
        return self._dispatch("allgather_coalesced_", output_lists, inputs, self.boxed(), True)

    def broadcast(self, tensors, opts):
        if not self._through_c10d_op(tensors):
            return self._broadcast(tensors, opts)
        return self._dispatch("broadcast_", tensors, self.boxed(), opts.rootRank, opts.rootTensor, True, _milliseconds(opts))

    def allgather(self, output_lists, inputs, opts):
        if not self._through_c10d_op([*inputs, *(t for group in output_lists for t in group)]):
            return self._allgather(output_lists, inputs, opts)
        return self._dispatch("allgather_", output_lists, inputs, self.boxed(), True, _milliseconds(opts))

    def all_gather_single(self, output, tensor, opts):
        if not self._through_c10d_op([output, tensor]):
            return self._all_gather_single(output, tensor, opts)
        return self._dispatch("_allgather_base_", output, tensor, self.boxed(), True, _milliseconds(opts))

    _allgather_base = all_gather_single  # the name C++ callers (functional collectives) use

    def all_to_all_single(self, output, tensor, output_splits, input_splits, opts):
        if not self._through_c10d_op([output, tensor]):
            return self._all_to_all_single(output, tensor, output_splits, input_splits, opts)
        return self._dispatch("alltoall_base_", output, tensor, self.boxed(), list(output_splits), list(input_splits),
                              True, _milliseconds(opts))

    alltoall_base = all_to_all_single

    def alltoall(self, outputs, inputs, opts):
        if not self._through_c10d_op([*outputs, *inputs]):
            return self._alltoall(outputs, inputs, opts)
        return self._dispatch("alltoall_", outputs, inputs, self.boxed(), True, _milliseconds(opts))

    def scatter(self, outputs, input_lists, opts):
        if not self._through_c10d_op([*outputs, *(t for group in input_lists for t in group)]):
            return self._scatter(outputs, input_lists, opts)
        return self._dispatch("scatter_", outputs, input_lists, self.boxed(), opts.rootRank, True, _milliseconds(opts))

    def gather(self, output_lists, inputs, opts):
        if not self._through_c10d_op([*inputs, *(t for group in output_lists for t in group)]):
            return self._gather(output_lists, inputs, opts)
        return self._dispatch("gather_", output_lists, inputs, self.boxed(), opts.rootRank, True, _milliseconds(opts))

    def _through_c10d_op(self, tensors):
        """Tpu tensors with bytes (abstract tensors have none) go through the c10d op."""
        return bool(tensors) and tensors[0].device.type == "tpu" and all(has_bytes(t) for t in tensors)

    def _reducing_through_c10d_op(self, tensors, opts):
        """The ReduceOp script object of a reduction that goes through its c10d op, else None."""
        return c10d_kernels.script_reduce_op(opts.reduceOp) if self._through_c10d_op(tensors) else None

    def _dispatch(self, name, *arguments):
        """Call ``torch.ops.c10d.<name>``; its kernel hands the Python Work back through ``hand_out``
        (unboxing the op's result gives a bare C++ Work without its Python side: its wait() never returns)."""
        self._op_works = []
        try:
            getattr(torch.ops.c10d, name).default(*arguments)
            (work,) = self._op_works
        finally:
            self._op_works = None
        return work

    def hand_out(self, work):
        """``work`` boxed for a c10d op's result, kept for ``_dispatch`` when it called the op."""
        if self._op_works is not None:
            self._op_works.append(work)
        return work.boxed()

    def _reduce(self, tensors, opts):
        with self._start("reduce", tensors, tensors[0] if tensors else None, op=_reduce_op(opts),
                         root=opts.rootRank) as (error, on_tpu):
            checks.rank_in_group(error, opts.rootRank, self.size(), "the root")
            hosts = self._reducing_hosts(error, tensors, opts)
        reduce_options = self._premultiplied(hosts, opts)
        options = dist.ReduceOptions()
        options.reduceOp, options.rootRank, options.rootTensor = reduce_options.reduceOp, opts.rootRank, opts.rootTensor
        options.timeout = opts.timeout
        return self._launch("reduce", error, on_tpu, lambda: self._transport.reduce([h.host for h in hosts], options),
                            hosts, tensors, _nbytes(tensors))

    def barrier(self, opts=None):
        with self._start("barrier", []) as (error, _):
            options = dist.BarrierOptions()
        pending = self._transport.barrier(options)
        torus = self._torus
        seconds = ici.barrier_seconds(self._axes.values(), torus.link_bandwidth, torus.hop_latency)
        return Work(str(error), [pending], ends_at=self._charge("barrier", 0, [], seconds))

    # --- point to point -------------------------------------------------------------------------

    def _point_to_point(self, name, tensors, peer, launch, source_rank=-1, refused=None):
        """A send reads ``tensors``, a receive (any other ``name``) writes them; ``launch(error, host tensors)``
        starts the transport. ``refused(failure)`` tells the peer when this rank's checks fail."""
        error = self._error(name)
        if peer is not None:
            checks.rank_in_group(error, peer, self.size(), "the peer")
            if peer == self.rank():
                raise error("a rank cannot send to or receive from itself", ValueError)
        try:
            on_tpu = self._on_tpu(error, tensors)
            hosts = self._hosts(tensors, written=name != "send")
        except Exception as failure:
            if refused is not None:
                refused(failure)
            raise
        charged = None
        if on_tpu:
            torus, nbytes = self._torus, _nbytes(tensors)
            hops = torus.hops(self._global_ranks[self.rank()], self._global_ranks[peer]) if peer is not None else 1
            seconds = ici.point_to_point_seconds(nbytes, hops, torus.link_bandwidth, torus.hop_latency)
            charged = self._charge(name, nbytes, tensors, seconds)
        return self._launch(name, error, on_tpu, lambda: launch(error, [h.host for h in hosts]), hosts, tensors, 0,
                            charged=charged, source_rank=source_rank)

    def send(self, tensors, dst, tag):
        return self._point_to_point("send", tensors, dst, lambda error, hosts: self._send(tensors, hosts, dst, tag),
                                    refused=lambda failure: self._send_refusal(dst, tag, failure))

    def _send(self, tensors, hosts, dst, tag):
        """The data, after the envelope that says what it is (``envelope``)."""
        if not self._has_peers():
            return self._transport.send(hosts, dst, tag)
        told = self._transport.send([envelope.envelope(tensors[0] if tensors else None)], dst, envelope.envelope_tag(tag))
        return [told, self._transport.send(hosts, dst, tag)]

    def _send_refusal(self, dst, tag, failure):
        """A refused send's envelope carries its error to the receiver, followed by no data. This rank raises
        at once; gloo's works are kept until they end (they own the buffers gloo is sending)."""
        if not self._has_peers():
            return
        self._refusals = [work for work in self._refusals if not work.is_completed()]
        self._refusals += [self._transport.send([envelope.envelope(None, failure)], dst, envelope.envelope_tag(tag)),
                           self._transport.send([envelope.nothing()], dst, tag)]

    def recv(self, tensors, src, tag):
        return self._point_to_point("recv", tensors, src, lambda error, hosts: self._receive(error, tensors, hosts, src, tag),
                                    src)

    def recv_anysource(self, tensors, tag):
        return self._point_to_point("recv", tensors, None,
                                    lambda error, hosts: self._receive(error, tensors, hosts, None, tag), None)

    def _receive(self, error, tensors, hosts, source, tag):
        """Receives from ``source`` (None: any), reading the sender's envelope first (``envelope``)."""
        if not self._has_peers():
            if source is None:
                return self._transport.recv_anysource(hosts, tag)
            return self._transport.recv(hosts, source, tag)
        received, told_tag = envelope.empty_envelope(), envelope.envelope_tag(tag)
        if source is None:
            told = self._transport.recv_anysource([received], told_tag)
        else:
            told = self._transport.recv([received], source, told_tag)
        return envelope.EnvelopedReceive(error, tensors[0], told, received,
                                         lambda sender: self._transport.recv(hosts, sender, tag),
                                         self._receive_lines[tag], source)

    # --- coalescing -----------------------------------------------------------------------------

    def _coalesce(self, works, result):
        return Work("coalesced collectives", works, result=result)

    def _start_coalescing(self, device):
        self._coalesced = []

    def _end_coalescing(self, device):
        works, self._coalesced = self._coalesced or [], None
        return self._coalesce(works, [])


class _Destroyed:
    """The transport of a process group that has been shut down: any use is an error."""

    def __init__(self, label):
        self._label = label

    def shutdown(self):
        pass

    def __getattr__(self, name):
        raise RuntimeError(f"process group {self._label!r} has been destroyed (destroy_process_group)")


# --- creation ------------------------------------------------------------------------------------

def world_torus(world_size):
    """The torus of a real run's ``world_size`` chips (subgroups run on parts of it)."""
    return ici.torus_for(world_size, _C.current_chip().spec)


_worlds_joined = 0  # worlds (init_process_group calls) this process made "ici" groups in (see _store_of_this_world)
_other_default = None  # a weak reference to the last world's default group when that was not "ici" (gloo)


def _store_of_this_world(common_options):
    """The rendezvous store under a prefix that names the world (the init_process_group) a group belongs to.

    torchrun's store outlives ``destroy_process_group()``, and c10d names groups by a count it restarts there, so the
    groups of a world made again had the names of the destroyed ones: gloo's rendezvous read the addresses those had
    published and timed out connecting to them (as gloo's own groups on CPU tensors do). A world is counted when
    "ici" makes its default group (``init_process_group`` is collective, so every rank counts alike), or, in a world
    whose default group is another backend's, at the first "ici" group a rank makes there."""
    global _worlds_joined, _other_default
    if not common_options.global_ranks_in_group:  # the default group: a new world
        _worlds_joined += 1
    else:
        default = dist.distributed_c10d._world.default_pg
        if "ici" not in str(dist.get_backend(default)) and (_other_default is None or _other_default() is not default):
            _worlds_joined, _other_default = _worlds_joined + 1, weakref.ref(default)
    return dist.PrefixStore(f"ici-world-{_worlds_joined}/", common_options.store)


def create(common_options, backend_options=None):
    """The creator registered with ``dist.Backend.register_backend("ici", ..., extended_api=True)``."""
    from . import attention_sharding, c10d_kernels, simulated_world  # noqa: F401 (attention_sharding registers)

    c10d_kernels.register()
    rank, size = common_options.group_rank, common_options.group_size
    global_ranks = list(common_options.global_ranks_in_group) or list(range(size))
    world = simulated_world.current_world()
    if world is not None:
        return ProcessGroupICI(rank, size, SimulatedTransport(rank, size), world.torus, global_ranks)
    world_size = dist.get_world_size() if common_options.global_ranks_in_group else size
    transport = gloo_transport(_store_of_this_world(common_options), rank, size,
                               resolve_timeout(common_options.timeout))
    return ProcessGroupICI(rank, size, transport, world_torus(world_size), global_ranks)
