# Two entry points (see README): `make sample` and `make test`. Both install what they need first.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
MAX_JOBS ?= 2
SOURCES := $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh') setup.py
STAMP := build/.installed

.PHONY: install sample test bench cmake clean

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

# Development build of csrc/ with CMake against libtorch (compile_commands.json, C++ unit tests).
cmake: $(STAMP)
	scripts/cmake_build.sh

clean:
	rm -rf build cmake-build var_fast/_C*.so *.egg-info
