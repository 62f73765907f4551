"""Training checkpoints with `torch.distributed.checkpoint` (DCP), and export to a Hugging Face folder.

A checkpoint holds everything a run needs to continue as if never stopped: the (sharded) model and optimizer,
the step and LR schedule, and per rank the loader position and the RNG states. Each rank writes its own shards;
the folder is written as `step-N.tmp` and renamed once every rank is done, so a crash mid-save never leaves a
checkpoint that looks complete.

Per-rank state (loader, RNG) is stored under a rank-specific key as one JSON/pickle blob: DCP keeps one copy
of identical keys, and a blob keeps DCP from flattening a nested structure whose shape changes as training goes.
"""
from __future__ import annotations

import copy
import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)


def _rng_state() -> bytes:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return pickle.dumps(state)


def _set_rng_state(blob: bytes) -> None:
    state = pickle.loads(blob)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _state(model, optimizer, scheduler, loader, step: int) -> dict:
    return {
        "model": get_model_state_dict(model),
        "optim": get_optimizer_state_dict(model, optimizer),
        "trainer": {"step": step, "scheduler": json.dumps(scheduler.state_dict())},
        f"rank{_rank()}": {"loader": json.dumps(loader.state_dict()), "rng": _rng_state()},
    }


def save(folder: Path, step: int, model, optimizer, scheduler, loader, *, keep: int = 2) -> Path:
    """Write `folder/step-{step:08d}` from every rank; keep the newest `keep` checkpoints."""
    final = Path(folder) / f"step-{step:08d}"
    tmp = final.with_name(final.name + ".tmp")
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    dcp.save(_state(model, optimizer, scheduler, loader, step), checkpoint_id=str(tmp))
    _barrier()
    if _rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(p for p in Path(folder).glob("step-*") if not p.name.endswith(".tmp"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def latest(folder: Path) -> Path | None:
    """The newest complete checkpoint under `folder`, if any."""
    done = sorted(p for p in Path(folder).glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    return done[-1] if done else None


def load(path: Path, model, optimizer, scheduler, loader) -> int:
    """Restore everything `save` wrote into the live objects; returns the step to continue from."""
    state = _state(model, optimizer, scheduler, loader, 0)
    dcp.load(state, checkpoint_id=str(path))
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, state["optim"])
    scheduler.load_state_dict(json.loads(state["trainer"]["scheduler"]))
    mine = state[f"rank{_rank()}"]
    loader.load_state_dict(json.loads(mine["loader"]))
    _set_rng_state(mine["rng"])
    return int(state["trainer"]["step"])


def export_hf(model, config, tokenizer, out_dir: Path, model_class=None) -> Path | None:
    """Gather the full weights and write a folder `AutoModelForCausalLM.from_pretrained` loads (rank 0 writes).

    The folder keeps the trained architecture (`model_class`: CwmForCausalLM by default, or the class of the
    `--model.init` folder) and the tokenizer trained with. The exported config names the stock `sdpa`
    attention: the folder must load where `cwm_packed` is unknown. The tokenizer's chat template is the toolkit's
    (`cwm.data.chat.CHAT_TEMPLATE`, replacing one an init folder brought): the model was mid-trained and
    RL-trained on that layout, and a server's chat endpoint (vLLM refuses a model without a template) must render
    conversations as the trainer, the forager and the evaluator do.
    """
    from cwm.data.chat import CHAT_TEMPLATE

    if model_class is None:
        from transformers import CwmForCausalLM as model_class

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if _rank() == 0:
        with torch.device("meta"):  # a copy: _from_config would switch the training model's config to sdpa
            hf = model_class._from_config(copy.deepcopy(config), attn_implementation="sdpa")
        hf.load_state_dict(full, assign=True)
        hf.tie_weights()
        hf.generation_config.pad_token_id = tokenizer.pad_token_id
        hf.save_pretrained(str(out_dir))
        template, tokenizer.chat_template = tokenizer.chat_template, CHAT_TEMPLATE
        try:
            tokenizer.save_pretrained(str(out_dir))
        finally:
            tokenizer.chat_template = template
    _barrier()
    return Path(out_dir)
