# Two commands set everything up on a fresh machine:
#   make demo   - create .venv, install agriseg, segment the sample survey
#   make test   - create .venv, install agriseg, lint and run the test suite
#   make models - retrain, evaluate and install the shipped models (~1.5 h on 2 CPU cores)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.agriseg-installed

.PHONY: demo test lint install clean models

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/agriseg run sample_data/field.tif --out sample_data/field_agriseg

lint: $(STAMP)
	$(VENV)/bin/ruff check agriseg cli tests
	$(VENV)/bin/ruff format --check agriseg cli tests
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest

models: $(STAMP)
	$(PY) scripts/train_default.py unet pspnet --epochs 10
	$(PY) scripts/train_default.py unet --epochs 18 --resume
	$(PY) scripts/train_default.py unet --epochs 24 --resume
	$(PY) scripts/train_default.py unet pspnet --install-only

clean:
	rm -rf $(VENV) sample_data/field_agriseg
