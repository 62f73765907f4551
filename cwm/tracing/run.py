"""Drive a tracing run: workers run units in jailed children, the main thread writes each finished unit's records
to shards as one group, so a killed run resumes where it stopped (no duplicate, no lost sample)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cwm.data.shards import ShardWriter, record_key

from .child import ServerPool, TraceOptions, UnitResult, stage_tracer
from .target import TargetPython
from .units import Unit

RUN_LOG = "units.jsonl"   # one line per finished unit: its status (test passed/failed/...), traces, frames


@dataclass
class RunStats:
    """What a run did; `units_resumed` were complete in the output directory already and not run again."""
    units: int = 0
    units_resumed: int = 0
    units_run: int = 0
    traces: int = 0
    frames: int = 0
    bytes: int = 0
    outcomes: Counter = field(default_factory=Counter)   # per trace: returned / raised / timeout / crashed / ...
    statuses: Counter = field(default_factory=Counter)   # per unit: passed / failed / ... / timeout / crashed
    resumed_statuses: Counter = field(default_factory=Counter)   # the same for the units done by earlier runs
    wall_s: float = 0.0
    isolation: str = ""
    first_death: str = ""       # the first child that died, and why: the lead when every unit crashes
    interrupted: bool = False

    def add(self, result: UnitResult) -> None:
        records = result.records
        self.units_run += 1
        self.traces += len(records)
        self.frames += sum(len(r.get("frames") or ()) for r in records)
        self.outcomes.update(str(r.get("outcome")) for r in records)
        self.statuses[result.status] += 1
        self.isolation = self.isolation or result.isolation
        if result.status in ("crashed", "timeout") and not self.first_death:
            self.first_death = f"{result.unit.group}: {result.status} ({result.detail})"


def merged_stats(runs: list[RunStats]) -> RunStats:
    """The stats of several runs (one per task side, one per corpus item) as one."""
    total = RunStats()
    for r in runs:
        for name in ("units", "units_resumed", "units_run", "traces", "frames", "bytes"):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        for name in ("outcomes", "statuses", "resumed_statuses"):
            getattr(total, name).update(getattr(r, name))
        total.wall_s += r.wall_s
        total.isolation = total.isolation or r.isolation
        total.first_death = total.first_death or r.first_death
        total.interrupted = total.interrupted or r.interrupted
    return total


def sample_key(group: str, index: int) -> str:
    """A record's key: its unit and its place in that unit's output. Content hashes would not do: reprs such as
    `<Cart object at 0x7f..>` differ from run to run, and a rerun of a unit must produce the same keys."""
    return record_key({"group": group, "index": index})


def entry_first(result: UnitResult) -> list[dict]:
    """The unit's entry trace (the test, the function) first, then the function episodes cut from the same run:
    the child writes each trace when it ends, so callees come before their caller."""
    kind = result.unit.origin["kind"]
    return sorted(result.records, key=lambda r: (r.get("origin") or {}).get("kind") != kind)


def trace_units(units: list[Unit], *, out_dir: Path, target: TargetPython, root: Path | None,
                options: TraceOptions, workers: int, origin: dict, prefix: str = "traces",
                shard_samples: int = 1000, console: Console | None = None, server_class=None,
                root_in_server: bool = False, progress_label: str = "tracing") -> RunStats:
    """Run every unit not already complete in `out_dir`; Ctrl-C lets running units finish and keeps them.

    `server_class` starts the unit servers (default: a jailed local child; image.server_factory: a container of a
    repository image, whose root is inside it, `root_in_server`)."""
    console = console or Console(stderr=True)
    stats = RunStats(units=len(units))
    start = time.monotonic()
    with ShardWriter(out_dir, prefix, max_samples=shard_samples) as writer, \
            open(out_dir / RUN_LOG, "a", encoding="utf-8") as log, scratch_dir() as scratch, \
            contextlib.ExitStack() as stack:
        tracer_path = stage_tracer(scratch)
        todo = [u for u in units if u.group not in writer.done_groups]
        # Tests (a project root) or functions. Each server collects the test files of the units left to run, once.
        mode = "function" if root is None and not root_in_server else "pytest"
        paths = tuple(dict.fromkeys(u.job["nodeid"].split("::", 1)[0] for u in todo)) if mode == "pytest" else ()
        servers = ServerPool(server_class, mode=mode, target=target, tracer_path=tracer_path, root=root, options=options,
                             scratch=scratch, paths=paths)
        stack.callback(servers.close)
        stats.units_resumed = len(units) - len(todo)
        if stats.units_resumed:
            earlier = logged_statuses(out_dir / RUN_LOG)
            stats.resumed_statuses.update(earlier.get(u.group, "unknown") for u in units
                                          if u.group in writer.done_groups)

        columns = (TextColumn(f"[bold]{progress_label}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=False) as progress, \
                ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="cwm-trace") as pool:
            task = progress.add_task("tracing", total=len(todo), info="")

            # The recorder keeps repo and commit of the origin; what else the caller links a record to (the image,
            # a task's id and side) is added here, to every record of the run.
            linked = {k: v for k, v in origin.items() if k not in ("repo", "commit")}

            def write(result: UnitResult) -> None:
                records = []
                for index, record in enumerate(entry_first(result)):
                    record["id"] = sample_key(result.unit.group, index)
                    if linked:
                        record["origin"] = {**(record.get("origin") or {}), **linked}
                    records.append((record["id"], record))
                writer.add(records, group=result.unit.group)
                log.write(json.dumps(result.log_line()) + "\n")
                log.flush()
                stats.add(result)
                progress.update(task, advance=1, info=f"{stats.traces} traces, {stats.frames} frames")

            futures = [pool.submit(servers.run, u, origin) for u in todo]
            pending = set(futures)
            try:
                for future in as_completed(futures):
                    pending.discard(future)
                    write(future.result())
            except KeyboardInterrupt:
                stats.interrupted = True
                running = [f for f in pending if not f.cancel()]
                console.print(f"[yellow]interrupted: finishing the {len(running)} running units and keeping them; "
                              "run the same command again to resume")
                for future in running:
                    write(future.result())
            except BaseException:   # a failure of our own (disk full, ...): stop, keep what is complete
                for future in pending:
                    future.cancel()
                raise
        stats.wall_s = time.monotonic() - start
        stats.bytes = writer.bytes_written
    return stats


def last_rows(path: Path, key: str) -> dict[str, dict]:
    """row[key] -> the last row of a JSONL run log with that key (a run that was killed and resumed may have logged
    it twice); a line cut short by a kill, or one without the key, is skipped."""
    rows = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                rows[row[key]] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return rows


def logged_statuses(path: Path) -> dict[str, str]:
    """group -> status from a run log; the last line of a group wins."""
    return {group: row["status"] for group, row in last_rows(path, "group").items() if "status" in row}


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """This run's scratch space (the staged tracer, one folder per running unit), named by our pid. A run killed
    with SIGKILL cannot clean up after itself, so the next run removes the scratch of runs no longer alive."""
    for stale in Path(tempfile.gettempdir()).glob("cwm-trace-*-*"):
        pid = stale.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"cwm-trace-{os.getpid()}-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, someone else's
        pass
    return True
