"""Run PyTorch's OpInfo database on tpu against the CPU and write the coverage report.

    python tools/op_coverage.py                      # full sweep, 2 worker processes
    python tools/op_coverage.py --ops add mul sum    # a subset (OpInfo full names)
    python tools/op_coverage.py --jobs 1 --dtypes float32

Each sample is judged by tests/opinfo_support.py, exactly as tests/test_opinfo.py
judges it, with the CPU fallback off (TORCH_TPU_CPU_FALLBACK is removed from the
environment). Writes:
- docs/op_coverage.md (full sweeps only, unless --report is given): per op, variant, check and dtype the samples passed,
  failed and skipped, with each distinct failure reason; the summary lines;
  the aten ops most often missing;
- tests/opinfo_expected_failures.py: every failing (op, variant, dtype, check),
  which tests/test_opinfo.py turns into strict xfails. A run restricted with
  --ops or --dtypes updates only the entries it ran.
"""

import argparse
import collections
import dataclasses
import datetime
import multiprocessing
import multiprocessing.connection
import os
import pathlib
import signal
import sys
import time
import warnings

os.environ.pop("TORCH_TPU_CPU_FALLBACK", None)  # before torch_tpu is imported, here and in workers

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

REPORT = ROOT / "docs" / "op_coverage.md"
EXPECTED_FAILURES = ROOT / "tests" / "opinfo_expected_failures.py"
REASONS_PER_ROW = 5
REASON_WIDTH = 240
TOP_MISSING = 40
TARGET_ENTRIES, TARGET_SAMPLES = 90.0, 95.0


@dataclasses.dataclass
class CheckResult:
    """All samples of one (op, kind, dtype) check."""

    op: str
    variant: str
    kind: str
    dtype: str
    passed: int
    failed: int
    skipped: int
    failures: list  # (reason, count), most common first
    missing_ops: collections.Counter  # aten op -> failing samples that name it
    note: str  # why values were compared on metadata only, if they were
    seconds: float

    @property
    def full_name(self):
        return f"{self.op}.{self.variant}" if self.variant else self.op

    @property
    def clean(self):
        return self.failed == 0


# ------------------------------------------------------------- workers ----


class SampleTimeout(Exception):
    pass


def _raise_timeout(signum, frame):
    raise SampleTimeout("the sample ran past the time limit")


def _init_worker():
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)  # one process per core already
    signal.signal(signal.SIGALRM, _raise_timeout)


def _timed_outcomes(outcomes, sample_timeout):
    """Outcomes of a check, each sample cut off after ``sample_timeout`` seconds."""
    while True:
        signal.setitimer(signal.ITIMER_REAL, sample_timeout)
        try:
            outcome = next(outcomes)
        except StopIteration:
            return
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        yield outcome


def run_check(op, kind, dtype, sample_timeout):
    import opinfo_support as support

    start = time.perf_counter()
    outcomes = list(_timed_outcomes(support.run(op, dtype, kind), sample_timeout))
    statuses = collections.Counter(o.status for o in outcomes)
    missing = collections.Counter(
        support.missing_op(o.reason) for o in outcomes if o.status == support.FAILED
    )
    missing.pop(None, None)
    return CheckResult(
        op=op.name,
        variant=op.variant_test_name,
        kind=kind,
        dtype=support.dtype_name(dtype),
        passed=statuses[support.PASSED],
        failed=statuses[support.FAILED],
        skipped=statuses[support.SKIPPED],
        failures=support.failure_summary(outcomes),
        missing_ops=missing,
        note=support.policy_for(op, dtype).values_undefined,
        seconds=time.perf_counter() - start,
    )


def run_op(full_name, dtype_names, sample_timeout):
    """Every check of one op, in a worker; never raises."""
    import torch

    import opinfo_support as support

    op = support.OPS_BY_FULL_NAME[full_name]
    dtypes = [getattr(torch, name) for name in dtype_names]
    return [run_check(op, kind, dtype, sample_timeout) for kind, dtype in support.kinds_and_dtypes(op, dtypes)]


def _crashed(full_name, dtype_names, exitcode):
    """A failed sample for every check of an op whose worker process died running it."""
    import torch

    import opinfo_support as support

    op = support.OPS_BY_FULL_NAME[full_name]
    reason = f"{support.CRASH_REASON} (exit code {exitcode})"
    dtypes = [getattr(torch, name) for name in dtype_names]
    return [
        CheckResult(op.name, op.variant_test_name, kind, support.dtype_name(dtype), 0, 1, 0, [(reason, 1)],
                    collections.Counter(), "", 0.0)
        for kind, dtype in support.kinds_and_dtypes(op, dtypes)
    ]


READY = "ready"


