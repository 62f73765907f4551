"""The OpenAI-compatible rollout client and the weight push, against a loopback server in this process
(rl_helpers.LoopbackServer: scripted only in its HTTP layer, it samples from a real tiny model and reloads
weights from the folder it is told to)."""
import json

import pytest
import yaml
import torch

from cwm.model.checkpoint import export_hf
from cwm.rl.generate import DiskWeightPush, SamplingConfig, ServerGenerator
from cwm.rl.rollout import ChatFormat
from rl_helpers import (LoopbackServer, chat_texts, export_model, function_records, small_tokenizer, tiny_model,
                        write_shards)


def _oracle_logprobs(model, prompt, tokens, temperature):
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + tokens])).logits[0, :-1].double()
                                 / temperature, -1)
    return logp[len(prompt) - 1:].gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)


@pytest.fixture
def served(tmp_path):
    tok = small_tokenizer(["hello world system user assistant"])
    chat = ChatFormat(tok)
    server = LoopbackServer(tiny_model(tok, seed=0).eval(), chat.stop_ids, tok.pad_token_id)
    yield tok, chat, server
    server.close()


def test_client_samples_with_behaviour_logprobs_and_pushes_weights(served, tmp_path):
    tok, chat, server = served
    learner = tiny_model(tok, seed=1).eval()  # other weights than the server starts with
    push = DiskWeightPush(server.url, tmp_path / "push", lambda m, path: export_hf(m, m.config, tok, path))
    client = ServerGenerator(server.url, "policy", chat.stop_ids, push=push)
    prompts = [chat.encode([{"role": "user", "content": "hello"}], first=True),
               chat.encode([{"role": "user", "content": "hello world world"}], first=True)]
    cfg = SamplingConfig(max_new_tokens=5, temperature=0.8)

    before = client.generate(prompts, cfg)
    sent = [b for p, b in server.requests if p == "/v1/completions"]
    assert sorted(b["prompt"] for b in sent) == sorted(prompts) and all(b["return_tokens_as_token_ids"] for b in sent)
    for prompt, s in zip(prompts, before):
        assert torch.allclose(torch.tensor(s.logprobs, dtype=torch.float64),
                              _oracle_logprobs(server.sampler.model, prompt, s.tokens, 0.8), atol=2e-4)
        assert not torch.allclose(torch.tensor(s.logprobs, dtype=torch.float64),
                                  _oracle_logprobs(learner, prompt, s.tokens, 0.8), atol=2e-4)

    client.push_weights(learner, 1)
    client.push_weights(learner, 2)
    assert client.version == 2 and [p.rsplit("/", 1)[1] for p in server.loaded] == ["step-000001", "step-000002"]
    assert not (tmp_path / "push" / "step-000001").exists() and (tmp_path / "push" / "step-000002").exists()
    served_state = server.sampler.model.state_dict()
    assert all(torch.equal(served_state[k], v) for k, v in learner.state_dict().items())
    for prompt, s in zip(prompts, client.generate(prompts, cfg)):  # now sampling from the learner's weights
        assert torch.allclose(torch.tensor(s.logprobs, dtype=torch.float64),
                              _oracle_logprobs(learner, prompt, s.tokens, 0.8), atol=2e-4)


def test_client_names_the_server_when_tokens_are_not_ids(served):
    tok, chat, server = served
    original = server.complete
    server.complete = lambda body: {"choices": [{"text": "hi", "finish_reason": "length",
                                                 "logprobs": {"tokens": ["hi"], "token_logprobs": [-0.1]}}]}
    with pytest.raises(ValueError, match="token_id"):
        ServerGenerator(server.url, "policy", chat.stop_ids).generate([[1, 2]], SamplingConfig(max_new_tokens=1))
    server.complete = original


def test_trainer_samples_from_the_server_and_pushes_every_step(tmp_path):
    from cwm.rl.recipe import load_recipe
    from cwm.rl.train import train
    from cwm.rl.envs.output_prediction import task_from_record

    records = function_records("def f(x):\n    return x % 2\n", "f", list(range(4)))
    tok = small_tokenizer(chat_texts([task_from_record(r) for r in records]))
    export_model(tiny_model(tok, seed=0), tok, tmp_path / "init")
    write_shards(tmp_path / "traces", records)
    chat = ChatFormat(tok)
    server = LoopbackServer(tiny_model(tok, seed=0).eval(), chat.stop_ids, tok.pad_token_id)
    try:
        recipe = {"init": str(tmp_path / "init"), "out": str(tmp_path / "rl"), "steps": 2, "groups_per_step": 4,
                  "group_size": 4, "checkpoint_every": 0, "optim": {"lr": 1e-2},
                  "rollout": {"sampling": {"max_new_tokens": 1}},
                  "generator": {"kind": "server", "base_url": server.url, "push_dir": str(tmp_path / "push")},
                  "envs": [{"kind": "output_prediction", "shards": str(tmp_path / "traces")}]}
        (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
        train(load_recipe(str(tmp_path / "recipe.yaml")), progress=False)
    finally:
        server.close()
    assert [p.rsplit("/", 1)[1] for p in server.loaded] == ["step-000001", "step-000002"]
    assert len([p for p, _ in server.requests if p == "/v1/completions"]) == 2 * 4 * 4
    steps = [json.loads(line) for line in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in steps] == [1, 2] and steps[1]["staleness_max"] <= 1
