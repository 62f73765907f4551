"""Where training metrics go: `metrics.jsonl` (one JSON object per logged step), TensorBoard, and `loss.png`.

Only rank 0 writes. On resume the file is cut back to the checkpoint's step, so every step appears once even
when a run died after logging steps its last checkpoint does not hold.
"""
from __future__ import annotations

import json
import os
from pathlib import Path


class MetricsLogger:
    def __init__(self, out_dir: str | Path, *, enabled: bool, tensorboard: bool = True):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Forget logged steps after `step` (the checkpoint a resumed run starts from)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self._tb is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(name, value, step)
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def plot_losses(metrics_path: str | Path, png_path: str | Path) -> Path:
    """Training loss (total and per source) and eval scores against step, from a metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({k for r in rows for k in r if k == "loss" or k.startswith("loss/")}):
        points = [(r["step"], r[key]) for r in rows if key in r]
        ax_loss.plot(*zip(*points), label=key, linewidth=1.5 if key == "loss" else 1.0)
    ax_loss.set(xlabel="step", ylabel="loss (nats/token)", title="training loss")
    ax_loss.legend(fontsize=8)
    eval_keys = sorted({k for r in rows for k in r if k.startswith("eval/") and k.endswith("accuracy")})
    for key in eval_keys:
        points = [(r["step"], r[key]) for r in rows if key in r]
        ax_eval.plot(*zip(*points), marker="o", label=key)
    ax_eval.set(xlabel="step", ylabel="accuracy", title="held-out evaluation", ylim=(0, 1))
    if eval_keys:
        ax_eval.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return Path(png_path)