def _serve(connection, dtype_names, sample_timeout):
    _init_worker()
    import opinfo_support  # noqa: F401  (importing torch_tpu and op_db is most of a worker's start-up)

    connection.send(READY)
    for name in iter(connection.recv, None):
        connection.send(run_op(name, dtype_names, sample_timeout))


class Worker:
    """A process that runs one op at a time; the parent always knows which."""

    context = multiprocessing.get_context("spawn")  # no forking of torch's and NumPy's thread pools

    def __init__(self, dtype_names, sample_timeout):
        self.connection, child = self.context.Pipe()
        self.process = self.context.Process(target=_serve, args=(child, dtype_names, sample_timeout), daemon=True)
        self.process.start()
        child.close()
        self.op = None

    def wait_ready(self):
        try:
            self.connection.recv()
        except EOFError:
            self.process.join()
            raise SystemExit(f"a worker process failed to start (exit code {self.process.exitcode})") from None
        return self

    def give(self, name):
        self.op = name
        self.connection.send(name)

    def result(self):
        """The finished op's CheckResults, or None if the process died running it."""
        try:
            return self.connection.recv()
        except (EOFError, OSError):  # a crash in C code (a segfault, say): no Python frame survived to catch it
            self.process.join()
            return None

    def stop(self):
        self.connection.send(None)
        self.process.join()


def sweep(op_names, dtype_names, jobs, sample_timeout, progress):
    """Run every op in worker processes; a worker that dies is replaced. Returns CheckResults in op_db order."""
    pending, by_op = list(reversed(op_names)), {}
    workers = [Worker(dtype_names, sample_timeout) for _ in range(min(jobs, len(op_names)))]
    for worker in workers:
        worker.wait_ready().give(pending.pop())
    while len(by_op) < len(op_names):
        multiprocessing.connection.wait([w.connection for w in workers if w.op])
        for index, worker in enumerate(workers):
            if not worker.op or not worker.connection.poll():
                continue
            name, results = worker.op, worker.result()
            worker.op = None
            if results is None:
                results = _crashed(name, dtype_names, worker.process.exitcode)
                worker = workers[index] = Worker(dtype_names, sample_timeout).wait_ready()
            by_op[name] = results
            progress(name, results)
            if pending:
                worker.give(pending.pop())
    for worker in workers:
        worker.stop()
    return [result for name in op_names for result in by_op[name]]


# --------------------------------------------------------------- report ----


def _percent(part, whole):
    return 100.0 * part / whole if whole else 0.0


def _entry_line(label, results, target=None):
    entries = collections.defaultdict(list)
    for result in results:
        entries[result.full_name].append(result)
    clean = sum(all(r.clean for r in checks) for checks in entries.values())
    percent = _percent(clean, len(entries))
    goal = f" (target {target:.0f}%)" if target else ""
    return f"- {label}: **{clean} / {len(entries)} = {percent:.1f}%**{goal}"


def _sample_line(label, results, target=None):
    passed = sum(r.passed for r in results)
    judged = passed + sum(r.failed for r in results)
    skipped = sum(r.skipped for r in results)
    goal = f" (target {target:.0f}%)" if target else ""
    return f"- {label}: **{passed} / {judged} = {_percent(passed, judged):.1f}%**{goal}, {skipped} skipped"


def summary_lines(results):
    def select(kind=None, dtype="float32"):
        return [r for r in results if (kind is None or r.kind == kind) and r.dtype == dtype]

    lines = [
        _entry_line("(op, float32) OpInfo entries passing every sample, forward and grad", select(),
                    TARGET_ENTRIES),
        _entry_line("(op, float32) OpInfo entries passing every forward sample", select("forward")),
        _sample_line("float32 samples passing, forward and grad", select(), TARGET_SAMPLES),
    ]
    for dtype in ("bfloat16", "int64", "bool"):
        if select("forward", dtype):
            lines.append(_entry_line(f"(op, {dtype}) entries passing every forward sample", select("forward", dtype)))
            lines.append(_sample_line(f"{dtype} forward samples passing", select("forward", dtype)))
    return lines


def missing_op_table(results):
    samples, entries = collections.Counter(), collections.defaultdict(set)
    for result in results:
        samples.update(result.missing_ops)
        for name in result.missing_ops:
            entries[name].add(result.full_name)
    rows = ["| aten op | failing samples | OpInfo entries |", "|---|---:|---:|"]
    rows += [f"| `{name}` | {count} | {len(entries[name])} |" for name, count in samples.most_common(TOP_MISSING)]
    return samples, rows


def _truncated(text):
    return text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 3] + "..."


def _cell(text):
    return _truncated(text.replace("|", "\\|").replace("\n", " "))


