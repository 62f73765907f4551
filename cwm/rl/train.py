"""GRPO goal alignment of a mid-trained model: `torchrun --nproc_per_node N cwm/rl/train.py --recipe R`.

Each rank samples its own groups (in-process copy or a server), the learner is FSDP2-sharded over all ranks
(`cwm/model/parallelize.py`), and checkpoints and the final Hugging Face export are mid-training's
(`cwm/model/checkpoint.py`), so a run resumes where it stopped and its output loads with `from_pretrained`.
Per step, rank 0 appends to `{out}/metrics.jsonl`: step, mean_reward, pass_rate (and per environment),
response_len, clip_frac, entropy, staleness, dropped/skipped counts, loss, grad_norm, lr and timings, and what
each signal switch did (curriculum band occupancy, reward-model and committee scores, search/* per tree).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script by torchrun: make `cwm` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
import torch.distributed as dist

from cwm.rl.curriculum import CurriculumSampler, make_sampler
from cwm.rl.env import EnvFactory
from cwm.rl.generate import DiskWeightPush, LocalGenerator, ServerGenerator
from cwm.rl.learner import backward_batch, select
from cwm.rl.producer import RolloutProducer
from cwm.rl import committee as rl_committee
from cwm.rl.reward_model import load_model as load_reward_model, load_term, shape_trajectories
from cwm.rl.recipe import EnvSpec, RecipeError, RLRecipe, load_recipe
from cwm.rl.rollout import ChatFormat, Trajectory, TaskSampler, rollout_groups
from cwm.rl.search import reward_model_value, tree_rollout_groups, value_from_tests_run


# Episodes that end without the policy having had a fair turn: neither trained on nor counted in the rewards.
VOID_OUTCOMES = ("sandbox_error", "prompt_too_long")


def build_envs(specs: list[EnvSpec], say=print) -> tuple[list[EnvFactory], list[float]]:
    """The environment families of a recipe and their weights; an optional one that cannot be set up is left
    out with a printed reason."""
    factories, weights = [], []
    for spec in specs:
        try:
            factories.append(_build_env(spec))
            weights.append(spec.weight)
        except (RecipeError, ValueError, OSError) as e:
            if spec.required:
                raise
            say(f"cwm-rl: SKIPPED env {spec.kind}: {e}")
    if not factories:
        raise RecipeError("no environment could be set up (see the SKIPPED lines above)")
    return factories, weights


def _build_env(spec: EnvSpec) -> EnvFactory:
    if spec.kind == "output_prediction":
        from cwm.rl.envs.output_prediction import OutputPredictionTasks, tasks_from_shards

        if not spec.shards:
            raise RecipeError("env output_prediction: set `shards:` to a trace shard directory (cwm-trace -o DIR)")
        return OutputPredictionTasks(tasks_from_shards(spec.shards, limit=spec.limit))
    if spec.kind == "codegen":
        from cwm.jail import Limits
        from cwm.rl.envs.codegen import CodeGenTasks, load_tasks

        if not spec.tasks:
            raise RecipeError("env codegen: set `tasks:` to a .jsonl file of {id, prompt, entry, tests}")
        return CodeGenTasks(load_tasks(spec.tasks)[:spec.limit],
                            Limits(timeout_s=spec.timeout_s, memory_mb=spec.memory_mb, max_procs=32))
    if spec.kind in ("swe_rl", "bugfixer"):
        from cwm.rl.envs.swe_rl import EditAnswerTasks

        return EditAnswerTasks.from_spec(spec, name=spec.kind)
    if spec.kind == "testwriter":
        from cwm.rl.envs.testwriter import TestWriterTasks

        return TestWriterTasks.from_spec(spec)
    from cwm.rl.envs.swe import SWETasks

    return SWETasks.from_spec(spec)


def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device); a process group only when launched by torchrun with more than one rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def _gather(obj):
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def step_metrics(rows: list[dict], totals: dict[str, float]) -> dict[str, float]:
    """Rewards over every sampled trajectory (all ranks); loss statistics over the trained tokens."""
    n = max(1, len(rows))
    m = {"mean_reward": sum(r["reward"] for r in rows) / n if rows else None,
         "pass_rate": sum(r["passed"] for r in rows) / n if rows else None}
    for name in sorted({r["env"] for r in rows}):
        mine = [r for r in rows if r["env"] == name]
        m[f"pass_rate/{name}"] = sum(r["passed"] for r in mine) / len(mine)
        m[f"mean_reward/{name}"] = sum(r["reward"] for r in mine) / len(mine)
    m["response_len"] = sum(r["response_tokens"] for r in rows) / n
    sampled = sum(r["response_tokens"] for r in rows)
    # -mean log-prob of the sampled tokens: a Monte Carlo estimate of the sampling policy's entropy, every step
    m["sample_entropy"] = -sum(r["logprob_sum"] for r in rows) / sampled if sampled else None
    m["turns"] = sum(r["turns"] for r in rows) / n
    for name in sorted({k for r in rows for k in r.get("terms", {})}):   # each reward component's mean
        have = [r["terms"][name] for r in rows if name in r.get("terms", {})]
        m[f"reward_terms/{name}"] = sum(have) / len(have)
    if any(r.get("terms") for r in rows):  # and per trajectory, for the environments that report components
        m["trajectories"] = [{"env": r["env"], "task": r["task"], "reward": r["reward"], "outcome": r["outcome"],
                              **r["terms"]} for r in rows]
    trees = {r["group"]: r["search"] for r in rows if r.get("search")}  # one tree per group (search: tree)
    for key in ("nodes_expanded", "turns_sampled", "episodes", "replays"):
        if trees:
            m[f"search/{key}"] = sum(t[key] for t in trees.values()) / len(trees)
    m["staleness"] = sum(r["staleness"] for r in rows) / n
    m["staleness_max"] = max((r["staleness"] for r in rows), default=0)
    tokens = totals["tokens"]
    m["clip_frac"] = totals["clipped_tokens"] / tokens if tokens else 0.0
    m["entropy"] = totals["entropy_sum"] / tokens if tokens else None  # exact, over the trained tokens
    m["trained_tokens"] = tokens
    for key in ("trained_trajectories", "skipped_groups", "dropped_stale", "void", "loss"):
        m[key] = totals[key]
    return m


def _drop_metrics_after(path: Path, step: int) -> None:
    """A run resumed from step N rewrites the lines of steps after N (logged before it stopped, not checkpointed)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(path)


