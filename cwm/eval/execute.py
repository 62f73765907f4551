"""Running benchmark code, which is untrusted, in the jail (`cwm.jail.run_jailed`: time, memory and process
limits, no network) with an isolated interpreter: call a function on an input, trace a call, run tests.

Nothing from a benchmark file or a model's answer runs in this process.
"""
from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cwm.jail import Limits, run_jailed

DEFAULT_LIMITS = Limits(timeout_s=10.0, memory_mb=1024, max_procs=32)
_REPO_ROOT = Path(__file__).resolve().parents[2]   # holds the standard-library-only `tracer` package

# Defines the code as a module, evaluates `entry(INPUT)` and prints the outcome as one JSON line.
_CALL = """\
import json, sys
job = json.load(open("job.json"))
ns = {"__name__": "__cwm_eval__"}
try:
    exec(compile(job["code"], "<code>", "exec"), ns)
    ns["__cwm_args__"] = lambda *a, **k: (a, k)
    args, kwargs = eval(compile("__cwm_args__(" + job["input"] + ")", "<input>", "eval"), ns)
except BaseException as e:
    print(json.dumps({"status": "bad-input", "error": f"{type(e).__name__}: {e}"[:300]})); sys.exit(0)
try:
    value = ns[job["entry"]](*args, **kwargs)
    print(json.dumps({"status": "returned", "repr": repr(value)}))
except BaseException as e:
    print(json.dumps({"status": "raised", "error": f"{type(e).__name__}: {e}"[:300]}))
"""


@dataclass
class CallResult:
    status: str          # returned | raised | bad-input | timeout | crashed
    repr: str | None = None
    error: str = ""


def call_function(code: str, entry: str, args_text: str, limits: Limits = DEFAULT_LIMITS) -> CallResult:
    """`entry(args_text)` after executing `code`, in a fresh jail; the value comes back as its `repr`."""
    with tempfile.TemporaryDirectory(prefix="cwm-eval-call-") as work:
        Path(work, "job.json").write_text(json.dumps({"code": code, "entry": entry, "input": args_text}))
        Path(work, "call.py").write_text(_CALL)
        result = run_jailed([sys.executable, "-I", "call.py"], cwd=work, limits=limits)
    if result.timed_out:
        return CallResult("timeout", error=f"over {limits.timeout_s:g} s")
    line = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    try:
        out = json.loads(line)
    except json.JSONDecodeError:
        return CallResult("crashed", error=(result.stderr or result.stdout)[-300:])
    return CallResult(out["status"], out.get("repr"), out.get("error", ""))


def trace_function(code: str, entry: str, args_text: str, *, depth: int = 2,
                   limits: Limits = DEFAULT_LIMITS) -> dict | None:
    """The trace record (DESIGN §2) of `entry(args_text)`, made by the project's tracer in a fresh jail, as
    `cwm-trace` writes function-mode records; None when the code or the input does not even run."""
    with tempfile.TemporaryDirectory(prefix="cwm-eval-trace-") as work:
        job = {"mode": "function", "root": work, "out": str(Path(work, "out.jsonl")), "code": code,
               "entry": entry, "input": args_text, "depth": depth, "content_ids": False}
        Path(work, "job.json").write_text(json.dumps(job))
        env = {"PYTHONPATH": str(_REPO_ROOT), "PATH": "/usr/bin:/bin"}
        run_jailed([sys.executable, "-m", "tracer", "run", "job.json"], cwd=work, limits=limits, env=env)
        out = Path(work, "out.jsonl")
        records = []
        if out.exists():
            for line in out.read_text().splitlines():
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if "frames" in obj:
                    records.append(obj)
    return records[0] if records else None


# Runs the solution, then the tests; HumanEval's `check(candidate)` is called when the tests define it.
_TESTS = """\
import json
job = json.load(open("job.json"))
ns = {"__name__": "__cwm_eval__"}
exec(compile(job["program"], "<solution>", "exec"), ns)
exec(compile(job["test"], "<test>", "exec"), ns)
if "check" in ns and job["entry"] in ns:
    ns["check"](ns[job["entry"]])
"""


def run_tests(program: str, test: str, entry: str, limits: Limits = DEFAULT_LIMITS) -> tuple[bool, str]:
    """(passed, why not) of `program` under `test`, in a fresh jail: passed when it exits 0 within the limits."""
    with tempfile.TemporaryDirectory(prefix="cwm-eval-tests-") as work:
        Path(work, "job.json").write_text(json.dumps({"program": program, "test": test, "entry": entry}))
        Path(work, "tests.py").write_text(_TESTS)
        result = run_jailed([sys.executable, "-I", "tests.py"], cwd=work, limits=limits)
    if result.timed_out:
        return False, f"timeout ({limits.timeout_s:g} s)"
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()
        return False, tail[-1][:300] if tail else f"exit code {result.returncode}"
    return True, ""
