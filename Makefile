# The front door. `make help` lists the targets.
# Every target that runs project code first makes sure .venv exists (`make setup`).

SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/.uv/bin/uv
STAMP := $(VENV)/.setup-done
TORCH_VENV ?= .venv-torch
TORCH_PY := $(TORCH_VENV)/bin/python
CONFIG ?=
ARGS ?=

export UV_PYTHON_DOWNLOADS := never
export PYTHONUTF8 := 1
# The venvs are installed with their bytecode compiled (--compile-bytecode): imports then
# read .pyc files even where PYTHONDONTWRITEBYTECODE is set (CI images, containers), where
# every process would otherwise compile the sources again (numba: 0.9 s -> 0.27 s here).

.PHONY: help setup fonts browser lock test test-fast lint format demo label qa label-lines convert dataset \
	train setup-train setup-train-erniekit setup-train-paddleformers setup-train-torch setup-train-gpu summary export patch unpatch predict serve setup-torch baseline eval bench clean

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

# ---------------------------------------------------------------- environment
$(STAMP): requirements/cpu.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or pass PYTHON=/path/to/python3.11" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --disable-pip-version-check --target $(VENV)/.uv uv==0.13.8
	$(UV) pip sync -q --compile-bytecode --python $(PY) requirements/cpu.txt
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

CHROMIUM ?= /usr/bin/chromium
browser:  ## Debian's chromium for the real-browser UI test (tests/ui/test_browser.py skips without it; needs root)
	@if [ -x "$(CHROMIUM)" ] || command -v chromium >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium (the UI's browser test drives it with playwright)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; the browser test will be skipped" >&2; \
	else \
		echo "warning: no chromium; run 'sudo apt-get install chromium' or the browser test is skipped" >&2; \
	fi

setup: $(STAMP)  ## build .venv with the pinned CPU stack (Paddle, PaddleOCR, PaddleX, PaddleFormers, ...)

lock:  ## re-resolve requirements/cpu.txt from requirements/cpu.in (needs uv)
	uv pip compile requirements/cpu.in --override requirements/overrides.txt --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o requirements/cpu.txt

# ---------------------------------------------------------------- quality
# With a local torch CPU wheel (/opt/wheels) the suite also covers the transformers backend
# in .venv-torch, offline; elsewhere that one test is skipped unless `make setup-torch` ran.
TEST_ENVS := $(STAMP) $(if $(wildcard /opt/wheels/torch-2.13.0*),$(TORCH_VENV)/.setup-done)

test: $(TEST_ENVS) browser  ## run the whole test suite (slow end-to-end tests included)
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

qa: $(STAMP)  ## label QA, exit 1 on a hard failure: make qa LABELS=labels.jsonl [SCHEMA=auto|none|vat_invoice]
	$(PY) -m data_tools.qa --labels "$(LABELS)" --schema "$(or $(SCHEMA),auto)" $(ARGS)

label-lines: $(STAMP)  ## PP-OCR line crops read twice by the VLM → rec_gt.txt: make label-lines ARGS="images=DIR out_dir=DIR"
	$(PY) -m data_tools.label_lines --config $(or $(CONFIG),configs/label/text_lines.yaml) $(ARGS)

convert: $(STAMP)  ## convert a public dataset: make convert FORMAT=sroie SRC=path OUT=labels.jsonl [ARGS=--report]
	$(PY) -m data_tools.convert --format "$(FORMAT)" --src "$(SRC)" --out "$(OUT)" $(ARGS)

dataset: $(STAMP)  ## build prompt-SFT data: make dataset LABELS="a.jsonl b.jsonl" OUT=data/sft [SPLIT=hash|source] [CONFIG=...]
	$(PY) -m data_tools.build_dataset --config "$(or $(CONFIG),configs/dataset/vat_invoice.yaml)" --labels $(foreach l,$(LABELS),"$(l)") --out-dir "$(OUT)" $(if $(SPLIT),--split "$(SPLIT)") $(ARGS)

demo: $(STAMP)  ## the whole pipeline on embedded synthetic invoices, CPU: data → train → export → predict → report
	PY=$(PY) bash scripts/demo.sh

# ---------------------------------------------------------------- training
TRAIN_PY ?= $(PY)
RUN ?= outputs/train/cpu_tiny
CKPT ?= $(RUN)/checkpoints
BASE ?= outputs/models/PaddleOCR-VL-0.9B-tiny
MODEL_OUT ?= $(RUN)/model

train:  ## SFT from a recipe: make train CONFIG=configs/train/cpu_tiny.yaml [ARGS="key=value --resume --dry-run"] [TRAIN_PY=.venv-train-erniekit/bin/python]
	@test -n "$(CONFIG)" || { echo "usage: make train CONFIG=configs/train/<recipe>.yaml [ARGS=...]" >&2; exit 2; }
	@if [ "$(TRAIN_PY)" = "$(PY)" ]; then $(MAKE) --no-print-directory $(STAMP); fi
	@if [ "$(TRAIN_PY)" = "$(TORCH_PY)" ] && [ ! -x "$(TORCH_PY)" ]; then echo "error: $(TORCH_PY) not found: run make setup-torch (CPU) or make setup-train-torch (GPU)" >&2; exit 2; fi
	$(TRAIN_PY) -m training.train --config $(CONFIG) $(ARGS)

# One GPU environment per route (ERNIEKit and PaddleFormers pin each other's versions):
ROUTE ?= erniekit
setup-train:  ## GPU training venv for one route: make setup-train ROUTE=erniekit|paddleformers|torch
	@case "$(ROUTE)" in erniekit|paddleformers|torch) ;; *) echo "error: ROUTE=$(ROUTE): use erniekit, paddleformers or torch" >&2; exit 2;; esac
	bash scripts/setup_train_$(ROUTE).sh

