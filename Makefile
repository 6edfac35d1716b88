# chat-notifier. `make run` and `make test` work on a fresh clone: they create .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint test-core test-broker test-wheel bench bench-live replay-demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/chat-notifier run

replay-demo: $(STAMP)
	$(BIN)/chat-notifier replay --input processors/demo/scenario.jsonl --output var/replay-demo.jsonl

lint: $(STAMP)
	$(BIN)/ruff check processors tests bench
	$(BIN)/ruff format --check processors tests bench
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

test-core: $(STAMP)
	$(BIN)/pytest -q -m "not broker and not wheel"

test-broker: $(STAMP)
	$(BIN)/pytest -q -m broker

# builds the wheel (core compiled by mypyc), installs it into a fresh virtualenv outside
# the repo, runs the core's, replay's and the live pipeline's tests on the compiled build (~2 min)
test-wheel: $(STAMP)
	$(BIN)/pytest -q -m wheel

bench: $(STAMP)
	$(BIN)/python -m bench

bench-live: $(STAMP)
	$(BIN)/python -m bench live

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
