# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Each creates .venv when missing. Without an NVIDIA driver the CPU build of torch is pinned,
# since an unpinned torch pulls several GB of CUDA packages.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tilus-installed
HAVE_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH := $(if $(HAVE_GPU),torch,torch==2.13.0)

.PHONY: demo test docs lint setup clean gpu-bundle

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The API reference from the docstrings (pdoc) into build/api; fails on any pdoc warning.
docs: $(STAMP)
	$(BIN)/python docs/build_api.py build/api

# ruff over the tree, mypy over tilus/ir, tilus/dtypes, tilus/runtime, tilus/transforms (pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# Prebuild every kernel the GPU session launches (sm_90; tests/gpu/kernels.py) into .bundle/, with
# TVM's runtime libraries and the tvm_ffi wheel for the GPU machine's Python, packed into
# .bundle.tgz for the device call (both ignored): see docs/runtime.md. Incremental: kernels already
# in .bundle/cache are not built again. --keep-going: a kernel that does not compile is listed in
# .bundle/manifest.json (and by gpu_session.sh) instead of stopping the others.
gpu-bundle: $(STAMP)
	$(BIN)/python -m tilus bundle --arch sm_90 --out .bundle --python 3.12 --tgz .bundle.tgz \
		--keep-going tests/gpu/kernels.py

clean:
	rm -rf $(VENV) build *.egg-info
