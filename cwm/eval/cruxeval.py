"""Output and input prediction on CRUXEval-format files: `{"id", "code", "input", "output"}` per line, where
`code` defines a function `f` (another name with `"entry"`), `input` is the text of its arguments (`"[1, 2], 3"`)
and `output` the `repr` of `f(input)`. A CRUXEval release file can be passed as it is.

Output prediction (the model predicts `f(input)`), scored by `cwm.data.value_match.reprs_match` against `output`:
- `direct` (default): the prompt is the code, then `assert f(INPUT) ==`; the answer is the completion's first
  line, read leniently (whitespace, a trailing newline, backticks or a code fence around it do not matter).
- `trace` (CWM's): the prompt is the trace of the call up to and including its call frame — context with the
  START_OF_TRACE marker, `<|call_sep|>` with the arguments as the tracer writes them (the project's tracer runs
  the call in the jail to get that frame, so the prompt is exactly what mid-training showed, tokenized as
  mid-training tokenizes it: content ordinary, the renderer's separators special) — and the model
  writes the rest of the trace; the value of the entry's return frame it writes is its answer (an exception
  frame, or no return frame, is wrong).

Input prediction (the model predicts an input that gives `output`): the prompt is the code, then
`assert OUTPUT == f(`; the answer is the completion up to the parenthesis that closes the call. It is scored by
executing `f` on the predicted input in the jail and comparing the value with `output` (any input that gives the
output is right).
"""
from __future__ import annotations

import ast
from concurrent.futures import ThreadPoolExecutor

from cwm.data.value_match import clean_answer, reprs_match
from cwm.eval.backends import Prompt, SamplingParams
from cwm.eval.execute import call_function, trace_function
from cwm.eval.harness import EvalInputError, read_jsonl

FORMAT = '{"id": str, "code": "def f(...): ...", "input": "ARGUMENTS", "output": "REPR"} (CRUXEval)'


def load_examples(path) -> list[dict]:
    rows = read_jsonl(path, ("code", "input", "output"), FORMAT)
    seen = set()
    for n, row in enumerate(rows):
        row.setdefault("id", f"{n}")
        row["id"] = str(row["id"])
        if row["id"] in seen:
            raise EvalInputError(f"{path}: example id {row['id']!r} occurs twice; ids must be unique")
        seen.add(row["id"])
        for key in ("code", "input", "output"):
            if not isinstance(row[key], str):
                raise EvalInputError(f"{path}: example {row['id']!r}: field {key!r} must be a string; expected "
                                     f"{FORMAT}")
    return rows


def _entry(ex: dict) -> str:
    return ex.get("entry") or "f"


def _jobs(fn, items, workers: int = 4):
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


