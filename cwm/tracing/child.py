"""Run units in jailed children of the target interpreter (tracer/runner.py, tracer/server.py).

A `UnitServer` is one jailed `python -m tracer serve`: it imports, and collects the project's tests, once, then runs
each unit in a fork of itself. A unit writes one finished trace per line to its `out` file, then
`{"event": "end", "status": ...}`. A unit that dies before "end" (hard timeout, segfault, os._exit, out of memory)
keeps the traces it flushed; the parent adds one record for the entry with outcome "timeout" or "crashed" (unless
the entry's own trace was flushed before the death: then that trace stands and only the unit's status says what
happened), so no unit vanishes without a record.
"""
from __future__ import annotations

import json
import os
import queue
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

import tracer.format
from cwm.jail import Jail, Limits

from .target import TargetPython, child_env
from .units import Unit

SCHEMA = "cwm.trace/1"
REPLY_GRACE_S = 30.0   # past a unit's hard timeout, how long a server that has not answered gets


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
    raw_values: bool = False         # reprs' addresses, mock ids, thread idents as they were (else ordinals)
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
                "raw_values": self.raw_values,
                "soft_timeout_s": self.timeout_s,
                # The parent keys each record by its unit and position (run.sample_key): no content hash wanted.
                "content_ids": False,
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


class UnitServer:
    """A jailed `python -m tracer serve` (tracer/server.py) of the target interpreter: started, and in pytest mode
    done collecting the tests in `paths`, once; each unit then runs in a fork of it, with its own temporary HOME and
    working directory. Units run one at a time. A server that died or stopped answering is closed (`alive` False)
    and its unit recorded as crashed or timed out, as a child that died would be."""

    def __init__(self, *, mode: str, target: TargetPython, tracer_path: Path, root: Path | None,
                 options: TraceOptions, scratch: Path, paths: tuple[str, ...] = ()):
        self.target, self.root, self.options = target, root, options
        self.dir = Path(tempfile.mkdtemp(prefix="server-", dir=scratch))
        self.limits = options.limits(writable=self.dir)
        home = self.dir / "home"
        home.mkdir()
        job = self.dir / "serve.json"
        job.write_text(json.dumps({"mode": mode, "root": str(root or self.dir), "paths": list(paths)}))
        # The server's output (pytest's, the project's): appended to, so a unit's part is what came after its start.
        self.log_path = self.dir.with_suffix(".log")
        self.jail = Jail(self.limits)
        self.isolation = self.jail.isolation
        with open(self.log_path, "ab") as log:
            self.proc = self.jail.popen([target.executable, "-m", "tracer", "serve", str(job)], cwd=self.dir,
                                        env=child_env(target, home=str(home), pythonpath=_pythonpath(tracer_path, root)),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, bufsize=0)
        self.pending = b""
        self.alive = True

    def run(self, unit: Unit, origin: dict) -> UnitResult:
        start = time.monotonic()
        tmp = self._unit_dir()
        work, home, out = tmp / "work", tmp / "home", tmp / "records.jsonl"
        job = {**self.options.job(origin), **unit.job, "root": str(self.root or work), "out": str(out),
               "work": str(work), "home": str(home), "hard_timeout_s": self.limits.timeout_s}
        said_from = self.log_path.stat().st_size
        reply = self._ask(job, timeout=self.limits.timeout_s + REPLY_GRACE_S)
        said = _tail_from(self.log_path, said_from)
        records, status, error = read_child_output(out)
        shutil.rmtree(tmp, ignore_errors=True)
        wall_s = time.monotonic() - start
        if reply is None:    # the server itself died, or hung
            timed_out = wall_s >= self.limits.timeout_s
            self.close()
            reply = {"exit": self.proc.returncode, "timed_out": timed_out}
            said = f"{said}\nthe tracer's server process died (exit code {self.proc.returncode})"
        detail = ""
        if status is None:
            status = "timeout" if reply["timed_out"] else "crashed"
            detail = _death_reason(reply["exit"], said)
            if not any((r.get("origin") or {}).get("kind") == unit.origin["kind"] for r in records):
                records.append(dead_child_record(unit, self.target, origin, status, wall_s))
        elif status == "error":   # it did not even run: the child said why (a function's code), or pytest printed it
            detail = error or _last_words(said)
        return UnitResult(unit, records, status, wall_s, self.isolation, detail)

    def _unit_dir(self) -> Path:
        """A fresh folder for one unit: `work` (its working dir) and `home`; its records file goes beside them."""
        tmp = Path(tempfile.mkdtemp(prefix="unit-", dir=self.dir))
        (tmp / "work").mkdir()
        (tmp / "home").mkdir()
        return tmp

    def _ask(self, job: dict, timeout: float) -> dict | None:
        """Send one unit, wait for its reply; None when the server is gone or silent past `timeout`."""
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
        except OSError:   # the pipe broke: the server is dead
            return None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return json.loads(line)

    def close(self) -> None:
        """Kill the server and everything in its jail; remove its files."""
        if self.alive:
            self.alive = False
            for pipe in (self.proc.stdin, self.proc.stdout):
                pipe.close()
            self.jail.close()
            self.proc.wait()
            shutil.rmtree(self.dir, ignore_errors=True)
            self.log_path.unlink(missing_ok=True)


