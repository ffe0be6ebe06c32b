PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Two pytest workers (whole files each, so module fixtures stay in one process) on two cores, one thread each:
# OpenMP threads that outnumber the cores spin and slow every process down.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

.PHONY: setup demo demo-shortcut demo-estimates test test-fast test-parts docs lint clean screenshot

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev,mlflow]'
	touch $(STAMP)

demo: setup
	$(BIN)/cxrgen synthesize runs/demo-data --scale 0.5 --image-size 128
	$(BIN)/cxrgen study configs/demo.yaml
	$(BIN)/cxrgen report runs/demo

# Issue 11: the device shortcut read in a trained model, in the world that has it and in the control world that
# does not (about 45 s each on 2 cores): results/shortcut.csv and the report's shift section of each.
demo-shortcut: setup
	$(BIN)/cxrgen synthesize runs/shortcut-data --scale 0.7 --image-size 64
	$(BIN)/cxrgen study configs/shift-shortcut.yaml
	$(BIN)/cxrgen report runs/shortcut --no-review
	$(BIN)/cxrgen synthesize runs/control-data --scale 0.7 --image-size 64 --no-shortcut
	$(BIN)/cxrgen study configs/shift-control.yaml
	$(BIN)/cxrgen report runs/control --no-review

# Issue 24: label-free AUC estimates in the worlds where estimators break (prevalence shift, acquisition shift, the
# shortcut reversed, its control): results/estimates.csv beside the true AUC, and the trust flag.
demo-estimates: setup
	$(BIN)/cxrgen synthesize runs/worlds/prevalence --world prevalence --scale 0.7 --image-size 64 --hospitals nih,mimic
	$(BIN)/cxrgen synthesize runs/worlds/acquisition --world acquisition --scale 0.7 --image-size 64 --hospitals mimic
	$(BIN)/cxrgen synthesize runs/worlds/shipped --scale 0.7 --image-size 64 --hospitals nih
	$(BIN)/cxrgen synthesize runs/worlds/reversed --world reversed --seed 1 --scale 0.7 --image-size 64 --hospitals nih
	$(BIN)/cxrgen synthesize runs/worlds/control --world control --seed 1 --scale 0.7 --image-size 64 --hospitals nih
	$(BIN)/cxrgen study configs/estimate-worlds.yaml
	$(BIN)/cxrgen report runs/worlds/study --no-review

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(TEST_ENV) $(BIN)/pytest -q -n 2 --dist loadfile --durations=15

# Everything but the tests marked slow (whole studies, kill chains, DDP): for the edit-test loop.
test-fast: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(TEST_ENV) $(BIN)/pytest -q -n 2 --dist loadfile -m "not slow" --durations=15

# The documentation site (mkdocs-material): site/index.html; --strict fails on a broken link or reference.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Only the tests that need parts outside Python (SLURM, munge, Chromium, CUDA, root's mount): CI runs them with the
# parts installed, after the whole suite ran with them hidden (CXRGEN_TEST_HIDE=all), as on a fresh machine.
test-parts: setup
	$(TEST_ENV) $(BIN)/pytest -q -n 2 --dist loadfile -m requires

# The demo report's first screen as a 1280 px wide browser shows it (Debian's chromium, installed when missing).
SHOT := docs/demo-report-first-screen.png
screenshot:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,900 \
		--screenshot=$(abspath $(SHOT)) file://$(abspath runs/demo/results/report.html)

clean:
	rm -rf $(VENV) runs site
