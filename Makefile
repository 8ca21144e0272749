# Two commands on a fresh machine:
#   make quickstart   set up .venv, then collect demos, train, evaluate and write a report
#   make test         set up .venv, then run the test suite
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test bench clean
setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/robolearn quickstart

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_core.py

clean:
	rm -rf runs .pytest_cache
