"""Helpers of the RL tests: tiny models and tokenizers built here (no weights are downloaded), toy trace shards."""
from __future__ import annotations

import json
import re
import string
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

WORD = r"[A-Za-z_]+| +|[\s\S]"


def small_tokenizer(texts, pieces: tuple[str, ...] = ()):
    """A word-level tokenizer over `texts`: each run of letters is one token, every other character (digits,
    spaces, punctuation) its own token, plus every special token. `pieces`: longer strings that are one token
    each (a format's scaffolding, e.g. "<<<<<<< SEARCH\n"), matched before anything else.

    A vocabulary of a few dozen symbols keeps a random policy's chance of a right one-token answer measurable, and
    whole words keep prompts short (CPU time)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from cwm.data.special_tokens import ALL_SPECIAL_TOKENS, BOS, EOS, PAD

    word = "".join(re.escape(p) + "|" for p in sorted(pieces, key=len, reverse=True)) + WORD
    vocab = {t: i for i, t in enumerate(ALL_SPECIAL_TOKENS)}
    vocab["<unk>"] = len(vocab)
    for piece in sorted(set(re.findall(word, "".join(texts))) | set(string.digits) | set(pieces)):
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(word), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token="<unk>",
                                   additional_special_tokens=[t for t in ALL_SPECIAL_TOKENS if t not in (BOS, EOS, PAD)])


def tiny_model(tokenizer, seed: int = 0, seq_len: int = 512):
    """The mid-training 'tiny' preset, fitted to `tokenizer` (cwm/model/config.py)."""
    from transformers import CwmForCausalLM

    from cwm.model.config import build_config

    torch.manual_seed(seed)
    return CwmForCausalLM(build_config(tokenizer, preset="tiny", seq_len=seq_len))



def function_records(source: str, name: str, inputs: list) -> list[dict]:
    """Trace records (DESIGN §2, entry call and return frames) of `name(x)` for each x, the value from a real run."""
    namespace: dict = {}
    exec(source, namespace)
    records = []
    for x in inputs:
        value = repr(namespace[name](x))
        records.append({
            "id": f"{name}-{x!r}", "schema": "cwm.trace/1", "python": "3.11", "backend": "settrace",
            "origin": {"kind": "function", "repo": None, "commit": None, "path": "toy.py", "qualname": name,
                       "input": repr(x)},
            "context": source.replace(f"def {name}(x):", f"def {name}(x):  # << START_OF_TRACE", 1),
            "frames": [{"kind": "call", "depth": 0, "path": "toy.py", "line": 1, "source": f"def {name}(x):",
                        "locals": {"x": repr(x)}, "value": None},
                       {"kind": "return", "depth": 0, "path": "toy.py", "line": 2, "source": "", "locals": None,
                        "value": value}],
            "outcome": "returned", "stats": {"frames": 2, "wall_s": 0.0, "truncated_values": 0}})
    return records


def write_shards(out_dir, records: list[dict]):
    from cwm.data.shards import ShardWriter, record_key

    with ShardWriter(out_dir, "trace") as writer:
        writer.add([(record_key(r), r) for r in records])
    return out_dir


def export_model(model, tokenizer, out_dir):
    """Export the way mid-training does (cwm/model/checkpoint.export_hf), so RL starts from the same kind of folder."""
    from cwm.model.checkpoint import export_hf

    return export_hf(model, model.config, tokenizer, out_dir)


def chat_texts(tasks) -> list[str]:
    """Every text a chat-formatted episode of `tasks` contains, for building a tokenizer that covers them."""
    return [m["content"] for t in tasks for m in t.prompt()] + ["system user assistant tool"]


class ScriptedGenerator:
    """Replies fixed texts (tokenized, ended with the stop token), for driving environments through the real
    rollout loop when what is under test is the environment, not the sampler."""

    version = 0

    def __init__(self, tokenizer, stop_id: int, replies: list[list[str]]):
        self.tokenizer, self.stop_id = tokenizer, stop_id
        self.replies = [list(r) for r in replies]   # one script per episode, in batch order
        self.turn = 0

    def generate(self, prompts, cfg):
        from cwm.rl.generate import Sample

        live = [r for r in self.replies if len(r) > self.turn]
        assert len(live) == len(prompts), "scripts and live episodes out of step"
        out = []
        for script in live:
            ids = self.tokenizer.encode(script[self.turn], add_special_tokens=False) + [self.stop_id]
            out.append(Sample(tokens=ids, logprobs=[-1.0] * len(ids), stopped=True))
        self.turn += 1
        return out

    def push_weights(self, model, version):
        self.version = version


def demo_swe_task(docker_client):
    """A mutate-fix task on the forager's demo repository image (built on first use): `add` subtracts."""
    from cwm.forager import images
    from cwm.forager.demo import DEMO_FILES, ensure_demo_image
    from cwm.forager.tasks import Task
    import tempfile
    import textwrap
    from pathlib import Path

    image = ensure_demo_image(docker_client, Path(tempfile.mkdtemp(prefix="cwm-rl-demo-")) / "calc")
    passing = images.image_info(docker_client, image).passing
    fixed = textwrap.dedent(DEMO_FILES["calc/__init__.py"])
    broken = fixed.replace("return a + b", "return a - b")
    assert broken != fixed
    return Task(id="calc-add", kind="mutate-fix", repo="calc", commit=None, image=image,
                statement="tests/test_calc.py::test_add fails: add(2, 3) returns -1. Fix the code.",
                fail_to_pass=["tests/test_calc.py::test_add"],
                pass_to_pass=[t for t in passing if t != "tests/test_calc.py::test_add"],
                mutation={"operator": "replace-operator", "path": "calc/__init__.py", "line": 6},
                start_files={"calc/__init__.py": broken}, fix_files={"calc/__init__.py": fixed})


