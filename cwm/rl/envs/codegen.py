"""Code generation: write a function that passes hidden tests (single turn), checked in the jail.

The reply's code (the first ```python fence, else the whole reply) and the task's hidden tests run in a fresh
temporary directory under `cwm.jail.run_jailed` — a time limit that kills the whole process tree, a memory
limit, no network — with an isolated interpreter (`-I`: no user site, no PYTHONPATH). +1 when the tests exit 0.
Tasks are JSON lines: {"id": str, "prompt": str, "entry": str, "tests": ["assert f(1) == 2", ...]}.
"""
from __future__ import annotations

import ast
import json
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cwm.jail import Limits, run_jailed
from cwm.rl.env import Message, StepResult, finished, malformed

SYSTEM = "You write Python functions. Reply with the code in one ```python block."
_CODE_BLOCK = re.compile(r"```(?:python|py)?\n(.*?)```", re.S)
# The check runs the solution, then each test, in one namespace; the exit code is the verdict.
_CHECK = """\
import json
ns = {"__name__": "solution"}
exec(compile(open("solution.py").read(), "solution.py", "exec"), ns)
for test in json.load(open("tests.json")):
    exec(compile(test, "tests.json", "exec"), ns)
"""


@dataclass(frozen=True)
class CodeTask:
    id: str
    prompt: str
    entry: str
    tests: tuple[str, ...] = field(default_factory=tuple)

    def messages(self) -> list[Message]:
        return [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{self.prompt.rstrip()}\nName the function `{self.entry}`."}]


def load_tasks(path: str | Path) -> list[CodeTask]:
    """Tasks from a JSON-lines file; a bad line is reported with its number."""
    tasks = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            tasks.append(CodeTask(id=str(obj["id"]), prompt=obj["prompt"], entry=obj["entry"],
                                  tests=tuple(obj["tests"])))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{n}: not a code task ({e}); expected "
                             '{"id", "prompt", "entry", "tests": [...]}') from e
    return tasks


def extract_code(reply: str) -> str:
    block = _CODE_BLOCK.search(reply)
    return block.group(1) if block else reply


class CodeGenEnv:
    name = "codegen"

    def __init__(self, task: CodeTask, limits: Limits):
        self.task = task
        self.limits = limits

    def reset(self) -> list[Message]:
        return self.task.messages()

    def step(self, action: str) -> StepResult:
        code = extract_code(action)
        try:
            tree = ast.parse(code)
        except SyntaxError as e:
            return malformed(f"syntax error: {e.msg} (line {e.lineno})")
        if not any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == self.task.entry
                   for n in tree.body):
            return malformed(f"no function named {self.task.entry}")
        with tempfile.TemporaryDirectory(prefix="cwm-rl-codegen-") as work:
            Path(work, "solution.py").write_text(code)
            Path(work, "tests.json").write_text(json.dumps(list(self.task.tests)))
            Path(work, "check.py").write_text(_CHECK)
            result = run_jailed([sys.executable, "-I", "check.py"], cwd=work, limits=self.limits)
        passed = result.returncode == 0 and not result.timed_out
        return finished(passed, timed_out=result.timed_out, isolation=result.isolation,
                        stderr_tail=result.stderr[-300:])

    def close(self) -> None:
        pass


class CodeGenTasks:
    name = CodeGenEnv.name

    def __init__(self, tasks: list[CodeTask], limits: Limits | None = None):
        if not tasks:
            raise ValueError("no code-generation tasks given")
        self.tasks = tasks
        self.limits = limits or Limits(timeout_s=10.0, memory_mb=512, max_procs=32)

    def __len__(self) -> int:
        return len(self.tasks)

    def make(self, index: int) -> CodeGenEnv:
        return CodeGenEnv(self.tasks[index % len(self.tasks)], self.limits)
