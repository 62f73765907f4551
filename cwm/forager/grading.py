"""Graders that cannot be gamed: what decides an SWE episode's reward, for collection and RL alike.

Before the tests run, everything a policy could use to make failing code look passing is put back:

- every file under the task's test paths (`tasks.TEST_PATH`: tests/, test_*.py, *_test.py, conftest.py) is
  deleted and the pristine copies (the image's source at `images.SOURCE_DIR`) written back, then the task's own
  starting test files and hidden tests over them: a deleted, skipped or rewritten test is restored;
- pytest's configuration files (pytest.ini, tox.ini, setup.cfg, pyproject.toml) anywhere in the repository, and
  top-level modules that would shadow the runner (pytest, _pytest, pluggy, the report plugin, sitecustomize):
  pristine copies back, new ones deleted;
- the run is an explicit list of test ids (fail-to-pass + pass-to-pass), never discovery, and a test counts only
  when the report plugin says `passed` (skipped, xfailed, missing are failures);
- added lines in non-test files that name the runner (`pytest`, `_pytest`, `pluggy`, the report plugin or its
  variable) are tampering: the code under test has no business reaching into the test runner, and an import-time
  monkeypatch of the runner is the one attack a restore cannot undo. Such a patch scores -1 (outcome flagged).

The sandbox's git history stays a single fresh commit (`Sandbox.begin`), so the pristine code is not there to read.
Flaky-aware credit: a required test that fails, is in `flaky` (measured at image build/task generation) and
still fails after `reruns` re-runs of just the failing ones gives the tests component `flaky_credit` instead of -1
when all the others passed.
"""
from __future__ import annotations

import json
import re
import shlex

from cwm.forager import images
from cwm.forager.sandbox import Sandbox, SandboxError

CONFIG_FILES = ("pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml")
SHADOWS = ("pytest", "_pytest", "pluggy", "py", "cwm_pytest_report", "sitecustomize", "usercustomize")
RUNNER_WORDS = re.compile(r"\b(_?pytest|pluggy|cwm_pytest_report|CWM_PYTEST_REPORT)\b")
MAX_ID_CHARS = 100_000   # longer explicit lists run their test files instead (still explicit, never discovery)

# Runs inside the sandbox with the image's python (-I: nothing from /repo is imported while restoring).
_RESTORE = r"""
import json, os, re, shutil, sys
src, repo, test_re = sys.argv[1], sys.argv[2], re.compile(sys.argv[3])
configs, shadows = json.loads(sys.argv[4]), json.loads(sys.argv[5])
def protected(rel):
    top = rel.split("/")[0]
    mod = top[:-3] if top.endswith(".py") else top
    return bool(test_re.search(rel)) or os.path.basename(rel) in configs or mod in shadows
def walk(root):
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in (".git", "__pycache__")]
        for f in files:
            yield os.path.relpath(os.path.join(d, f), root)
removed, restored = [], []
for rel in list(walk(repo)):
    if protected(rel):
        os.remove(os.path.join(repo, rel)); removed.append(rel)
for rel in walk(src) if os.path.isdir(src) else []:
    if protected(rel):
        dst = os.path.join(repo, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(os.path.join(src, rel), dst); restored.append(rel)
print(json.dumps({"removed": removed, "restored": restored}))
"""


def pristine_dir(sandbox: Sandbox) -> str:
    """Where the sandbox keeps the repository as the image was built (Docker: SOURCE_DIR; local: the source)."""
    return getattr(sandbox, "pristine_dir", images.SOURCE_DIR)


