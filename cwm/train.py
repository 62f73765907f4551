"""Mid-train a CWM-architecture model on a packed recipe mix of traces, trajectories and code.

    torchrun --nproc-per-node 8 cwm/train.py --recipe data_recipes/cwm.yaml --training.steps 100000
    python cwm/train.py --recipe data_recipes/demo.yaml --out runs/demo
    python cwm/train.py --recipe R --model.init /path/to/hf-model --out runs/mid   # continue a pretrained model
    python cwm/train.py --recipe data_recipes/cwm.yaml --plan --plan.devices 256 --plan.device_gb 80

Overrides are `--section.field value` for any field of the config dataclasses below (or `section.field: value`
in the recipe's `training:` block; the command line wins). The loop reads top to bottom: set up (process group,
tokenizer, model, parallelism, optimizer, loader, resume), then per step: micro-batches, loss, backward, clip,
step, log, evaluate, checkpoint; at the end: checkpoint, evaluate, export to Hugging Face, plot.

The model is built on the meta device, sharded, then materialised and filled shard by shard (cwm/model/
pretrained.py): no rank holds the whole model. The loss never forms [tokens, vocabulary] logits: the model's
head computes it chunk by chunk (cwm/model/loss.py). `--plan` prints the memory per device instead of training.

A run in `--out` that already holds a checkpoint continues from it (same loss sequence as never stopping).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # `python cwm/train.py` / `torchrun cwm/train.py`: make the toolkit importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.distributed as dist
import torch.nn.functional as F

from cwm.data.recipe import RecipeError, load_recipe
from cwm.data.tokenizer import TokenizerError
from cwm.model.pretrained import PretrainedError


class ConfigError(ValueError):
    """A bad `--section.field` override or `training:` entry; one line naming it."""


@dataclass
class ModelConfig:
    preset: str = "tiny"            # tiny | 125m | 1b | 8b | cwm-32b (cwm.model.config.PRESETS)
    config: str | None = None       # a CwmConfig JSON file or folder instead of a preset
    init: str | None = None         # a pretrained Hugging Face folder to continue (its architecture and tokenizer)
    rope_theta: float | None = None  # with init: a new RoPE θ (position extension)
    rope_scaling: str | None = None  # with init: JSON merged into the config's rope_parameters, e.g. {"rope_type": "yarn", "factor": 4.0}
    attn_implementation: str = "cwm_packed"


@dataclass
class OptimConfig:
    lr: float = 3e-4
    min_lr_ratio: float = 0.1       # cosine decays to lr × this
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1       # on matrices only, not on norms
    grad_clip: float = 1.0
    warmup_steps: int = 100


@dataclass
class TrainingConfig:
    steps: int = 1000               # length of the LR schedule
    stop_after: int | None = None   # stop (with a checkpoint) at this step though the schedule runs on
    batch_tokens: int | None = None  # tokens per optimizer step over all ranks; None: one row per rank
    seed: int = 0
    num_workers: int = 0            # dataloader workers per rank
    device: str = "auto"            # auto | cpu | cuda
    bf16: str = "auto"              # auto (on GPU) | on | off
    activation_checkpointing: str = "auto"  # auto (on GPU) | on | off
    compile: bool = False
    cpu_threads: int | None = None  # torch intra-op threads on CPU (1 avoids oversubscribing a shared machine)
    loss_chunk: int = 512           # tokens per chunk of the linear + cross-entropy (cwm/model/loss.py)


@dataclass
class CheckpointConfig:
    every: int = 0                  # steps between checkpoints; 0: only at the end
    keep: int = 2
    resume: bool = True             # continue from the newest checkpoint in --out


@dataclass
class EvalConfig:
    every: int = 0                  # steps between evaluations; 0: only at the end
    source: str | None = None       # trace source whose held-out records are evaluated (default: first with holdout)
    max_traces: int = 32
    max_outputs: int = 16
    max_new_tokens: int = 256


@dataclass
class LogConfig:
    every: int = 10
    tensorboard: bool = True
    peak_tflops: float | None = None  # per device, for MFU; default: known GPUs, measured matmul rate on CPU


@dataclass
class ParallelConfig:
    cp: int = 1                     # context parallelism: ranks that split each row (cwm/model/context_parallel.py)
    cp_balance: str = "flops"       # split rows at equal attention area + matmul FLOPs (flops) or area alone (area)


@dataclass
class PlanConfig:
    devices: int | None = None      # devices to plan for (default: this run's ranks)
    device_gb: float = 80.0         # memory per device to fit in


@dataclass
class JobConfig:
    recipe: str = ""
    out: str = "runs/train"
    export: bool = True             # write a Hugging Face folder to OUT/hf at the end
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)


# -- configuration -------------------------------------------------------------------------------------------
def _sections() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(JobConfig) if dataclasses.is_dataclass(f.default_factory)}


def _parse_value(text, default):
    """A command-line/recipe value, typed like the field's default (None defaults read YAML scalars)."""
    if not isinstance(text, str):
        return text
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0", "on", "off"):
            raise ValueError(f"expected true/false, got {text!r}")
        return text.lower() in ("true", "1", "on")
    if isinstance(default, int):
        return int(float(text)) if "e" in text.lower() else int(text)
    if isinstance(default, float):
        return float(text)
    if isinstance(default, str):
        return text
    import yaml

    value = yaml.safe_load(text)
    try:
        return float(value) if isinstance(value, str) and any(c.isdigit() for c in value) else value
    except ValueError:
        return value