setup-train-erniekit:  ## .venv-train-erniekit: paddlepaddle-gpu 3.2, ERNIEKit (pinned ERNIE checkout), its PaddleFormers
	bash scripts/setup_train_erniekit.sh

setup-train-paddleformers:  ## .venv-train-paddleformers: paddlepaddle-gpu 3.3, paddleformers[paddlefleet] 1.2
	bash scripts/setup_train_paddleformers.sh

setup-train-torch:  ## .venv-torch on a GPU box: torch (CUDA), transformers, peft (PyTorch SFT route, GPU benchmark)
	bash scripts/setup_train_torch.sh

setup-train-gpu: setup-train  ## the ERNIEKit route (same as make setup-train ROUTE=erniekit)

summary: $(STAMP)  ## loss curve + throughput of a run: make summary [RUN=outputs/train/cpu_tiny] [ARGS=--json]
	$(PY) -m training.summary $(RUN) $(ARGS)

export: $(STAMP)  ## deployable model dir, checked in PaddleX: make export [CKPT=... BASE=... MODEL_OUT=...] [ARGS="--force --no-verify"]
	$(PY) -m training.export --ckpt $(CKPT) --base-model $(BASE) --out $(MODEL_OUT) $(ARGS)

# ---------------------------------------------------------------- inference and serving
# torch 2.13.0+cpu: a local wheel in /opt/wheels when present, else PyTorch's CPU index
TORCH_INDEX ?= $(if $(wildcard /opt/wheels/torch-2.13.0*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)

patch: $(STAMP)  ## let custom prompts through PaddleX's PaddleOCR-VL pipeline (ARGS="--paddlex PATH")
	$(PY) -m patches.paddlex_prompt apply $(ARGS)

unpatch: $(STAMP)  ## restore PaddleX's original files (byte-exact)
	$(PY) -m patches.paddlex_prompt revert $(ARGS)

predict: $(STAMP)  ## batch prediction: make predict ARGS="--backend paddlex --model-dir D --input DIR --out predictions.jsonl [--excel out.xlsx]"
	$(PY) -m inference.predict $(ARGS)

serve: $(STAMP)  ## HTTP service: make serve [CONFIG=configs/serve/default.yaml] [ARGS="--port 8080"]
	$(PY) -m inference.serve --config $(or $(CONFIG),configs/serve/default.yaml) $(ARGS)

TORCH_STAMP := $(TORCH_VENV)/.setup-done
$(TORCH_STAMP): requirements/torch.txt pyproject.toml $(STAMP)
	$(PYTHON) -m venv $(TORCH_VENV)
	$(UV) pip sync -q --compile-bytecode --python $(TORCH_PY) $(TORCH_INDEX) requirements/torch.txt
	$(UV) pip install -q --python $(TORCH_PY) --no-deps -e .
	@touch $(TORCH_STAMP)

setup-torch: $(TORCH_STAMP)  ## .venv-torch on CPU: the transformers backend and the PyTorch SFT route (torch CPU + transformers + peft)

# ---------------------------------------------------------------- benchmark
baseline: $(STAMP)  ## OCR + LLM baseline (backend ocr-llm): make baseline DATASET=labels.jsonl|DIR LLM_URL=http://127.0.0.1:8180/v1 [LLM_MODEL=name] [OUT=...]
	$(PY) -m inference.predict --config $(or $(CONFIG),configs/predict/ocr_llm.yaml) --input "$(DATASET)" $(if $(LLM_URL),--server-url "$(LLM_URL)") $(if $(LLM_MODEL),--api-model "$(LLM_MODEL)") --out "$(or $(OUT),outputs/baseline/predictions.jsonl)" $(ARGS)

eval: $(STAMP)  ## score predictions: make eval GOLD=labels.jsonl PRED="a.jsonl b.jsonl" [SCHEMA=vat_invoice] [OUT=outputs/eval]
	$(PY) -m eval.score --gold $(GOLD) $(foreach p,$(PRED),--pred $(p)) --schema $(or $(SCHEMA),vat_invoice) --out-dir $(or $(OUT),outputs/eval) $(ARGS)

.PHONY: ocr-ceiling
ocr-ceiling: $(STAMP)  ## share of gold values in the cached OCR text: make ocr-ceiling GOLD=labels.jsonl [OCR_CACHE=outputs/ocr_cache] [OUT=outputs/eval/ocr_ceiling]
	$(PY) -m eval.ocr_ceiling --gold $(GOLD) --ocr-cache $(or $(OCR_CACHE),outputs/ocr_cache) --out $(or $(OUT),outputs/eval/ocr_ceiling) $(ARGS)

bench: $(STAMP)  ## run the benchmarks in benchmarks/ (prints numbers)
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:  ## remove build outputs (keeps .venv)
	rm -rf outputs .pytest_cache .ruff_cache
