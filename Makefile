# Set-up and checks. `make test` and `make demo` each do the whole set-up on a fresh machine (virtualenv,
# pinned dependencies, compiling the extension) and are idempotent: a second run rebuilds nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPS_STAMP := $(VENV)/.deps-stamp
BUILD_STAMP := $(VENV)/.build-stamp
KERNEL_SOURCES := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh') setup.py pyproject.toml

.PHONY: venv build test test-python test-triton test-install test-eval demo showcase bench soak clean

venv: $(DEPS_STAMP)
$(DEPS_STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# Editable install: compiles liveact_kernels._C (CPU kernels, plus CUDA kernels when torch and nvcc allow).
build: $(BUILD_STAMP)
$(BUILD_STAMP): $(DEPS_STAMP) $(KERNEL_SOURCES)
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	$(PY) -c "import liveact_kernels as lk; print('liveact build:', lk.build_info())"
	touch $@

test: build test-python test-triton test-install test-eval

test-python: build
	$(PY) -m pytest -q tests

# Triton kernels' numerics on the CPU through the interpreter, and their sm_80/89/90 AOT compilation.
test-triton: build
	TRITON_INTERPRET=1 $(PY) -m pytest -q -m triton tests

# A real (non-editable) `pip install --no-build-isolation .` of the CPU-only build with portable AVX2 kernels, into
# build/install-check: the installed package, its data and console script work, and the ISA-specific op tests pass.
test-install: build
	$(PY) tests/check_install.py

# The tiny avatar's evaluation at CI size: a 2-minute stream (lip-sync proxy, drift, KV bytes and RSS, FPS);
# --check fails the run on a regression (KV growth, drift, lip sync below its floor), never on a timing.
test-eval: build
	$(PY) -m liveact_model.evaluate --minutes 2 --skip compare --threads 1 --check --out out/eval.json

# The main job: stream the bundled image + speech clip through the shipped tiny avatar model.
demo: build
	$(PY) -m liveact_model.generate --demo

# Per op: backends available here and the CPU kernel's speed against eager PyTorch.
showcase: build
	$(PY) -m liveact_kernels.showcase

# The hour-long stream of issue 6.
soak: build
	$(PY) -m liveact_model.evaluate --minutes 60 --skip compare --threads 1 --check --out out/soak.json

bench: build
	mkdir -p bench/results
	$(PY) -m pytest -q bench/ --benchmark-json=bench/results/latest.json
	$(PY) bench/make_table.py bench/results/latest.json bench/README.md

clean:
	rm -rf build $(VENV) *.egg-info liveact_kernels/_C*.so
