# Two commands on a fresh machine:
#   make quickstart   set up .venv, then collect demos, train, evaluate and write a report
#   make test         set up .venv, then run the test suite
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: setup quickstart test bench clean lerobot-env
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

# LeRobot datasets (`robolearn convert`): lerobot 0.4.4 pins torch < 2.11, so it lives in its own
# environment with robolearn installed editable beside it (~3 min, ~8 GB cold); .venv keeps its torch.
# Three pip steps: robosuite pins mink 0.0.5, whose numpy < 2 lerobot's pandas and OpenCV cannot use,
# so one resolve of ".[lerobot,dev]" is impossible; numpy 2 goes back on top (robosuite runs with it).
LEROBOT_VENV := .venv-lerobot
lerobot-env: $(LEROBOT_VENV)/.installed

$(LEROBOT_VENV)/.installed: pyproject.toml
	test -x $(LEROBOT_VENV)/bin/python || $(PY) -m venv $(LEROBOT_VENV)
	echo '*' > $(LEROBOT_VENV)/.gitignore
	$(LEROBOT_VENV)/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
	$(LEROBOT_VENV)/bin/python -m pip install -q "lerobot==0.4.4"
	$(LEROBOT_VENV)/bin/python -m pip install -q -e ".[dev]"
	$(LEROBOT_VENV)/bin/python -m pip install -q "numpy>=2,<2.3"
	$(LEROBOT_VENV)/bin/python -c "import lerobot, torch, robolearn; print('lerobot env ok: lerobot', lerobot.__version__, '| torch', torch.__version__)"
	touch $@

clean:
	rm -rf runs .pytest_cache