def restore_tests(sandbox: Sandbox, task) -> dict:
    """Put every protected file back (module docstring); returns what was removed and what restored."""
    from cwm.forager.tasks import TEST_PATH

    args = [pristine_dir(sandbox), "/repo", TEST_PATH.pattern, json.dumps(list(CONFIG_FILES)),
            json.dumps(list(SHADOWS))]
    r = sandbox.exec("python -I -c " + shlex.quote(_RESTORE) + " " + " ".join(shlex.quote(a) for a in args), 120)
    if r.exit_code != 0:
        raise SandboxError(f"restoring the task's test files failed: {r.output[-500:]}")
    try:
        done = json.loads(r.output.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        raise SandboxError(f"restoring the task's test files printed no summary: {r.output[-300:]}") from None
    from cwm.forager.tasks import TEST_PATH as test_re
    overlay = {p: c for p, c in task.start_files.items() if _is_protected(p, test_re)}
    overlay.update(task.test_files)
    for path, content in overlay.items():
        err = sandbox.write_file(path, content) if content is not None else None
        if content is None:
            sandbox.exec(f"rm -f -- {shlex.quote(path)}", 30)
        if err:
            raise SandboxError(f"writing the task's test file {path} failed: {err}")
    return done


def _is_protected(path: str, test_re) -> bool:
    top = path.split("/")[0]
    return bool(test_re.search(path)) or path.rsplit("/", 1)[-1] in CONFIG_FILES or \
        (top[:-3] if top.endswith(".py") else top) in SHADOWS


def runner_tampering(patch: str) -> list[str]:
    """Files whose added lines name the test runner, outside the test paths (see the module docstring)."""
    from cwm.forager.tasks import TEST_PATH

    hits, current = [], None
    for line in patch.splitlines():
        if line.startswith("+++ "):
            current = line[4:].removeprefix("b/")
        elif line.startswith("+") and current and not _is_protected(current, TEST_PATH) \
                and RUNNER_WORDS.search(line) and current not in hits:
            hits.append(current)
    return hits


def required_tests(task) -> list[str]:
    return list(dict.fromkeys(task.fail_to_pass + task.pass_to_pass))


def grade(sandbox: Sandbox, task, timeout_s: float = 900.0, *, flaky: set[str] | None = None,
          flaky_credit: float | None = None, reruns: int = 2, patch: str | None = None) -> dict:
    """Restore, run the explicit test list, score. Returns {"passed", "components": {"tests": ...}, ...}.
    `patch`: the sandbox's diff when the caller has just taken it (one `git diff` a submit, not two)."""
    patch = sandbox.patch() if patch is None else patch
    tampered = runner_tampering(patch)
    restored = restore_tests(sandbox, task)
    need = required_tests(task)
    ids = need if sum(len(t) + 3 for t in need) < MAX_ID_CHARS else sorted({t.split("::")[0] for t in need})
    run = sandbox.run_tests(ids, timeout_s=timeout_s)
    failed = [t for t in need if run.outcomes.get(t) != "passed"]
    stats = {"tests_required": len(need), "tests_failed": len(failed), "test_summary": run.summary,
             "restored": len(restored["restored"]), "removed": len(restored["removed"])}
    if tampered:
        return {"passed": False, "components": {"tests": -1.0}, "tampering": tampered, **stats}
    tests = 1.0 if not failed else -1.0
    flaky_failed = [t for t in failed if t in (flaky or set())]
    if failed and flaky_failed == failed:
        # only known-flaky tests failed: re-run just them; passing now is a pass, still failing earns the reduced
        # credit (None: no credit, -1)
        for _ in range(reruns):
            again = sandbox.run_tests(failed, timeout_s=timeout_s)
            failed = [t for t in failed if again.outcomes.get(t) != "passed"]
            if not failed:
                break
        tests = 1.0 if not failed else (flaky_credit if flaky_credit is not None else -1.0)
        stats.update(flaky_rerun=True, flaky_still_failing=len(failed), tests_failed=len(failed))
    return {"passed": tests == 1.0, "components": {"tests": tests}, **stats}


def docker_grader(spec, timeout_s: float = 900.0, dc=None):
    """A grader for single-turn answers (`EditAnswerEnv`): a fresh container of the task's image, the task's
    starting files, the answer's files written over them, then `grade`. Checker components (ruff, mypy) when
    the spec asks for them."""
    from cwm.forager.sandbox import DockerSandbox

    def run(task, new_files: dict) -> dict:
        client = dc or images.client()
        with DockerSandbox(task.image, dc=client, run_id="grade") as sb:
            sb.begin(task.start_files)
            for path, content in new_files.items():
                err = sb.write_file(path, content)
                if err:
                    raise SandboxError(f"writing {path} failed: {err}")
            before = {p: task.start_files.get(p) for p in new_files}
            result = grade(sb, task, timeout_s, flaky=set(getattr(task, "flaky", ()) or ()),
                           flaky_credit=spec.flaky_credit, reruns=spec.flaky_reruns)
            if spec.checkers:
                result["components"].update(check_components(sb, spec.checkers, before, new_files))
            return result
    return run


def check_components(sandbox: Sandbox, checkers, before: dict, after: dict) -> dict[str, float]:
    """lint (ruff) and types (mypy/pyright) components: +1 when the changed Python files have no more findings
    than before the change, -1 when they have more. A checker missing from the image is an error (install it at
    build-image: `cwm-forager build-image --checkers ruff,mypy`)."""
    files = [p for p in after if p.endswith(".py") and after[p] is not None]
    out: dict[str, float] = {}
    for checker in checkers:
        component = "lint" if checker == "ruff" else "types"
        if not files:
            out[component] = 1.0
            continue
        now = _findings(sandbox, checker, files)
        for p in files:  # the same files as they were
            if before.get(p) is None:
                sandbox.exec(f"rm -f -- {shlex.quote(p)}", 30)
            else:
                sandbox.write_file(p, before[p])
        was = _findings(sandbox, checker, [p for p in files if before.get(p) is not None])
        for p in files:
            sandbox.write_file(p, after[p])
        out[component] = 1.0 if now <= was else -1.0
    return out


def _findings(sandbox: Sandbox, checker: str, files: list[str]) -> int:
    if not files:
        return 0
    quoted = " ".join(shlex.quote(f) for f in files)
    cmd = {"ruff": f"ruff check --no-cache --output-format concise {quoted}",
           "mypy": f"mypy --no-incremental --ignore-missing-imports --no-error-summary {quoted}",
           "pyright": f"pyright {quoted}"}[checker]
    r = sandbox.exec(f"command -v {checker} >/dev/null || exit 127; {cmd}", 300)
    if r.exit_code == 127:
        raise SandboxError(f"checker {checker} is not installed in the image: rebuild it with "
                           f"`cwm-forager build-image REPO --tag T --checkers {checker}`")
    return sum(1 for line in r.output.splitlines() if re.match(r"^\S+\.py:\d+:", line))


def grade_test_writer(open_sandbox, task, test_files: dict[str, str], timeout_s: float = 900.0) -> dict:
    """Kimi-Dev's TestWriter check, both sides: the written tests must fail on the buggy code (the task's
    starting files) *and* pass once the oracle fix is applied, each in a fresh sandbox with the test paths
    restored first and only the written test files run (explicit paths). A collection error on either side,
    a test that passes on both or fails on both, scores -1."""
    from cwm.forager.tasks import TEST_PATH

    for path in test_files:
        name = path.rsplit("/", 1)[-1]
        if not TEST_PATH.search(path) or name == "conftest.py" or name in CONFIG_FILES:
            return {"passed": False, "components": {"tests": -1.0},
                    "rejected": f"{path} is not a test module (tests/..., test_*.py or *_test.py; no conftest)"}
    sides = {}
    for side, files in (("buggy", task.start_files), ("fixed", {**task.start_files, **task.fix_files})):
        with open_sandbox(task) as sb:
            sb.begin(files)
            restore_tests(sb, task)
            for path, content in test_files.items():
                err = sb.write_file(path, content)
                if err:
                    raise SandboxError(f"writing {path} failed: {err}")
            run = sb.run_tests(sorted(test_files), timeout_s=timeout_s)
        ours = {k: v for k, v in run.outcomes.items() if k.split("::")[0] in test_files}
        sides[side] = {"ran": run.ran and bool(ours), "failed": sorted(k for k, v in ours.items() if v != "passed"),
                       "passed": sorted(k for k, v in ours.items() if v == "passed"), "summary": run.summary}
    buggy, fixed = sides["buggy"], sides["fixed"]
    ok = buggy["ran"] and fixed["ran"] and bool(buggy["failed"]) and not fixed["failed"]
    verdict = ("reproduces" if ok else "collection_error" if not (buggy["ran"] and fixed["ran"])
               else "passes_on_buggy" if not buggy["failed"] else "fails_with_fix")
    return {"passed": ok, "components": {"tests": 1.0 if ok else -1.0}, "verdict": verdict,
            "buggy": buggy["summary"], "fixed": fixed["summary"]}
