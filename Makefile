# The front door. `make help` lists the targets.
# Every target that runs project code first makes sure .venv exists (`make setup`).

SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/.uv/bin/uv
STAMP := $(VENV)/.setup-done
CONFIG ?=
ARGS ?=

export UV_PYTHON_DOWNLOADS := never
export PYTHONUTF8 := 1

.PHONY: help setup fonts lock test test-fast lint format demo label qa label-lines convert dataset bench clean

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

# ---------------------------------------------------------------- environment
$(STAMP): requirements/cpu.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or pass PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check --target $(VENV)/.uv uv==0.13.8
	$(UV) pip sync -q --python $(PY) requirements/cpu.txt
	$(UV) pip install -q --python $(PY) --no-deps -e .
	@$(MAKE) --no-print-directory fonts
	@touch $(STAMP)

CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc
fonts:  ## a CJK font for rendering synthetic invoices (Debian fonts-wqy-zenhei; needs root)
	@if [ -n "$$INVOICE_FONT" ] || [ -f $(CJK_FONT) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing fonts-wqy-zenhei (CJK font for synthetic invoices)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-zenhei >/dev/null) \
		|| echo "warning: could not install fonts-wqy-zenhei; set INVOICE_FONT=/path/to/cjk-font.ttf" >&2; \
	else \
		echo "warning: no CJK font at $(CJK_FONT); run 'sudo apt-get install fonts-wqy-zenhei' or set INVOICE_FONT" >&2; \
	fi

setup: $(STAMP)  ## build .venv with the pinned CPU stack (Paddle, PaddleOCR, PaddleX, PaddleFormers, ...)

lock:  ## re-resolve requirements/cpu.txt from requirements/cpu.in (needs uv)
	uv pip compile requirements/cpu.in --override requirements/overrides.txt --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements/cpu.txt

# ---------------------------------------------------------------- quality
test: $(STAMP)  ## run the whole test suite (slow end-to-end tests included)
	$(PY) -m pytest $(ARGS)

test-fast: $(STAMP)  ## the suite without tests marked slow
	$(PY) -m pytest -m "not slow" $(ARGS)

lint: $(STAMP)  ## ruff lint + format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)  ## ruff fix + format
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# ---------------------------------------------------------------- data
label: $(STAMP)  ## auto-label images with ERNIE-4.5-VL: make label ARGS="images=DIR out_dir=DIR" [CONFIG=...]
	$(PY) -m data_tools.label --config $(or $(CONFIG),configs/label/vat_invoice.yaml) $(ARGS)

qa: $(STAMP)  ## label QA, exit 1 on a hard failure: make qa LABELS=labels.jsonl [SCHEMA=vat_invoice]
	$(PY) -m data_tools.qa --labels $(LABELS) --schema $(or $(SCHEMA),vat_invoice) $(ARGS)

label-lines: $(STAMP)  ## PP-OCR line crops read twice by the VLM → rec_gt.txt: make label-lines ARGS="images=DIR out_dir=DIR"
	$(PY) -m data_tools.label_lines --config $(or $(CONFIG),configs/label/text_lines.yaml) $(ARGS)

convert: $(STAMP)  ## convert a public dataset: make convert FORMAT=sroie SRC=path OUT=labels.jsonl
	$(PY) -m data_tools.convert --format $(FORMAT) --src $(SRC) --out $(OUT) $(ARGS)

dataset: $(STAMP)  ## build prompt-SFT data: make dataset LABELS=labels.jsonl OUT=data/sft [CONFIG=...]
	$(PY) -m data_tools.build_dataset --config $(or $(CONFIG),configs/dataset/vat_invoice.yaml) --labels $(LABELS) --out-dir $(OUT) $(ARGS)

demo: $(STAMP)  ## the main job on its embedded default (synthetic invoices → labels → SFT dataset)
	$(PY) -m data_tools.demo $(ARGS)

bench: $(STAMP)  ## run the benchmarks in benchmarks/ (prints numbers)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:  ## remove build outputs (keeps .venv)
	rm -rf outputs .pytest_cache .ruff_cache
