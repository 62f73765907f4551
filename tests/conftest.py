"""Fixtures shared across test folders. Imports only pytest and the standard library at module level: the tracer's tests also run in
bare Python 3.12/3.13 venvs that have nothing else installed."""
import sys
from pathlib import Path

import pytest

# tests/stand_ins.py imports as `stand_ins` (--import-mode=importlib puts no test folder on sys.path). Appended,
# not prepended: a test folder's name (tracer/, eval/) must never shadow a package.
sys.path.append(str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def docker_client():
    """A docker SDK client, or a skip with the reason when no engine answers."""
    from cwm.forager import images

    try:
        return images.client()
    except images.ImageError as exc:
        pytest.skip(f"no Docker engine: {exc}")


@pytest.fixture(scope="session")
def vllm_server_for():
    """`vllm_server_for(model_dir, **kw)`: a started `cwm.serving.vllm.VLLMServer`, one per (folder, options) for the
    whole session (start-up costs a minute or two here), all stopped at the session's end. Skips, saying why,
    where vLLM cannot be had (its venv cannot be built: no registry)."""
    from cwm.serving.vllm import VLLMServer, VLLMUnavailable, vllm_python

    servers: dict = {}

    def get(model_dir, **kw):
        key = (str(model_dir), tuple(sorted(kw.items())))
        if key not in servers:
            try:
                vllm_python()
            except VLLMUnavailable as exc:
                pytest.skip(f"vLLM unavailable: {exc}")
            servers[key] = VLLMServer(model_dir, **kw).start()
        return servers[key]

    yield get
    for server in servers.values():
        server.stop()


@pytest.fixture
def one_torch_thread():
    """One torch intra-op thread for the test (two shared cores), restored after. Folders whose tests all run torch
    request it from an autouse fixture of their own; torch is imported here only then, so the tracer's bare
    3.12/3.13 venvs never need it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def hostile_tokens():
    """tests/tracer/hostile_tokens.py as a module: sources, locals, values and messages holding every special-token
    string (the tracer, packing and eval tests all trace it)."""
    import importlib.util

    path = Path(__file__).resolve().parent / "tracer" / "hostile_tokens.py"
    spec = importlib.util.spec_from_file_location("cwm_tests_hostile_tokens", path)
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module
