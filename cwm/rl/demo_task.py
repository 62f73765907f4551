"""The demo's RL task and the data that makes it learnable by a model trained in minutes on a CPU.

    python -m cwm.rl.demo_task family OUT_DIR     # OUT_DIR/functions.jsonl, answers/, output_prediction.jsonl
    python -m cwm.rl.demo_task swe-task OUT.jsonl  # one ForagerAgent task on the forager's demo image (Docker)

The RL stage of `make demo` is output prediction on traces the demo itself makes: `cwm-trace functions` runs
`functions.jsonl` (the parity family `f(x) = x % 2`, x = 0..9) and the RL env reads its shards. A policy that
answers at random among digits scores about -0.8; one that answers 0 or 1 at random scores 0; only one that reads x
from the prompt scores near +1 — so a rising mean reward is the policy learning the task, not the format.

The format itself comes from mid-training, as it would for a real model: `answers/` holds one-turn
output-prediction conversations (the RL env's own prompt, the right answer) on *other* small functions
(`x + 1`, `9 - x`, `x // 2`, ...; none uses `%`), stored as `cwm.trajectory/1` shards so the mid-training loader
renders them in the chat format the RL rollouts use. The mid-trained model thus answers with a short literal, and
RL has to learn parity itself. `output_prediction.jsonl` is the RL family in CRUXEval-O's format
(`{"id", "code", "input", "output"}`) for `cwm-eval output-prediction`.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

RL_FAMILY = "def f(x):\n    return x % 2\n"
RL_INPUTS = list(range(10))
# Functions whose answers teach the reply format in mid-training; disjoint from the RL family (no `%`).
FORMAT_FUNCTIONS = ("def f(x):\n    return x + 1\n", "def f(x):\n    return 9 - x\n", "def f(x):\n    return x // 2\n",
                    "def f(x):\n    return min(x, 5)\n", "def f(x):\n    return max(x, 4)\n",
                    "def f(x):\n    return abs(x - 5)\n", "def f(x):\n    return x * 1\n")


def _value(source: str, x) -> str:
    namespace: dict = {}
    exec(source, namespace)  # noqa: S102 - the module's own constant functions
    return repr(namespace["f"](x))


def answer_records(functions=FORMAT_FUNCTIONS, inputs=RL_INPUTS) -> list[dict]:
    """One-turn output-prediction conversations (`cwm.trajectory/1`): the RL env's prompt, then the right answer."""
    from cwm.rl.envs.output_prediction import OutputTask

    records = []
    for source in functions:
        for x in inputs:
            task = OutputTask(source=source, call=f"f({x!r})", expected=_value(source, x))
            messages = [*task.prompt(), {"role": "assistant", "content": task.expected}]
            records.append({
                "id": f"answer-{len(records)}", "schema": "cwm.trajectory/1",
                "task": {"id": f"{source.splitlines()[1].strip()} @ {x!r}", "kind": "output-prediction",
                         "repo": None, "commit": None, "image": None, "statement": messages[1]["content"],
                         "fail_to_pass": [], "pass_to_pass": [], "mutation": None},
                "policy": {"kind": "oracle", "model": "known answer"},
                "messages": messages, "steps": [], "patch": "", "reward": 1, "outcome": "submitted", "stats": {}})
    return records


def write_family(out_dir: str | Path) -> dict:
    """Write the RL family's functions, the format answers and the CRUXEval-O file; returns their paths."""
    from cwm.data.shards import ShardWriter, record_key

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    functions = out / "functions.jsonl"
    functions.write_text("".join(json.dumps({"code": RL_FAMILY, "entry": "f", "input": repr(x)}) + "\n"
                                 for x in RL_INPUTS))
    cruxeval = out / "output_prediction.jsonl"
    cruxeval.write_text("".join(json.dumps({"id": f"parity-{x}", "code": RL_FAMILY, "input": repr(x),
                                            "output": _value(RL_FAMILY, x)}) + "\n" for x in RL_INPUTS))
    answers = out / "answers"
    records = answer_records()
    with ShardWriter(answers, "answers") as writer:
        writer.add([(record_key(r), r) for r in records if record_key(r) not in writer.done_keys])
    return {"functions": functions, "answers": answers, "answers_count": len(records), "output_prediction": cruxeval}


def write_swe_task(out: Path) -> int:
    """One validated mutate-fix task on the forager's demo image; without Docker, say why and write nothing."""
    from cwm.forager import images
    from cwm.forager.demo import ensure_demo_image
    from cwm.forager.sandbox import DockerSandbox
    from cwm.forager.tasks import TaskError, generate_mutate_fix, write_tasks

    try:
        dc = images.client()
        image = ensure_demo_image(dc, Path(tempfile.mkdtemp(prefix="cwm-rl-demo-")) / "calc")
        info = images.image_info(dc, image)
        tasks = generate_mutate_fix(image, info.repo, info.commit, info.passing, 1, seed=0,
                                    open_sandbox=lambda: DockerSandbox(image, dc=dc, run_id="rl-demo-task"))
    except images.ImageError as e:
        print(f"cwm-rl demo task: SKIPPED (no Docker task for the RL demo): {e}")
        return 0
    except TaskError as e:
        print(f"cwm-rl demo task: {e}", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    write_tasks(tasks, out)
    print(f"cwm-rl demo task: {len(tasks)} mutate-fix task on {image} -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "family":
        paths = write_family(args[1])
        print(f"cwm-rl demo family: {paths['functions']} (trace with `cwm-trace functions`), "
              f"{paths['answers_count']} format answers -> {paths['answers']}, {paths['output_prediction']}")
        return 0
    if len(args) == 2 and args[0] == "swe-task":
        return write_swe_task(Path(args[1]))
    print("usage: python -m cwm.rl.demo_task family OUT_DIR | swe-task OUT.jsonl", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
