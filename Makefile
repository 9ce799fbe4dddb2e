# Two commands for a newcomer: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned in the same pip command as everything that depends on it, so pip
# never swaps in a multi-GB CUDA build; triton 3.7.1 is what CUDA torch 2.13.0 needs.
PINS := torch==2.13.0 triton==3.7.1 numpy

# torchcodec 0.13 is the last CPU build; it loads Debian 12's FFmpeg 5 libraries.
FFMPEG5 := libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8

.PHONY: setup system-libs demo test bench gpu-suite clean
setup: $(VENV)/.installed system-libs

$(VENV)/.installed: setup.py pyproject.toml
	@echo "make: creating $(VENV) and installing torch 2.13.0 (CPU), triton 3.7.1 and ila-fast (editable, dev extra:"
	@echo "      pytest, PyAV, DALI, torchcodec), about 2.6 GB ... a few minutes"
	@$(PYTHON) -m venv $(VENV)
	@# -qq: errors only (setuptools' notice about editable installs with a package_dir layout is expected)
	@$(PY) -m pip install -qq --disable-pip-version-check --upgrade pip setuptools wheel
	@$(PY) -m pip install -qq --disable-pip-version-check $(PINS) -e '.[dev]'
	@touch $@
	@echo "make: $(VENV) ready ($$($(VENV)/bin/ila-fast --version))"

# FFmpeg 5 shared libraries for torchcodec: installed with apt when missing (as root on Debian),
# otherwise a note; without them torchcodec does not load and the CPU backend uses PyAV.
system-libs:
	@if dpkg -s $(FFMPEG5) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "make: installing Debian's FFmpeg 5 libraries for torchcodec (apt-get, about a minute)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(FFMPEG5) >/dev/null; \
	else \
		echo "make: note: torchcodec needs Debian's FFmpeg 5 libraries ($(FFMPEG5)); not root or no apt-get, so not installed"; \
	fi

demo: setup
	$(VENV)/bin/ila-fast demo

test: setup
	@echo "make: running the test suite on the CPU (Triton kernels under the interpreter)"
	TRITON_INTERPRET=1 $(PY) -m pytest -x -q tests

# Every benchmark the CLI has; each prints what it measures (on a CPU: smoke-test figures only).
bench: setup
	$(VENV)/bin/ila-fast bench kernels
	$(VENV)/bin/ila-fast bench data
	$(VENV)/bin/ila-fast bench train

# On a GPU machine: every GPU check in one command (bench/README.md: how to run it on a lent one),
# packed into $(SUITE_OUT) (default bench/results/gpu_<date>/), with the venv's Python when there is one.
gpu-suite:
	PYTHON=$(if $(wildcard $(PY)),$(PY),$(PYTHON)) bench/gpu_suite.sh $(SUITE_OUT)

clean:
	rm -rf $(VENV) build *.egg-info
