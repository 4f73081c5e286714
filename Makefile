# Two commands do all the set-up (see README):
#   make quickstart   install, then train STanHop-Net on ETTh1 (configs/quick.yaml) and print test MSE/MAE
#   make test         install with the test extras, then run the whole test suite
# TORCH is what pip installs first. The default is the CPU build; GPU machines: make quickstart TORCH=torch
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# offline machines with the data beside the clone (our CI layout) find it there
ifneq ($(wildcard ../shared/data/ETTh1.csv),)
export STANHOP_DATA_DIR ?= $(abspath ../shared/data)
endif

.PHONY: quickstart test install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

quickstart: install
	$(BIN)/stanhop train --config configs/quick.yaml

test: install
	$(BIN)/python -m pytest