def apply_override(cfg: JobConfig, dotted: str, value) -> None:
    section, _, name = dotted.partition(".")
    target = getattr(cfg, section, None) if name else cfg
    name = name or section
    if target is None or not dataclasses.is_dataclass(target) or name not in {f.name for f in dataclasses.fields(target)}:
        raise ConfigError(f"unknown setting '{dotted}'")
    try:
        setattr(target, name, _parse_value(value, getattr(target, name)))
    except ValueError as e:
        raise ConfigError(f"setting '{dotted}': {e}") from None


def parse_args(argv: list[str] | None) -> JobConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--recipe", required=True, help="data recipe YAML (data_recipes/)")
    parser.add_argument("--out", help="run folder: checkpoints, metrics.jsonl, tensorboard/, hf/, loss.png")
    parser.add_argument("--export", help="true/false: write OUT/hf at the end")
    parser.add_argument("--plan", action="store_true", help="print the memory per device and whether it fits; no training")
    for section, cls in _sections().items():
        for f in dataclasses.fields(cls):
            parser.add_argument(f"--{section}.{f.name}", dest=f"{section}.{f.name}", metavar="V", default=None)
    args = vars(parser.parse_args(argv))
    planning = args.pop("plan")
    cfg = JobConfig(recipe=args.pop("recipe"))
    recipe = load_recipe(cfg.recipe, check_files=not planning)  # a plan needs no data
    for dotted, value in (recipe.training or {}).items():
        apply_override(cfg, dotted, value)
    for dotted, value in args.items():
        if value is not None:
            apply_override(cfg, dotted, value)
    from cwm.model.config import PRESETS

    if not cfg.model.config and not cfg.model.init and cfg.model.preset not in PRESETS:
        raise ConfigError(f"model preset '{cfg.model.preset}' unknown; use one of {', '.join(PRESETS)} "
                          f"or --model.config FILE or --model.init HF_FOLDER")
    if cfg.training.loss_chunk < 1:
        raise ConfigError(f"setting 'training.loss_chunk': must be >= 1, got {cfg.training.loss_chunk}")
    cfg.planning = planning
    return cfg


# -- helpers -------------------------------------------------------------------------------------------------
def lr_lambda(cfg: OptimConfig, steps: int):
    """Linear warmup, then cosine decay to `min_lr_ratio` at the last step."""
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def build_optimizer(model, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type == "cuda")


def peak_flops(cfg: LogConfig, device: torch.device) -> float:
    """Dense bf16 peak of a known GPU; on CPU the fp32 matmul rate measured here (so MFU is relative to it)."""
    if cfg.peak_tflops:
        return cfg.peak_tflops * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in (("H200", 989), ("H100", 989), ("A100", 312), ("L40", 181), ("A10", 125), ("4090", 165)):
            if key in name:
                return tflops * 1e12
        return float("nan")
    a = torch.randn(512, 512)
    a @ a
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 0.2:
        a @ a
        n += 1
    return 2 * 512**3 * n / (time.perf_counter() - start)


def all_reduce(values: torch.Tensor, op=None) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(values, op=op or dist.ReduceOp.SUM)
    return values


