# The README's two commands. Each sets everything up on a fresh Debian machine (as root)
# and is quick when everything is already there.
#   make demo   the main job
#   make test   lint and types, the whole test suite against the pure-Python twin and the
#               compiled core, and the core tests against the core built for each x86-64 level
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
PYTEST_ARGS ?=
# The local lab the lab-marked tests bring up and clean (its own name, so a lab
# someone is using under the default name is left alone).
LAB ?= labmigtest
# The lab name the pure-twin stage runs under: never brought up, so its notebook and panel
# tests use the simulator and leave the test lab to the lab stage running beside them.
PURE_LAB ?= labmigpure

.PHONY: setup demo test lint startup-report test-pure test-core-builds test-compiled test-compiled-unit test-lab bench clean

setup: $(STAMPS)/venv

$(STAMPS)/system: scripts/install-system-packages.sh labmig/lab/host-packages.sh
	bash scripts/install-system-packages.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: $(STAMPS)/system pyproject.toml setup.py labmig/_fastcopy.pyx labmig/_fastcopy_c.h
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# no object of an earlier build may be reused, whatever flags it had
	rm -rf build/temp.* labmig/_fastcopy.c labmig/_fastcopy.*.so
	$(PY) -m pip install -q -e '.[dev,lab,ui]'
	$(PY) -c "import labmig._fastcopy"  # the compiled core must import
	@mkdir -p $(STAMPS) && touch $@

demo: setup
	$(PY) -m labmig.demo

# Every stage runs even when one fails; the exit status says whether all passed. The lab
# stage mostly waits on TCG guests, so the pure-twin suite, the core builds and the compiled
# core's tests that need no lab run beside it at the lowest CPU priority (nice 19: the lab's
# guests keep the CPU they ask for); their output is printed when they end.
test: setup
	@rc=0; mkdir -p build/test-logs; \
	$(MAKE) --no-print-directory lint || rc=1; \
	$(MAKE) --no-print-directory startup-report || rc=1; \
	for stage in test-pure test-core-builds test-compiled-unit; do \
	  ( nice -n 19 $(MAKE) --no-print-directory $$stage > build/test-logs/$$stage.log 2>&1; \
	    echo $$? > build/test-logs/$$stage.rc ) & \
	done; \
	$(MAKE) --no-print-directory test-lab || rc=1; \
	wait; \
	for stage in test-pure test-core-builds test-compiled-unit; do \
	  echo "=== make $$stage (ran beside the lab stage; build/test-logs/$$stage.log)"; \
	  cat build/test-logs/$$stage.log; \
	  [ "$$(cat build/test-logs/$$stage.rc)" = 0 ] || { echo "=== make $$stage FAILED"; rc=1; }; \
	done; \
	exit $$rc

# ruff (pyflakes, isort, bugbear) on labmig/ and bench/, mypy on labmig/, as configured in pyproject.toml.
lint: setup
	$(PY) -m ruff check labmig bench
	$(PY) -m mypy

# What `labmig copy` and the disk helper import at start-up, slowest first (a report;
# tests/test_startup.py is the check). Full listings in build/test-logs/importtime-*.txt.
startup-report: setup
	@mkdir -p build/test-logs
	@for job in "copy:labmig copy --help" "agent:labmig.remote.agent --help"; do \
	  log=build/test-logs/importtime-$${job%%:*}.txt; cmd=$${job#*:}; \
	  $(PY) -X importtime -m $$cmd 2> $$log > /dev/null || exit 1; \
	  echo "=== python -X importtime -m $$cmd: the 5 slowest imports (cumulative µs)"; \
	  grep '^import time:' $$log | sort -t'|' -k2 -n | tail -5; \
	done

# The suite but the lab and browser tests, against the pure-Python twin (on a lab name of
# its own that is never up; the test lab may be busy with the lab stage meanwhile).
test-pure: setup
	LABMIG_LAB=$(PURE_LAB) LABMIG_TEST_SHARED_LABS=$(LAB),$(LAB2) LABMIG_PUREPYTHON=1 \
	  $(PY) -m pytest -q -m "not lab and not browser" $(PYTEST_ARGS)

# The core tests against the core built for this CPU and for each x86-64 level
# (baseline, v3 = AVX2, v4 = AVX-512), each in a clean build directory.
test-core-builds: setup
	bash scripts/test-core-builds.sh $(PY)

# The whole suite against the compiled core, in two stages that `make test` runs side by
# side: the tests that need no lab (under a lab name of its own that is never up), and the
# lab, browser and uses_lab tests on a fresh test lab. The core tests are left out here:
# test-core-builds runs them against this very build (native, the same flags).
test-compiled: test-compiled-unit test-lab

COMPILED_UNIT_LAB ?= labmigunit

test-compiled-unit: setup
	LABMIG_LAB=$(COMPILED_UNIT_LAB) LABMIG_TEST_SHARED_LABS=$(LAB),$(LAB2),$(PURE_LAB) \
	  $(PY) -m pytest -q --ignore=tests/core -m "not lab and not browser and not uses_lab" $(PYTEST_ARGS)

# Two test labs side by side, each with its share of the lab tests (the cold migration
# tests on one, the rest on the other): the tests mostly wait on guests booting and
# shutting down, so two streams take little more than the longer one.
LAB2 ?= labmigtwo
LAB_TESTS_A ?= tests/cold
LAB_TESTS_B ?= tests --ignore=tests/cold

test-lab: setup
	@mkdir -p build/test-logs
	$(PY) -m labmig lab clean --name $(LAB) >/dev/null; $(PY) -m labmig lab clean --name $(LAB2) >/dev/null
	$(PY) -m labmig lab up --name $(LAB)
	$(PY) -m labmig lab up --name $(LAB2)
	@echo "=== lab tests in two streams: $(LAB_TESTS_A) on lab $(LAB) here, $(LAB_TESTS_B) on lab $(LAB2) beside it"
	@( LABMIG_LAB=$(LAB2) LABMIG_TEST_SHARED_LABS=$(LAB),$(LAB)dc,$(LAB)hs,$(PURE_LAB),$(COMPILED_UNIT_LAB) \
	    $(PY) -m pytest -q --ignore=tests/core -m "lab or browser or uses_lab" $(LAB_TESTS_B) $(PYTEST_ARGS) \
	    > build/test-logs/test-lab-b.log 2>&1; echo $$? > build/test-logs/test-lab-b.rc ) & \
	LABMIG_LAB=$(LAB) LABMIG_TEST_SHARED_LABS=$(LAB2),$(LAB2)dc,$(LAB2)hs,$(PURE_LAB),$(COMPILED_UNIT_LAB) \
	  $(PY) -m pytest -q --ignore=tests/core -m "lab or browser or uses_lab" $(LAB_TESTS_A) $(PYTEST_ARGS); rc=$$?; \
	wait; \
	echo "=== the lab tests on lab $(LAB2) (build/test-logs/test-lab-b.log)"; cat build/test-logs/test-lab-b.log; \
	[ "$$(cat build/test-logs/test-lab-b.rc)" = 0 ] || rc=1; \
	$(PY) -m labmig lab clean --name $(LAB) >/dev/null; $(PY) -m labmig lab clean --name $(LAB2) >/dev/null; exit $$rc

bench: setup
	$(PY) -m bench

clean:
	rm -rf build $(STAMPS) labmig/*.so labmig/_fastcopy.c *.egg-info
