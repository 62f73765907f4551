"""Data recipes: which sources go into mid-training, in what proportion, and how they become documents.

A recipe is a YAML file (see `data_recipes/`). It is checked completely when loaded, so a typo, a glob that
matches nothing or weights that do not add up stop the run before any process group or model exists, with one
line that names the recipe and the problem (`RecipeError`).

```yaml
seq_len: 2048                 # tokens per packed row
tokenizer: runs/tok           # a Hugging Face tokenizer directory (`cwm-tokenizer train` makes one)
seed: 0
buckets: [16384, 65536]       # length buckets for the packer (CWM: (0,16k], (16k,64k], (64k,inf)); null: none
pack_window_rows: 64          # rows packed together from one window of documents (the resumable unit)
sources:
  traces:
    kind: trace               # trace | trajectory | text | jsonl | parquet
    paths: [runs/traces]      # shard dirs, .tar files, text/jsonl/parquet files, or globs of them
    weight: 0.3               # share of the training tokens; weights sum to 1
    epochs: null              # passes over the source before it drops out of the mix; null: repeat forever
    holdout: 0.05             # fraction of records kept out of training, for evaluation
    trace: {depth: 2, step_in_prob: 0.5}      # trace rendering: step into callees up to depth, with this prob.
  swe:
    kind: trajectory
    paths: [runs/trajectories/*.tar]
    weight: 0.7
    observation_mask_prob: 0.5   # a trajectory's tool observations are left out of the loss with this prob.
training:                     # optional defaults for cwm/train.py, same keys as its --section.field overrides
  model.preset: tiny
```
"""
from __future__ import annotations

import dataclasses
import glob
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SOURCE_KINDS = ("trace", "trajectory", "text", "jsonl", "parquet")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message is one line naming the recipe and what to fix."""


@dataclass
class TraceRendering:
    """How a trace record becomes text: CWM steps into callees up to a depth, each call with a probability."""
    depth: int = 2
    step_in_prob: float = 1.0


@dataclass
class Source:
    name: str
    kind: str
    paths: list[str]
    weight: float
    epochs: int | None = None
    holdout: float = 0.0
    text_key: str = "text"
    trace: TraceRendering = field(default_factory=TraceRendering)
    observation_mask_prob: float = 0.5
    files: list[str] = field(default_factory=list)  # resolved from `paths` when the recipe is loaded


@dataclass
class Recipe:
    path: str
    sources: list[Source]
    seq_len: int = 2048
    tokenizer: str | None = None
    seed: int = 0
    buckets: list[int] | None = None
    pack_window_rows: int = 64
    training: dict = field(default_factory=dict)

    def source(self, name: str) -> Source:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)


def load_recipe(path: str | Path, *, check_files: bool = True) -> Recipe:
    """Read and check a recipe; raises RecipeError with a one-line message on any problem."""
    where = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise RecipeError(f"recipe {where}: no such file") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {where}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {where}: expected a mapping at the top level")
    top = _take(raw, _fields(Recipe) - {"path"}, where, "the top level")
    sources_raw = top.pop("sources", None)
    if not isinstance(sources_raw, dict) or not sources_raw:
        raise RecipeError(f"recipe {where}: 'sources' must map source names to source specs")
    sources = [_load_source(name, spec, where) for name, spec in sources_raw.items()]
    recipe = Recipe(path=where, sources=sources, **top)
    _check(recipe, check_files)
    return recipe


def _load_source(name: str, spec, where: str) -> Source:
    if not isinstance(spec, dict):
        raise RecipeError(f"recipe {where}: source '{name}' must be a mapping")
    spec = _take(spec, _fields(Source) - {"name", "files"}, where, f"sources.{name}")
    for key in ("kind", "paths", "weight"):
        if key not in spec:
            raise RecipeError(f"recipe {where}: source '{name}' needs '{key}'")
    if spec["kind"] not in SOURCE_KINDS:
        raise RecipeError(f"recipe {where}: source '{name}' has kind '{spec['kind']}'; use one of {', '.join(SOURCE_KINDS)}")
    if isinstance(spec["paths"], str):
        spec["paths"] = [spec["paths"]]
    trace = _take(spec.pop("trace", None) or {}, _fields(TraceRendering), where, f"sources.{name}.trace")
    return Source(name=name, trace=TraceRendering(**trace), **spec)


def _check(recipe: Recipe, check_files: bool) -> None:
    where = recipe.path
    if any(not isinstance(s.weight, (int, float)) or s.weight <= 0 for s in recipe.sources):
        raise RecipeError(f"recipe {where}: every source weight must be a positive number")
    total = sum(s.weight for s in recipe.sources)
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        parts = ", ".join(f"{s.name}={s.weight:g}" for s in recipe.sources)
        raise RecipeError(f"recipe {where}: source weights sum to {total:g}, not 1 ({parts})")
    if not isinstance(recipe.seq_len, int) or recipe.seq_len < 8:
        raise RecipeError(f"recipe {where}: seq_len must be an integer >= 8")
    if recipe.buckets is not None and sorted(recipe.buckets) != list(recipe.buckets):
        raise RecipeError(f"recipe {where}: buckets must be increasing token lengths")
    for s in recipe.sources:
        if s.epochs is not None and (not isinstance(s.epochs, int) or s.epochs < 1):
            raise RecipeError(f"recipe {where}: source '{s.name}' epochs must be a positive integer or null")
        if not 0.0 <= s.holdout < 1.0 or not 0.0 <= s.observation_mask_prob <= 1.0:
            raise RecipeError(f"recipe {where}: source '{s.name}' holdout and observation_mask_prob must be in [0, 1)")
        if check_files:
            s.files = _resolve(s, where)


def _resolve(source: Source, where: str) -> list[str]:
    """Every file of a source, in a stable order; a path that names nothing is an error, not an empty source."""
    from cwm.data.shards import shard_paths

    files: list[str] = []
    for pattern in source.paths:
        if source.kind in ("trace", "trajectory"):
            try:
                found = [str(p) for p in shard_paths(pattern)]
            except FileNotFoundError:
                found = []
        else:
            found = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not found:
            raise RecipeError(f"recipe {where}: source '{source.name}' path '{pattern}' matches no "
                              f"{'shard' if source.kind in ('trace', 'trajectory') else 'file'}; "
                              f"write the data first or fix the path")
        files.extend(found)
    return files


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _take(raw: dict, known: set[str], where: str, section: str) -> dict:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise RecipeError(f"recipe {where}: unknown key '{unknown[0]}' in {section} "
                          f"(known: {', '.join(sorted(known))})")
    return dict(raw)
