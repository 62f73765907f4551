"""Kimi-Dev's TestWriter: write a test that reproduces the bug (single turn, checked in the sandbox on both sides).

The prompt is the task's statement and the files it concerns; the reply is edit blocks (`cwm/data/edits.py`) that
create or change test modules only. The reward (`cwm/forager/grading.py: grade_test_writer`): +1 only when the
written tests fail on the buggy code *and* pass with the oracle fix — CWM's test-writing env checks only the
buggy side, which a test that always fails would pass. Malformed replies, test files outside the test paths, a
collection error, a test that passes on both sides or fails on both: -1.
"""
from __future__ import annotations

from typing import Callable

from cwm.data.edits import MalformedAnswer, parse_answer
from cwm.rl.env import FAIL, Message, StepResult
from cwm.rl.envs.swe_rl import task_prompt

INSTRUCTION = ("\nDo not fix the bug. Write a pytest test that reproduces it: it must fail on the code as it is "
               "and pass once the bug is fixed. Answer with edit blocks that create the test file (an empty "
               "SEARCH creates a file), e.g. tests/test_issue.py.")


class TestWriterEnv:
    name = "testwriter"
    __test__ = False  # not a pytest class

    def __init__(self, task, open_sandbox: Callable, timeout_s: float = 300.0):
        self.task, self.open_sandbox, self.timeout_s = task, open_sandbox, timeout_s

    def reset(self) -> list[Message]:
        messages = task_prompt(self.task.statement, self.task.start_files)
        messages[1]["content"] += INSTRUCTION
        return messages

    def step(self, action: str) -> StepResult:
        from cwm.forager.grading import grade_test_writer
        from cwm.forager.sandbox import SandboxError

        try:
            files = parse_answer(self.task.start_files, action)
        except MalformedAnswer as e:
            return StepResult([], FAIL, True, {"passed": False, "malformed": str(e), "outcome": "format_error"})
        try:
            result = grade_test_writer(self.open_sandbox, self.task, files, self.timeout_s)
        except SandboxError as e:
            return StepResult([], FAIL, True, {"passed": False, "outcome": "sandbox_error", "error": str(e)[-500:]})
        components = result.pop("components")
        return StepResult([], components["tests"], True, {**result, "outcome": "submitted", "reward_terms": components})

    def close(self) -> None:
        pass


class TestWriterTasks:
    name = TestWriterEnv.name
    __test__ = False

    def __init__(self, tasks: list, open_sandbox: Callable, timeout_s: float = 300.0):
        if not tasks:
            raise ValueError("no testwriter tasks given")
        self.tasks, self.open_sandbox, self.timeout_s = tasks, open_sandbox, timeout_s

    @classmethod
    def from_spec(cls, spec) -> "TestWriterTasks":
        from cwm.forager import images
        from cwm.forager.sandbox import DockerSandbox, sweep_containers
        from cwm.forager.tasks import TaskError, load_tasks
        from cwm.rl.recipe import RecipeError

        if not spec.tasks:
            raise RecipeError("env testwriter: set `tasks:` to a forager task file with images (cwm-forager tasks IMAGE)")
        try:
            tasks = load_tasks(spec.tasks)[:spec.limit]
        except (TaskError, OSError) as e:
            raise RecipeError(f"env testwriter: {e}") from None
        if any(not t.image or not t.fix_files for t in tasks):
            raise RecipeError("env testwriter: every task needs an image and an oracle fix (pr-history tasks have "
                              "no image: make tasks with `cwm-forager tasks IMAGE`)")
        try:
            dc = images.client()
        except images.ImageError as e:
            raise RecipeError(f"env testwriter: needs a Docker engine ({e})") from None
        sweep_containers(dc)
        return cls(tasks, lambda t: DockerSandbox(t.image, dc=dc, run_id="testwriter"), spec.timeout_s)

    def __len__(self) -> int:
        return len(self.tasks)

    def make(self, index: int) -> TestWriterEnv:
        return TestWriterEnv(self.tasks[index % len(self.tasks)], self.open_sandbox, self.timeout_s)
