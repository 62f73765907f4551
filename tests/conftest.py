"""Fixtures shared across test folders. Imports only pytest at module level: the tracer's tests also run in
bare Python 3.12/3.13 venvs that have nothing else installed."""
import pytest


@pytest.fixture(scope="session")
def docker_client():
    """A docker SDK client, or a skip with the reason when no engine answers."""
    from cwm.forager import images

    try:
        return images.client()
    except images.ImageError as exc:
        pytest.skip(f"no Docker engine: {exc}")
