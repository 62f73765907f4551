"""`cwm-trace`: turn a code base's tests, or a file of functions, into execution-trace shards; render a sample.

    cwm-trace PATH -o DIR [--python PY] [--workers N] ...   trace every pytest test of the project at PATH
    cwm-trace functions FILE.jsonl -o DIR ...               trace entry(input) for each {"code","entry","input"} line
    cwm-trace render SHARD_OR_DIR [--key K | --first]       print a sample in the CWM trace text format

User errors (a missing path, a bad JSONL line, an interpreter that is not Python) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import fnmatch
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cwm.data.shards import iter_records, shard_paths
from cwm.tracing.child import TraceOptions
from cwm.tracing.run import RUN_LOG, RunStats, trace_units
from cwm.tracing.target import TraceInputError, probe_python
from cwm.tracing.units import discover_tests, read_function_units, untraced_src_packages

SUBCOMMANDS = ("functions", "render", "tasks", "corpus")


def _trace_options(parser: argparse.ArgumentParser, *, repository: bool) -> None:
    parser.add_argument("-o", "--out", required=True, type=Path, help="output directory (shards + manifest.json)")
    parser.add_argument("--python", help="interpreter that runs the traced code (default: this one), CPython 3.9-3.13")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="children run at once")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per test or function (default 60)")
    parser.add_argument("--memory-mb", type=int, default=2048, help="memory limit per child (default 2048)")
    parser.add_argument("--max-procs", type=int, default=256, help="processes per child (default 256)")
    parser.add_argument("--depth", type=int, default=2, help="how deep project callees are inlined (default 2)")
    parser.add_argument("--max-frames", type=int, default=10_000, help="frames per trace (default 10000)")
    parser.add_argument("--max-episodes", type=int, default=1000,
                        help="function-level traces cut from one test at most (default 1000)")
    parser.add_argument("--max-bytes", type=int, default=1_000_000, help="bytes per trace (default 1 MB)")
    parser.add_argument("--value-budget", type=int, default=200, help="characters per value repr (default 200)")
    parser.add_argument("--raw-values", action="store_true",
                        help="keep memory addresses, mock ids and thread idents as the reprs show them "
                             "(default: per-trace ordinals, so the same program gives the same records)")
    parser.add_argument("--shard-samples", type=int, default=1000, help="samples per shard (default 1000)")
    if repository:
        parser.add_argument("--tests", action="append", default=[], metavar="GLOB",
                            help="run only tests whose pytest node id matches (repeatable; default: all)")
        parser.add_argument("--include", action="append", default=[], metavar="GLOB",
                            help="trace only files matching (relative to PATH; repeatable)")
        parser.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                            help="do not trace files matching (relative to PATH; repeatable)")
        parser.add_argument("--no-function-episodes", action="store_true",
                            help="only one trace per test, no per-call function traces")


def build_parsers() -> dict[str, argparse.ArgumentParser]:
    repo = argparse.ArgumentParser(prog="cwm-trace", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    repo.add_argument("path", type=Path, nargs="?", help="project root; its pytest tests are the entries")
    repo.add_argument("--image", help="a repository image (cwm-forager build-image): trace its tests inside a "
                                      "container of it, with the forager sandbox's isolation, instead of PATH")
    _trace_options(repo, repository=True)
    functions = argparse.ArgumentParser(prog="cwm-trace functions",
                                        description='Trace entry(input) for every {"code", "entry", "input"} line.')
    functions.add_argument("file", type=Path, help="JSONL file; entry defaults to f, input to no arguments")
    _trace_options(functions, repository=False)
    tasks = argparse.ArgumentParser(prog="cwm-trace tasks", description="Trace each forager task's fail-to-pass "
                                    "tests in its image on the buggy and on the fixed code (origin: task, side).")
    tasks.add_argument("file", type=Path, help="a tasks file written by `cwm-forager tasks`")
    _trace_options(tasks, repository=False)
    corpus = argparse.ArgumentParser(prog="cwm-trace corpus", description="Build (or find) the image of every "
                                     "repository of a list and trace its tests inside it; resumable per item.")
    corpus.add_argument("list", type=Path, help="one repository a line: FOLDER, or name==version "
                                                "[--hash=sha256:HEX] (a PyPI sdist)")
    _trace_options(corpus, repository=False)
    corpus.add_argument("--ray", metavar="auto|ADDRESS", help="run the items as Ray tasks on an existing cluster")
    corpus.add_argument("--jobs", type=int, default=1, help="items at once without --ray (default 1)")
    corpus.add_argument("--max-tests", type=int, help="trace only the first N collected tests of each item")
    corpus.add_argument("--base", help="base image for the builds (default: the debootstrap base)")
    render = argparse.ArgumentParser(prog="cwm-trace render", description="Print a sample in the CWM trace format.")
    render.add_argument("source", help="a shard directory, a .tar shard or a glob")
    which = render.add_mutually_exclusive_group()
    which.add_argument("--key", help="the sample to print (without either option: list the samples)")
    which.add_argument("--first", action="store_true", help="print the first sample")
    return {"repo": repo, "functions": functions, "render": render, "tasks": tasks, "corpus": corpus}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parsers = build_parsers()
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else "repo"
    args = parsers[command].parse_args(argv[1:] if command != "repo" else argv)
    try:
        if command == "render":
            return render(args)
        if command == "tasks":
            return trace_tasks_command(args)
        if command == "corpus":
            return trace_corpus_command(args)
        return trace(args, command)
    except TraceInputError as e:
        print(f"cwm-trace: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cwm-trace: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cwm-trace render DIR | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def trace(args: argparse.Namespace, command: str) -> int:
    _check_numbers(args)
    if args.out.exists() and not args.out.is_dir():
        raise TraceInputError(f"-o {args.out}: exists and is not a directory; name a directory for the shards")
    console = Console(stderr=True)
    budgets = dict(depth=args.depth, max_frames=args.max_frames, max_episodes=args.max_episodes,
                   max_bytes=args.max_bytes,
                   value_budget=args.value_budget, timeout_s=args.timeout, memory_mb=args.memory_mb,
                   max_procs=args.max_procs, raw_values=args.raw_values)
    server_class, root_in_server = None, False
    if command == "repo" and args.image:
        if args.path is not None:
            raise TraceInputError(f"{args.path} and --image {args.image}: give one of them (the image holds the code)")
        if args.python:
            raise TraceInputError("--python with --image: the image's own interpreter runs the tests; drop --python")
        from cwm.tracing import image as image_mod
        dc = image_mod.docker_client()
        info = image_mod.image_info(dc, args.image)
        where = image_mod.ImageTarget(args.image)
        options = TraceOptions(include=tuple(args.include), exclude=tuple(args.exclude),
                               function_episodes=not args.no_function_episodes, **budgets)
        console.print(f"collecting tests in a container of {args.image} ...")
        target, units, note = image_mod.probe_and_collect(dc, where, options)
        if note:
            console.print(f"[yellow]{note}")
        units = _select(units, args.tests, args.image)
        root, root_in_server = None, True
        server_class = image_mod.server_factory(where, dc)
        origin = {"repo": info.repo, "commit": info.commit, "image": args.image}
    elif command == "repo":
        if args.path is None:
            raise TraceInputError("give the PATH of a project with pytest tests, or --image IMAGE")
        root = args.path.resolve()
        if not root.is_dir():
            raise TraceInputError(f"{args.path}: no such directory; give the root of a project with pytest tests")
        target = probe_python(args.python)
        for warning in untraced_src_packages(target, root):
            console.print(f"[yellow]warning: {warning}")
        console.print(f"collecting tests in {root} with Python {target.version} ...")
        units, note = discover_tests(target, root, memory_mb=args.memory_mb)
        if note:
            console.print(f"[yellow]{note}")
        units = _select(units, args.tests, root)
        origin = {"repo": root.name, "commit": _git_commit(root)}
        options = TraceOptions(include=tuple(args.include), exclude=tuple(args.exclude),
                               function_episodes=not args.no_function_episodes, **budgets)
    else:
        if not args.file.is_file():
            raise TraceInputError(f"{args.file}: no such file; give a JSONL file of "
                                  '{"code": ..., "entry": ..., "input": ...} lines')
        units = read_function_units(args.file)
        target = probe_python(args.python)
        root, origin = None, {"repo": None, "commit": None}
        options = TraceOptions(function_episodes=False, **budgets)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TraceInputError(f"-o {args.out}: cannot create it ({e.strerror}); name a writable directory") from None
    stats = trace_units(units, out_dir=args.out, target=target, root=root, options=options, workers=args.workers,
                        origin=origin, shard_samples=args.shard_samples, console=console,
                        server_class=server_class, root_in_server=root_in_server)
    print_summary(stats, args.out, target.version, kind="tests" if command == "repo" else "functions")
    return 130 if stats.interrupted else 0


def trace_tasks_command(args: argparse.Namespace) -> int:
    from cwm.forager.tasks import TaskError, load_tasks
    from cwm.tracing.run import merged_stats
    from cwm.tracing.tasks import trace_tasks

    _check_numbers(args)
    if not args.file.is_file():
        raise TraceInputError(f"{args.file}: no such file; give a tasks file written by `cwm-forager tasks`")
    try:
        tasks = load_tasks(args.file)
    except TaskError as e:
        raise TraceInputError(str(e)) from None
    console = Console(stderr=True)
    options = TraceOptions(timeout_s=args.timeout, memory_mb=args.memory_mb, max_procs=args.max_procs,
                           depth=args.depth, max_frames=args.max_frames, max_episodes=args.max_episodes,
                           max_bytes=args.max_bytes, value_budget=args.value_budget)
    _make_out(args.out)
    runs = trace_tasks(tasks, out_dir=args.out, options=options, workers=args.workers,
                       shard_samples=args.shard_samples, console=console)
    stats = merged_stats(runs)
    print_summary(stats, args.out, "image's", kind="task tests")
    return 130 if stats.interrupted else 0


def trace_corpus_command(args: argparse.Namespace) -> int:
    from cwm import corpus

    _check_numbers(args)
    if args.jobs <= 0 or (args.max_tests is not None and args.max_tests <= 0):
        raise TraceInputError("--jobs and --max-tests must be positive")
    try:
        items = corpus.parse_list(args.list)
        _make_out(args.out)
        config = corpus.CorpusConfig(
            mode="trace", out=str(args.out.resolve()), workers=args.workers, max_tests=args.max_tests,
            base=args.base, shard_samples=args.shard_samples,
            options=dict(timeout_s=args.timeout, memory_mb=args.memory_mb, max_procs=args.max_procs,
                         depth=args.depth, max_frames=args.max_frames, max_episodes=args.max_episodes,
                         max_bytes=args.max_bytes, value_budget=args.value_budget))
        log = args.out / corpus.RUN_LOG
        stats = corpus.run_corpus(items, config, log_path=log, ray_address=args.ray, jobs=args.jobs)
    except corpus.CorpusInputError as e:
        raise TraceInputError(str(e)) from None
    corpus.print_summary(stats, log, f"cwm-trace corpus: {args.out}")
    return 0


def _make_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise TraceInputError(f"-o {out}: exists and is not a directory; name a directory for the shards")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TraceInputError(f"-o {out}: cannot create it ({e.strerror}); name a writable directory") from None


def _select(units, globs: list[str], where) -> list:
    """The units whose pytest node id matches one of `globs` (all of them without any)."""
    if not globs:
        return units
    units = [u for u in units if any(fnmatch.fnmatchcase(u.group, glob) for glob in globs)]
    if not units:
        raise TraceInputError(f"{where}: no test matches --tests {' '.join(globs)}; "
                              "patterns match pytest node ids such as tests/test_x.py::test_a")
    return units


def print_summary(stats: RunStats, out: Path, python: str, *, kind: str) -> None:
    table = Table(title=f"cwm-trace: {out}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    rate = stats.traces / stats.wall_s if stats.wall_s else 0.0
    rows = [
        (kind, f"{stats.units_run} run, {stats.units_resumed} already done (resumed), {stats.units} in all"),
        (f"{kind} status", _counts(stats.statuses)),
        *([(f"resumed {kind} status", _counts(stats.resumed_statuses))] if stats.units_resumed else []),
        ("traces", f"{stats.traces:,}"),
        ("frames", f"{stats.frames:,}"),
        ("bytes", f"{stats.bytes:,}"),
        ("trace outcomes", _counts(stats.outcomes)),
        ("traces/s", f"{rate:,.1f} ({stats.wall_s:.1f} s wall)"),
        ("python / sandbox", f"{python} / {stats.isolation or '-'}"),
        ("run log", str(out / RUN_LOG)),
    ]
    if stats.first_death:
        rows.append(("first child death", stats.first_death))
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def render(args: argparse.Namespace) -> int:
    try:
        paths = shard_paths(args.source)
    except FileNotFoundError:
        paths = []
    if not paths:
        raise TraceInputError(f"{args.source}: no shards there; give a shard directory, a .tar file or a glob")
    records = iter_records(paths)
    if args.first or args.key:
        from tracer.format import render_trace

        for record in records:
            if args.first or record.get("id") == args.key:
                sys.stdout.write(render_trace(record))
                return 0
        raise TraceInputError(f"{args.source}: " + (f"no sample with key {args.key}; run "
                              f"`cwm-trace render {args.source}` to list the keys" if args.key else "no samples"))
    for record in records:
        origin = record.get("origin") or {}
        print(record.get("id"), record.get("outcome"), f"{len(record.get('frames') or ())} frames",
              f"{origin.get('path')}::{origin.get('qualname')}", sep="\t")
    return 0


def _check_numbers(args: argparse.Namespace) -> None:
    for name in ("workers", "timeout", "memory_mb", "max_frames", "max_episodes", "max_bytes", "value_budget", "shard_samples",
                 "max_procs"):
        if getattr(args, name) <= 0:
            raise TraceInputError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be positive")
    if args.depth < 0:
        raise TraceInputError(f"--depth {args.depth}: must be 0 or more")


def _counts(counter) -> str:
    return ", ".join(f"{name} {n}" for name, n in counter.most_common()) or "-"


def _git_commit(root: Path) -> str | None:
    """The commit of the traced checkout, when it is one (goes into each record's origin)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


if __name__ == "__main__":
    sys.exit(main())
