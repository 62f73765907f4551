"""The part every `cwm-eval` suite shares: reading example files, the results folder, resume, the summary.

Results folder (`-o DIR`):
- `run.json`: the suite, the input, the backend, the sampling settings of the run and, for a local model, a
  fingerprint of its files (a retrained model in the same folder is another model). A folder holding a run with
  other settings is refused (its results stay as they are): pass another `-o`, or `--fresh` to start it over.
- `results.jsonl`: one JSON object per example, appended (and flushed) the moment the example is scored, with
  at least `id`, `prompt`, `answer` and `score` (a number in [0, 1]). Re-running the same command skips every
  example already there (resume); a run stopped half-way keeps what it wrote.
- `summary.json`, `summary.md`: the suite's metrics over the examples of this run (rich prints the same table).
- `pass_at_k.png`: pass@k against k, for suites sampling n > 1 answers per example.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from cwm.eval.backends import Backend, SamplingParams

RESULTS, RUN, SUMMARY_JSON, SUMMARY_MD, PLOT = "results.jsonl", "run.json", "summary.json", "summary.md", \
    "pass_at_k.png"


class EvalInputError(ValueError):
    """A suite input or results folder that cannot be used: one line naming it (and the line) and what to do."""


def read_jsonl(path: str | Path, required: tuple[str, ...], fmt: str) -> list[dict]:
    """The objects of a JSON-lines file, each holding `required` fields; EvalInputError names the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"{path}: no such file; expected a JSON-lines file of {fmt}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise EvalInputError(f"{path}:{n}: not JSON ({e.msg}); expected one object per line: {fmt}") \
                    from None
            if not isinstance(obj, dict):
                raise EvalInputError(f"{path}:{n}: a JSON {type(obj).__name__}, not an object; expected {fmt}")
            missing = [k for k in required if k not in obj]
            if missing:
                raise EvalInputError(f"{path}:{n}: no field {', '.join(map(repr, missing))}; expected {fmt}")
            rows.append(obj)
    if not rows:
        raise EvalInputError(f"{path}: empty; expected one object per line: {fmt}")
    return rows


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from n samples of which c passed (Chen et al. 2021):
    1 - C(n - c, k) / C(n, k), computed as a product so large n does not overflow."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def ks_for(n: int) -> list[int]:
    """The k reported for n samples: 1, 2, 5, 10, 20, 50, 100, ... up to n, and n itself."""
    ks, base = [], 1
    while base <= n:
        ks += [k for k in (base, 2 * base, 5 * base) if k <= n]
        base *= 10
    return ks if not ks or ks[-1] == n else ks + [n]


def pass_at_k_table(counts: list[tuple[int, int]]) -> dict[str, float]:
    """Mean pass@k over examples, from (n, correct) per example, for every k every example allows."""
    if not counts:
        return {}
    n_min = min(n for n, _ in counts)
    return {f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in ks_for(n_min)}


class ResultsFolder:
    def __init__(self, out: str | Path, settings: dict, *, fresh: bool = False):
        self.dir = Path(out)
        if fresh:
            for name in (RESULTS, RUN, SUMMARY_JSON, SUMMARY_MD, PLOT):
                (self.dir / name).unlink(missing_ok=True)
        settings = json.loads(json.dumps(settings))   # as stored: tuples become lists
        self.settings = settings
        self.dir.mkdir(parents=True, exist_ok=True)
        run = self.dir / RUN
        if run.exists():
            before = json.loads(run.read_text())
            if before != settings:
                changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
                raise EvalInputError(f"{self.dir}: holds results of a run with other settings ({', '.join(changed)}); "
                                     "pass another -o DIR (the results there are kept)")
        else:
            run.write_text(json.dumps(settings, indent=1) + "\n")
        self.path = self.dir / RESULTS

    def done(self) -> dict[str, dict]:
        """Rows already scored, by example id (a torn last line from a killed run is ignored)."""
        rows = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(row, dict) and "id" in row and "score" in row:
                    rows[str(row["id"])] = row
        return rows

    def append(self, rows: list[dict]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            if f.tell() and not self.path.read_bytes().endswith(b"\n"):
                f.write("\n")   # a torn line from a killed run stays on its own
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()


def run_suite(suite, examples: list[dict], backend: Backend, params: SamplingParams, out: str | Path, *,
              input_name: str, batch_size: int = 8, console=None, progress: bool = True,
              fresh: bool = False) -> dict:
    """Score every example not already in `out`, appending rows as batches finish; return the summary."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = console or Console()
    settings = {"suite": suite.name, "input": input_name, "backend": backend.name,
                "model": getattr(backend, "model_name", backend.name), "params": asdict(params),
                **suite.settings()}
    if getattr(backend, "fingerprint", None):
        settings["model_fingerprint"] = backend.fingerprint
    folder = ResultsFolder(out, settings, fresh=fresh)
    done = folder.done()
    todo = [ex for ex in examples if str(ex["id"]) not in done]
    if done:
        console.print(f"{folder.dir}: {len(examples) - len(todo)} of {len(examples)} examples already scored; "
                      f"running the other {len(todo)}")
    with Progress(TextColumn(f"{suite.name}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, disable=not progress, transient=False) as bar:
        task = bar.add_task(suite.name, total=len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            rows = suite.run(backend, batch, params)
            folder.append(rows)
            for row in rows:
                done[str(row["id"])] = row
            bar.advance(task, len(batch))
    rows = [done[str(ex["id"])] for ex in examples if str(ex["id"]) in done]
    summary = {"suite": suite.name, "input": input_name, "model": settings["model"], "backend": backend.name,
               "examples": len(rows), "score": sum(r["score"] for r in rows) / max(len(rows), 1),
               **suite.summary(rows)}
    write_summary(folder.dir, summary, console)
    curve = {int(k.split("@")[1]): v for k, v in summary.items() if k.startswith("pass@")}
    if len(curve) > 1:
        plot_pass_at_k(curve, folder.dir / PLOT, f"{suite.name}: {settings['model']}")
    return summary


def write_summary(out: Path, summary: dict, console) -> None:
    from rich.table import Table

    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# cwm-eval {summary['suite']}", "", f"model `{summary['model']}` on `{summary['input']}`", "",
             "| metric | value |", "| --- | --- |"]
    table = Table(title=f"cwm-eval {summary['suite']}: {summary['model']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if key in ("suite", "model", "input"):
            continue
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
        table.add_row(key, shown)
    (out / SUMMARY_MD).write_text("\n".join(lines) + "\n")
    console.print(table)
    console.print(f"results: {out / RESULTS}, summary: {out / SUMMARY_JSON}")


def plot_pass_at_k(curve: dict[int, float], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted(curve)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(ks, [curve[k] for k in ks], marker="o")
    ax.set(xscale="log", xlabel="k (samples)", ylabel="pass@k", ylim=(0, 1.02), title=title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


