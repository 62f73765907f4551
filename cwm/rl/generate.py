"""Token-level samplers for rollouts: in-process (small models) and an OpenAI-compatible server (large ones).

Both take prompts as token ids and return the sampled ids with their log-probabilities under the sampling
distribution (logits / temperature): the behaviour policy's log-probs that the GRPO ratio divides by. Both carry a
`version`, the learner step whose weights they sample from, which `push_weights` advances after every step.
"""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import torch


@dataclass
class SamplingConfig:
    temperature: float = 1.0
    max_new_tokens: int = 64


@dataclass
class Sample:
    tokens: list[int]       # sampled ids, the stop token included when one was produced
    logprobs: list[float]   # one per token
    stopped: bool           # ended with a stop token (else it hit max_new_tokens)


class Generator(Protocol):
    version: int

    def generate(self, prompts: list[list[int]], cfg: SamplingConfig) -> list[Sample]: ...

    def push_weights(self, model: torch.nn.Module, version: int) -> None: ...


class LocalGenerator:
    """Batched sampling with a KV cache (`transformers`' generate) on an in-process copy of the policy.

    The copy is separate from the learner so rollouts can run in a thread while the learner steps (and so a
    sharded learner never has to run generate's data-dependent number of forwards in lockstep across ranks).
    `push_weights` takes a snapshot of the learner's full weights; the copy loads it at its next `sync()`,
    which the rollout producer calls between batches, so one batch is sampled from one version.
    """

    def __init__(self, model: torch.nn.Module, stop_ids: list[int], pad_id: int, version: int = 0, seed: int = 0):
        self.model = model.eval()
        self.stop_ids = list(stop_ids)
        self.pad_id = pad_id
        self.version = version
        self._pending: tuple[int, dict] | None = None
        self._lock = threading.Lock()
        self._rng = torch.Generator(device="cpu").manual_seed(seed)

    def push_weights(self, model: torch.nn.Module, version: int) -> None:
        state = full_state_dict(model)
        with self._lock:
            self._pending = (version, state)

    def sync(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.model.load_state_dict(pending[1])
            self.version = pending[0]

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], cfg: SamplingConfig) -> list[Sample]:
        from transformers import GenerationConfig

        device = next(self.model.parameters()).device
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            ids[i, width - len(p):] = torch.tensor(p)
            attn[i, width - len(p):] = 1
        gen_cfg = GenerationConfig(do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0,
                                   max_new_tokens=cfg.max_new_tokens, eos_token_id=self.stop_ids,
                                   pad_token_id=self.pad_id, output_scores=True, return_dict_in_generate=True)
        # generate samples with the global RNG; a private generator keeps rollouts reproducible per seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=self._rng)))
            out = self.model.generate(input_ids=ids.to(device), attention_mask=attn.to(device),
                                      generation_config=gen_cfg)
        new = out.sequences[:, width:].cpu()
        logp = torch.stack([torch.log_softmax(s.float(), -1) for s in out.scores], 1).cpu()  # [B, new, V]
        taken = logp.gather(-1, new[:, :logp.shape[1], None]).squeeze(-1)
        samples = []
        stops = set(self.stop_ids)
        for row, lp in zip(new.tolist(), taken.tolist()):
            end = next((j + 1 for j, t in enumerate(row) if t in stops), len(row))
            samples.append(Sample(tokens=row[:end], logprobs=lp[:end], stopped=row[end - 1] in stops))
        return samples


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the full (unsharded) weights on every rank (the replica's device); a collective under FSDP2,
    so every rank must call it. (cpu_offload would leave the other ranks' copies empty.)"""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True)
    return {k: v.detach().clone() for k, v in get_model_state_dict(model, options=opts).items()}


class ServerGenerator:
    """Client of an OpenAI-compatible completion server (vLLM, SGLang) that samples from token-id prompts.

    Requests `/v1/completions` with `prompt` as token ids, `logprobs=0` (the sampled token's log-prob) and
    `return_tokens_as_token_ids` (tokens come back as "token_id:N", so no detokenise/retokenise round trip).
    New weights go to the server through `push`, a hook given the learner model and version — by default
    `DiskWeightPush`: export to a directory and ask the server to reload from it.
    """

    def __init__(self, base_url: str, model_name: str, stop_ids: list[int],
                 push: Callable[[torch.nn.Module, int], None] | None = None, version: int = 0,
                 timeout_s: float = 600.0, concurrency: int = 16):
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.stop_ids = list(stop_ids)
        self.push = push
        self.version = version
        self.timeout_s = timeout_s
        self.concurrency = concurrency

    def push_weights(self, model: torch.nn.Module, version: int) -> None:
        if self.push is not None:
            self.push(model, version)
        self.version = version

    def sync(self) -> None:
        pass

    def generate(self, prompts: list[list[int]], cfg: SamplingConfig) -> list[Sample]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda p: self._complete(p, cfg), prompts))

    def _complete(self, prompt: list[int], cfg: SamplingConfig) -> Sample:
        body = {"model": self.model_name, "prompt": prompt, "max_tokens": cfg.max_new_tokens,
                "temperature": cfg.temperature, "top_p": 1.0, "logprobs": 0,
                "stop_token_ids": self.stop_ids, "skip_special_tokens": False, "include_stop_str_in_output": True,
                "return_tokens_as_token_ids": True}
        reply = post_json(f"{self.base_url}/v1/completions", body, self.timeout_s)
        choice = reply["choices"][0]
        lp = choice.get("logprobs") or {}
        tokens = [_token_id(t) for t in lp.get("tokens") or []]
        logprobs = [float(x) for x in lp.get("token_logprobs") or []]
        if len(tokens) != len(logprobs):
            raise ValueError(f"{self.base_url}: completion has {len(tokens)} tokens but {len(logprobs)} log-probs")
        stops = set(self.stop_ids)
        stopped = choice.get("finish_reason") == "stop"
        if stopped and (not tokens or tokens[-1] not in stops):
            # servers differ on whether the stop token is echoed; the trajectory needs it to end the turn
            stop = choice.get("stop_reason") if isinstance(choice.get("stop_reason"), int) else self.stop_ids[0]
            tokens.append(stop)
            logprobs.append(0.0)
        return Sample(tokens=tokens, logprobs=logprobs, stopped=stopped)


