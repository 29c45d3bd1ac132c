# Two commands after cloning: `make dev` (the embedded stack) and `make test` (the whole suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/orderflow: requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

.PHONY: install dev test lint bench lab
install: $(BIN)/orderflow

dev: install
	$(BIN)/orderflow dev

test: install lint
	$(BIN)/python -m pytest --nbmake tests notebooks

lint: install
	$(BIN)/ruff check orderflow tests notebooks
	$(BIN)/ruff format --check orderflow tests notebooks
	$(BIN)/mypy orderflow

bench: install
	$(BIN)/orderflow bench

lab: install
	$(BIN)/jupyter lab notebooks/
