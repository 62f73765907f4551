"""Run one unit as a jailed child of the target interpreter: `python -m tracer run JOB.json` (TEAM protocol).

The child writes one finished trace per line to `out`, then `{"event": "end", "status": ...}`. A child that dies
before "end" (hard timeout, segfault, os._exit, out of memory) keeps the traces it flushed; the parent adds one
record for the entry with outcome "timeout" or "crashed" (unless the entry's own trace was flushed before the
death: then that trace stands and only the unit's status says what happened), so no unit vanishes without a record.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tracer.format
from cwm.jail import Limits, run_jailed

from .target import TargetPython, child_env
from .units import Unit

SCHEMA = "cwm.trace/1"


@dataclass(frozen=True)
class TraceOptions:
    """What every child is told (JOB.json) and the limits it runs under."""
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    depth: int = 2
    function_episodes: bool = True
    max_frames: int = 10_000
    max_episodes: int = 1000         # function-level traces per unit
    max_bytes: int = 1_000_000
    value_budget: int = 200
    timeout_s: float = 60.0          # per unit; the tracer stops itself at this and records "timeout"
    memory_mb: int | None = 2048
    max_procs: int | None = 256

    def limits(self, writable: Path) -> Limits:
        """The hard limit leaves the tracer room to start, stop itself at timeout_s and flush its records; the
        child may write only under `writable` (its work dir, HOME and records file)."""
        return Limits(timeout_s=self.timeout_s + max(3.0, 0.25 * self.timeout_s), memory_mb=self.memory_mb,
                      max_procs=self.max_procs, writable=(str(writable),))

    def job(self, origin: dict) -> dict:
        return {"include": list(self.include), "exclude": list(self.exclude), "depth": self.depth,
                "function_episodes": self.function_episodes, "max_frames": self.max_frames,
                "max_episodes": self.max_episodes, "max_bytes": self.max_bytes, "value_budget": self.value_budget,
                "soft_timeout_s": self.timeout_s,
                "origin": origin}


@dataclass
class UnitResult:
    unit: Unit
    records: list[dict]
    status: str                # passed|failed|skipped|error (tests), returned|raised (functions), timeout|crashed
    wall_s: float
    isolation: str
    detail: str = ""           # why the child died: signal or exit code, and its last word on stderr

    def log_line(self) -> dict:
        """One line of the run log (units.jsonl)."""
        return {"group": self.unit.group, "status": self.status, "traces": len(self.records),
                "frames": sum(len(r.get("frames") or ()) for r in self.records), "wall_s": round(self.wall_s, 3),
                "isolation": self.isolation, "detail": self.detail}


def stage_tracer(dest: Path) -> Path:
    """Copy the `tracer` package into `dest` and return the PYTHONPATH entry that makes it importable, so the
    target interpreter needs nothing installed (tracer/ is standard-library only)."""
    package = Path(tracer.format.__file__).parent   # tracer.__file__ is None when it resolves as a namespace package
    shutil.copytree(package, dest / "tracer", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def run_unit(unit: Unit, *, target: TargetPython, tracer_path: Path, root: Path | None, options: TraceOptions,
             origin: dict, scratch: Path | None = None) -> UnitResult:
    """Trace one unit in a fresh jail with its own temporary HOME and working directory (under `scratch`)."""
    with tempfile.TemporaryDirectory(prefix="unit-", dir=scratch) as tmp:
        tmp = Path(tmp)
        work, home, out = tmp / "work", tmp / "home", tmp / "records.jsonl"
        work.mkdir()
        home.mkdir()
        job = {**options.job(origin), **unit.job, "root": str(root or work), "out": str(out)}
        (tmp / "job.json").write_text(json.dumps(job))
        result = run_jailed([target.executable, "-m", "tracer", "run", str(tmp / "job.json")], cwd=work,
                            limits=options.limits(writable=tmp),
                            env=child_env(target, home=str(home), pythonpath=_pythonpath(tracer_path, root)))
        records, status = read_child_output(out)
    detail = ""
    if status is None:
        status = "timeout" if result.timed_out else "crashed"
        detail = _death_reason(result.returncode, result.stderr)
        if not any((r.get("origin") or {}).get("kind") == unit.origin["kind"] for r in records):
            records.append(dead_child_record(unit, target, origin, status, result.wall_s))
    elif status == "error":   # the test did not even run (collection, setup): pytest printed why
        detail = _last_words(result.stdout + "\n" + result.stderr)
    return UnitResult(unit, records, status, result.wall_s, result.isolation, detail)


def _pythonpath(tracer_path: Path, root: Path | None) -> str:
    """The staged tracer, then the project root: the child imports the project as `python -m pytest` run in the
    root would (that puts the root first on sys.path), though its working directory is a temporary one."""
    return os.pathsep.join(str(p) for p in (tracer_path, root) if p is not None)


def read_child_output(path: Path) -> tuple[list[dict], str | None]:
    """The complete trace records in the child's output and its end status (None when it never got there).

    A line cut short by the child's death does not parse and is dropped: it was never a complete trace.
    """
    records, status = [], None
    if not path.exists():
        return records, status
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(obj, dict):
                continue
            if obj.get("event") == "end":
                status = status or str(obj.get("status"))
            elif status is None and "frames" in obj:
                records.append(obj)
    return records, status


def dead_child_record(unit: Unit, target: TargetPython, origin: dict, outcome: str, wall_s: float) -> dict:
    """The record of an entry whose child died: DESIGN §2 shape, no frames, the outcome saying why."""
    return {"id": "", "schema": SCHEMA, "origin": {**origin, **unit.origin}, "python": target.version,
            "backend": target.backend, "context": "", "frames": [], "outcome": outcome,
            "stats": {"frames": 0, "wall_s": round(wall_s, 3), "truncated_values": 0}}


def _death_reason(returncode: int, stderr: str) -> str:
    """"killed by SIGSEGV: Fatal Python error: Segmentation fault" - the signal or exit code, and the child's own
    last word on it."""
    try:
        how = f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exit code {returncode}"
    except ValueError:
        how = f"exit code {returncode}"
    said = _last_words(stderr)
    return f"{how}: {said}" if said else how


def _last_words(text: str) -> str:
    """The most telling line of a child's output: the last fatal-error or exception line, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    telling = [line for line in lines if line.startswith(("Fatal Python error", "E  ")) or
               "Error" in line.split(":")[0]]
    return (telling or lines or [""])[-1][:300]
