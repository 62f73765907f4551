"""`python -m cwm.demo` (what `make demo` runs): the whole mission on the built-in example, one stage after another.

    1 trace      cwm-trace runs examples/shop's tests (and the RL family's functions) under the tracer
    2 forager    its Docker image, validated mutate-fix tasks, oracle trajectories (and noop ones, for contrast)
    3 tokenizer  cwm-tokenizer train on the recipe's sources
    4 midtrain   cwm/train.py on traces + trajectories + code, and answers that teach the RL reply format
                 (data_recipes/demo.yaml; observation masking on); tokens per source
    5 evaluate   cwm-eval where it is installed, else the in-training held-out evaluation; a predicted trace
    6 rl         cwm/rl/train.py (data_recipes/rl_demo.yaml): GRPO on output prediction of the parity family
    7 export     the RL model reloaded from runs/demo/rl/hf, answering the family greedily before and after RL

Each stage prints a short summary; the end is a table of stage times, the figures a person looks at (loss,
next-state and output accuracy, RL reward first vs last fifth) and where every artefact is. A stage that fails stops
the demo with its command and exit status. Stages that resume (tracing, collecting) pick up what a previous run
left; the others start clean. Docker and the base image are `.ci/setup.sh`'s job (`make demo` runs it first).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("runs/demo")
RECIPE = "data_recipes/demo.yaml"
RL_RECIPE = "data_recipes/rl_demo.yaml"
SHOP = Path("examples/shop")
N_TASKS = 6
STAGES = ("trace", "forager", "tokenizer", "midtrain", "evaluate", "rl", "export")
console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)  # a log file: lines of 120, not 80


class StageError(RuntimeError):
    """A stage could not finish; the message names the command and what to look at."""


@dataclass
class Stage:
    name: str
    seconds: float = 0.0
    cpu_seconds: float = 0.0   # user + system time of this process and its children: the stage's cost on an idle machine
    summary: list[str] = field(default_factory=list)


def _bin(name: str) -> str:
    """A console script of this interpreter's environment (the venv `make demo` built)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def run(cmd: list[str], *, capture: bool = False, threads: int | None = None) -> str:
    """Run one command of the chain, echoed first so a reader can rerun it by hand; raise StageError on failure."""
    console.print(f"[dim]$ {' '.join(cmd)}[/dim]")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, env=env, text=True, stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        raise StageError(f"`{' '.join(cmd)}` exited with {proc.returncode} (its output is above)")
    return proc.stdout or ""


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (Docker containers' time is not in it)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _records(path: Path) -> list[dict]:
    from cwm.data.shards import iter_records

    return list(iter_records(path)) if path.exists() else []


# -- stages ---------------------------------------------------------------------------------------------------------

def stage_trace(st: Stage, out: Path) -> None:
    run([_bin("cwm-trace"), str(SHOP), "-o", str(out / "traces"), "--workers", "2"])
    run([sys.executable, "-m", "cwm.rl.demo_task", "family", str(out / "rl_family")])
    run([_bin("cwm-trace"), "functions", str(out / "rl_family" / "functions.jsonl"),
         "-o", str(out / "rl_family" / "traces"), "--workers", "1"])
    first = run([_bin("cwm-trace"), "render", str(out / "traces"), "--first"], capture=True)
    lines = first.splitlines()
    console.print("\n".join(lines[:12]) + (f"\n[dim]... ({len(lines) - 12} more lines)[/dim]" if len(lines) > 12 else ""))
    units = _jsonl(out / "traces" / "units.jsonl")
    records = _records(out / "traces")
    frames = sum(r["stats"]["frames"] for r in records)
    statuses: dict[str, int] = {}
    for u in units:
        statuses[u.get("status", "?")] = statuses.get(u.get("status", "?"), 0) + 1
    if not frames:
        raise StageError(f"no trace of examples/shop has a frame (statuses: {statuses}); see {out / 'traces' / 'units.jsonl'}")
    st.summary += [f"{len(records)} traces of examples/shop ({frames:,} frames; tests: "
                   + ", ".join(f"{v} {k}" for k, v in sorted(statuses.items())) + ")",
                   f"{len(_records(out / 'rl_family' / 'traces'))} traces of the RL family f(x) = x % 2"]


def stage_forager(st: Stage, out: Path) -> None:
    from cwm.forager import images
    from cwm.forager.demo import ensure_repo_image

    try:
        dc = images.client()
        base = images.ensure_base_image(dc)
        t0 = time.perf_counter()
        image, built = ensure_repo_image(dc, SHOP.resolve(), "cwm-demo-shop", base)
    except images.ImageError as e:
        raise StageError(f"{e} (run `bash .ci/setup.sh`)") from None
    info = images.image_info(dc, image)
    st.summary.append(f"image {image} ({'built' if built else 'found'} in {time.perf_counter() - t0:.1f}s): "
                      f"{len(info.passing)} passing tests")
    tasks = out / "forager" / "tasks.jsonl"
    trajectories = out / "trajectories"
    tasks.parent.mkdir(parents=True, exist_ok=True)
    old = _jsonl(tasks)
    if not old or any(t.get("image") != image for t in old):
        shutil.rmtree(trajectories, ignore_errors=True)  # trajectories of other tasks would resume wrongly
        run([_bin("cwm-forager"), "tasks", image, "--kind", "mutate-fix", "-n", str(N_TASKS), "-o", str(tasks),
             "--seed", "0", "--workers", "2"])
    made = _jsonl(tasks)
    operators: dict[str, int] = {}
    for t in made:
        op = (t.get("mutation") or {}).get("operator", "?")
        operators[op] = operators.get(op, 0) + 1
    st.summary.append(f"{len(made)} validated mutate-fix tasks ({', '.join(f'{v} {k}' for k, v in sorted(operators.items()))})")
    for policy in ("oracle", "noop"):
        run([_bin("cwm-forager"), "collect", str(tasks), "--policy", policy, "--workers", "2",
             "-o", str(trajectories / policy), "--quiet", "--max-turns", "16", "--bash-timeout", "60"], capture=True)
        recs = _records(trajectories / policy)
        wins = sum(r["reward"] > 0 for r in recs)
        steps = sum(len(r["steps"]) for r in recs)
        st.summary.append(f"{policy}: {len(recs)} trajectories, reward +1 in {wins}/{len(recs)}, {steps} tool calls "
                          f"-> {trajectories / policy}")
    if not any(r["reward"] > 0 for r in _records(trajectories / "oracle")):
        raise StageError("no oracle trajectory solved its task: the sandbox or grader is broken (see above)")


def stage_tokenizer(st: Stage, out: Path) -> None:
    shutil.rmtree(out / "tokenizer", ignore_errors=True)
    run([_bin("cwm-tokenizer"), "train", "--recipe", RECIPE, "--out", str(out / "tokenizer"), "--vocab-size", "1024"])
    from transformers import AutoTokenizer

    st.summary.append(f"{len(AutoTokenizer.from_pretrained(out / 'tokenizer')):,} tokens -> {out / 'tokenizer'}")


def stage_midtrain(st: Stage, out: Path) -> dict:
    for name in ("checkpoints", "hf", "tensorboard", "metrics.jsonl", "loss.png"):
        shutil.rmtree(out / name, ignore_errors=True) if (out / name).is_dir() else (out / name).unlink(missing_ok=True)
    # One thread: on two cores shared with Docker and the evaluators, two threads ran 5x slower, not faster.
    run([sys.executable, "cwm/train.py", "--recipe", RECIPE, "--out", str(out), "--training.cpu_threads", "1"],
        threads=1)
    result = midtrain_results(out)
    losses = [r for r in _jsonl(out / "metrics.jsonl") if "loss" in r]
    per_source = ", ".join(f"{k.removeprefix('loss/')} {v:.2f}" for k, v in losses[-1].items() if k.startswith("loss/"))
    st.summary += [f"{result['steps']} steps: loss {result['loss_first']:.2f} -> {result['loss_last']:.2f} "
                   f"(last, per source: {per_source})",
                   "tokens per source: " + ", ".join(f"{k} {v:,}" for k, v in result["tokens"].items())]
    return result


def midtrain_results(out: Path) -> dict:
    """Loss at the first and last log line, the last held-out eval, tokens per source (runs/demo/metrics.jsonl)."""
    rows = _jsonl(out / "metrics.jsonl")
    if not rows:
        raise StageError(f"{out / 'metrics.jsonl'} is missing or empty: run the midtrain stage")
    losses = [r for r in rows if "loss" in r]
    mix = source_tokens(out, rows)
    return {"steps": rows[-1]["step"], "loss_first": losses[0]["loss"], "loss_last": losses[-1]["loss"], "tokens": mix,
            **{k: v for r in rows for k, v in r.items() if k.startswith("eval/")}}


def source_tokens(out: Path, rows: list[dict]) -> dict[str, int]:
    """Tokens each source put into training: the sum of the trainer's `tokens/<source>` figures in metrics.jsonl
    (every position whose target is a token of that source)."""
    logged: dict[str, int] = {}
    for r in rows:
        for k, v in r.items():
            if k.startswith("tokens/"):
                logged[k.removeprefix("tokens/")] = logged.get(k.removeprefix("tokens/"), 0) + int(v)
    return logged


def stage_evaluate(st: Stage, out: Path, trained: dict) -> None:
    ns, op = trained.get("eval/next_state_accuracy"), trained.get("eval/output_accuracy")
    if ns is not None:
        st.summary.append(f"in-training held-out eval: next-state accuracy {ns:.3f}, output accuracy {op:.3f}")
    cwm_eval = _bin("cwm-eval")
    if shutil.which(cwm_eval):
        # trace prediction on the recipe's held-out shop traces; output prediction on the RL family (before RL)
        for suite, data in (("trace-prediction", ["--recipe", RECIPE, "--limit", "8"]),
                            ("output-prediction", [str(out / "rl_family" / "output_prediction.jsonl")])):
            args = [cwm_eval, suite, *data, "--model", str(out / "hf"), "-o", str(out / "eval" / suite), "--fresh",
                    "--no-progress"]
            try:
                run(args)
                got = json.loads((out / "eval" / suite / "summary.json").read_text())
                figures = ", ".join(f"{k} {got[k]:.3f}" for k in ("next_state_accuracy", "generation/result_accuracy",
                                                                  "accuracy") if isinstance(got.get(k), float))
                st.summary.append(f"cwm-eval {suite} ({got.get('examples')} examples): {figures} -> {out / 'eval' / suite}")
            except (StageError, OSError, ValueError) as e:
                st.summary.append(f"cwm-eval {suite} failed: {e}")
    else:
        st.summary.append("cwm-eval is not installed in this checkout: the in-training evaluation above stands")
    run([sys.executable, "-m", "cwm.eval.show_trace", "--hf", str(out / "hf"), "--recipe", RECIPE,
         "--max-new-tokens", "256"])


def stage_rl(st: Stage, out: Path) -> dict:
    shutil.rmtree(out / "rl", ignore_errors=True)
    run([sys.executable, "cwm/rl/train.py", "--recipe", RL_RECIPE], threads=1)  # its paths are runs/demo's
    result = rl_results(out)
    plot_rewards(_jsonl(out / "rl" / "metrics.jsonl"), out / "rl" / "reward.png")
    st.summary.append(f"{result['steps']} GRPO steps: mean reward {result['first']:+.2f} over the first fifth -> "
                      f"{result['last']:+.2f} over the last (pass rate {result['pass_first']:.2f} -> "
                      f"{result['pass_last']:.2f}) -> {out / 'rl' / 'reward.png'}")
    return result


def rl_results(out: Path) -> dict:
    rows = _jsonl(out / "rl" / "metrics.jsonl")
    if not rows:
        raise StageError(f"{out / 'rl' / 'metrics.jsonl'} is missing or empty: run the rl stage")
    first, last = reward_fifths(rows)
    return {"first": first, "last": last, "steps": len(rows), "pass_first": rows[0]["pass_rate"],
            "pass_last": rows[-1]["pass_rate"]}


def reward_fifths(rows: list[dict]) -> tuple[float, float]:
    """Mean reward over the first and the last fifth of the steps (at least one step each)."""
    n = max(1, len(rows) // 5)
    rewards = [r["mean_reward"] for r in rows]
    return sum(rewards[:n]) / n, sum(rewards[-n:]) / n


def plot_rewards(rows: list[dict], png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in rows], [r["mean_reward"] for r in rows], marker=".", label="mean reward")
    # where a policy that does not read x sits: a random digit, or a random 0/1
    ax.axhline(-0.8, color="grey", linewidth=0.5, linestyle=":", label="random digit (-0.8)")
    ax.axhline(0, color="grey", linewidth=0.5, linestyle="--", label="random 0 or 1 (0)")
    ax.set(xlabel="GRPO step", ylabel="reward (+1 right, -1 wrong)", ylim=(-1.05, 1.05),
           title="RL: output prediction of f(x) = x % 2")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def greedy_accuracy(model_dir: Path, tasks, max_new_tokens: int) -> float:
    """Greedy answers of an exported model on output-prediction tasks, sampled and scored as the RL stage does (its
    reply budget: one token, the digit; what a policy trained so writes after it was never trained)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cwm.rl.envs.output_prediction import OutputPredictionEnv
    from cwm.rl.rollout import ChatFormat

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    chat = ChatFormat(tokenizer)
    right = 0
    for task in tasks:
        ids = torch.tensor([chat.encode(task.prompt(), first=True)])
        with torch.no_grad():
            gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=chat.stop_ids,
                                 pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist()
        reply = tokenizer.decode([t for t in gen if t not in chat.stop_ids], skip_special_tokens=False)
        right += OutputPredictionEnv(task).step(reply).reward > 0
    return right / len(tasks)


def stage_export(st: Stage, out: Path) -> dict:
    import yaml
    from transformers import AutoConfig

    from cwm.rl.envs.output_prediction import tasks_from_shards

    config = AutoConfig.from_pretrained(out / "rl" / "hf")
    tasks = tasks_from_shards(out / "rl_family" / "traces")
    budget = yaml.safe_load(Path(RL_RECIPE).read_text())["rollout"]["sampling"]["max_new_tokens"]
    before, after = greedy_accuracy(out / "hf", tasks, budget), greedy_accuracy(out / "rl" / "hf", tasks, budget)
    st.summary += [f"{out / 'rl' / 'hf'}: {config.architectures[0]}, head_dim {config.head_dim} "
                   f"(vLLM's CPU attention serves >= 32), loads with AutoModelForCausalLM",
                   f"greedy answers in the RL prompt on the {len(tasks)} parity tasks: {before:.0%} right before RL, "
                   f"{after:.0%} after"]
    return {"before": before, "after": after}


# -- the chain ------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cwm.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="start", choices=STAGES, default=STAGES[0],
                        help="start at this stage, reusing what the earlier ones left in runs/demo")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    out = OUT
    out.mkdir(parents=True, exist_ok=True)
    stages: list[Stage] = []
    results: dict = {}
    steps = [("trace", lambda st: stage_trace(st, out)),
             ("forager", lambda st: stage_forager(st, out)),
             ("tokenizer", lambda st: stage_tokenizer(st, out)),
             ("midtrain", lambda st: results.__setitem__("midtrain", stage_midtrain(st, out))),
             ("evaluate", lambda st: stage_evaluate(st, out, midtrain_results(out))),
             ("rl", lambda st: results.__setitem__("rl", stage_rl(st, out))),
             ("export", lambda st: results.__setitem__("export", stage_export(st, out)))]
    start = time.perf_counter()
    for i, (name, fn) in enumerate(steps, 1):
        if i <= STAGES.index(args.start):
            continue
        console.rule(f"[bold]{i}/{len(steps)} {name}")
        st = Stage(name)
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        try:
            fn(st)
        except StageError as e:
            console.print(f"[bold red]demo: stage {name} failed: {e}")
            return 1
        st.seconds, st.cpu_seconds = time.perf_counter() - t0, _cpu_seconds() - cpu0
        stages.append(st)
        console.print(f"[bold green]{name}[/] done in {st.seconds:.0f}s ({st.cpu_seconds:.0f} CPU-s)")
        for line in st.summary:
            console.print(f"  {line}")
    total = time.perf_counter() - start
    summary = final_summary(stages, results, out, total)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def final_summary(stages: list[Stage], results: dict, out: Path, total: float) -> dict:
    console.rule("[bold]make demo: summary")
    cpu = sum(st.cpu_seconds for st in stages)
    times = Table(title=f"stages: {total / 60:.1f} min in all ({cpu / 60:.1f} CPU-min on {os.cpu_count()} cores)")
    times.add_column("stage")
    times.add_column("time", justify="right")
    times.add_column("CPU", justify="right")
    times.add_column("what it did")
    for st in stages:
        times.add_row(st.name, f"{st.seconds:.0f}s", f"{st.cpu_seconds:.0f}s", st.summary[0] if st.summary else "")
    console.print(times)

    mt, rl, ex = midtrain_results(out), rl_results(out), results.get("export")
    figures = Table(title="results")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    figures.add_row("mid-training loss (first -> last log)", f"{mt['loss_first']:.2f} -> {mt['loss_last']:.2f}")
    if "eval/next_state_accuracy" in mt:
        figures.add_row("held-out next-state accuracy", f"{mt['eval/next_state_accuracy']:.3f}")
        figures.add_row("held-out output accuracy", f"{mt['eval/output_accuracy']:.3f}")
    figures.add_row("tokens per source", ", ".join(f"{k} {v:,}" for k, v in mt["tokens"].items()))
    figures.add_row(f"RL mean reward, first -> last fifth of {rl['steps']} steps", f"{rl['first']:+.2f} -> {rl['last']:+.2f}")
    if ex:
        figures.add_row("parity answered right (greedy, RL prompt), before -> after RL",
                        f"{ex['before']:.0%} -> {ex['after']:.0%}")
    console.print(figures)

    paths = {"traces": out / "traces", "trajectories": out / "trajectories", "forager tasks": out / "forager" / "tasks.jsonl",
             "tokenizer": out / "tokenizer", "mid-trained model": out / "hf", "training metrics": out / "metrics.jsonl",
             "loss curve": out / "loss.png", "TensorBoard": out / "tensorboard", "evaluation": out / "eval",
             "RL metrics": out / "rl" / "metrics.jsonl", "RL reward curve": out / "rl" / "reward.png",
             "RL model": out / "rl" / "hf"}
    where = Table(title="where to look")
    where.add_column("artefact")
    where.add_column("path")
    for name, path in paths.items():
        if path.exists():
            where.add_row(name, str(path))
    console.print(where)
    return {"seconds": {st.name: round(st.seconds, 1) for st in stages}, "total_s": round(total, 1),
            "cpu_seconds": {st.name: round(st.cpu_seconds, 1) for st in stages},
            "results": {"midtrain": mt, "rl": rl, "export": ex}, "paths": {k: str(v) for k, v in paths.items() if v.exists()}}


if __name__ == "__main__":
    sys.exit(main())
