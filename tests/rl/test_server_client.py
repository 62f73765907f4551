"""The OpenAI-compatible rollout client and the weight push, against a loopback server in this process.

The server is scripted only in its HTTP layer: it samples from a real tiny model (vLLM's response layout:
`token_id:N` tokens, per-token log-probs, finish_reason) and reloads weights from the folder it is told to.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from cwm.model.checkpoint import export_hf
from cwm.rl.generate import DiskWeightPush, LocalGenerator, SamplingConfig, ServerGenerator
from cwm.rl.rollout import ChatFormat
from rl_helpers import small_tokenizer, tiny_model


class LoopbackServer:
    def __init__(self, model, stop_ids, pad_id):
        self.sampler = LocalGenerator(model, stop_ids, pad_id, seed=5)
        self.requests, self.loaded = [], []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802 - http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, body))
                if self.path == "/v1/completions":
                    reply = server.complete(body)
                elif self.path == "/update_weights_from_disk":
                    reply = server.reload(body["model_path"])
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def complete(self, body):
        with self.lock:
            (s,) = self.sampler.generate([body["prompt"]], SamplingConfig(temperature=body["temperature"], max_new_tokens=body["max_tokens"]))
        return {"object": "text_completion", "choices": [{
            "index": 0, "text": "", "finish_reason": "stop" if s.stopped else "length",
            "logprobs": {"tokens": [f"token_id:{t}" for t in s.tokens], "token_logprobs": s.logprobs}}]}

    def reload(self, path):
        from transformers import AutoModelForCausalLM

        fresh = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        with self.lock:
            self.sampler.model.load_state_dict(fresh.state_dict())
        self.loaded.append(path)
        return {"success": True, "message": "ok"}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


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
