"""Units of work: one pytest test (repository mode) or one line of a functions file (function mode).

A unit is also the shard *group*: its records land in one shard, and a resumed run skips the units whose group is
complete. Groups are stable across runs (a test's nodeid; a line's number and content hash), so a rerun finds them.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cwm.data.shards import record_key
from cwm.jail import Limits, run_jailed

from .target import TargetPython, TraceInputError, child_env

COLLECT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Unit:
    group: str                                  # shard group and resume key
    job: dict = field(hash=False)               # the unit's own JOB.json fields (mode, nodeid / code, entry, input)
    origin: dict = field(hash=False)            # origin of the placeholder record written when the child dies


def discover_tests(target: TargetPython, root: Path, *, memory_mb: int | None = 2048) -> tuple[list[Unit], str]:
    """The project's pytest tests, collected by the target interpreter inside the jail.

    Collection imports the project's test modules, which is running its code: it gets the same jail as tracing.
    Returns the units and a note on collection errors ("" when none).
    """
    if target.pytest is None:
        raise TraceInputError(f"{target.executable} has no pytest: install pytest into that environment "
                              "(or pass --python with one that has it)")
    with tempfile.TemporaryDirectory(prefix="cwm-collect-") as home:
        result = run_jailed(
            [target.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
             "--continue-on-collection-errors", "--rootdir", str(root)],
            cwd=root, limits=Limits(timeout_s=COLLECT_TIMEOUT_S, memory_mb=memory_mb, writable=(home,)),
            env=child_env(target, home=home))
    return units_from_collection(str(root), result.stdout, result.stderr, result.returncode, result.timed_out)


def units_from_collection(root: str, stdout: str, stderr: str, returncode: int | None,
                          timed_out: bool) -> tuple[list[Unit], str]:
    """The units of a `pytest --collect-only -q` run (in the jail, or in a container of a repository image), and a
    note on collection errors ("" when none)."""
    if timed_out:
        raise TraceInputError(f"{root}: collecting its tests took over {COLLECT_TIMEOUT_S:.0f} s; "
                              "trace a smaller part of it")
    # `--collect-only -q` prints one node id per line; anything else the project prints is not one
    nodeids = [line.rstrip() for line in stdout.splitlines()
               if "::" in line and not line.startswith((" ", "\t", "ERROR", "FAILED", "WARNING", "=", "_"))]
    tail = (stdout + stderr).strip().splitlines()[-1:] or ["no output"]
    if not nodeids:
        raise TraceInputError(f"{root}: no pytest tests found (pytest said: {tail[0].strip()})")
    broken = [line.split(" ", 1)[1].split(" - ")[0] for line in stdout.splitlines() if line.startswith("ERROR ")]
    note = "" if returncode == 0 else (f"pytest could not collect {', '.join(broken) or 'some tests'} "
                                              f"({tail[0].strip()}); tracing the {len(nodeids)} it could")
    units = [Unit(group=nodeid, job={"mode": "pytest", "nodeid": nodeid},
                  origin={"kind": "test", "path": nodeid.split("::", 1)[0], "qualname": nodeid.split("::", 1)[-1],
                          "input": None})
             for nodeid in dict.fromkeys(nodeids)]
    return units, note


_WHERE_FROM = (
    "import importlib.util, json, sys\n"
    "found = {}\n"
    "for name in sys.argv[1:]:\n"
    "    try:\n        found[name] = getattr(importlib.util.find_spec(name), 'origin', None)\n"
    "    except Exception:\n        found[name] = None\n"
    "print(json.dumps(found))\n"
)


def untraced_src_packages(target: TargetPython, root: Path) -> list[str]:
    """Warnings for a src-layout project (`root/src/PKG/__init__.py`) whose tests would not import its own code:
    `PKG` resolves to another copy (an installed one, outside `root`, so none of its code is traced) or to nothing.

    The tests import as `python -m pytest` in `root` would, and that puts `root` on the path, not `root/src`: the
    project must be installed into the interpreter (`pip install -e .`). Otherwise a run writes traces of the tests
    alone, and nothing says why. Asked of the target interpreter, in the jail."""
    src = root / "src"
    names = sorted(p.parent.name for p in src.glob("*/__init__.py")) if src.is_dir() else []
    if not names:
        return []
    with tempfile.TemporaryDirectory(prefix="cwm-probe-") as home:
        result = run_jailed([target.executable, "-c", _WHERE_FROM, *names], cwd=root,
                            limits=Limits(timeout_s=COLLECT_TIMEOUT_S, memory_mb=None, writable=(home,)),
                            env=child_env(target, home=home, pythonpath=str(root)))
    try:
        found = json.loads(result.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return []   # the probe itself failed: collection will say more
    warnings = []
    for name in names:
        origin = found.get(name)
        if origin is None:
            warnings.append(f"src/{name} is not importable by {target.executable}: its tests cannot use it; "
                            f"install the project there (pip install -e {root})")
        elif not Path(origin).resolve().is_relative_to(root):
            warnings.append(f"{name} is imported from {origin}, not from {src / name}: none of its code will be "
                            f"traced; install the project into {target.executable} (pip install -e {root})")
    return warnings


def read_function_units(path: Path) -> list[Unit]:
    """One unit per non-blank line of a JSONL file of {"code", "entry", "input"}; every line is checked first,
    so a bad line stops the run before anything is traced."""
    units = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise TraceInputError(f"{path}: not UTF-8 text ({e.reason}); write one JSON object per line") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TraceInputError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                                  'each line must be {"code": ..., "entry": ..., "input": ...}') from None
        if not isinstance(obj, dict) or not isinstance(obj.get("code"), str):
            raise TraceInputError(f'{path}:{lineno}: needs an object with a "code" string; '
                                  'each line must be {"code": ..., "entry": ..., "input": ...}')
        entry, args = obj.get("entry", "f"), obj.get("input", "")
        if not isinstance(entry, str) or not entry.isidentifier() or not isinstance(args, str):
            raise TraceInputError(f'{path}:{lineno}: "entry" must be a function name and "input" the call\'s '
                                  'arguments as Python source, e.g. "[1, 2], k=3"')
        job = {"mode": "function", "code": obj["code"], "entry": entry, "input": args}
        units.append(Unit(group=f"line{lineno}-{record_key(job)[:16]}", job=job,
                          origin={"kind": "function", "path": f"{path.name}:{lineno}", "qualname": entry,
                                  "input": args}))
    if not units:
        raise TraceInputError(f"{path}: no functions in it; write one JSON object per line")
    return units