def _row(t: Trajectory, version: int) -> dict:
    return {"env": t.env, "reward": t.reward, "passed": t.passed, "response_tokens": t.response_tokens,
            "turns": t.turns, "staleness": version - t.version,
            "logprob_sum": sum(lp for lp, m in zip(t.logprobs, t.mask) if m),
            # what made the reward (rewards.py: tests, similarity, lint, types, turn_cost, format)
            "terms": dict(t.info.get("reward_terms") or {}), "task": t.task, "outcome": t.info.get("outcome"),
            "group": (dist.get_rank() if dist.is_initialized() else 0, t.group), "search": t.info.get("search")}


def train(recipe: RLRecipe, *, progress: bool = True) -> Path:
    """Run the recipe to `recipe.steps`, resuming from the newest checkpoint in `{out}/checkpoints`."""
    if not Path(recipe.init, "config.json").exists():
        raise RecipeError(f"init {recipe.init}: no exported model there; run the mid-training demo first "
                          "(make demo writes runs/demo/hf) or set `init:` to an HF model folder")
    from transformers import AutoModelForCausalLM

    from cwm.data.tokenizer import load_tokenizer
    from cwm.model import checkpoint
    from cwm.model.parallelize import parallelize
    from cwm.train import build_optimizer, lr_lambda

    rank, world, device = init_distributed()
    if device.type == "cpu" and recipe.cpu_threads:
        torch.set_num_threads(recipe.cpu_threads)
    out = Path(recipe.out)
    torch.manual_seed(recipe.seed + rank)
    tokenizer = load_tokenizer(recipe.init)
    model = AutoModelForCausalLM.from_pretrained(recipe.init, dtype=torch.float32, attn_implementation="sdpa")
    config = model.config
    model.to(device)
    bf16 = recipe.bf16 if recipe.bf16 is not None else device.type == "cuda"
    chat = ChatFormat(tokenizer)
    gcfg = recipe.generator
    if gcfg.kind == "local":
        replica = copy.deepcopy(model)
        if bf16:
            replica.to(torch.bfloat16)
        generator = LocalGenerator(replica, chat.stop_ids, tokenizer.pad_token_id, seed=recipe.seed + 1000 * rank)
    elif gcfg.kind == "server":
        if not gcfg.base_url or not gcfg.push_dir:
            raise RecipeError("generator server: set generator.base_url and generator.push_dir (a folder the "
                              "server can read)")
        push = DiskWeightPush(gcfg.base_url, gcfg.push_dir,
                              lambda m, path: checkpoint.export_hf(m, config, tokenizer, path),
                              route=gcfg.push_route, is_writer=rank == 0)
        generator = ServerGenerator(gcfg.base_url, gcfg.model_name, chat.stop_ids, push=push)
    else:
        raise RecipeError(f"generator kind '{gcfg.kind}' unknown; use local or server")
    ref_model = None
    if recipe.grpo.kl_coef > 0:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    mesh = None
    if dist.is_initialized():
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device.type, (world,))
    model = parallelize(model, mesh, bf16=bf16, activation_checkpointing=False, compile=False)
    optimizer = build_optimizer(model, recipe.optim, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(recipe.optim, recipe.steps))
    factories, weights = build_envs(recipe.envs, say=print if rank == 0 else (lambda *a: None))
    sampler = make_sampler(factories, weights, recipe.seed + rank, recipe.curriculum, recipe.group_size)
    reward_model = load_term(recipe.reward_model, device)
    committee = rl_committee.load_term(recipe.committee, other_weight=recipe.reward_model.weight)

    start = 0
    last = checkpoint.latest(out / "checkpoints")
    if last is not None:
        start = checkpoint.load(last, model, optimizer, scheduler, sampler)
        generator.push_weights(model, start)
        if rank == 0:
            print(f"cwm-rl: resumed from {last} at step {start}", flush=True)
    if start >= recipe.steps and (out / "hf" / "config.json").exists():
        if rank == 0:
            print(f"cwm-rl: {out} already finished {start} steps; nothing to do", flush=True)
        return out / "hf"

    max_staleness = recipe.grpo.max_staleness if gcfg.overlap else 0
    if recipe.search.mode == "tree":  # a group is the episodes one search tree ended
        value = value_from_tests_run
        if recipe.search.value == "reward_model":
            value = reward_model_value(reward_model or load_reward_model(recipe.reward_model.path, device))

        def make_batch(i):
            return tree_rollout_groups(sampler, recipe.groups_per_step, recipe.group_size, generator, chat,
                                       recipe.rollout, recipe.search, first_group_id=i * recipe.groups_per_step,
                                       value=value)
    else:
        def make_batch(i):
            return rollout_groups(sampler, recipe.groups_per_step, recipe.group_size, generator, chat,
                                  recipe.rollout, first_group_id=i * recipe.groups_per_step)
    producer = RolloutProducer(make_batch, generator.sync, max_staleness, first_batch=start,
                               end_batch=recipe.steps).start()
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        _drop_metrics_after(out / "metrics.jsonl", start)
    log = open(out / "metrics.jsonl", "a") if rank == 0 else None
    temperature = recipe.rollout.sampling.temperature
    try:
        for step in range(start, recipe.steps):
            t0 = time.monotonic()
            fresh, stale = producer.get(learner_version=step)
            t1 = time.monotonic()
            void = [t for t in fresh if t.info.get("outcome") in VOID_OUTCOMES]
            fresh = [t for t in fresh if t.info.get("outcome") not in VOID_OUTCOMES]
            shaped, extra = shape_trajectories(reward_model, fresh, tokenizer, recipe.reward_model.weight)
            shaped, review = rl_committee.shape_trajectories(committee, shaped, tokenizer, recipe.committee.weight)
            extra.update(review)
            batch = select(shaped, recipe.grpo)  # issue 22's switches; `extra`: what each did this step
            if isinstance(sampler, CurriculumSampler):  # void episodes say nothing about the task's difficulty
                sampler.update([(t.env, t.task, t.passed) for t in fresh + stale]
                               + [(t.env, t.task, None) for t in void])
                extra.update(sampler.step_metrics())
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and mesh is None):
                totals = backward_batch(model, batch, recipe.grpo, pad_id=tokenizer.pad_token_id,
                                        temperature=temperature, micro_batch_tokens=recipe.micro_batch_tokens,
                                        ref_model=ref_model)
            totals.update(trained_trajectories=len(batch.trajectories), skipped_groups=batch.skipped_groups,
                          dropped_stale=len(stale), void=len(void))
            rows = [_row(t, step) for t in fresh + stale]
            gathered = _gather((rows, totals))
            rows = [r for rs, _ in gathered for r in rs]
            totals = {k: sum(t[k] for _, t in gathered) for k in totals}
            grad_norm = None
            if totals["tokens"] > 0:  # no group had signal: nothing to step on
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.optim.grad_clip))
                optimizer.step()
                scheduler.step()
            generator.push_weights(model, step + 1)
            producer.advance(step + 1)
            if rank == 0:
                m = {"step": step + 1, **step_metrics(rows, totals), "grad_norm": grad_norm,
                     "lr": scheduler.get_last_lr()[0], "rollout_wait_s": round(t1 - t0, 3),
                     "learn_s": round(time.monotonic() - t1, 3), **extra}
                log.write(json.dumps(m) + "\n")
                log.flush()
                if progress:
                    print(f"cwm-rl: step {step + 1}/{recipe.steps} reward {m['mean_reward'] or 0:+.3f} "
                          f"pass {m['pass_rate'] or 0:.3f} len {m['response_len']:.1f} clip {m['clip_frac']:.3f} "
                          f"stale {m['staleness']:.2f} void {m['void']}", flush=True)
            if recipe.checkpoint_every and (step + 1) % recipe.checkpoint_every == 0 and step + 1 < recipe.steps:
                checkpoint.save(out / "checkpoints", step + 1, model, optimizer, scheduler, sampler)
    finally:
        producer.close()
        if log is not None:
            log.close()
    checkpoint.save(out / "checkpoints", recipe.steps, model, optimizer, scheduler, sampler)
    hf = checkpoint.export_hf(model, config, tokenizer, out / "hf")
    if rank == 0:
        print(f"cwm-rl: exported {hf} (metrics: {out / 'metrics.jsonl'})", flush=True)
    return hf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cwm/rl/train.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", required=True, help="RL recipe YAML (a path or a name in data_recipes/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set steps=3 --set grpo.max_staleness=0")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        train(recipe)
    except (ValueError, OSError) as e:  # RecipeError, a bad task file, a missing folder: one line, exit 2
        print(f"cwm-rl: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cwm-rl: interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
