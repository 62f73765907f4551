"""The shared vLLM helper against a real server: it starts on a folder written by save_pretrained, reports the
context it was given, answers greedy completions equal to transformers' own greedy generation (fp32), and stops
every process it started."""
import json
import os
import urllib.request

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    from stand_ins import save_tiny_llama

    texts = ["def add(a, b):\n    return a + b\n", "for i in range(10):\n    print(i * i)\n"] * 40
    return save_tiny_llama(tmp_path_factory.mktemp("llama"), texts, max_positions=512)


def _complete(server, prompt, max_tokens):
    body = json.dumps({"model": server.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                       "return_token_ids": True}).encode()
    req = urllib.request.Request(server.base_url + "/completions", body, {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())["choices"][0]


def test_greedy_completions_match_transformers(tiny_llama, vllm_server_for):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    server = vllm_server_for(tiny_llama, max_model_len=256)
    assert server.models()["data"][0]["max_model_len"] == 256
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    prompts = ["def add(a, b):", "for i in range(", "print(i", "return a"]
    near_ties = 0
    for prompt in prompts:
        ids = tok(prompt, return_tensors="pt")
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id,
                                 output_logits=True, return_dict_in_generate=True)
        want = gen.sequences[0, ids["input_ids"].shape[1]:].tolist()
        got = _complete(server, prompt, 12)["token_ids"]
        assert got is not None, "the server did not return token ids"
        diverge = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), None)
        if diverge is None:
            assert len(got) == len(want), prompt
            continue
        top2 = gen.logits[diverge][0].topk(2).values
        assert float(top2[0] - top2[1]) < 1e-4, f"{prompt!r}: vLLM and transformers differ at step {diverge}"
        near_ties += 1
    print(f"greedy: {len(prompts)} prompts, {near_ties} diverged at a near-tie (top-two logits within 1e-4)")


def test_stop_ends_the_process_group(tiny_llama):
    from cwm.serving.vllm import VLLMServer, VLLMUnavailable, vllm_python

    try:
        vllm_python(build=False)
    except VLLMUnavailable as exc:
        pytest.skip(str(exc))
    with pytest.raises(ValueError, match="not a Hugging Face model folder"):
        VLLMServer(tiny_llama / "nope")
    server = VLLMServer(tiny_llama, max_model_len=128, startup_timeout=1)   # stopped before it can answer
    with pytest.raises(Exception, match="did not answer"):
        server.start()
    assert server.process is None
    assert not _processes_with_arg(str(server.port)), "the stopped server left processes behind"


def _processes_with_arg(arg: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if arg.encode() in f.read().split(b"\0") and int(entry) != os.getpid():
                        found.append(int(entry))
            except OSError:
                pass
    return found
