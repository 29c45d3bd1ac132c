# Two commands after cloning: `make dev` (the embedded stack) and `make test` (the whole suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/orderflow: requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

.PHONY: install setup dev test lint format bench lab
install: $(BIN)/orderflow

# What the tests need besides Python packages (MariaDB running, Debian's chromium and
# docker-compose): installed or started when it can be, else one line says what to install.
setup:
	bash scripts/test-setup.sh

dev: install
	$(BIN)/orderflow dev

test: install setup lint
	$(BIN)/python -m pytest --nbmake --durations=15 tests notebooks

lint: install
	$(BIN)/ruff check orderflow tests notebooks
	$(BIN)/ruff format --check orderflow tests notebooks
	$(BIN)/mypy orderflow

format: install
	$(BIN)/ruff format orderflow tests notebooks
	$(BIN)/ruff check --fix orderflow tests notebooks

bench: install
	$(BIN)/orderflow bench

lab: install
	$(BIN)/jupyter lab notebooks/