class OutputPrediction:
    name = "output-prediction"

    def __init__(self, style: str = "direct", depth: int = 2):
        if style not in ("direct", "trace"):
            raise EvalInputError(f"--style {style}: use direct or trace")
        self.style, self.depth = style, depth

    def settings(self) -> dict:
        return {"style": self.style, **({"depth": self.depth} if self.style == "trace" else {})}

    def default_params(self) -> dict:
        return {"stop": ("\n",), "max_tokens": 128} if self.style == "direct" else {"max_tokens": 1024}

    # -- direct -------------------------------------------------------------------------------------------------
    def direct_prompt(self, ex: dict) -> Prompt:
        text = f"{ex['code'].rstrip()}\nassert {_entry(ex)}({ex['input']}) =="
        return Prompt(ex["id"], text, oracle=f" {ex['output']}\n")

    @staticmethod
    def direct_answer(completion: str) -> str:
        return clean_answer(completion.strip().split("\n", 1)[0] if completion.strip() else "")

    # -- trace --------------------------------------------------------------------------------------------------
    def trace_prompt(self, ex: dict) -> tuple[Prompt | None, str]:
        from tracer.format import render_trace, trace_segments

        record = trace_function(ex["code"], _entry(ex), ex["input"], depth=self.depth)
        if record is None or not record["frames"] or record["frames"][0]["kind"] != "call":
            return None, "the code does not run on this input: no call frame to prompt with"
        prompt = Prompt.of_segments(ex["id"], trace_segments({**record, "frames": record["frames"][:1]}))
        prompt.oracle = render_trace(record)[len(prompt.text):]
        return prompt, ""

    def run(self, backend, examples: list[dict], params: SamplingParams) -> list[dict]:
        if self.style == "direct":
            prompts = [self.direct_prompt(ex) for ex in examples]
            problems = [""] * len(examples)
        else:
            made = _jobs(self.trace_prompt, examples)
            prompts = [p for p, _ in made]
            problems = [why for _, why in made]
        ready = [p for p in prompts if p is not None]
        completions = iter(backend.generate(ready, params) if ready else [])
        rows = []
        for ex, prompt, problem in zip(examples, prompts, problems):
            if prompt is None:
                rows.append({"id": ex["id"], "prompt": None, "answer": None, "expected": ex["output"], "score": 0.0,
                             "error": problem})
                continue
            samples = next(completions)
            answers = [self.direct_answer(c) if self.style == "direct" else trace_answer(c) for c in samples]
            right = [a is not None and reprs_match(a, ex["output"]) for a in answers]
            rows.append({"id": ex["id"], "prompt": prompt.text, "completion": samples[0], "answer": answers[0],
                         "expected": ex["output"], "correct": sum(right), "n": len(right),
                         "score": sum(right) / len(right)})
        return rows

    def summary(self, rows: list[dict]) -> dict:
        from cwm.eval.harness import pass_at_k_table

        counts = [(r["n"], r["correct"]) for r in rows if "n" in r]
        return {"accuracy": sum(r["score"] for r in rows) / max(len(rows), 1),
                "unrunnable": sum(1 for r in rows if r.get("error")), **pass_at_k_table(counts)}


def trace_answer(completion: str) -> str | None:
    """The value repr of the entry's return frame in a generated trace continuation; None when it has none."""
    from cwm.eval.trace_text import entry_result

    value, raised = entry_result(completion)
    return None if value is None or raised else value


class InputPrediction:
    name = "input-prediction"

    def settings(self) -> dict:
        return {}

    def default_params(self) -> dict:
        return {"stop": ("\n",), "max_tokens": 128}

    def prompt(self, ex: dict) -> Prompt:
        text = f"{ex['code'].rstrip()}\nassert {ex['output']} == {_entry(ex)}("
        return Prompt(ex["id"], text, oracle=f"{ex['input']})\n")

    @staticmethod
    def answer(completion: str) -> str | None:
        """The argument text of the call the completion closes (`1, 'a')  # ...` -> `1, 'a'`), or None."""
        line = completion.split("\n", 1)[0]
        for i, ch in enumerate(line):
            if ch != ")":
                continue
            try:
                node = ast.parse(f"f({line[:i + 1]}", mode="eval").body
            except SyntaxError:
                continue
            if isinstance(node, ast.Call):
                return line[:i].strip()
        return None

    def run(self, backend, examples: list[dict], params: SamplingParams) -> list[dict]:
        prompts = [self.prompt(ex) for ex in examples]
        completions = backend.generate(prompts, params)
        jobs = [(ex, c) for ex, samples in zip(examples, completions) for c in samples]

        def check(job):
            ex, completion = job
            args = self.answer(completion)
            if args is None:
                return args, False, "no closed call in the answer"
            result = call_function(ex["code"], _entry(ex), args)
            if result.status != "returned":
                return args, False, f"{result.status}: {result.error}"
            return args, reprs_match(result.repr, ex["output"]), result.repr

        checked = iter(_jobs(check, jobs))
        rows = []
        for ex, prompt, samples in zip(examples, prompts, completions):
            results = [next(checked) for _ in samples]
            right = [ok for _, ok, _ in results]
            rows.append({"id": ex["id"], "prompt": prompt.text, "completion": samples[0], "answer": results[0][0],
                         "got": results[0][2], "expected": ex["output"], "correct": sum(right), "n": len(right),
                         "score": sum(right) / len(right)})
        return rows

    def summary(self, rows: list[dict]) -> dict:
        from cwm.eval.harness import pass_at_k_table

        return {"accuracy": sum(r["score"] for r in rows) / max(len(rows), 1),
                **pass_at_k_table([(r["n"], r["correct"]) for r in rows])}
