# dermbench developer entry points. Everything installs into the active Python environment;
# use a virtual environment if you do not want that (see README).
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
DEMO_OUT ?= demo_out

.PHONY: install install-test demo test bench clean

install:
	$(PIP) install -e .

install-test:
	$(PIP) install -e ".[test]"

demo: install
	$(PYTHON) -m dermbench demo --out $(DEMO_OUT)

test: install-test
	$(PYTHON) -m pytest -q

bench: install-test
	for b in benchmarks/*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done

clean:
	rm -rf $(DEMO_OUT) build dist .pytest_cache