class ServerPool:
    """Unit servers shared by worker threads: a unit takes an idle one (or starts one) and gives it back; so there
    are never more servers than units running at once."""

    def __init__(self, server_class=None, **server_args):
        self.server_class = server_class or UnitServer   # or a factory taking the same arguments (image.py)
        self.server_args = server_args
        self.idle: queue.SimpleQueue[UnitServer] = queue.SimpleQueue()
        self.servers: list[UnitServer] = []
        self.lock = threading.Lock()

    def run(self, unit: Unit, origin: dict) -> UnitResult:
        try:
            server = self.idle.get_nowait()
        except queue.Empty:
            server = self.server_class(**self.server_args)
            with self.lock:
                self.servers.append(server)
        result = server.run(unit, origin)
        if server.alive:
            self.idle.put(server)
        return result

    def close(self) -> None:
        with self.lock:
            for server in self.servers:
                server.close()


def _pythonpath(tracer_path: Path, root: Path | None) -> str:
    """The staged tracer, then the project root: the child imports the project as `python -m pytest` run in the
    root would (that puts the root first on sys.path), though its working directory is a temporary one."""
    return os.pathsep.join(str(p) for p in (tracer_path, root) if p is not None)


def read_child_output(path: Path) -> tuple[list[dict], str | None, str]:
    """The complete trace records in the child's output, its end status (None when it never got there) and the
    error its end line gives ("" when none: a function whose code or arguments did not run says why there).

    A line cut short by the child's death does not parse and is dropped: it was never a complete trace.
    """
    records, status, error = [], None, ""
    if not path.exists():
        return records, status, error
    with open(path, "rb") as f:
        for line in f:
            try:
                obj = orjson.loads(line)    # several times json's speed: a quarter of the parent's CPU was here
            except orjson.JSONDecodeError:  # what orjson refuses (an escaped lone surrogate, NaN) json may take
                try:
                    obj = json.loads(line.decode("utf-8", errors="replace"))
                except json.JSONDecodeError:
                    continue
            if not isinstance(obj, dict):
                continue
            if obj.get("event") == "end":
                if status is None:
                    status, error = str(obj.get("status")), str(obj.get("error") or "")[:500]
            elif status is None and "frames" in obj:
                records.append(obj)
    return records, status, error


def dead_child_record(unit: Unit, target: TargetPython, origin: dict, outcome: str, wall_s: float) -> dict:
    """The record of an entry whose child died: DESIGN §2 shape, no frames, the outcome saying why."""
    return {"id": "", "schema": SCHEMA, "origin": {**origin, **unit.origin}, "python": target.version,
            "backend": target.backend, "context": "", "frames": [], "outcome": outcome,
            "stats": {"frames": 0, "wall_s": round(wall_s, 3), "truncated_values": 0}}


def _tail_from(path: Path, offset: int, limit: int = 1 << 20) -> str:
    """What was appended to `path` after `offset`: its last `limit` bytes at most."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(offset, size - limit))
        return f.read().decode("utf-8", errors="replace")


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