class LoopbackServer:
    """An OpenAI-compatible completion server (vLLM's response layout: `token_id:N` tokens, per-token log-probs,
    finish_reason) sampling from a real in-process model, with SGLang's /update_weights_from_disk."""

    def __init__(self, model, stop_ids, pad_id):
        from cwm.rl.generate import LocalGenerator

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
        from cwm.rl.generate import SamplingConfig

        cfg = SamplingConfig(temperature=body["temperature"], max_new_tokens=body["max_tokens"])
        with self.lock:
            (s,) = self.sampler.generate([body["prompt"]], cfg)
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


def policy_runs(t) -> list[list[int]]:
    """The policy's turns of a trajectory: its runs of mask-1 tokens."""
    runs, current = [], []
    for token, m in zip(t.tokens, t.mask):
        if m:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def output_prediction_recipe(tmp_path, tasks: int, source: str = "def f(x):\n    return x % 3\n", **fields) -> dict:
    """A tiny RL recipe on `tasks` output-prediction tasks of `source`'s f: its tokenizer, a random tiny model
    exported to tmp_path/init and the trace shards are written; `fields` override the recipe's defaults here."""
    from cwm.rl.envs.output_prediction import task_from_record

    records = function_records(source, "f", list(range(tasks)))
    tok = small_tokenizer(chat_texts([task_from_record(r) for r in records]))
    export_model(tiny_model(tok, seed=0), tok, tmp_path / "init")
    write_shards(tmp_path / "traces", records)
    return {"init": str(tmp_path / "init"), "out": str(tmp_path / "rl"), "steps": 2, "seed": 0,
            "checkpoint_every": 0, "grpo": {"max_staleness": 0}, "generator": {"overlap": False},
            "rollout": {"max_len": 512, "sampling": {"max_new_tokens": 1}},
            "envs": [{"kind": "output_prediction", "shards": str(tmp_path / "traces")}], **fields}
