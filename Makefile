# edgegen developer commands. On a fresh machine `make test` and `make bench` set everything up
# first (Debian packages, a virtualenv with pinned packages, the C++ extension).
VENV ?= .venv
PYTHON := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
CPP_BUILD ?= build/cpp-tests
CXX_CHECK ?= g++
CUDA_HOME ?= /usr/local/cuda
# Real data for the smoke tests: the staged copy beside the checkout, unless set already.
ifeq ($(EDGEGEN_DATA_DIR),)
  ifneq ($(wildcard ../shared/data/README.md),)
    export EDGEGEN_DATA_DIR := $(abspath ../shared/data)
  endif
endif

.PHONY: setup build test test-fast test-cpp test-sanitize test-cuda-compile cuda-compile-check test-py test-wheel docs reproduce bench bench-methods bench-gpu clean

$(VENV)/.ready: requirements-dev.txt
	bash scripts/install-system-deps.sh
	python3 -m venv $(VENV)
	# torch first and pinned, and pinned again in every later step: nothing may resolve it from
	# the registry (that would pull a multi-GB CUDA build).
	$(PYTHON) -m pip install -q torch==$(TORCH_VERSION)
	$(PYTHON) -m pip install -q -r requirements-dev.txt torch==$(TORCH_VERSION)
	touch $@

setup: $(VENV)/.ready

# Benchmark-only peers (ONNX Runtime), torch pinned as everywhere.
$(VENV)/.bench-ready: $(VENV)/.ready requirements-bench.txt
	$(PYTHON) -m pip install -q -r requirements-bench.txt torch==$(TORCH_VERSION)
	touch $@

# Incremental (scikit-build-core build dir + ccache): a no-op rebuild takes seconds.
build: setup
	$(PYTHON) -m pip install -q --no-build-isolation --no-deps -e .

# Both suites: GoogleTest (through CTest) on the torch-free kernels, pytest on the Python API; the
# CUDA kernels compiled (not run) with the machine's nvcc, so they cannot rot without a GPU; and
# the package as a user installs it (test-wheel); the documentation site built with warnings as
# errors.
test: test-cpp test-sanitize test-cuda-compile test-py test-wheel docs

# Configure, build and run the GoogleTests of the torch-free kernels in build folder $(1), with
# extra CMake flags $(2) and environment $(3).
define kernel_tests
	cmake -S . -B $(1) -G Ninja -DEDGEGEN_BUILD_EXTENSION=OFF -DEDGEGEN_BUILD_TESTS=ON $(2)
	cmake --build $(1)
	$(3) ctest --test-dir $(1) --output-on-failure
endef

test-cpp: setup
	$(call kernel_tests,$(CPP_BUILD),,)
	bash scripts/amx-check.sh --model  # the AMX check program builds and passes on the tile model

# The same GoogleTests with AddressSanitizer + UBSan: out-of-bounds access, use after free, leaks,
# signed overflow or misaligned loads in the kernels fail the build.
test-sanitize: setup
	$(call kernel_tests,build/sanitize,-DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDGEGEN_SANITIZE=ON,\
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)

test-cuda-compile: setup
	@$(MAKE) --no-print-directory cuda-compile-check

# The same without the venv step, for any PYTHON whose torch headers the glue is checked against
# (scripts/check-torch.sh passes another release's).
cuda-compile-check:
	@if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then \
	  cmake -S . -B build/cuda-compile -G Ninja -DEDGEGEN_BUILD_EXTENSION=OFF -DEDGEGEN_CUDA_COMPILE_ONLY=ON && \
	  cmake --build build/cuda-compile --target edgegen_cuda_kernels && \
	  for f in csrc/cuda/*.cpp; do \
	    $(CXX_CHECK) -std=c++17 -fsyntax-only -w $$($(PYTHON) -c "import torch.utils.cpp_extension as c; \
	      print(' '.join('-I' + p for p in c.include_paths()))") -I csrc -I $(CUDA_HOME)/include $$f || exit 1; \
	  done && \
	  echo "CUDA kernels compiled for sm_80 and sm_90 (+ compute_90 PTX), their ATen glue checked against the installed torch headers (their device code runs on the host emulator in test-cpp; for speed: scripts/gpu-check.sh)"; \
	else echo "test-cuda-compile: skipped, no nvcc on this machine"; fi

# The inner loop: the Python suite without the slow and integration tests (CI runs everything).
test-fast: build
	$(PYTHON) -m pytest -q -p no:cacheprovider -m "not slow and not integration" tests

test-py: build
	$(PYTHON) -m pytest tests -q -p no:cacheprovider

# A wheel as a notebook user installs it: built once, installed into a fresh virtualenv with
# torch pinned and nothing from the development environment (the other packages at the versions
# requirements-dev.txt pins), then the quickstart notebook runs there, outside the repository.
WHEEL_VENV ?= build/wheel-venv
test-wheel: build
	rm -rf build/dist $(WHEEL_VENV)
	$(PYTHON) -m pip wheel -q --no-build-isolation --no-deps . -w build/dist
	python3 -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install -q torch==$(TORCH_VERSION)
	$(WHEEL_VENV)/bin/python -m pip install -q -c requirements-dev.txt build/dist/edgegen-*.whl torch==$(TORCH_VERSION)
	cd $(WHEEL_VENV) && MPLBACKEND=Agg bin/python $(CURDIR)/scripts/run-notebook.py $(CURDIR)/notebooks/01_quickstart.ipynb

# The documentation site (mkdocs.yml): guides from docs/*.md and the API reference generated from
# the docstrings, built offline into build/site; a warning (a broken link, a missing page, an
# object the reference cannot find) fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# The main job: the papers' tables rebuilt beside our measurements (REPORT.md in reproduce/).
# PRESET=cpu-small or paper for longer runs; SEEDS="0 1 2" by default.
PRESET ?= cpu-smoke
SEEDS ?= 0 1 2
reproduce: build
	$(VENV)/bin/edgegen reproduce all --preset $(PRESET) --seeds $(SEEDS) --out reproduce

# The kernel and instrument benchmarks (each against its best peer, ratios printed). BENCH_ARGS
# goes to every script, so only the options they all take: --quick, --threads N (e.g.
# `make bench BENCH_ARGS="--quick --threads 2"`).
bench: build $(VENV)/.bench-ready
	$(PYTHON) benchmarks/bench_kd_loss.py $(BENCH_ARGS)
	$(PYTHON) benchmarks/bench_prune.py $(BENCH_ARGS)
	$(PYTHON) benchmarks/bench_quant.py $(BENCH_ARGS)
	$(PYTHON) benchmarks/bench_attention.py $(BENCH_ARGS)
	$(PYTHON) benchmarks/bench_eval.py $(BENCH_ARGS)

# The lightweight methods on GPT-2: low-rank factorization, dynamic precision, and every reduction,
# dynamic precision and early exit on a GPT-2 trained on WikiText-2 (bench_methods trains it first,
# about 10 min here, cached in build/bench-cache).
bench-methods: build $(VENV)/.bench-ready
	$(PYTHON) benchmarks/bench_reduce.py
	$(PYTHON) benchmarks/bench_dynamic.py
	$(PYTHON) benchmarks/bench_methods.py

# On a GPU machine: build with the CUDA kernels, run tests/cuda and the GPU benchmark.
bench-gpu:
	bash scripts/gpu-check.sh

clean:
	rm -rf build dist *.egg-info
