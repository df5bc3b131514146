# Two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_DEMO := $(VENV)/.stamp-demo
STAMP_TEST := $(VENV)/.stamp-test

.PHONY: demo test lint format docs notebooks bench bench-lbfgs mutation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_DEMO): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[demo]"
	touch $@

$(STAMP_TEST): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(STAMP_DEMO)

demo: $(STAMP_DEMO)
	$(BIN)/python examples/digits_mlp.py

test: $(STAMP_TEST)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 -q --durations=40
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The documentation site, from the docstrings and docs/ (strict: a broken link, a public name
# without a docstring or an API entry fails the build); open site/index.html.
docs: $(STAMP_TEST)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Re-runs every notebook at full size and writes its outputs in place (a few minutes).
notebooks: $(STAMP_TEST)
	$(BIN)/python scripts/run_notebooks.py

lint: $(STAMP_TEST)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP_TEST)
	$(BIN)/python -m benchmarks.run --write

bench-lbfgs: $(STAMP_TEST)
	$(BIN)/python benchmarks/lbfgs.py

# Slow (minutes), not part of `make test`: plants each formula bug of scripts/mutations.py in a
# copy of the package and checks that the tests catch it.
mutation: $(STAMP_TEST)
	$(BIN)/python scripts/mutation.py

clean:
	rm -rf $(VENV) .pytest_cache build site *.egg-info
