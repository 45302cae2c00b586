# Two commands set up a fresh machine: `make run` (the default job) and `make test` (the test suite).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test test-fast bench-train bench-data clean-results

setup:
	@bash scripts/setup.sh

## run the embedded default job: a short LoRA SFT of SmolLM2-135M on packaged GSM8K rows
run: setup
	$(BIN)/strato train $(ARGS)

## the whole test suite, slow tests on the real packaged models included (what CI runs)
test: setup
	$(BIN)/python -m pytest -q $(ARGS)

## unit tests only (tiny random models), for a quick check while developing
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

bench-train: setup
	$(BIN)/python bench/train_throughput.py $(ARGS)

## the BIG-bench source tarball (358 MB, from PyPI, once) that BIG-bench tasks read, e.g. the STRATO benchmark's addition
CACHE := $(or $(STRATO_CACHE),$(HOME)/.cache/strato-peft)
bench-data: setup
	@test -f $(CACHE)/bigbench-1.0.0.tar.gz || $(BIN)/python -m pip download -q --no-deps --no-binary :all: \
		bigbench==1.0.0 -d $(CACHE)
	@ls -l $(CACHE)/bigbench-1.0.0.tar.gz
