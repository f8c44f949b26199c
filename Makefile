# `make demo` and `make test` are the only set-up a fresh machine needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# ruff and mypy live in a venv of their own: clkhash (in the test venv) pins mypy_extensions<0.5, mypy needs >=1.
LINT_VENV ?= .venv-lint
LINT_PY := $(LINT_VENV)/bin/python
WORKDIR ?= demo-run

.PHONY: demo test lint bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(PY) setup.cfg pyproject.toml setup.py pprl/matching/dice/_dice.c pprl/crypto/_h2c.c pprl/crypto/_sha512.h pprl/crypto/_montexp.c pprl/crypto/_avx2exp.c pprl/encoding/_bloom.c pprl/_cpu.h
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[bench]'
	touch $@

$(VENV)/.installed-docs: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

# The `lint` extra of setup.cfg, read from there so the bounds live in one place.
$(LINT_VENV)/.installed: setup.cfg
	$(PYTHON) -m venv $(LINT_VENV)
	$(LINT_PY) -m pip install -q --upgrade pip
	$(LINT_PY) -m pip install -q $$($(LINT_PY) -c "import configparser as c; p = c.ConfigParser(); \
		p.read('setup.cfg'); print(p['options.extras_require']['lint'])")
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/pprl demo --workdir $(WORKDIR)

# mypy checks pprl against the packages of the test venv (numpy, click, ... and their stubs).
lint: $(LINT_VENV)/.installed $(VENV)/.installed-test
	$(LINT_VENV)/bin/ruff check pprl tests benchmarks examples cli.py
	$(LINT_VENV)/bin/mypy --python-executable $(PY) pprl

test: lint $(VENV)/.installed-test
	$(PY) -m pytest -q

bench: $(VENV)/.installed-bench
	for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) $(LINT_VENV) $(WORKDIR) build *.egg-info site .mypy_cache .ruff_cache