def _reasons(result):
    shown = [f"{count} x {_cell(reason)}" for reason, count in result.failures[:REASONS_PER_ROW]]
    hidden = len(result.failures) - REASONS_PER_ROW
    if hidden > 0:
        shown.append(f"... and {hidden} more distinct reasons")
    if result.note:
        shown.insert(0, f"(values not compared: {_cell(result.note)})")
    return "<br>".join(shown)


def op_table(results):
    rows = [
        "| op | variant | check | dtype | passed | failed | skipped | failure reasons (first line, count) |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        rows.append(
            f"| `{r.op}` | {r.variant} | {r.kind} | {r.dtype} | {r.passed} | {r.failed} | {r.skipped} | {_reasons(r)} |"
        )
    return rows


def write_report(results, command, seconds, path):
    import torch

    _, missing_rows = missing_op_table(results)
    lines = [
        "# OpInfo coverage on tpu",
        "",
        f"Generated by `{command}` on {datetime.date.today()} with torch {torch.__version__}, "
        f"TORCH_TPU_CPU_FALLBACK unset, in {seconds / 60:.1f} minutes. Every sample of PyTorch's "
        "`op_db` runs on tpu and on the CPU and the results are compared (see tests/opinfo_support.py); "
        "a sample where the CPU raises passes when tpu raises the same kind of error.",
        "",
        "## Summary",
        "",
        *summary_lines(results),
        "",
        "## Most common missing aten ops",
        "",
        "Named by the NotImplementedError of failing samples.",
        "",
        *missing_rows,
        "",
        "## Per op",
        "",
        *op_table(results),
        "",
    ]
    path.write_text("\n".join(lines))


def expected_failures(results):
    return {
        (r.op, r.variant, r.dtype, r.kind): _truncated(r.failures[0][0])
        for r in results
        if r.failed
    }


def write_expected_failures(results, path, ran_keys):
    """Replace the entries of the checks that ran; keep the others."""
    namespace = {}
    if path.exists():
        exec(path.read_text(), namespace)
    table = {k: v for k, v in namespace.get("EXPECTED_FAILURES", {}).items() if k not in ran_keys}
    table.update(expected_failures(results))
    entries = "".join(f"    {key!r}: {reason!r},\n" for key, reason in sorted(table.items()))
    path.write_text(
        '"""Known OpInfo failures on tpu: (op name, variant, dtype, check) -> most common failure reason.\n\n'
        "Written by tools/op_coverage.py from a real run; regenerate rather than edit by hand.\n"
        '"""\n\n'
        f"EXPECTED_FAILURES = {{\n{entries}}}\n"
    )


# ----------------------------------------------------------------- main ----


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", nargs="+", help="OpInfo full names (default: all of op_db)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", "int64", "bool"])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--sample-timeout", type=float, default=60.0, help="seconds before a sample fails")
    parser.add_argument(
        "--report", type=pathlib.Path, help=f"default: {REPORT.relative_to(ROOT)}, for a full sweep only (no --ops)"
    )
    parser.add_argument("--expected-failures", type=pathlib.Path, default=EXPECTED_FAILURES)
    return parser.parse_args(argv)


def _print_progress(name, results):
    seconds = sum(r.seconds for r in results)
    failed = sum(r.failed for r in results)
    print(f"{seconds:7.2f}s {failed:5d} failed  {name}", file=sys.stderr, flush=True)


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    import opinfo_support as support

    op_names = args.ops or list(support.OPS_BY_FULL_NAME)
    unknown = [name for name in op_names if name not in support.OPS_BY_FULL_NAME]
    if unknown:
        raise SystemExit(f"not OpInfo full names: {unknown}")
    start = time.perf_counter()
    results = sweep(op_names, args.dtypes, args.jobs, args.sample_timeout, _print_progress)
    seconds = time.perf_counter() - start

    command = " ".join(["python tools/op_coverage.py", *(argv if argv is not None else sys.argv[1:])])
    report = args.report or (None if args.ops else REPORT)
    if report:
        write_report(results, command, seconds, report)
    ran = {
        support.expectation_key(support.OPS_BY_FULL_NAME[name], dtype, kind)
        for name in op_names
        for kind, dtype in support.kinds_and_dtypes(
            support.OPS_BY_FULL_NAME[name], [getattr(torch, d) for d in args.dtypes]
        )
    }
    write_expected_failures(results, args.expected_failures, ran)

    print("\n".join(summary_lines(results)))
    samples, _ = missing_op_table(results)
    print(f"\ntop missing aten ops (failing samples): {samples.most_common(25)}")
    print(f"{seconds:.0f} s; wrote {report or 'no report'} and {args.expected_failures}")


if __name__ == "__main__":
    main()
