# The two quick-start commands are `make demo` and `make test`; each sets up first.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup setup-editor setup-tests demo test test-extension clean

setup:
	@scripts/setup.sh

setup-editor:
	@scripts/setup.sh --editor

setup-tests:
	@scripts/setup.sh --tests

# Optimize a bundled example on CPU with the embedded offline agent (no API key, no network).
demo: setup
	$(BIN)/stark optimize examples/elementwise_chain.py --rounds 6 --agent offline --device cpu

# Lint, the package-layout rules, the VS Code extension, then every Python test (pytest's
# summary is the last line).
test: setup-tests
	$(BIN)/ruff check engine stark_lsp tests benchmarks examples scripts
	$(BIN)/ruff format --check engine stark_lsp tests benchmarks examples scripts
	$(BIN)/python scripts/check_structure.py
	$(MAKE) --no-print-directory test-extension
	$(BIN)/python -m pytest -q -ra

# The VS Code extension: compile, lint, unit + smoke tests (real Python server), package.
test-extension: setup-editor
	cd vscode-extension && npm run compile && npm run lint \
	  && STARK_PYTHON=$(CURDIR)/$(BIN)/python npm test && npm run package

clean:
	rm -rf $(VENV) build *.egg-info
