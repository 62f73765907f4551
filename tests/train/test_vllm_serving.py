"""The exported folder of a `--model.init` run serves with vLLM and its greedy completions are transformers'.

A small Llama (head_dim 32: vLLM's CPU attention rejects 16) is mid-trained a few steps from a
`save_pretrained` stand-in, exported, and served by the shared `vllm_server_for` fixture. For each prompt the
greedy continuation from vLLM's completions endpoint (token ids) is compared with transformers' greedy
`generate` (fp32, same folder). Where they part, transformers' top-two logits at that position must be within
1e-4 (a near-tie either engine may break its own way): those are counted and printed; any other difference fails.
"""
from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from stand_ins import one_source_recipe  # noqa: E402
from test_pretrained import _texts, save_pretrained_stand_in  # noqa: E402

NEW_TOKENS, TIE_GAP = 12, 1e-4


def _complete(server, prompt_ids: list[int]) -> list[int]:
    body = {"model": server.model, "prompt": prompt_ids, "max_tokens": NEW_TOKENS, "temperature": 0.0,
            "logprobs": 1, "return_tokens_as_token_ids": True, "ignore_eos": True}
    request = urllib.request.Request(server.base_url + "/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        choice = json.loads(response.read())["choices"][0]
    return [int(t.removeprefix("token_id:")) for t in choice["logprobs"]["tokens"]]


@pytest.mark.slow
def test_vllm_greedy_completions_match_transformers(tmp_path, vllm_server_for):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cwm.train import main

    texts = _texts()
    init = save_pretrained_stand_in(tmp_path / "llama-init", "llama", texts)
    one_source_recipe(tmp_path, texts)
    out = tmp_path / "run"
    assert main(["--recipe", str(tmp_path / "recipe.yaml"), "--model.init", str(init), "--out", str(out),
                 "--training.steps", "30", "--optim.lr", "5e-3", "--optim.warmup_steps", "3", "--log.every", "10",
                 "--log.tensorboard", "false", "--training.cpu_threads", "1"]) == 0
    hf = out / "hf"
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(hf)
    prompts = [tok(t[:40], add_special_tokens=False)["input_ids"] for t in texts[:8]]
    prompts.append(tok("<|trace_context_start|>def f(x):", add_special_tokens=False)["input_ids"])

    server = vllm_server_for(hf, max_model_len=256)
    near_ties, compared = 0, 0
    for prompt in prompts:
        served = _complete(server, prompt)
        with torch.no_grad():
            ours = model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                  min_new_tokens=NEW_TOKENS, output_logits=True, return_dict_in_generate=True)
        own = ours.sequences[0, len(prompt):].tolist()
        for i, (a, b) in enumerate(zip(own, served)):
            compared += 1
            if a == b:
                continue
            top2 = torch.topk(ours.logits[i][0].double(), 2).values
            gap = float(top2[0] - top2[1])
            assert gap < TIE_GAP, (f"prompt {prompt}: token {i} transformers {a} vs vLLM {b}, top-two gap {gap:.2e} "
                                   f"(transformers {own}, vLLM {served})")
            near_ties += 1
            break  # past a near-tie the two continuations condition on different tokens
        assert len(served) == NEW_TOKENS
    print(f"vLLM vs transformers greedy: {len(prompts)} prompts, {compared} tokens compared, "
          f"{near_ties} near-ties (top-two gap < {TIE_GAP})")
