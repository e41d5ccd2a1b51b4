# Two commands set everything up on a fresh machine:
#   make demo   - create .venv, install agriseg, segment the sample survey
#   make test   - create .venv, install agriseg, lint, build the docs and run the test suite
#   make docs   - build the user guide (docs/, mkdocs.yml) into build/site/
#   make models - retrain, evaluate and install the shipped models (~1.5 h on 2 CPU cores)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.agriseg-installed
# The torch-free install (pip install . from a clone: ONNX Runtime alone), which make test
# checks too: a plain (not editable) install of this tree, redone when it changes.
LIGHT ?= .venv-light
LIGHT_STAMP := $(LIGHT)/.agriseg-installed
LIGHT_OUT := $(LIGHT)/smoke
PACKAGE_FILES := $(shell find agriseg cli -type f \( -name '*.py' -o -name '*.json' -o -name '*.onnx' \))

.PHONY: demo test test-light lint docs install clean models

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

# The user guide as a static site; --strict turns broken links and pages missing
# from the nav into errors.
docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir build/site

# isoxml-js (dev4Agriculture's ISOXML reader), an independent check of the TASKDATA
# that agriseg prescribe writes; installed when npm is there, its tests skip otherwise.
NODE_DIR ?= .node
NODE_STAMP := $(NODE_DIR)/.isoxml-installed

$(NODE_STAMP):
	@if command -v npm >/dev/null 2>&1; then \
		npm install --silent --no-audit --no-fund --prefix $(NODE_DIR) isoxml@1.11.2 && touch $@; \
	else echo "npm not found: the isoxml-js checks will be skipped"; fi

test: lint docs $(NODE_STAMP)
	NODE_PATH=$(CURDIR)/$(NODE_DIR)/node_modules $(VENV)/bin/pytest
	$(MAKE) test-light

# Dependencies when they change; then agriseg alone whenever its files do.
$(LIGHT)/.dependencies-installed: pyproject.toml constraints.txt
	test -x $(LIGHT)/bin/python || python3 -m venv $(LIGHT)
	$(LIGHT)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt .
	touch $@

$(LIGHT_STAMP): $(LIGHT)/.dependencies-installed $(PACKAGE_FILES)
	$(LIGHT)/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
		--force-reinstall .
	touch $@

# run, batch and evaluate on the sample survey without torch (nor onnx, the exporter).
test-light: $(LIGHT_STAMP)
	@if $(LIGHT)/bin/python -c "import torch" 2>/dev/null; then \
		echo "$(LIGHT) has torch: the plain install must not pull it in"; exit 1; fi
	rm -rf $(LIGHT_OUT) && mkdir -p $(LIGHT_OUT)/surveys
	$(LIGHT)/bin/agriseg run sample_data/field.tif --out $(LIGHT_OUT)/run --quiet
	test -s $(LIGHT_OUT)/run/field.classes.tif && test -s $(LIGHT_OUT)/run/field.summary.json
	cp sample_data/field.tif $(LIGHT_OUT)/surveys/
	$(LIGHT)/bin/agriseg batch $(LIGHT_OUT)/surveys --out $(LIGHT_OUT)/batch --quiet
	test -s $(LIGHT_OUT)/batch/field/field.classes.tif
	$(LIGHT)/bin/agriseg evaluate sample_data/field.tif --labels sample_data/field.labels.tif \
		--json $(LIGHT_OUT)/scores.json --quiet
	test -s $(LIGHT_OUT)/scores.json
	@echo "torch-free install: run, batch and evaluate OK"

models: $(STAMP)
	$(PY) scripts/train_default.py unet pspnet --epochs 10
	$(PY) scripts/train_default.py unet --epochs 18 --resume
	$(PY) scripts/train_default.py unet --epochs 24 --resume
	$(PY) scripts/train_default.py unet pspnet --install-only

clean:
	rm -rf $(VENV) $(LIGHT) $(NODE_DIR) sample_data/field_agriseg build/site
