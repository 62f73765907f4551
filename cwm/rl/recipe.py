"""An RL recipe: a YAML file mapped onto dataclasses, every field with a default (CWM's where CWM published one).

    init: runs/demo/hf            # the mid-trained model (an HF folder with its tokenizer)
    out: runs/demo/rl
    steps: 4
    envs:
      - {kind: output_prediction, shards: runs/demo/traces}
      - {kind: swe, weight: 0.5, tasks: runs/demo/forager/tasks}
    grpo: {eps_high: 0.25, max_staleness: 1}

Unknown keys are errors (a typo must not silently fall back to a default). `--set a.b=v` overrides any field.
`recipe` may be a path or the name of a file in data_recipes/.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cwm.train import OptimConfig
from cwm.rl.curriculum import CurriculumConfig
from cwm.rl.grpo import GRPOConfig
from cwm.rl.committee import CommitteeConfig
from cwm.rl.reward_model import RewardModelTerm
from cwm.rl.rollout import RolloutConfig
from cwm.rl.search import TreeSearchConfig

RECIPES_DIR = Path(__file__).resolve().parents[2] / "data_recipes"


ENV_KINDS = ("output_prediction", "codegen", "swe", "swe_rl", "bugfixer", "testwriter")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file, the key and what to do."""


@dataclass
class EnvSpec:
    kind: str                        # output_prediction | codegen | swe | swe_rl | bugfixer | testwriter
    weight: float = 1.0              # how often a group is drawn from this environment
    shards: str | None = None        # output_prediction: trace shards (dir, .tar or glob)
    tasks: str | None = None         # codegen: tasks .jsonl; swe: a forager task file or folder
    limit: int | None = None         # use at most this many tasks
    timeout_s: float = 10.0          # codegen: per check; swe: per command (CWM: 120)
    memory_mb: int = 512             # codegen: per check
    max_steps: int = 128             # swe: tool calls per episode (CWM: 128 turns)
    required: bool = True            # false: when the env cannot be set up (no Docker, no tasks) skip it, saying why
    reward: dict | None = None       # swe_rl/bugfixer/testwriter: a RewardSpec mapping (cwm/rl/rewards.py), e.g.
    #                                  {mode: similarity} | {mode: tests_then_similarity, tau: 0.5}


@dataclass
class GeneratorConfig:
    kind: str = "local"              # local: in-process copy with a KV cache; server: OpenAI-compatible
    base_url: str | None = None      # server: e.g. http://localhost:8000
    model_name: str = "policy"       # server: the served model's name
    push_route: str = "/update_weights_from_disk"   # SGLang; vLLM (VLLM_SERVER_DEV_MODE=1): /collective_rpc
    push_dir: str | None = None      # server: where weights are exported for the server to load (shared disk)
    overlap: bool = True             # sample the next batch while the learner steps (staleness <= max_staleness)


@dataclass
class RLRecipe:
    init: str = "runs/demo/hf"
    out: str = "runs/rl"
    seed: int = 0
    steps: int = 100
    groups_per_step: int = 8         # per rank
    group_size: int = 8
    micro_batch_tokens: int = 16384
    checkpoint_every: int = 50
    bf16: bool | None = None         # None: on CUDA
    cpu_threads: int | None = None   # torch intra-op threads on CPU (1 on a shared machine)
    # mid-training's optimizer settings, with RL's defaults: a small constant learning rate
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-6, warmup_steps=0, min_lr_ratio=1.0))
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    envs: list[EnvSpec] = field(default_factory=list)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)  # off: shuffled cycle of tasks
    reward_model: RewardModelTerm = field(default_factory=RewardModelTerm)  # off: weight 0
    committee: CommitteeConfig = field(default_factory=CommitteeConfig)    # off: weight 0
    search: TreeSearchConfig = field(default_factory=TreeSearchConfig)     # off: independent episodes per group


def resolve(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (RECIPES_DIR / name, RECIPES_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
    raise RecipeError(f"recipe {name}: no such file (give a path, or one of: {known})")


def load_recipe(name: str, overrides: list[str] = ()) -> RLRecipe:
    path = resolve(name)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path}: not valid YAML ({e})") from None
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise RecipeError(f"--set {item}: use KEY=VALUE, e.g. --set steps=3 or --set grpo.eps_high=0.28")
        node = raw
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    recipe = _build(RLRecipe, raw, f"recipe {path}", RLRecipe())
    if not recipe.envs:
        raise RecipeError(f"recipe {path}: no envs; add e.g. `envs: [{{kind: output_prediction, shards: DIR}}]`")
    for env in recipe.envs:
        if env.kind not in ENV_KINDS:
            raise RecipeError(f"recipe {path}: env kind '{env.kind}' unknown; use {', '.join(ENV_KINDS)}")
    try:
        recipe.search.validate()
    except ValueError as e:
        raise RecipeError(f"recipe {path}: {e}") from None
    if recipe.search.mode == "tree" and recipe.search.value == "reward_model" and not recipe.reward_model.path:
        raise RecipeError(f"recipe {path}: search.value reward_model needs reward_model.path (a folder from "
                          "`python -m cwm.rl.reward_model train`)")
    return recipe


def _build(cls, raw, where: str, base=None):
    """`cls` from a mapping; fields the mapping leaves out keep their value in `base` (the enclosing default), so
    `optim: {lr: 1e-5}` keeps RL's other optimizer defaults rather than the dataclass's own."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in raw.items():
        if dataclasses.is_dataclass(hints[key]):
            kwargs[key] = _build(hints[key], value, f"{where}: {key}", getattr(base, key, None))
        else:
            kwargs[key] = _convert(hints[key], value, f"{where}: {key}")
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except TypeError as e:
        raise RecipeError(f"{where}: {e}") from None


def _convert(hint, value, where: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise RecipeError(f"{where}: expected a list")
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        return tuple(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML reads 1e-6 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise RecipeError(f"{where}: expected a number, got {value!r}") from None
    return value
