"""Run by test_world_model_dist.py under `torchrun --nproc-per-node 2`: the in-training evaluation of an FSDP2
model (gloo, CPU), each rank writing what it computed. argv: MODEL_DIR EXAMPLES.json OUT_DIR"""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, AutoTokenizer

from cwm.eval.world_model import TraceExample, WorldModelEval, _rank_world, _share
from cwm.eval.trace_text import prompt_end
from cwm.model.parallelize import build_mesh, parallelize

model_dir, examples_path, out = sys.argv[1:4]
dist.init_process_group("gloo")
torch.set_num_threads(1)
rank, world = _rank_world()
tok = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
model = parallelize(model, build_mesh("cpu", world), bf16=False, activation_checkpointing=False, compile=False)
examples = [TraceExample(**e) for e in json.loads(Path(examples_path).read_text())]
evaluator = WorldModelEval(tok, examples, max_len=1024, max_new_tokens=40, max_outputs=5, batch_size=2)
metrics = {**evaluator.next_state(model, torch.device("cpu")), **evaluator.output_prediction(model, torch.device("cpu"))}
mine, counted = _share([e for e in examples if e.value is not None][:5], rank, world)
generated = evaluator.generate_traces(model, [evaluator.encode(e.text[:prompt_end(e.text)]) for e in mine],
                                      torch.device("cpu"), synced=True)
Path(out, f"rank{rank}.json").write_text(json.dumps({"metrics": metrics, "prompts": [e.text for e in mine[:counted]],
                                                     "generated": generated[:counted]}))
dist.destroy_process_group()