def token_losses(model, batch: dict, autocast: bool, chunk_size: int = 512) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The summed cross entropy of a packed row (differentiable), and per token (detached) its loss, whether it
    counts and its source. HF convention: position j predicts labels[j + 1]. The model's head computes the loss
    chunk by chunk (cwm/model/loss.py): no [T, V] logits."""
    from cwm.model.loss import HeadRequest, head_request, shifted_targets

    if "cp_shard" in batch:  # this rank's share of a row (cwm/model/context_parallel.py): targets come shifted
        with torch.autocast(batch["input_ids"].device.type, dtype=torch.bfloat16, enabled=autocast), \
                head_request(model, HeadRequest("loss_sum", batch["targets"], chunk_size=chunk_size)) as request:
            total = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                          cp_shard=batch["cp_shard"]).logits
        targets = batch["targets"][0]
        return total, request.results["token_losses"][0], targets != -100, batch["target_source_ids"][0]
    cu = batch["cu_seqlens"]
    targets = shifted_targets(batch["input_ids"], batch["labels"])
    with torch.autocast(batch["input_ids"].device.type, dtype=torch.bfloat16, enabled=autocast), \
            head_request(model, HeadRequest("loss_sum", targets, chunk_size=chunk_size)) as request:
        total = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                      cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=batch["max_seqlen"],
                      max_length_k=batch["max_seqlen"]).logits
    labels = batch["labels"][0, 1:]
    return total, request.results["token_losses"][0, :-1], labels != -100, batch["source_ids"][0, 1:]


def accumulate_gradients(model, micro: list[dict], *, world: int = 1, cp: int = 1, shard_rows=lambda b: b,
                         autocast: bool = False, chunk_size: int = 512) -> list[tuple]:
    """Backward over one optimizer step's micro-batches (gradient accumulation), into `.grad`.

    The loss is normalised by the loss tokens of the whole step (all ranks, all micro-batches), so every token
    weighs the same and the accumulated gradient is that of one batch holding every row. Returns per
    micro-batch the detached (token losses, counts, source ids) for statistics.
    """
    n_loss = all_reduce(torch.tensor([float(sum(int((b["labels"][0, 1:] != -100).sum()) for b in micro))],
                                     device=micro[0]["input_ids"].device)) / cp  # each row is read by its cp ranks
    stats = []
    for b in map(shard_rows, micro):
        total, losses, mask, src = token_losses(model, b, autocast=autocast, chunk_size=chunk_size)
        (total * world / n_loss).backward()  # FSDP averages gradients over ranks
        stats.append((losses.detach(), mask, src))
    return stats


def rss_bytes() -> tuple[int, int]:
    """(current, peak) resident memory of this process.

    The peak is the address space's high-water mark (VmHWM), not getrusage's ru_maxrss: Linux carries ru_maxrss
    across exec from the process that forked (or vforked) us, so under a large parent (a long pytest session) it
    reports the parent's peak instead of ours."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def _retie(model, config) -> None:
    """`to_empty` gives each module a new parameter (meta -> real storage), which unties tied embeddings; tie them
    again (FSDP2 shards the shared parameter once, in the root unit)."""
    if not getattr(config, "tie_word_embeddings", False):
        return
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    if head.weight is not embed.weight:
        head.weight = embed.weight


RSS_BEFORE_MATERIALISING = 0


