"""Single-turn software engineering with edit-block answers: SWE-RL's offline `swe_rl` environment, and Kimi-Dev's
BugFixer when the reward runs tests.

The prompt is the task's statement (an issue, or a commit message for pr-history tasks) and the content of the
files it concerns (`start_files`); the reply is SEARCH/REPLACE edit blocks in one `<solution>` section
(`cwm/data/edits.py`). The reward follows the env's `RewardSpec` (`cwm/rl/rewards.py`):

- `similarity` (SWE-RL): offline, nothing runs — the patch similarity against the oracle (`fix_files`).
- `tests`: the edited files are written into a fresh sandbox of the task's image and the task's explicit test
  list is graded (test files restored first: `cwm/forager/grading.py`): +1 / -1.
- `tests_then_similarity` (CWM): the tests, and when they fail, the similarity over the oracle's files.
- `composite`: tests plus checker components (ruff, mypy) and a per-turn cost, weighted and clamped.

A malformed reply is -1 in every mode and ends the episode (it is single-turn anyway). A sandbox failure ends
it with outcome `sandbox_error` (left out of training: the policy did nothing wrong).
"""
from __future__ import annotations

import re
from typing import Callable

from cwm.data.edits import MalformedAnswer, parse_answer
from cwm.rl.env import FAIL, Message, StepResult
from cwm.rl.rewards import (RewardSpec, composite_reward, localization_reward, oracle_file_similarity,
                            patch_similarity, tests_then_similarity)

SYSTEM = """You fix issues in a Python repository. You are shown the issue and the files it concerns.
Think if you like, then answer with SEARCH/REPLACE edit blocks inside one <solution> section:

<solution>
```python
### path/to/file.py
<<<<<<< SEARCH
exact lines to find
=======
lines to put there instead
>>>>>>> REPLACE
```
</solution>

Each SEARCH text must match the file exactly (indentation included); an empty SEARCH creates a new file."""


def task_prompt(statement: str, files: dict[str, str | None]) -> list[Message]:
    shown = "".join(f"### {path}\n```\n{text}{'' if text.endswith(chr(10)) else chr(10)}```\n\n"
                    for path, text in sorted(files.items()) if text is not None)
    user = f"Issue:\n{statement.strip()}\n\nFiles:\n\n{shown}".rstrip() + "\n"
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


# (task, new file contents) -> grading result: {"passed": bool, "components": {...}, ...}
Grader = Callable[[object, dict], dict]


LOCALIZE = ("Which files must change to resolve the issue? Candidates:\n{candidates}\n\nAnswer with the paths, "
            "one per line, inside <files> and </files>. Their contents come next.")
_FILES = re.compile(r"<files>(.*?)</files>", re.S)


def parse_files(reply: str) -> list[str] | None:
    """The paths of a localisation reply (None when it has no single <files> section)."""
    sections = _FILES.findall(reply)
    if len(sections) != 1:
        return None
    return list(dict.fromkeys(line.strip() for line in sections[0].splitlines() if line.strip()))


