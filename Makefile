# Two commands set up a fresh machine: `make run` (the default job) and `make test` (the test suite).
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test test-fast bench-train clean-results

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
