"""Output prediction: given a function and its input, predict the return value (single turn).

Tasks come from trace shards (DESIGN §2): a record whose entry returned normally gives the source (`context`),
the call (`origin.input`, else the entry's `call` frame arguments) and the answer (the entry's `return` frame
value, a `repr`). Answers are compared as values — both sides go through `ast.literal_eval` — so `[1, 2]` and
`[1,2]` agree while `1` and `True` do not. Records whose return value is not a Python literal are not tasks.
"""
from __future__ import annotations

import ast
import math
import os
import re
from dataclasses import dataclass

from cwm.rl.env import Message, StepResult, finished, malformed
from tracer.format import START_MARKER

SYSTEM = "You predict what Python code returns. Reply with the return value as a Python literal, nothing else."
_FENCE = re.compile(r"^```[a-zA-Z]*\n?(.*?)\n?```$", re.S)


@dataclass(frozen=True)
class OutputTask:
    source: str     # the code shown to the model
    call: str       # e.g. "total(items=[1, 2], tax=0.5)"
    expected: str   # repr of the return value; a Python literal

    def prompt(self) -> list[Message]:
        user = f"```python\n{self.source.rstrip()}\n```\nWhat does `{self.call}` return?"
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def task_from_record(record: dict, skip_none: bool = True) -> OutputTask | None:
    """The output-prediction task a trace record gives, or None (it raised, was cut, or returns a non-literal)."""
    frames = record.get("frames") or []
    if record.get("outcome") != "returned" or not frames or frames[0].get("kind") != "call":
        return None
    entry_depth = frames[0]["depth"]
    returns = [f for f in frames if f["kind"] == "return" and f["depth"] == entry_depth]
    if not returns or returns[-1].get("value") is None:
        return None
    expected = returns[-1]["value"]
    if skip_none and expected == "None":
        return None
    try:
        ast.literal_eval(expected)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    origin = record.get("origin") or {}
    name = (origin.get("qualname") or "f").split(".")[-1]
    args = origin.get("input")
    if args is None:
        args = ", ".join(f"{k}={v}" for k, v in (frames[0].get("locals") or {}).items() if k != "self")
    return OutputTask(source=record["context"].replace(START_MARKER, ""), call=f"{name}({args})", expected=expected)


def tasks_from_shards(source: str | os.PathLike | list, *, limit: int | None = None,
                      skip_none: bool = True) -> list[OutputTask]:
    """Every output-prediction task in the trace shards at `source` (deduplicated, in shard order)."""
    from cwm.data.shards import iter_records

    tasks, seen = [], set()
    for record in iter_records(source):
        task = task_from_record(record, skip_none=skip_none)
        if task is not None and task not in seen:
            seen.add(task)
            tasks.append(task)
            if limit is not None and len(tasks) >= limit:
                break
    return tasks


def parse_answer(text: str):
    """The value of a reply: the whole reply (optionally in a ``` fence) as a Python literal. Raises ValueError."""
    text = text.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise ValueError(f"not a Python literal: {text[:80]!r}") from e


def same_value(a, b) -> bool:
    """Equal values of the same types, containers compared element by element (so 1 != True != 1.0; nan == nan)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return a == b


class OutputPredictionEnv:
    name = "output_prediction"

    def __init__(self, task: OutputTask):
        self.task = task

    def reset(self) -> list[Message]:
        return self.task.prompt()

    def step(self, action: str) -> StepResult:
        try:
            predicted = parse_answer(action)
        except ValueError as e:
            return malformed(str(e))
        return finished(same_value(predicted, ast.literal_eval(self.task.expected)))

    def close(self) -> None:
        pass


class OutputPredictionTasks:
    """EnvFactory over a fixed list of tasks."""

    name = OutputPredictionEnv.name

    def __init__(self, tasks: list[OutputTask]):
        if not tasks:
            raise ValueError("no output-prediction tasks: the trace shards hold no record that returned a literal")
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def make(self, index: int) -> OutputPredictionEnv:
        return OutputPredictionEnv(self.tasks[index % len(self.tasks)])