def _token_id(token: str) -> int:
    if isinstance(token, str) and token.startswith("token_id:"):
        return int(token.split(":", 1)[1])
    raise ValueError(f"server returned token {token!r}, not 'token_id:N': start vLLM/SGLang with an API that "
                     "honours return_tokens_as_token_ids")


def post_json(url: str, body: dict, timeout_s: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            data = resp.read()
            return json.loads(data) if data.strip() else {}
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"{url}: HTTP {e.code}: {e.read()[:300]!r}") from e


VLLM_RELOAD_ROUTE = "/collective_rpc"


class DiskWeightPush:
    """Push hook for servers that reload weights from disk: export the learner to `out_dir/step-N`, ask the server
    to load it, delete the previous export once the server has switched. `export` writes an HF checkpoint (the
    trainer's export). Two routes:

    - SGLang's `/update_weights_from_disk` (`{"model_path": DIR}`).
    - vLLM (0.32, CPU and GPU builds alike; `route: /collective_rpc`): started with `VLLM_SERVER_DEV_MODE=1`, the
      server has `POST /collective_rpc`, which calls a method on every worker; the worker's `reload_weights` with
      `weights_path=DIR` reloads the weights in place from a checkpoint folder of the same architecture, no
      restart. Then `POST /reset_prefix_cache`: cached KV of the old weights must not answer for the new ones.
    """

    def __init__(self, base_url: str, out_dir: str | Path, export: Callable[[torch.nn.Module, Path], None],
                 route: str = "/update_weights_from_disk", is_writer: bool = True, timeout_s: float = 600.0):
        self.base_url = base_url.rstrip("/")
        self.out_dir = Path(out_dir)
        self.export = export
        self.route = route
        self.is_writer = is_writer
        self.timeout_s = timeout_s
        self._previous: Path | None = None

    def __call__(self, model: torch.nn.Module, version: int) -> None:
        path = self.out_dir / f"step-{version:06d}"
        self.export(model, path)  # collective under FSDP2: every rank takes part, rank 0 writes
        if not self.is_writer:
            return
        if self.route == VLLM_RELOAD_ROUTE:
            body = {"method": "reload_weights", "kwargs": {"weights_path": str(path)}, "timeout": self.timeout_s}
            post_json(self.base_url + self.route, body, self.timeout_s)   # an error is an HTTP error: raised
            post_json(self.base_url + "/reset_prefix_cache", {}, self.timeout_s)
        else:
            reply = post_json(self.base_url + self.route, {"model_path": str(path), "version": version},
                              self.timeout_s)
            if reply.get("success") is False:
                raise RuntimeError(f"{self.base_url}{self.route}: server refused weights {path}: "
                                   f"{reply.get('message')}")
        if self._previous is not None:
            import shutil
            shutil.rmtree(self._previous, ignore_errors=True)
        self._previous = path
