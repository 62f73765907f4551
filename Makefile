# Two entry points: `make demo` (set up, run the main job on the built-in example) and `make test`.
SHELL := /bin/bash
PYENV_ROOT ?= $(shell pyenv root 2>/dev/null || echo $(HOME)/.pyenv)
PYTHON311 ?= $(firstword $(wildcard $(PYENV_ROOT)/versions/3.11.*/bin/python3) python3)
PY312 ?= $(PYENV_ROOT)/versions/3.12.1/bin/python3
PY313 ?= $(PYENV_ROOT)/versions/3.13.0/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
export PYTHONUNBUFFERED := 1

.PHONY: demo test setup test-tracer-versions bench clean

# torch is installed first, pinned, so nothing later can pull a newer (CUDA) build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON311) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	touch $@

# The tracer is standard-library only: a venv with just pytest is enough to test it on 3.12 and 3.13.
.venv-py%/.installed:
	$(PYENV_ROOT)/versions/$*/bin/python3 -m venv .venv-py$*
	.venv-py$*/bin/python -m pip --disable-pip-version-check -q install pytest
	touch $@

# Docker engine, debootstrap, bubblewrap and the forager base image (.ci/setup.sh): installed and started once,
# then found in a second; where one cannot be had it stops here with one line naming the fix.
setup: $(VENV)/.installed
	bash .ci/setup.sh $(VENV)

# The whole chain on examples/shop, each stage summarised, stage times and artefact paths at the end (cwm/demo.py):
# trace -> forager (image, mutate-fix tasks, oracle + noop trajectories in Docker) -> tokenizer -> mid-train ->
# evaluate -> RL -> export. `$(PY) -m cwm.demo --from rl` reruns from a stage.
demo: setup
	$(PY) -m cwm.demo

test: setup test-tracer-versions
	$(PY) -m pytest tests

# sys.monitoring exists from 3.12 on: the tracer's own tests run again on each interpreter pyenv has.
test-tracer-versions: $(if $(wildcard $(PY312)),.venv-py3.12.1/.installed) $(if $(wildcard $(PY313)),.venv-py3.13.0/.installed)
	@for v in 3.12.1 3.13.0; do \
	  if [ -x .venv-py$$v/bin/python ]; then \
	    echo "== tracer tests on Python $$v"; \
	    PYTHONPATH=$(CURDIR) .venv-py$$v/bin/python -m pytest -q -p no:cacheprovider tests/tracer || exit 1; \
	  else echo "SKIPPED: Python $$v not found under $(PYENV_ROOT): tracer not tested on it"; fi; \
	done

bench: $(VENV)/.installed
	$(PY) -m pytest benchmarks

clean:
	rm -rf $(VENV) .venv-py* runs .pytest_cache .benchmarks
