# Two entry points (see README): `make sample` and `make test`. Both install what they need first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
MAX_JOBS ?= 2
SOURCES := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh') setup.py
STAMP := build/.installed

.PHONY: install sample test bench cmake clean gpu-check gpu-check-smoke gpu-check-rehearse emu-sanitize mutants

$(STAMP): $(SOURCES) requirements-dev.txt
	$(PIP) install -q -r requirements-dev.txt
	MAX_JOBS=$(MAX_JOBS) $(PIP) install -q --no-build-isolation --no-deps -e .
	@mkdir -p build && touch $(STAMP)

install: $(STAMP)

# Sample every class of the bundled default model (or pass ARGS="--var ... --vae ... --classes ...").
sample: $(STAMP)
	$(PYTHON) -m var_fast.cli sample --out samples $(ARGS)

test: $(STAMP)
	$(PYTHON) -m pytest -q tests $(ARGS)

bench: $(STAMP)
	$(PYTHON) -m pytest -q benchmarks --benchmark-only $(ARGS)

# On a GPU machine, from a fresh checkout: builds for the present GPU's arch only (not the install
# stamp's four), runs the CUDA tests, compute-sanitizer, the benchmarks and the Infinity stage, writes
# $(OUT)/report.md and report.json in at most 9.5 minutes. ARGS: --upstream DIR, --models d16,d30,
# --batches 1,16, --infinity-upstream DIR, --skip infinity, ...
OUT ?= out/gpu-check
gpu-check:
	$(PYTHON) -m benchmarks.gpu_check --out $(OUT) $(ARGS)

# The same script on the CPU with tiny shapes (no build, no sanitizer): CI keeps it working.
gpu-check-smoke: $(STAMP)
	$(PYTHON) -m benchmarks.gpu_check --cpu-smoke --out build/gpu-check-smoke $(ARGS)

# The whole GPU procedure's control flow on the CPU, the GPU-only tools (build, CUDA tests, compute-sanitizer)
# replaced by recorded outputs; REHEARSAL=racecheck-hazards (memcheck-errors, ...) plays a failing sanitizer.
REHEARSAL ?= clean
gpu-check-rehearse: $(STAMP)
	$(PYTHON) -m benchmarks.gpu_check --rehearse $(REHEARSAL) --out build/gpu-check-rehearsal $(ARGS)

# The CUDA kernels on the CPU (tests/emu's emulator) under ThreadSanitizer and AddressSanitizer+UBSan,
# every op at a small and an edge shape, in three thread orders; builds into build/emu-{tsan,asan}.
emu-sanitize: $(STAMP)
	$(PYTHON) tests/emu/sanitize.py $(ARGS)

# Mutation testing of the kernels through the emulator (docs/mutation-testing.md): a seeded sample of 20
# mutants per kernel family, each against its family's emulated tests; report in build/mutants.
# ARGS: --smoke (2 per family, CI), --jobs 3, --only ID..., --list.
mutants: $(STAMP)
	$(PYTHON) tests/emu/mutants.py $(ARGS)

# Development build of csrc/ with CMake against libtorch (compile_commands.json, C++ unit tests).
cmake: $(STAMP)
	scripts/cmake_build.sh

clean:
	rm -rf build cmake-build var_fast/_C*.so *.egg-info
