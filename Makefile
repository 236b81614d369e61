# Every target sets itself up: it creates .venv and installs the project into it when needed.
PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
# Touched after a successful install; reinstall when the dependencies or pins change.
INSTALLED := $(VENV)/.automl-transfer-installed

.PHONY: install test demo clean

install: $(INSTALLED)

$(VENV_PYTHON):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml constraints.txt | $(VENV_PYTHON)
	$(VENV_PYTHON) -m pip install -c constraints.txt -e '.[dev,imagenet]'
	touch $@

test: $(INSTALLED)
	$(VENV_PYTHON) -m pytest

demo: $(INSTALLED)
	$(VENV_PYTHON) -m automl_transfer demo

clean:
	rm -rf build dist *.egg-info .pytest_cache
