PY ?= python3

.PHONY: check lint typecheck imports test bench

check: lint typecheck imports test

lint:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck:
	$(PY) -m mypy

imports:
	$(PY) -m pytest tests/test_layers.py -q -n 0

test:
	$(PY) -m pytest

bench:
	$(PY) bench/bench_backtest.py