def build_model(cfg: JobConfig, recipe, out: Path, device: torch.device, mesh, *, bf16: bool, ac: bool, say):
    """Tokenizer, config and the parallelised model with its weights, built without a full copy on any rank.

    Returns (model, config, tokenizer, tokenizer_dir, model_class). Every check of `--model.init` runs before
    anything is written.
    """
    from cwm.data.tokenizer import load_tokenizer
    from cwm.model import loss, pretrained
    from cwm.model.config import build_config
    from cwm.model.parallelize import parallelize

    if cfg.model.init:
        source = pretrained.inspect(cfg.model.init)
        tokenizer_dir = out / "tokenizer"
        if not dist.is_initialized() or dist.get_rank() == 0:
            pretrained.prepare_tokenizer(source, tokenizer_dir)
        if dist.is_initialized():
            dist.barrier()
        tokenizer = load_tokenizer(tokenizer_dir)
        config = pretrained.fit_config(source, tokenizer, seq_len=recipe.seq_len, rope_theta=cfg.model.rope_theta,
                                       rope_scaling=cfg.model.rope_scaling)
        model_class = source.model_class
    else:
        if cfg.model.rope_theta is not None or cfg.model.rope_scaling:
            raise ConfigError("settings 'model.rope_theta'/'model.rope_scaling' apply to --model.init; "
                              "a preset or --model.config sets them in its config")
        from transformers import CwmForCausalLM

        source, tokenizer_dir = None, recipe.tokenizer
        tokenizer = load_tokenizer(tokenizer_dir)
        config = build_config(tokenizer, preset=cfg.model.preset, config_file=cfg.model.config, seq_len=recipe.seq_len)
        model_class = CwmForCausalLM
    if cfg.model.attn_implementation == "cwm_packed":
        from cwm.model.attention import register

        register()
    global RSS_BEFORE_MATERIALISING
    RSS_BEFORE_MATERIALISING = rss_bytes()[0]  # everything imported, no weight allocated: the baseline of --plan
    with torch.device("meta"):
        model = model_class._from_config(config, attn_implementation=cfg.model.attn_implementation)
        model.tie_weights()  # tied input/output embeddings are one parameter before sharding (and loading)
    loss.install(model)  # the head computes the loss in place of logits while asked (cwm/model/loss.py)
    model = parallelize(model, mesh, bf16=bf16, activation_checkpointing=ac, compile=cfg.training.compile)
    model.to_empty(device=device)
    _retie(model, config)
    pretrained.reset_buffers(model, device)
    if source is not None:
        pretrained.load_weights(model, source)
    else:
        pretrained.init_weights(model, config, cfg.training.seed)
    return model, config, tokenizer, tokenizer_dir, model_class


