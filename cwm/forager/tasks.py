"""Tasks: a repository state with failing tests, the tests that decide success, and the known fix.

A task is three file overlays on the repository image, so mutate-fix and issue-fix tasks run the same way:
`start_files` are written before the agent starts (the bug), `test_files` are written just before scoring and
never shown to the agent (an issue fix's new tests), `fix_files` are what the oracle policy writes back.

- mutate-fix: `cwm.forager.mutate` candidates, tried in a seeded order, kept when at least one test that
  passes on the pristine repository fails and the suite still runs (no collection error); near-identical
  tasks (the same function, the same failing tests, nearly the same diff) are dropped.
- issue-fix: commits of a git history that change both code and tests, kept when the parent's code fails the
  fix's tests and the fix passes them.
- pr-history: commits of a git history as offline tasks (SWE-RL), no image and nothing run: the commit message is
  the issue text, the touched files at the parent are the context (`start_files`), the commit's versions of them
  are the oracle (`fix_files`). Kept when the oracle can be written as SEARCH/REPLACE edit blocks
  (`cwm/data/edits.py`) that reproduce it exactly, so the oracle answer always scores 1.0.
"""
from __future__ import annotations

import difflib
import json
import random
import re
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from cwm.data.shards import record_key
from cwm.forager import mutate
from cwm.forager.sandbox import Sandbox, SandboxError
from cwm.forager.testrun import TestRun

KINDS = ("mutate-fix", "issue-fix", "pr-history")
TEST_PATH = re.compile(r"(^|/)(tests?|testing)/|(^|/)test_[^/]*\.py$|_test\.py$|(^|/)conftest\.py$")
SKIP_PATH = re.compile(r"(^|/)(docs?|examples?|benchmarks?|scripts?|setup\.py$|noxfile\.py$|_version\.py$)")


@dataclass
class Task:
    id: str
    kind: str
    repo: str
    commit: str | None
    image: str
    statement: str
    fail_to_pass: list[str]
    pass_to_pass: list[str]
    mutation: dict | None
    start_files: dict[str, str | None] = field(default_factory=dict)
    fix_files: dict[str, str | None] = field(default_factory=dict)
    test_files: dict[str, str] = field(default_factory=dict)
    flaky: list[str] = field(default_factory=list)   # required tests known to flip (image build): graded leniently
    candidates: list[str] = field(default_factory=list)   # pr-history: files a localisation turn chooses among

    def public(self) -> dict:
        """The task as a trajectory record carries it (DESIGN §4): no file contents."""
        keys = ("id", "kind", "repo", "commit", "image", "statement", "fail_to_pass", "pass_to_pass", "mutation")
        return {k: getattr(self, k) for k in keys}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


class TaskError(ValueError):
    """A tasks file or task generation problem; the message names the input and what to do."""


def load_tasks(path: str | Path) -> list[Task]:
    tasks = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                tasks.append(Task.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError, KeyError) as exc:
                raise TaskError(f"{path}:{n}: not a task record ({exc}); regenerate it with `cwm-forager tasks`")
    if not tasks:
        raise TaskError(f"{path}: no tasks; generate some with `cwm-forager tasks IMAGE -o {path}`")
    return tasks


def write_tasks(tasks: list[Task], path: str | Path) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text("".join(t.to_json() + "\n" for t in tasks))
    tmp.replace(path)


def statement_from_failures(repo: str, run: TestRun, failing: list[str], intro: str) -> str:
    """A problem statement written from the failing tests' output, like a bug report pasting a CI log."""
    shown = failing[:3]
    more = f"\n(and {len(failing) - len(shown)} more)" if len(failing) > len(shown) else ""
    logs = "\n\n".join(f"_____ {t} _____\n{_cut(_stable(run.failures.get(t, '(no output)')), 1500)}" for t in shown)
    return (f"{intro}\n\nFailing tests in {repo}:\n" + "\n".join(f"- {t}" for t in shown) + more +
            f"\n\nTest output:\n```\n{logs}\n```\n\nFind the cause in the code and fix it so that these tests pass "
            f"and the other tests keep passing. Do not change the tests.")


def _stable(text: str) -> str:
    """Drop what differs between runs of the same failure (object addresses, timings), so tasks are
    deterministic for a seed."""
    text = re.sub(r"\b0x[0-9a-fA-F]{6,}\b", "0x...", text)
    return re.sub(r"\bin \d+\.\d+s\b", "in ...s", text)


