"""What answers the prompts of `cwm-eval`: a local `transformers` model, an OpenAI-compatible server, or a test
backend that knows the answers.

Every backend takes `Prompt`s (completion-style text, no chat template: CWM-style base models continue text) and
returns, for each, `n` completions as text, special tokens kept (`<|frame_sep|>` etc. must survive: the trace
style reads them), each cut before the first stop string and before the end-of-text token, as OpenAI's
`/v1/completions` does. Backends that hold a tokenizer also answer `greedy_next_tokens`: the argmax next token
at every position of a token sequence (teacher forcing), which trace prediction's next-state score needs.

- `HFBackend` (`--model DIR`): batched `generate` with a KV cache, several prompts per forward, left padding.
- `OpenAIBackend` (`--base-url URL --model NAME`): `/v1/completions`, requests in parallel threads; vLLM/SGLang
  extensions (`skip_special_tokens`, `spaces_between_special_tokens`, token-id prompts) are sent as well.
  When a tokenizer is known (`--tokenizer`, or NAME is a local folder) prompts go as token ids encoded exactly as
  the local backend encodes them, so the two see the same tokens.
- `OracleBackend` answers each prompt's known solution (`Prompt.oracle`), `WrongBackend` an answer that is
  never right: the scorers' independent checks (100% and 0% on every suite).

Prompt encoding (both model backends; `encode_prompt`): as the trainer tokenizes a document that starts with the
prompt (`cwm.data.documents.prompt_ids`): BOS, then the prompt's segments, content with special-token recognition
off and only a renderer's structure segments (`Prompt.segments`: a trace's separators) as special ids, so a value
or source line holding `<|frame_sep|>` cannot forge a trace's structure. A prompt given as plain text is all
content. (`OpenAIBackend` without a tokenizer sends the text, and the server tokenizes it by its own rule.)
Sampling is seeded: `HFBackend` seeds torch per batch from (seed, first example id), `OpenAIBackend` sends a
per-prompt seed derived from (seed, prompt id): the same command gives the same completions.
"""
from __future__ import annotations

import abc

import contextlib
import hashlib
import json
import os
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path


class BackendError(RuntimeError):
    """A backend that cannot be used (not a model folder, a server that does not answer): one line saying so."""


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0


@dataclass
class Prompt:
    id: str          # stable per example (and sample group): seeds sampling
    text: str
    oracle: str = ""  # the completion a perfect model writes (OracleBackend)
    params: SamplingParams | None = None   # per-prompt override of the run's sampling params
    # (text, is_structure) pieces whose texts joined are `text` (a rendered trace's `trace_segments`); None: all
    # of `text` is content (no special tokens)
    segments: list[tuple[str, bool]] | None = None

    def __post_init__(self):
        if self.segments is not None and "".join(t for t, _ in self.segments) != self.text:
            raise ValueError(f"prompt {self.id}: its segments are not its text")

    @classmethod
    def of_segments(cls, id: str, segments, **kw) -> "Prompt":
        segments = [(str(t), bool(s)) for t, s in segments]
        return cls(id, "".join(t for t, _ in segments), segments=segments, **kw)

    @property
    def parts(self) -> list[tuple[str, bool]]:
        """What is encoded: the segments, or the text as one content segment."""
        return self.segments if self.segments is not None else [(self.text, False)]


def _seed_for(seed: int, key: str) -> int:
    return int(hashlib.sha256(f"{seed}/{key}".encode()).hexdigest()[:8], 16)


def cut_at_stop(text: str, stop) -> str:
    """`text` up to (not including) the earliest stop string, as OpenAI's API returns it."""
    ends = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[:min(ends)] if ends else text


class Backend(abc.ABC):
    """What every suite asks of a model: samples for prompts, and (where a tokenizer is known) teacher forcing."""
    name = "backend"
    tokenizer = None
    fingerprint = None

    @abc.abstractmethod
    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[str]]:
        """`params.n` completions for each prompt, in prompt order."""

    def greedy_next_tokens(self, sequences: list[list[int]]) -> list[list[int]]:
        """For each sequence, the argmax token after every prefix: out[i][j] is predicted from seq[:j + 1]."""
        raise BackendError(f"backend {self.name} gives no next-token predictions")

    def encode(self, prompt) -> list[int]:
        """Token ids of a prompt: a `Prompt`, (text, is_structure) segments, or text (all content) (`encode_prompt`)."""
        if self.tokenizer is None:
            raise BackendError(f"backend {self.name} has no tokenizer: pass --tokenizer DIR")
        return encode_prompt(self.tokenizer, prompt)

    def close(self) -> None:
        pass