# -- the run -------------------------------------------------------------------------------------------------
def train(cfg: JobConfig) -> dict:
    from cwm.data.loader import PackedLoader
    from cwm.eval.metrics import MetricsLogger, plot_losses
    from cwm.model import checkpoint
    from cwm.model.config import flops_per_row, matmul_parameters
    from cwm.model.parallelize import build_mesh

    recipe = load_recipe(cfg.recipe)
    out = Path(cfg.out)
    distributed = "RANK" in os.environ
    use_cuda = cfg.training.device == "cuda" or (cfg.training.device == "auto" and torch.cuda.is_available())
    if distributed:
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    cp = cfg.parallel.cp
    if cp < 1 or world % cp or cfg.parallel.cp_balance not in ("flops", "area"):
        raise ConfigError(f"--parallel.cp {cp} must divide the {world} rank(s), and --parallel.cp_balance be "
                          f"flops or area (got {cfg.parallel.cp_balance!r})")
    dp_rank, dp_world, cp_rank = rank // cp, world // cp, rank % cp  # the CP ranks of a DP group are consecutive
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    elif cfg.training.cpu_threads:
        torch.set_num_threads(cfg.training.cpu_threads)
    on_gpu = device.type == "cuda"
    bf16 = cfg.training.bf16 == "on" or (cfg.training.bf16 == "auto" and on_gpu)
    ac = cfg.training.activation_checkpointing == "on" or (cfg.training.activation_checkpointing == "auto" and on_gpu)
    say = print if rank == 0 else (lambda *a, **k: None)

    torch.manual_seed(cfg.training.seed)
    mesh = build_mesh(device.type, world, cp=cp) if distributed else None
    model, config, tokenizer, tokenizer_dir, model_class = build_model(cfg, recipe, out, device, mesh, bf16=bf16,
                                                                       ac=ac, say=say)
    rss_before, built_peak = RSS_BEFORE_MATERIALISING, rss_bytes()[1]
    n_params = sum(p.numel() for p in model.parameters())
    matmuls = matmul_parameters(model, config)
    model.train()
    print(f"rank {rank}: built the model, RSS {rss_before / 2**30:.3f} GB before, peak {built_peak / 2**30:.3f} GB "
          f"after ({n_params * 4 / 2**30:.3f} GB of fp32 parameters in all)", flush=True)

    optimizer = build_optimizer(model, cfg.optim, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.optim, cfg.training.steps))
    # Every CP rank of a DP group reads the same rows and trains on its share of each (shard_rows).
    loader = PackedLoader(recipe, tokenizer_dir, rank=dp_rank, world=dp_world, num_workers=cfg.training.num_workers)
    row_tokens = recipe.seq_len
    grad_accum = max(1, (cfg.training.batch_tokens or row_tokens * dp_world) // (row_tokens * dp_world))
    shard_rows = _cp_sharder(config, cfg.parallel, cp_rank, mesh["cp"].get_group() if cp > 1 else None)
    metrics = MetricsLogger(out, enabled=rank == 0, tensorboard=cfg.log.tensorboard)
    source_names = [s.name for s in recipe.sources]

    step = 0
    ckpt_dir = out / "checkpoints"
    last = checkpoint.latest(ckpt_dir)
    if last is not None and not cfg.checkpoint.resume:
        raise ConfigError(f"{ckpt_dir} holds checkpoints of an earlier run; resume it "
                          f"(--checkpoint.resume true) or train into another --out")
    if last is not None:
        step = checkpoint.load(last, model, optimizer, scheduler, loader)
        say(f"resumed from {last} at step {step}")
    metrics.truncate_after(step)  # steps logged after the checkpoint will be logged again
    evaluator = _build_eval(cfg, recipe, tokenizer, say)
    say(f"model {cfg.model.init or cfg.model.config or cfg.model.preset} ({model_class.__name__}): "
        f"{n_params / 1e6:.2f}M parameters, "
        f"{world} rank(s) on {device.type}, {'bf16' if bf16 else 'fp32'}, grad accumulation {grad_accum}, "
        f"{grad_accum * dp_world * row_tokens} tokens/step, attention {cfg.model.attn_implementation}"
        + (f", context parallel {cp} (balance {cfg.parallel.cp_balance})" if cp > 1 else ""))
    if cfg.model.attn_implementation != "cwm_packed":
        say(f"warning: attention {cfg.model.attn_implementation} may let the documents of a packed row see each "
            f"other (transformers' eager/sdpa do for this model); cwm_packed keeps them apart")
    peak = peak_flops(cfg.log, device)

    stop_at = min(cfg.training.steps, cfg.training.stop_after or cfg.training.steps)
    batches = iter(loader)
    # Per source since the last log line: summed losses, loss tokens, and real tokens (every position whose target
    # is a token of that source, masked or not: what the mix put in, logged as tokens/NAME, so summing a run's lines
    # gives each source's share). Logged losses average the window.
    window_losses = torch.zeros(3, len(source_names), device=device, dtype=torch.float64)
    window_start, window_flops = time.perf_counter(), 0.0
    last_values: dict = {}
    interrupted, loader_at_step = False, loader.state_dict()
    try:
        while step < stop_at:
            loader_at_step = loader.state_dict()  # to hand back this step's rows if it is interrupted
            micro = [next(batches, None) for _ in range(grad_accum)]
            if all_reduce(torch.tensor([float(any(b is None for b in micro))], device=device)).item() > 0:
                say(f"data exhausted at step {step}: every source has used its epochs")
                break
            # FLOPs charge attention per document (flops_per_row), counted from the host copy of the rows: no
            # device sync on the step's path; summed over ranks only when a line is logged
            window_flops += sum(flops_per_row(config, matmuls, _doc_lengths(b)) for b in micro)
            micro = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()} for b in micro]
            for losses, mask, src in accumulate_gradients(model, micro, world=world, cp=cp, shard_rows=shard_rows,
                                                          autocast=bf16 and mesh is None,
                                                          chunk_size=cfg.training.loss_chunk):
                ids = src.clamp(min=0)  # weights, not masked gathers: no device sync
                window_losses[0].index_add_(0, ids, torch.where(mask, losses.detach(), 0).double())
                window_losses[1].index_add_(0, ids, mask.double())
                window_losses[2].index_add_(0, ids, (src >= 0).double())
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            if hasattr(grad_norm, "full_tensor"):
                grad_norm = grad_norm.full_tensor()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            values = {}
            if step % cfg.log.every == 0 or step == stop_at:
                per_source = all_reduce(window_losses.clone())
                # every CP rank counted the whole rows' FLOPs: divide them once; tokens are each rank's own share
                flops = float(all_reduce(torch.tensor([window_flops], device=device, dtype=torch.float64))) / cp
                elapsed = time.perf_counter() - window_start
                tps = float(per_source[2].sum()) / elapsed  # real tokens (not padding)
                values = {"loss": float(per_source[0].sum() / per_source[1].sum()),
                          "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                          "tokens_per_s": tps, "mfu": flops / elapsed / (peak * world),
                          **{f"loss/{n}": float(per_source[0, i] / per_source[1, i])
                             for i, n in enumerate(source_names) if per_source[1, i] > 0},
                          **{f"tokens/{n}": int(per_source[2, i]) for i, n in enumerate(source_names)}}
                say(f"step {step:6d} | loss {values['loss']:.4f} | lr {values['lr']:.2e} | "
                    f"grad {values['grad_norm']:.3f} | {tps:,.0f} tok/s | mfu {values['mfu']:.1%}")
                window_losses.zero_()
            if evaluator and (step == cfg.training.steps or (cfg.eval.every and step % cfg.eval.every == 0)):
                values.update(_evaluate(evaluator, model, device, say))
            if values:
                metrics.log(step, values)  # one line per logged step: training metrics and evaluation together
                last_values.update(values)
                window_start, window_flops = time.perf_counter(), 0.0
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step < stop_at:
                checkpoint.save(ckpt_dir, step, model, optimizer, scheduler, loader, keep=cfg.checkpoint.keep)
    except KeyboardInterrupt:
        interrupted = True
        loader.load_state_dict(loader_at_step)
        optimizer.zero_grad(set_to_none=True)
        say(f"interrupted at step {step}: saving a checkpoint to continue from")

    print(f"rank {rank}: peak RSS {rss_bytes()[1] / 2**30:.3f} GB after {step} steps", flush=True)
    checkpoint.save(ckpt_dir, step, model, optimizer, scheduler, loader, keep=cfg.checkpoint.keep)
    summary = {"step": step, **last_values}
    if not interrupted:
        if cfg.export:
            checkpoint.export_hf(model, config, tokenizer, out / "hf", model_class=model_class)
            say(f"exported {out / 'hf'}")
        if rank == 0 and metrics.path.exists():
            say(f"wrote {plot_losses(metrics.path, out / 'loss.png')}")
    metrics.close()
    if distributed:
        dist.destroy_process_group()
    if interrupted:
        raise SystemExit(130)
    return summary


