"""The child side of `cwm-trace`, in the target interpreter: run units and write their traces.

- `python -m tracer run JOB.json`: one unit, in this process.
- `python -m tracer serve JOB.json`: many units, one after another, each in a fork of a process that imported (and,
  in pytest mode, collected) once; units come on stdin (tracer/server.py).

A unit writes one JSON trace record per line to `job["out"]`, each flushed the moment its trace ends, then
`{"event": "end", "status": ...}`:
- mode "pytest": runs the test `nodeid`, collected by pytest in this process, through pytest's own protocol; a small
  plugin traces the test function's call (tracer/pytest_plugin.py). Status passed | failed | skipped | error (error:
  setup or teardown failed, or the test was not collected).
- mode "function": executes `code` as the module `<input>` (so its frames are in scope and show that path), then
  traces `entry(<input>)`. Status returned | raised, or error when the code or the arguments do not even run.
After `soft_timeout_s` the open traces are written with outcome "timeout", the status is "timeout" and the unit's
process exits at once. The exit code is 0 whenever the tracer itself worked, whatever the traced code did.
"""
import hashlib
import json
import linecache
import os
import sys
import threading
import types

from .recorder import TraceConfig, TraceStopped
from .session import Session, code_of

INPUT_FILE = "<input>"
GRACE_S = 2.0   # after the soft timeout, how long the traced thread gets to notice before the watchdog flushes


class _Output:
    """The records file. Every write is one whole line, flushed, so a child killed mid-run leaves only whole records."""

    def __init__(self, path):
        self.file = open(path, "w", encoding="utf-8")
        self.lock = threading.Lock()
        self.ended = False

    def record(self, record):
        with self.lock:
            if not self.ended:
                self.file.write(json.dumps(record) + "\n")
                self.file.flush()

    def end(self, status, **extra):
        with self.lock:
            if not self.ended:
                self.ended = True
                self.file.write(json.dumps({"event": "end", "status": status, **extra}) + "\n")
                self.file.flush()   # no fsync: the parent reads it through the page cache once this process ended


def config_from_job(job, **overrides):
    fields = dict(root=job["root"], include=tuple(job.get("include") or ()), exclude=tuple(job.get("exclude") or ()),
                  depth=int(job.get("depth", 2)), function_episodes=bool(job.get("function_episodes", False)),
                  max_frames=int(job.get("max_frames", 10_000)), max_bytes=int(job.get("max_bytes", 1_000_000)),
                  value_budget=int(job.get("value_budget", 200)), max_episodes=int(job.get("max_episodes", 1000)),
                  content_ids=bool(job.get("content_ids", True)), raw_values=bool(job.get("raw_values", False)),
                  native_comprehensions=bool(job.get("native_comprehensions", False)),
                  backend=job.get("backend", "auto"), origin=dict(job.get("origin") or {}))
    fields.update(overrides)
    return TraceConfig(**fields)


class _Watchdog:
    """The unit's soft timeout, in one thread of the tracer's own (starting a thread costs a unit milliseconds, so
    the session is given no timer of its own: `config_from_job` leaves soft_timeout_s out). At `seconds` it asks the
    recorder to stop: the traced thread writes the open traces with outcome "timeout" at its next event and ends the
    child. If it never gets there (stuck in a library or in C), GRACE_S later this thread writes them and ends it."""

    def __init__(self, out, seconds):
        self.out = out
        self.seconds = seconds
        self.recorder = None
        self.done = threading.Event()

    def start(self):
        if self.seconds:
            threading.Thread(target=self._run, daemon=True, name="cwm-tracer-watchdog").start()

    def _run(self):
        if self.done.wait(self.seconds):
            return
        if self.recorder is not None:
            self.recorder.request_stop()
        if self.done.wait(GRACE_S):
            return
        if self.recorder is not None:
            try:
                self.recorder.finish_all("timeout")
            except Exception:
                pass
        self.out.end("timeout")
        os._exit(0)


def _timed_out(out):
    """In the traced thread, right after the open traces were written with outcome "timeout"."""
    out.end("timeout")
    os._exit(0)