class EditAnswerEnv:
    """The reply's edit blocks are scored by the env's reward spec: one turn, or two with `spec.localize` (the
    first names the files to change; their overlap with the oracle's files is added to the final reward)."""

    def __init__(self, task, spec: RewardSpec, grader: Grader | None = None, name: str = "swe_rl"):
        self.task, self.spec, self.grader, self.name = task, spec, grader, name
        self.localized: float | None = None

    def candidates(self) -> list[str]:
        """The files the localisation turn chooses among: the task's own, and `candidates` when it lists more."""
        return sorted(set(self.task.start_files) | set(getattr(self.task, "candidates", None) or ()))

    def reset(self) -> list[Message]:
        if self.spec.localize:
            listed = LOCALIZE.format(candidates="\n".join(self.candidates()))
            user = f"Issue:\n{self.task.statement.strip()}\n\n{listed}"
            return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
        return task_prompt(self.task.statement, self.task.start_files)

    def step(self, action: str) -> StepResult:
        if self.spec.localize and self.localized is None:
            named = parse_files(action)
            if named is None:
                return StepResult([], FAIL, True, {"passed": False, "outcome": "format_error",
                                                   "malformed": "localize: expected one <files> section",
                                                   "reward_terms": {"format": FAIL}})
            changed = [p for p, c in self.task.fix_files.items() if c != self.task.start_files.get(p)]
            self.localized = localization_reward(named, changed)
            shown = {p: self.task.start_files.get(p) for p in named if p in self.candidates()}
            observation = task_prompt(self.task.statement, shown)[1]["content"].split("Files:", 1)[-1].strip()
            return StepResult([{"role": "user", "content": f"Files:\n\n{observation}\n\nNow answer with edit "
                                                          f"blocks in one <solution> section."}], 0.0, False)
        result = self._answer(action)
        if self.localized is not None:  # a convex mix with the overlap mapped to [-1, 1]: stays in [-1, 1]
            w = self.spec.localize
            terms = dict(result.info.get("reward_terms") or {}, localize=w * (2 * self.localized - 1))
            reward = (1 - w) * result.reward + terms["localize"]
            return StepResult([], reward, True, {**result.info, "reward_terms": terms, "localized": self.localized})
        return result

    def _answer(self, action: str) -> StepResult:
        context = self.task.start_files
        try:
            pred = parse_answer(context, action)
        except MalformedAnswer as e:
            return StepResult([], FAIL, True, {"passed": False, "malformed": str(e), "outcome": "format_error",
                                               "reward_terms": {"format": FAIL}})
        s_all, per_file = patch_similarity(context, self.task.fix_files, pred)
        info = {"similarity": round(s_all, 6), "outcome": "submitted"}
        if self.spec.mode == "similarity":
            return StepResult([], s_all, True, {**info, "passed": s_all >= 1.0, "files": per_file,
                                                "reward_terms": {"similarity": s_all}})
        try:
            graded = self.grader(self.task, pred)
        except Exception as e:  # noqa: BLE001 - the sandbox, not the policy, failed
            from cwm.forager.sandbox import SandboxError
            if not isinstance(e, SandboxError):
                raise
            return StepResult([], FAIL, True, {"passed": False, "outcome": "sandbox_error", "error": str(e)[-500:]})
        info.update({k: v for k, v in graded.items() if k != "components"})
        components = dict(graded["components"])
        if self.spec.mode == "tests":
            reward, terms = components["tests"], {"tests": components["tests"]}
        elif self.spec.mode == "tests_then_similarity":
            s = oracle_file_similarity(context, self.task.fix_files, pred)
            reward = tests_then_similarity(graded["passed"], s, self.spec.tau)
            terms = {"tests": components["tests"], "similarity": s}
        else:
            components.setdefault("similarity", s_all)
            reward, terms = composite_reward(self.spec, components, turns=1)
        return StepResult([], reward, True, {**info, "passed": graded["passed"], "reward_terms": terms})

    def close(self) -> None:
        pass


class EditAnswerTasks:
    """EnvFactory over forager tasks answered with edit blocks (`swe_rl`, `bugfixer`)."""

    def __init__(self, tasks: list, spec: RewardSpec, grader: Grader | None = None, name: str = "swe_rl"):
        if not tasks:
            raise ValueError(f"no {name} tasks given")
        if spec.mode != "similarity" and grader is None:
            raise ValueError(f"{name}: reward mode {spec.mode} runs tests and needs a sandbox grader")
        self.tasks, self.spec, self.grader, self.name = tasks, spec, grader, name

    @classmethod
    def from_spec(cls, spec, name: str = "swe_rl") -> "EditAnswerTasks":
        """From a recipe's EnvSpec: `tasks` is a forager task file (`cwm-forager tasks --kind pr-history` for the
        offline similarity reward; any kind with an image for the test-running modes)."""
        from cwm.forager.tasks import TaskError, load_tasks
        from cwm.rl.recipe import RecipeError
        from cwm.rl.rewards import RewardSpecError

        default = "similarity" if name == "swe_rl" else "tests"
        try:
            rspec = RewardSpec.from_dict(spec.reward if spec.reward is not None else {"mode": default},
                                         f"env {name}: reward")
        except RewardSpecError as e:
            raise RecipeError(str(e)) from None
        if not spec.tasks:
            raise RecipeError(f"env {name}: set `tasks:` to a forager task file "
                              f"(cwm-forager tasks --kind pr-history --repo DIR -o FILE)")
        try:
            tasks = load_tasks(spec.tasks)[:spec.limit]
        except (TaskError, OSError) as e:
            raise RecipeError(f"env {name}: {e}") from None
        grader = None
        if rspec.mode != "similarity":
            imageless = [t.id for t in tasks if not t.image or not (t.fail_to_pass or t.pass_to_pass)]
            if imageless:
                raise RecipeError(f"env {name}: reward mode {rspec.mode} runs tests, but {len(imageless)} task(s) "
                                  f"have no image or tests (e.g. {imageless[0]}; pr-history tasks have none): use "
                                  f"reward: {{mode: similarity}} or tasks from `cwm-forager tasks IMAGE`")
            from cwm.forager.grading import docker_grader
            grader = docker_grader(rspec, timeout_s=spec.timeout_s)
        return cls(tasks, rspec, grader, name)

    def __len__(self) -> int:
        return len(self.tasks)

    def make(self, index: int) -> EditAnswerEnv:
        return EditAnswerEnv(self.tasks[index % len(self.tasks)], self.spec, self.grader, self.name)