def _cut(text: str, budget: int) -> str:
    return text if len(text) <= budget else text[: budget // 2] + "\n[...]\n" + text[-budget // 2:]


# ---------------------------------------------------------------------------------------------- mutate-fix

def source_files(sandbox: Sandbox) -> dict[str, str]:
    """The repository's non-test Python files (path -> text), read inside the sandbox."""
    r = sandbox.exec("git ls-files -- '*.py'", 60)
    files = {}
    for path in sorted(r.output.split()):
        if TEST_PATH.search(path) or SKIP_PATH.search(path):
            continue
        text = sandbox.read_file(path)
        if text is not None:
            files[path] = text
    return files


def ordered_candidates(files: dict[str, str], seed: int) -> list[mutate.Mutation]:
    """All candidates, shuffled per operator with `seed`, then interleaved so every operator gets turns."""
    by_op: dict[str, list[mutate.Mutation]] = {op: [] for op in mutate.OPERATORS}
    for path, text in sorted(files.items()):
        for m in mutate.candidates(path, text):
            by_op[m.operator].append(m)
    rng = random.Random(seed)
    for op in mutate.OPERATORS:
        rng.shuffle(by_op[op])
    order: list[mutate.Mutation] = []
    while any(by_op.values()):
        for op in mutate.OPERATORS:
            if by_op[op]:
                order.append(by_op[op].pop())
    return order


def validate_mutation(sandbox: Sandbox, m: mutate.Mutation, original: str, passing: set[str],
                      timeout_s: float, flaky: frozenset[str] = frozenset()
                      ) -> tuple[TestRun, list[str], list[str]] | None:
    """Run the suite with `m` applied; (run, fail_to_pass, pass_to_pass) when it is a task, else None.

    Flaky tests (their outcome flipped across the image build's runs) never decide a task: a failure of one says
    nothing about the mutation, so they are never fail-to-pass. They stay pass-to-pass (graded with re-runs and
    reduced credit). A mutation whose only failing tests are flaky is quarantined: no task."""
    err = sandbox.write_file(m.path, m.source)
    if err:
        return None
    try:
        run = sandbox.run_tests(timeout_s=timeout_s)
    finally:
        if sandbox.write_file(m.path, original):
            raise SandboxError(f"could not restore {m.path} after trying a mutation")
    if not run.ran:
        return None
    f2p = sorted(t for t in passing if run.outcomes.get(t) != "passed" and t not in flaky)
    p2p = sorted(t for t in passing if run.outcomes.get(t) == "passed" or t in flaky)
    missing = [t for t in f2p if t not in run.outcomes]
    if not f2p or missing or (len(passing) > 1 and not p2p):
        return None
    return run, f2p, p2p


def generate_mutate_fix(image: str, repo: str, commit: str | None, passing: list[str], n: int, *,
                        open_sandbox: Callable[[], Sandbox], seed: int = 0, workers: int = 1,
                        max_tries: int | None = None, timeout_s: float = 300.0,
                        progress: Callable[[int, int], None] | None = None, flaky: list[str] = ()) -> list[Task]:
    """Up to `n` validated mutate-fix tasks. Candidates are tried in seeded order in batches of `workers`, and
    accepted in that order, so the same seed gives the same tasks whatever the timing."""
    passing_set = set(passing)
    with open_sandbox() as sb:
        sb.begin()
        files = source_files(sb)
    if not files:
        raise TaskError(f"{image}: no non-test Python source files to mutate")
    order = ordered_candidates(files, seed)[: max_tries or max(20, 10 * n)]
    tasks: list[Task] = []
    lock = threading.Lock()
    pool: list[Sandbox] = []

    def check(m: mutate.Mutation):
        with lock:
            sb = pool.pop() if pool else None
        sb = sb or open_sandbox()
        try:
            result = validate_mutation(sb, m, files[m.path], passing_set, timeout_s, frozenset(flaky))
        except SandboxError:  # this sandbox is in an unknown state: drop it, count the mutation as rejected
            sb.close()
            return None
        with lock:
            pool.append(sb)
        return result

    try:
        with ThreadPoolExecutor(max(1, workers)) as ex:
            for start in range(0, len(order), max(1, workers)):
                batch = order[start: start + max(1, workers)]
                for m, result in zip(batch, ex.map(check, batch)):
                    if result is None or len(tasks) >= n:
                        continue
                    run, f2p, p2p = result
                    task = _mutate_task(image, repo, commit, m, files[m.path], run, f2p, p2p)
                    task.flaky = sorted(set(flaky) & set(p2p))
                    if not any(_near_duplicate(task, t) for t in tasks):
                        tasks.append(task)
                if progress:
                    progress(len(tasks), start + len(batch))
                if len(tasks) >= n:
                    break
    finally:
        for sb in pool:
            sb.close()
    return tasks


def _mutate_task(image, repo, commit, m: mutate.Mutation, original: str, run: TestRun, f2p, p2p) -> Task:
    statement = statement_from_failures(repo, run, f2p, "After a recent change, some tests fail.")
    body = {"kind": "mutate-fix", "image": image, "mutation": m.to_dict(), "source": m.source}
    return Task(id=record_key(body), kind="mutate-fix", repo=repo, commit=commit, image=image,
                statement=statement, fail_to_pass=f2p, pass_to_pass=p2p, mutation=m.to_dict(),
                start_files={m.path: m.source}, fix_files={m.path: original})


def _changed_lines(task: Task) -> set[str]:
    lines = set()
    for path, new in task.start_files.items():
        old = task.fix_files.get(path) or ""
        for line in difflib.unified_diff(old.splitlines(), (new or "").splitlines(), lineterm="", n=0):
            if line[:1] in "+-" and not line.startswith(("+++", "---")):
                lines.add(line[0] + " ".join(line[1:].split()))
    return lines


def _near_duplicate(a: Task, b: Task, threshold: float = 0.5) -> bool:
    """Same mutated function and failing tests, and diffs with Jaccard similarity over `threshold`."""
    if a.mutation is None or b.mutation is None:
        return False
    same_place = (a.mutation["path"], a.mutation.get("function")) == (b.mutation["path"], b.mutation.get("function"))
    if not same_place or a.fail_to_pass != b.fail_to_pass:
        return False
    la, lb = _changed_lines(a), _changed_lines(b)
    return len(la & lb) / max(1, len(la | lb)) > threshold


# ---------------------------------------------------------------------------------------------- issue-fix

def _git(repo: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise TaskError(f"{repo}: git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def fix_commits(repo: Path, max_commits: int = 200) -> Iterator[tuple[str, str, list[str], list[str]]]:
    """(commit, parent, changed code files, changed test files) of commits touching both code and tests."""
    if not (repo / ".git").exists():
        raise TaskError(f"{repo}: not a git repository; issue-fix tasks need its history (use --kind mutate-fix)")
    for line in _git(repo, "log", "--no-merges", f"-n{max_commits}", "--format=%H %P").splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        commit, parent = parts
        changed = _git(repo, "diff", "--name-status", parent, commit).splitlines()
        code, tests = [], []
        for entry in changed:
            status, _, path = entry.partition("\t")
            if not path.endswith(".py"):
                continue
            if TEST_PATH.search(path):
                tests.append(path)
            elif status == "M":
                code.append(path)
        if code and tests:
            yield commit, parent, code, tests


def _show(repo: Path, commit: str, path: str) -> str | None:
    proc = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def generate_issue_fix(repo_dir: str | Path, image: str, *, open_sandbox: Callable[[], Sandbox], n: int = 10,
                       max_commits: int = 200, timeout_s: float = 300.0, flaky_runs: int = 3,
                       quarantined: list | None = None) -> list[Task]:
    """Issue-fix tasks from `repo_dir`'s history, validated in the repository image (which holds HEAD):
    with the parent's code and the fix's tests at least one test fails, with the fix's code all pass.

    The oracle (the fix) runs `flaky_runs` times: a commit whose fail-to-pass tests do not pass every time is
    quarantined (its id appended to `quarantined`), not emitted; pass-to-pass tests that flip are kept and marked
    flaky on the task (graded with re-runs and reduced credit)."""
    repo = Path(repo_dir).resolve()
    tasks: list[Task] = []
    with open_sandbox() as sb:
        for commit, parent, code, tests in fix_commits(repo, max_commits):
            if len(tasks) >= n:
                break
            # The agent starts from the parent's code *and tests* (the image holds HEAD, which may already
            # contain the new tests); the fix's tests are written only for scoring.
            start = {p: _show(repo, parent, p) for p in code + tests}
            fix = {p: _show(repo, commit, p) for p in code}
            test_files = {p: _show(repo, commit, p) for p in tests}
            test_files = {p: t for p, t in test_files.items() if t is not None}
            sb.begin({**start, **test_files})
            broken = sb.run_tests(timeout_s=timeout_s)
            sb.begin({**fix, **test_files})
            fixed = sb.run_tests(timeout_s=timeout_s)
            if not (broken.ran and fixed.ran):
                continue
            f2p = sorted(t for t in fixed.passed if broken.outcomes.get(t) != "passed")
            p2p = sorted(t for t in fixed.passed if broken.outcomes.get(t) == "passed")
            if not f2p:
                continue
            again = [sb.run_tests(f2p + p2p, timeout_s=timeout_s) for _ in range(max(0, flaky_runs - 1))]
            flaky = sorted(t for t in f2p + p2p if any(r.outcomes.get(t) != "passed" for r in again))
            if set(flaky) & set(f2p):
                if quarantined is not None:
                    quarantined.append(commit)
                continue
            message = _git(repo, "log", "-1", "--format=%B", commit).strip()
            intro = f"Issue: {message.splitlines()[0] if message else 'a bug'}\n\n{message}".rstrip()
            body = {"kind": "issue-fix", "image": image, "commit": commit}
            tasks.append(Task(id=record_key(body), kind="issue-fix", repo=repo.name, commit=parent, image=image,
                              statement=statement_from_failures(repo.name, broken, f2p, intro),
                              fail_to_pass=f2p, pass_to_pass=p2p, mutation=None,
                              start_files=start, fix_files=fix, test_files=test_files, flaky=flaky))
    return tasks


# ---------------------------------------------------------------------------------------------- pr-history

def require_history(repo: Path) -> None:
    """TaskError (one line) unless `repo` is a git work tree with at least one commit."""
    if not repo.is_dir():
        raise TaskError(f"{repo}: no such directory; pass --repo the root of a git clone")
    proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "-q", "HEAD"], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        inside = subprocess.run(["git", "-C", str(repo), "rev-parse", "--git-dir"], capture_output=True, text=True)
        why = "a git repository without commits" if inside.returncode == 0 else "not a git repository"
        raise TaskError(f"{repo}: {why}; pr-history tasks are mined from commits: point --repo at a clone "
                        f"with its history (not a copy without .git, nor a shallow export)")


def _blob(repo: Path, commit: str, path: str, max_bytes: int) -> str | None:
    """The text of `path` at `commit`; None when absent. ValueError when binary, not UTF-8 or over max_bytes."""
    proc = subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"], capture_output=True, timeout=60)
    if proc.returncode != 0:
        return None
    data = proc.stdout
    if len(data) > max_bytes or b"\0" in data:
        raise ValueError(f"{path} is binary or larger than {max_bytes} bytes")
    return data.decode("utf-8")


def generate_pr_history(repo_dir: str | Path, *, n: int = 10, max_commits: int = 500, max_files: int = 4,
                        max_file_bytes: int = 20000, include: str | None = None, max_candidates: int = 40,
                        progress: Callable[[int, int], None] | None = None) -> list[Task]:
    """Up to `n` offline pr-history tasks from `repo_dir`'s non-merge commits, newest first.

    A commit is kept when it has a parent and a message, touches 1..max_files files (renames count as a delete
    and an add; `include` is a regex the paths must match, e.g. `\\.py$`), every touched file is UTF-8 text of
    at most max_file_bytes on both sides, and its change round-trips through edit blocks."""
    from cwm.data.edits import oracle_answer

    repo = Path(repo_dir).resolve()
    require_history(repo)
    pattern = re.compile(include) if include else None
    tasks: list[Task] = []
    log = _git(repo, "log", "--no-merges", f"-n{max_commits}", "--format=%H %P").splitlines()
    for tried, line in enumerate(log, 1):
        if len(tasks) >= n:
            break
        if progress:
            progress(len(tasks), tried)
        parts = line.split()
        if len(parts) != 2:
            continue  # the root commit (no parent to start from)
        commit, parent = parts
        paths = [p for p in _git(repo, "diff", "--no-renames", "--name-only", parent, commit).splitlines() if p]
        if not paths or len(paths) > max_files or (pattern and not all(pattern.search(p) for p in paths)):
            continue
        try:
            start = {p: _blob(repo, parent, p, max_file_bytes) for p in paths}
            fix = {p: _blob(repo, commit, p, max_file_bytes) for p in paths}
        except (ValueError, UnicodeDecodeError):
            continue
        message = _git(repo, "log", "-1", "--format=%B", commit).strip()
        if not message or oracle_answer(start, fix) is None:
            continue
        body = {"kind": "pr-history", "repo": repo.name, "commit": commit}
        suffixes = {Path(p).suffix for p in paths}
        others = [p for p in _git(repo, "ls-tree", "-r", "--name-only", parent).splitlines()
                  if Path(p).suffix in suffixes and p not in start]
        tasks.append(Task(id=record_key(body), kind="pr-history", repo=repo.name, commit=parent, image="",
                          statement=message, fail_to_pass=[], pass_to_pass=[], mutation=None,
                          start_files=start, fix_files=fix,
                          candidates=sorted(set(paths) | set(others[:max_candidates]))))
    return tasks