def _doc_lengths(batch: dict) -> list[int]:
    """Lengths of the real documents of a packed row (the trailing padding document excluded)."""
    cu = batch["cu_seqlens"].tolist()
    real = int((batch["source_ids"] >= 0).sum())
    return [b - a for a, b in zip(cu, cu[1:]) if b <= real]


def _cp_sharder(config, parallel: ParallelConfig, cp_rank: int, group):
    """Row -> this rank's share of it (cwm/model/context_parallel.py), or the row itself without CP."""
    if parallel.cp == 1:
        return lambda batch: batch
    from cwm.model.context_parallel import flops_token_cost, layer_windows, shard_batch

    windows = layer_windows(config)
    token_cost = flops_token_cost(config) if parallel.cp_balance == "flops" else 0.0
    return lambda batch: shard_batch(batch, parallel.cp, cp_rank, windows, group, token_cost=token_cost)[0]


def _build_eval(cfg: JobConfig, recipe, tokenizer, say):
    from cwm.data.documents import iter_heldout
    from cwm.eval.world_model import WorldModelEval, examples_from_records

    candidates = [s for s in recipe.sources if s.kind == "trace" and s.holdout > 0]
    if cfg.eval.source:
        candidates = [recipe.source(cfg.eval.source)]
    if not candidates:
        say("no evaluation: no trace source has a holdout fraction")
        return None
    source = candidates[0]
    records = []
    for item in iter_heldout(source):
        records.append(item)
        if len(records) >= cfg.eval.max_traces:
            break
    if not records:
        say(f"no evaluation: source '{source.name}' holds out no record")
        return None
    return WorldModelEval(tokenizer, examples_from_records(records, source), max_len=recipe.seq_len,
                          max_new_tokens=cfg.eval.max_new_tokens, max_outputs=cfg.eval.max_outputs)


def _evaluate(evaluator, model, device, say) -> dict:
    model.eval()
    results = {**evaluator.next_state(model, device), **evaluator.output_prediction(model, device)}
    model.train()
    say("eval | " + " | ".join(f"{k.removeprefix('eval/')} {v:.3f}" if isinstance(v, float) else f"{k.removeprefix('eval/')} {v}"
                               for k, v in results.items()))
    return results


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
        if cfg.planning:
            from cwm.model.plan import print_plan

            print_plan(cfg)
        else:
            train(cfg)
    except (RecipeError, TokenizerError, ConfigError, PretrainedError) as e:
        print(f"cwm/train.py: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