def run_function(job, out, watchdog):
    code_text, entry, args_text = job["code"], job.get("entry") or "f", job.get("input") or ""
    linecache.cache[INPUT_FILE] = (len(code_text), None, code_text.splitlines(True), INPUT_FILE)
    module = types.ModuleType("__cwm_input__")
    sys.modules[module.__name__] = module
    try:
        exec(compile(code_text, INPUT_FILE, "exec"), module.__dict__)
        fn = module.__dict__.get(entry)
        if fn is None:
            raise NameError(f"the code defines no {entry!r}")
        code = code_of(fn)
        namespace = dict(module.__dict__, __cwm_args__=lambda *a, **k: (a, k))
        args, kwargs = eval(compile(f"__cwm_args__({args_text})", "<arguments>", "eval"), namespace)
    except BaseException as e:  # the unit's own code failed before the traced call: say so, the tracer is fine
        return "error", {"error": f"{type(e).__name__}: {e}"[:500]}
    config = config_from_job(job, virtual_files=(INPUT_FILE,))
    entry_def = next((i for i, line in enumerate(code_text.split("\n"))
                      if line.lstrip().startswith(("def " + entry, "async def " + entry))), 0)
    # The unit every record of this run comes from (the held-out split follows it): the code and the call.
    unit = "function:" + hashlib.sha256(json.dumps([code_text, entry, args_text]).encode()).hexdigest()[:24]
    origin = {"kind": "function", "path": INPUT_FILE, "qualname": entry, "input": args_text, "unit": unit}
    session = Session(config, out.record, entry_code=code, entry_origin=origin, entry_context=(code_text, entry_def))
    watchdog.recorder = session.recorder
    session.start(on_timeout=lambda: _timed_out(out))
    status = "returned"
    try:
        fn(*args, **kwargs)
    except TraceStopped:
        status = "timeout"
    except BaseException:
        status = "raised"
    finally:
        session.stop()
    return status, {}


def run_pytest(job, out, watchdog, tests):
    """Run the collected test `job["nodeid"]` (tests: pytest_plugin.TracedTests), its call traced."""
    nodeid = job["nodeid"]
    item = tests.items.get(nodeid)
    if item is None:
        print(f"tracer: {nodeid} was not collected", file=sys.stderr, flush=True)
        return "error", {"error": "not collected"}
    path, _, name = nodeid.partition("::")
    origin = {"kind": "test", "path": path, "qualname": name or item.name, "input": None, "unit": "test:" + nodeid}
    return tests.run(item, config_from_job(job), origin, out, watchdog, lambda: _timed_out(out)), {}


def run_unit(job, tests=None):
    """Run one unit in this process and write its records and end line to `job["out"]`."""
    out = _Output(job["out"])
    watchdog = _Watchdog(out, job.get("soft_timeout_s"))
    watchdog.start()
    if job["mode"] == "pytest":
        status, extra = run_pytest(job, out, watchdog, tests)
    else:
        status, extra = run_function(job, out, watchdog)
    watchdog.done.set()
    out.end(status, **extra)


def read_job(path, command):
    """The job file's fields, checked; ValueError names what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            job = json.load(f)
        mode = job["mode"]
        if mode not in ("pytest", "function"):
            raise ValueError(f"mode must be 'pytest' or 'function', not {mode!r}")
        if not os.path.isdir(job["root"]):
            raise ValueError(f"root {job['root']!r} is not a directory")
        if command == "run":
            if "out" not in job:
                raise ValueError("missing field 'out'")
            if mode == "pytest" and not job.get("nodeid"):
                raise ValueError("pytest mode needs a 'nodeid'")
            if mode == "function" and not isinstance(job.get("code"), str):
                raise ValueError("function mode needs 'code' (a string)")
    except KeyError as e:
        raise ValueError(f"missing field {e}") from None
    except (OSError, TypeError) as e:
        raise ValueError(str(e)) from None
    return job


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("run", "serve"):
        print("usage: python -m tracer run JOB.json | python -m tracer serve JOB.json", file=sys.stderr)
        return 2
    command, path = argv
    try:
        job = read_job(path, command)
    except ValueError as e:
        print(f"tracer: bad job file {path}: {e}", file=sys.stderr)
        return 2
    if command == "serve":
        from .server import serve
        serve(job)
    elif job["mode"] == "pytest":
        from .pytest_plugin import collect_then
        path, sep, name = job["nodeid"].partition("::")
        root = os.path.realpath(job["root"])
        collect_then(root, [os.path.join(root, path) + sep + name], lambda tests: run_unit(job, tests))
    else:
        run_unit(job)
    return 0
