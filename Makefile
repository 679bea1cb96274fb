# The README's two commands. Each sets everything up on a fresh Debian machine (as root)
# and is quick when everything is already there.
#   make demo   the main job
#   make test   the whole test suite, against the compiled core and the pure-Python twin
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
PYTEST_ARGS ?=
# The local lab the lab-marked tests bring up and clean (its own name, so a lab
# someone is using under the default name is left alone).
LAB ?= labmigtest

.PHONY: setup demo test test-pure test-compiled bench clean

setup: $(STAMPS)/venv

$(STAMPS)/system: scripts/install-system-packages.sh labmig/lab/host-packages.sh
	bash scripts/install-system-packages.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: $(STAMPS)/system pyproject.toml setup.py labmig/_fastcopy.pyx labmig/_fastcopy_c.h
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,lab,ui]'
	$(PY) -c "import labmig._fastcopy"  # the compiled core must import
	@mkdir -p $(STAMPS) && touch $@

demo: setup
	$(PY) -m labmig.demo

test: setup
	LABMIG_PUREPYTHON=1 $(PY) -m pytest -q -m "not lab and not browser" $(PYTEST_ARGS)
	$(PY) -m labmig lab clean --name $(LAB)
	$(PY) -m labmig lab up --name $(LAB)
	LABMIG_LAB=$(LAB) $(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	  $(PY) -m labmig lab clean --name $(LAB) >/dev/null; exit $$rc

bench: setup
	$(PY) -m bench

clean:
	rm -rf build $(STAMPS) labmig/*.so labmig/_fastcopy.c *.egg-info
