"""Output prediction: given a function and its input, predict the return value (single turn).

Tasks come from trace shards (DESIGN §2): a record whose entry returned normally gives the source (`context`),
the call (`origin.input`, else the entry's `call` frame arguments) and the answer (the entry's `return` frame
value, a `repr`). Answers are compared as values by `cwm.data.value_match` (the rules eval uses too) — so
`[1, 2]` and `[1,2]` agree while `1` and `True` do not. Records whose return value is not a Python literal
are not tasks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from cwm.data.value_match import clean_answer, parse_literal
from cwm.data.value_match import values_match as same_value  # strict types, float tolerance: DESIGN of value_match
from cwm.rl.env import Message, StepResult, finished, malformed
from tracer.format import START_MARKER

SYSTEM = "You predict what Python code returns. Reply with the return value as a Python literal, nothing else."


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
        parse_literal(expected)
    except ValueError:
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
    """The value of a reply: the whole reply (optionally in a ``` fence or backticks) as a Python literal, read by
    the shared rules of `cwm.data.value_match`. Raises ValueError."""
    return parse_literal(clean_answer(text))


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
        return finished(same_value(predicted, parse_literal(self.task.expected)))

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
