# Two commands for a newcomer: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned in the same pip command as everything that depends on it, so pip
# never swaps in a multi-GB CUDA build; triton 3.7.1 is what CUDA torch 2.13.0 needs.
PINS := torch==2.13.0 triton==3.7.1 numpy

.PHONY: setup demo test bench clean
setup: $(VENV)/.installed

$(VENV)/.installed: setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q $(PINS) -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/ila-fast demo

test: setup
	TRITON_INTERPRET=1 $(PY) -m pytest -x -q tests

bench: setup
	$(VENV)/bin/ila-fast bench

clean:
	rm -rf $(VENV) build *.egg-info
