"""Peak memory and time of the loss step (forward + backward of linear + cross-entropy) at T = 8k, V = 128k,
hidden 512: the plain computation (`F.linear` -> `[T, V]` logits -> `F.cross_entropy`, what `cwm/train.py` did)
against `cwm.model.loss.linear_cross_entropy` (chunked, gradients formed in forward).

    pytest benchmarks/test_loss_memory.py -s

Each variant runs in a fresh process (`python benchmarks/test_loss_memory.py full|chunked`); its peak RSS
(VmHWM, `cwm.train.rss_bytes`: not `ru_maxrss`, which Linux carries across exec from the pytest parent) is the figure, the same inputs on both. The time is the step's wall clock, the median of
`REPEATS` steps in that process. Target (issue 16): >= 10x less memory, time within 1.3x of the plain step.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

T, V, HIDDEN, CHUNK, REPEATS = 8192, 128_256, 512, 512, 1


def _step(kind: str) -> dict:
    import torch
    import torch.nn.functional as F

    from cwm.model.loss import linear_cross_entropy
    from cwm.train import rss_bytes

    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(T, HIDDEN, generator=g).mul_(0.5).requires_grad_()  # in place: no second copy
    weight = torch.randn(V, HIDDEN, generator=g).mul_(0.02).requires_grad_()
    labels = torch.randint(0, V, (T,), generator=g)
    labels[: T // 16] = -100
    n = (labels != -100).sum()
    base = rss_bytes()[1]
    times, loss = [], None
    for _ in range(REPEATS):
        hidden.grad = weight.grad = None
        start = time.perf_counter()
        if kind == "full":
            loss = F.cross_entropy(F.linear(hidden, weight), labels, ignore_index=-100, reduction="sum") / n
        else:
            loss = linear_cross_entropy(hidden, weight, labels, chunk_size=CHUNK)[0] / n
        loss.backward()
        times.append(time.perf_counter() - start)
    peak = rss_bytes()[1]
    return {"kind": kind, "peak_bytes": peak, "inputs_bytes": base, "seconds": sorted(times)[len(times) // 2],
            "loss": float(loss.detach()), "grad_w_norm": float(weight.grad.norm()), "threads": torch.get_num_threads()}


def _run(kind: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    out = subprocess.run([sys.executable, __file__, kind], capture_output=True, text=True, timeout=1200, env=env,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_chunked_loss_memory_and_time_against_full_logits():
    full, chunked = _run("full"), _run("chunked")
    gb = 2**30
    mem_ratio = full["peak_bytes"] / chunked["peak_bytes"]
    above_inputs = (full["peak_bytes"] - full["inputs_bytes"]) / (chunked["peak_bytes"] - chunked["inputs_bytes"])
    time_ratio = chunked["seconds"] / full["seconds"]
    print(f"\nloss step T={T} V={V} hidden={HIDDEN} fp32, {full['threads']} threads, chunk {CHUNK}:"
          f"\n  full    peak RSS {full['peak_bytes'] / gb:6.2f} GB  ({full['seconds']:.2f} s)"
          f"\n  chunked peak RSS {chunked['peak_bytes'] / gb:6.2f} GB  ({chunked['seconds']:.2f} s)"
          f"\n  memory {mem_ratio:.1f}x less (above the inputs: {above_inputs:.1f}x), time {time_ratio:.2f}x the full step")
    assert abs(full["loss"] - chunked["loss"]) < 1e-4 * abs(full["loss"])
    assert abs(full["grad_w_norm"] - chunked["grad_w_norm"]) < 1e-3 * full["grad_w_norm"]
    assert mem_ratio >= 10, mem_ratio
    assert time_ratio <= 1.3, time_ratio


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(json.dumps(_step(sys.argv[1])))
