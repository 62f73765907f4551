"""Bad recipes stop the run at start with one line naming the recipe and the problem; good ones load."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cwm.data.recipe import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("body, message", [
    ("sources:\n  a: {kind: jsonl, paths: ['{root}/nowhere/*.jsonl'], weight: 1.0}\n", "matches no file"),
    ("sources:\n  a: {kind: trace, paths: ['{root}/no-shards'], weight: 1.0}\n", "matches no shard"),
    ("sources:\n  a: {kind: jsonl, paths: ['{root}/alpha/*.jsonl'], weight: 0.6}\n"
     "  b: {kind: jsonl, paths: ['{root}/beta/*.jsonl'], weight: 0.3}\n", "weights sum to 0.9, not 1"),
    ("sources:\n  a: {kind: jsonl, paths: ['{root}/alpha/*.jsonl'], weight: 1.0, wieght: 1}\n", "unknown key 'wieght'"),
    ("seq_lenn: 10\nsources:\n  a: {kind: jsonl, paths: ['{root}/alpha/*.jsonl'], weight: 1.0}\n", "unknown key 'seq_lenn'"),
    ("sources:\n  a: {kind: jsonl, paths: ['{root}/alpha/*.jsonl'], weight: 1.0, trace: {deep: 3}}\n", "unknown key 'deep' in sources.a.trace"),
    ("sources:\n  a: {kind: csv, paths: ['{root}/alpha/*.jsonl'], weight: 1.0}\n", "has kind 'csv'"),
    ("sources: [1, 2]\n", "'sources' must map"),
    ("sources: {a: {kind: jsonl}\n", "not valid YAML"),
])
def test_bad_recipe_is_one_clear_line(corpus, tmp_path, body, message):
    path = tmp_path / "bad.yaml"
    path.write_text(body.replace("{root}", str(corpus["root"])))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_train_rejects_a_bad_recipe_before_starting(corpus, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(f"sources:\n  a: {{kind: jsonl, paths: ['{corpus['root']}/alpha/*.jsonl'], weight: 0.5}}\n")
    run = subprocess.run([sys.executable, str(ROOT / "cwm/train.py"), "--recipe", str(path), "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [f"cwm/train.py: recipe {path}: source weights sum to 0.5, not 1 (a=0.5)"]
    assert not (tmp_path / "run").exists()


def test_shipped_recipes_parse():
    demo = load_recipe(ROOT / "data_recipes/demo.yaml", check_files=False)
    # the demo mixes all three kinds of data: traces, agent trajectories (observations masked for half), code
    assert {s.name: s.kind for s in demo.sources} == {"traces": "trace", "trajectories": "trajectory",
                                                      "answers": "trajectory", "code": "text"}
    assert demo.source("trajectories").observation_mask_prob == 0.5
    full = load_recipe(ROOT / "data_recipes/cwm.yaml", check_files=False)
    assert full.seq_len == 131072 and full.buckets == [16384, 65536]
    share = {kind: sum(s.weight for s in full.sources if s.name in names) for kind, names in
             {"world": ("function_traces", "repo_traces", "forager"), "code": ("code",), "rehearsal": ("rehearsal",)}.items()}
    assert share == pytest.approx({"world": 0.3, "code": 0.4, "rehearsal": 0.3})
    assert full.source("forager").observation_mask_prob == 0.5
