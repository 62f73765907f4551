"""End to end, as `make demo` runs it: a model exported the way mid-training exports, the demo RL recipe
(`data_recipes/rl_mixed.yaml`) run by `torchrun cwm/rl/train.py` on two CPU ranks (FSDP2 over gloo), resumed in
one process (the checkpoint is resharded), exported, reloaded."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rl_helpers import chat_texts, demo_swe_task, export_model, function_records, write_shards

REPO = Path(__file__).resolve().parents[2]


def _docker_task_file(tmp_path):
    """A one-task forager file on the demo image, or the reason there is none."""
    from cwm.forager import images
    from cwm.forager.tasks import write_tasks

    try:
        dc = images.client()
        task = demo_swe_task(dc)
    except images.ImageError as e:
        return None, str(e)
    write_tasks([task], tmp_path / "tasks.jsonl")
    return tmp_path / "tasks.jsonl", None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_recipe_runs_resumes_exports_and_reloads(tmp_path, capsys):
    from transformers import AutoModelForCausalLM, CwmForCausalLM

    from cwm.data.tokenizer import load_tokenizer, train_bpe
    from cwm.model.config import build_config
    from cwm.rl.envs.output_prediction import task_from_record
    from cwm.rl.train import main

    records = (function_records("def f(x):\n    return x * 2\n", "f", [1, 2, 3])
               + function_records("def g(x):\n    return [x] * 2\n", "g", ["a", 7]))
    texts = chat_texts([task_from_record(r) for r in records]) + ["def add(a, b):\n    return a + b\n"] * 20
    tok = train_bpe(texts, 400, tmp_path / "tokenizer")
    torch.manual_seed(0)
    export_model(CwmForCausalLM(build_config(tok, preset="tiny", seq_len=1024)), tok, tmp_path / "init")
    write_shards(tmp_path / "traces", records)
    task_file, no_docker = _docker_task_file(tmp_path)

    recipe = yaml.safe_load((REPO / "data_recipes/rl_mixed.yaml").read_text())
    recipe.update(init=str(tmp_path / "init"), out=str(tmp_path / "rl"), cpu_threads=1, group_size=2)
    recipe["rollout"]["sampling"]["max_new_tokens"] = 16
    envs = {e["kind"]: e for e in recipe["envs"]}
    envs["output_prediction"]["shards"] = str(tmp_path / "traces")
    envs["codegen"]["tasks"] = str(REPO / envs["codegen"]["tasks"])
    envs["swe"]["tasks"] = str(task_file or tmp_path / "no-docker-no-tasks.jsonl")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    first = subprocess.run([*torchrun, str(REPO / "cwm/rl/train.py"), "--recipe", str(tmp_path / "recipe.yaml"),
                            "--set", "steps=2"], cwd=tmp_path, capture_output=True, text=True, timeout=200)
    assert first.returncode == 0, first.stderr[-3000:]
    if no_docker:
        assert "SKIPPED env swe" in first.stdout
        print(f"SKIPPED the Docker task: {no_docker}")
    assert main(["--recipe", str(tmp_path / "recipe.yaml"), "--set", "steps=3"]) == 0
    assert "resumed from" in capsys.readouterr().out

    steps = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps] == [1, 2, 3]
    for m in steps:
        assert -1.0 <= m["mean_reward"] <= 1.0 and 0.0 <= m["pass_rate"] <= 1.0
        assert {"response_len", "clip_frac", "entropy", "sample_entropy", "staleness"} <= set(m)
        assert m["sample_entropy"] > 0 and m["response_len"] > 0
        assert any(k.startswith("pass_rate/") for k in m)
    envs_seen = {k.split("/", 1)[1] for m in steps for k in m if k.startswith("pass_rate/")}
    assert envs_seen == ({"output_prediction", "codegen"} | ({"swe"} if task_file else set()))

    # the export loads with stock transformers and equals the final checkpoint's weights
    hf = tmp_path / "rl" / "hf"
    reloaded = AutoModelForCausalLM.from_pretrained(str(hf))
    assert len(load_tokenizer(hf)) == len(tok)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    fresh = CwmForCausalLM(reloaded.config)
    state = {"model": get_model_state_dict(fresh)}
    dcp.load(state, checkpoint_id=str(tmp_path / "rl" / "checkpoints" / "step-00000003"))
    got = reloaded.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state["model"].items())
