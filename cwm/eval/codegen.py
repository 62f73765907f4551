"""Code generation on HumanEval-format files: `{"task_id", "prompt", "test", "entry_point"}` per line
(optionally `"canonical_solution"`: the oracle backend's answer). A HumanEval release file can be passed as it is.

The prompt is the task's `prompt` (a signature and docstring); the model continues it, cut at HumanEval's stop
strings (a new top-level `def`, `class`, `if`, `print` or comment). The program `prompt + completion` then runs in
the jail with the task's `test`: it passes when it exits 0 (the tests' `check(entry_point)` is called when they
define `check`; plain `assert` lines work too, as in MBPP). n samples per task give the unbiased pass@k for every
k in 1, 2, 5, 10, ... up to n.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from cwm.eval.backends import Prompt, SamplingParams
from cwm.eval.execute import run_tests
from cwm.eval.harness import EvalInputError, pass_at_k_table, read_jsonl

FORMAT = '{"task_id": str, "prompt": "def f(...):\\n    \\"\\"\\"...\\"\\"\\"\\n", "test": "def check(candidate): ...", ' \
         '"entry_point": "f"} (HumanEval)'
STOP = ("\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#")


def load_examples(path) -> list[dict]:
    rows = read_jsonl(path, ("task_id", "prompt", "test", "entry_point"), FORMAT)
    seen = set()
    for row in rows:
        row["id"] = str(row["task_id"])
        if row["id"] in seen:
            raise EvalInputError(f"{path}: task_id {row['id']!r} occurs twice; ids must be unique")
        seen.add(row["id"])
    return rows


class Codegen:
    name = "codegen"

    def __init__(self, search: str | None = None, reward_model: str | None = None):
        self.search, self.reward_model = search, reward_model   # cwm-eval codegen --search (cwm/rl/search.py)
        self._scorer = None  # the reward model's score_texts, loaded once for every batch the harness runs

    def settings(self) -> dict:
        return {"search": self.search, "reward_model": self.reward_model} if self.search else {}

    def default_params(self) -> dict:
        return {"stop": STOP, "max_tokens": 512}

    def run(self, backend, examples: list[dict], params: SamplingParams) -> list[dict]:
        prompts = [Prompt(ex["id"], ex["prompt"], oracle=ex.get("canonical_solution", "")) for ex in examples]
        completions = backend.generate(prompts, params)
        jobs = [(ex, c) for ex, samples in zip(examples, completions) for c in samples]
        with ThreadPoolExecutor(max_workers=4) as pool:
            verdicts = iter(pool.map(lambda j: run_tests(j[0]["prompt"] + j[1], j[0]["test"], j[0]["entry_point"]),
                                     jobs))
        rows = []
        for ex, samples in zip(examples, completions):
            results = [next(verdicts) for _ in samples]
            correct = sum(ok for ok, _ in results)
            rows.append({"id": ex["id"], "prompt": ex["prompt"], "answer": samples[0],
                         "samples": [{"completion": c, "passed": ok, "error": why}
                                     for c, (ok, why) in zip(samples, results)],
                         "correct": correct, "n": len(samples), "score": correct / len(samples)})
        if self.search:
            from cwm.rl.search import eval_codegen_search

            if self.reward_model and self._scorer is None:
                from cwm.rl.reward_model import RewardModel

                self._scorer = RewardModel.load(self.reward_model).score_texts
            try:
                eval_codegen_search(self.search, backend, examples, rows, params, scorer=self._scorer)
            except ValueError as e:
                raise EvalInputError(str(e)) from None
        return rows

    def summary(self, rows: list[dict]) -> dict:
        from cwm.rl.search import search_summary

        return {**pass_at_k_table([(r["n"], r["correct"]) for r in rows]), **search_summary(rows)}