def folder_fingerprint(path: Path) -> str:
    """Names, sizes and modification times of a model folder's files, hashed: changes when the model is rewritten."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).iterdir() if p.is_file()):
        st = f.stat()
        h.update(f"{f.name}/{st.st_size}/{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def load_tokenizer_dir(path: str | os.PathLike):
    from transformers import AutoTokenizer

    if not Path(path, "tokenizer_config.json").exists():
        raise BackendError(f"tokenizer {path}: no tokenizer_config.json there; pass a Hugging Face model or "
                           "tokenizer folder")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


class OracleBackend(Backend):
    """Answers every prompt with its known solution; next-token predictions are the true next tokens."""
    name = "oracle"

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer

    def generate(self, prompts, params):
        return [[cut_at_stop(p.oracle, (p.params or params).stop)] * (p.params or params).n for p in prompts]

    def greedy_next_tokens(self, sequences):
        return [list(s[1:]) + [-1] for s in sequences]


class WrongBackend(Backend):
    """Answers every prompt with text no scorer accepts; predicts no true next token."""
    name = "wrong"
    ANSWER = "\u00a7\u00a7 no answer \u00a7\u00a7"

    def __init__(self, tokenizer=None):
        self.tokenizer = tokenizer

    def generate(self, prompts, params):
        return [[self.ANSWER] * (p.params or params).n for p in prompts]

    def greedy_next_tokens(self, sequences):
        return [[-1] * len(s) for s in sequences]


class HFBackend(Backend):
    """A local `transformers` causal LM: batched generation with a KV cache (left padding), fp32 by default."""
    name = "hf"

    def __init__(self, model_dir=None, *, model=None, tokenizer=None, device: str | None = None,
                 dtype: str = "float32", batch_size: int = 8):
        import torch
        from transformers import AutoModelForCausalLM

        if model is None:
            path = Path(model_dir)
            if not (path / "config.json").exists():
                raise BackendError(f"--model {model_dir}: not a model folder (no config.json); pass a folder "
                                   "that AutoModelForCausalLM.from_pretrained loads, e.g. the trainer's OUT/hf")
            try:
                model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype),
                                                             local_files_only=True)
            except (OSError, ValueError, KeyError) as e:
                raise BackendError(f"--model {model_dir}: not a loadable causal LM ({str(e).splitlines()[0]})") \
                    from None
            tokenizer = tokenizer or load_tokenizer_dir(path)
            self.model_name = str(model_dir)
            self.fingerprint = folder_fingerprint(path)
        else:
            self.model_name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def generate(self, prompts, params):
        out: list[list[str]] = []
        groups: dict[SamplingParams, list[int]] = {}
        for i, p in enumerate(prompts):
            groups.setdefault(p.params or params, []).append(i)
        results: dict[int, list[str]] = {}
        for group_params, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                for i, texts in zip(chunk, self._generate_batch([prompts[i] for i in chunk], group_params)):
                    results[i] = texts
        for i in range(len(prompts)):
            out.append(results[i])
        return out

    def _generate_batch(self, prompts: list[Prompt], params: SamplingParams) -> list[list[str]]:
        rows = generate_ids(self.model, self.tokenizer, [self.encode(p) for p in prompts], params,
                            device=self.device, seed=_seed_for(params.seed, prompts[0].id))
        return [[decode_completion(self.tokenizer, ids, cut, params.stop) for ids, cut in samples]
                for samples in rows]

    def greedy_next_tokens(self, sequences):
        return greedy_next_tokens(self.model, sequences, self.device)


def encode_prompt(tokenizer, prompt) -> list[int]:
    """Token ids of a prompt (a `Prompt`, (text, is_structure) segments, or text: one content segment) as the
    trainer tokenizes a document starting with it (`cwm.data.documents.prompt_ids`): BOS, content with
    special-token recognition off, structure segments special."""
    from cwm.data.documents import prompt_ids

    return prompt_ids(tokenizer, prompt.parts if isinstance(prompt, Prompt) else prompt)


@contextlib.contextmanager
def inference_attention(model):
    """The stock `sdpa` attention while generating (the packed training kernel has no KV cache), restored after."""
    before = model.config._attn_implementation
    swap = before not in ("sdpa", "eager")
    if swap:
        model.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        if swap:
            model.set_attn_implementation(before)


def generate_ids(model, tokenizer, prompts: list[list[int]], params: SamplingParams, *, device, seed: int = 0,
                 stopping_criteria=None, synced: bool = False) -> list[list[tuple[list[int], bool]]]:
    """Batched generation with a KV cache (`transformers`' generate, left padding): for each prompt, n samples as
    (new token ids up to the end-of-text token, cut by max_tokens). `synced` keeps every rank of a sharded model
    running forwards until all ranks are done (generate's `synced_gpus`)."""
    import torch
    from transformers import GenerationConfig

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(e) for e in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(prompts):  # left padding: every prompt ends where generation starts
        ids[i, width - len(e):] = torch.tensor(e)
        mask[i, width - len(e):] = 1
    sample = params.temperature > 0
    copies = params.n if sample else 1   # greedy: one search, its answer repeated n times
    eos = [t for t in (tokenizer.eos_token_id,) if t is not None]
    cfg = GenerationConfig(do_sample=sample, temperature=params.temperature if sample else None,
                           top_p=params.top_p if sample else None, top_k=0 if sample else None,
                           max_new_tokens=params.max_tokens, num_return_sequences=copies,
                           eos_token_id=eos or None, pad_token_id=pad_id)
    kwargs = {}
    if params.stop:
        cfg.stop_strings = list(params.stop)
        kwargs["tokenizer"] = tokenizer
    if stopping_criteria is not None:
        kwargs["stopping_criteria"] = stopping_criteria
    if synced:
        kwargs["synced_gpus"] = True
    with torch.no_grad(), torch.random.fork_rng(devices=[]), inference_attention(model):
        torch.manual_seed(seed)
        seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=cfg,
                              **kwargs)
    new = seqs[:, width:].cpu().tolist()
    stops = set(eos) | {pad_id}
    rows = []
    for row in new:
        end = next((j for j, t in enumerate(row) if t in stops), len(row))
        rows.append((row[:end], end == len(row)))
    return [rows[i * copies:(i + 1) * copies] * (params.n // copies) for i in range(len(prompts))]


def decode_completion(tokenizer, ids: list[int], cut_by_length: bool, stop=()) -> str:
    text = tokenizer.decode(ids, skip_special_tokens=False)
    if cut_by_length:
        # cut by max_tokens inside a multi-byte character: servers (vLLM's incremental detokenizer) hold the
        # incomplete bytes back, decode() writes U+FFFD for them; drop them as the servers do
        text = text.rstrip("\ufffd")
    return cut_at_stop(text, stop)


def greedy_next_tokens(model, sequences: list[list[int]], device) -> list[list[int]]:
    """Teacher forcing: the argmax next token after every prefix of each sequence (one forward each, unpadded).

    The head computes the argmax chunk by chunk (`cwm.model.loss`, an "argmax" HeadRequest): a long trace never
    forms its [T, V] logits, as training never does."""
    import torch

    from cwm.model.loss import HeadRequest, head_request

    out = []
    with torch.no_grad(), inference_attention(model):
        for seq in sequences:
            x = torch.tensor([seq], device=device)
            with head_request(model, HeadRequest(kind="argmax", targets=None)):
                argmax = model(input_ids=x, position_ids=torch.arange(len(seq), device=device)[None]).logits
            out.append(argmax[0].tolist())
    return out


class OpenAIBackend(Backend):
    """Any OpenAI-compatible completions server (vLLM, SGLang, ...)."""
    name = "openai"

    def __init__(self, base_url: str, model: str, *, tokenizer=None, api_key: str | None = None,
                 timeout_s: float = 600.0, concurrency: int = 8, check: bool = True):
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.timeout_s, self.concurrency = timeout_s, concurrency
        if tokenizer is None and Path(model, "tokenizer_config.json").exists():
            tokenizer = load_tokenizer_dir(model)
        self.tokenizer = tokenizer
        if check:
            self.check()

    def check(self) -> None:
        """The server answers and serves `model`; else BackendError naming what to do."""
        try:
            reply = self._request("GET", "/models", None, timeout_s=15.0)
        except BackendError as e:
            raise BackendError(f"--base-url {self.base_url}: the server does not answer ({e}); start it "
                               "(e.g. `vllm serve DIR`) or fix the URL (it ends in /v1)") from None
        served = [m.get("id") for m in reply.get("data") or [] if isinstance(m, dict)]
        if served and self.model_name not in served:
            raise BackendError(f"--model {self.model_name}: the server at {self.base_url} does not serve it; "
                               f"it serves {', '.join(map(str, served))}")

    def _request(self, method: str, path: str, body: dict | None, timeout_s: float | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise BackendError(f"{self.base_url}{path}: HTTP {e.code}: {e.read()[:300]!r}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            raise BackendError(f"{self.base_url}{path}: {getattr(e, 'reason', e)}") from None
        except json.JSONDecodeError as e:
            raise BackendError(f"{self.base_url}{path}: the reply is not JSON ({e})") from None

    def _body(self, prompt: Prompt, params: SamplingParams) -> dict:
        body = {"model": self.model_name, "max_tokens": params.max_tokens, "temperature": params.temperature,
                "top_p": params.top_p, "n": params.n, "seed": _seed_for(params.seed, prompt.id),
                "skip_special_tokens": False, "spaces_between_special_tokens": False}
        if params.stop:
            body["stop"] = list(params.stop)[:4]   # the OpenAI API takes at most 4; the rest are cut here
        body["prompt"] = self.encode(prompt) if self.tokenizer is not None else prompt.text
        return body

    def _complete(self, prompt: Prompt, params: SamplingParams) -> list[str]:
        params = prompt.params or params
        reply = self._request("POST", "/completions", self._body(prompt, params))
        try:
            choices = sorted(reply["choices"], key=lambda c: c.get("index", 0))
            texts = [c["text"] for c in choices]
        except (KeyError, TypeError):
            raise BackendError(f"{self.base_url}/completions: unexpected reply {str(reply)[:200]}") from None
        eos = getattr(self.tokenizer, "eos_token", None)
        return [cut_at_stop(t.split(eos)[0] if eos else t, params.stop) for t in texts]

    def generate(self, prompts, params):
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda p: self._complete(p, params), prompts))

    def greedy_next_tokens(self, sequences):
        """From the prompt log-probabilities (`echo` with `logprobs=1`, token ids back as `token_id:N`)."""
        def one(seq):
            body = {"model": self.model_name, "prompt": seq, "max_tokens": 1, "temperature": 0.0, "echo": True,
                    "logprobs": 1, "return_tokens_as_token_ids": True}
            reply = self._request("POST", "/completions", body)
            try:
                top = reply["choices"][0]["logprobs"]["top_logprobs"]
            except (KeyError, IndexError, TypeError):
                raise BackendError(f"{self.base_url}: no prompt log-probabilities in the reply; teacher-forced "
                                   "next-state needs a server that honours echo+logprobs (vLLM), or --model DIR")
            preds = []
            for position in top[1:len(seq)] + [top[len(seq)] if len(top) > len(seq) else None]:
                if not position:
                    preds.append(-1)
                    continue
                best = max(position.items(), key=lambda kv: kv[1])[0]
                preds.append(int(best.split(":", 1)[1]) if best.startswith("token_id:") else -1)
            return preds

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, sequences))


def make_backend(*, model: str | None, base_url: str | None, tokenizer: str | None = None,
                 batch_size: int = 8, concurrency: int = 8, dtype: str = "float32") -> Backend:
    """The backend the CLI words name: `--model oracle|wrong` (test backends), `--model DIR`, or
    `--base-url URL --model NAME`."""
    tok = load_tokenizer_dir(tokenizer) if tokenizer else None
    if model in ("oracle", "wrong") and not base_url:
        return OracleBackend(tok) if model == "oracle" else WrongBackend(tok)
    if base_url:
        if not model:
            raise BackendError("--base-url needs --model NAME (the name the server serves)")
        return OpenAIBackend(base_url, model, tokenizer=tok, concurrency=concurrency)
    if not model:
        raise BackendError("say what to evaluate: --model DIR (a local model), --base-url URL --model NAME "
                           "(a server), or --model oracle|wrong (test backends)")
    if not Path(model).is_dir():
        raise BackendError(f"--model {model}: no such folder; pass a local model folder, or --base-url for a server")
    return HFBackend(model, tokenizer=tok, batch_size=batch_size, dtype=dtype)
