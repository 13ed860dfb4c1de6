# The two commands a new user needs (see README):
#   make demo   install, then train + test the embedded demo (no download)
#   make test   install, then run the test suite
PYTHON ?= python3
TORCH_PINS = torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-fast lint

install:
	$(PYTHON) -m pip install $(TORCH_PINS)
	$(PYTHON) -m pip install -e ".[all]"

demo: install
	$(PYTHON) train.py

test: install
	$(PYTHON) -m pytest

# style (ruff) and architecture (import-linter: layers, no import cycles), as CI runs them
lint: install
	$(PYTHON) -m ruff check clipft hydra_plugins tests benchmarks docs/tools train.py eval.py
	lint-imports

# everything but the few tests marked slow
test-fast:
	$(PYTHON) -m pytest -m "not slow"
