# Two commands set everything up on a fresh machine (see README.md):
#   make demo   installs into .venv and runs the main job on an embedded default
#   make test   installs into .venv and runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= all

.PHONY: install demo test lint clean triton

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[$(EXTRAS)]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/transferzoo demo

# A real Triton server (the nvidia-pytriton wheel from PyPI, into ~/.cache/transferzoo-triton) for
# tests/test_serve_triton.py; where it cannot be fetched, that test is skipped with the reason.
triton: install
	$(BIN)/python tests/triton_server.py fetch || echo "tritonserver not fetched: tests/test_serve_triton.py will be skipped"

test: install triton
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
