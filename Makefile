# The two commands of a fresh machine: `make report` (install, then build everything) and `make test`.
# On Colab/Kaggle (or with TAMRIN_NO_VENV=1) everything runs in the current Python, keeping its torch.
ifeq ($(strip $(COLAB_RELEASE_TAG)$(KAGGLE_KERNEL_RUN_TYPE)$(TAMRIN_NO_VENV)),)
PY := .venv/bin/python
STAMP := .venv/.tamrin-installed
else
PY := python3
STAMP := .tamrin-installed
endif
ARGS ?=

.PHONY: report test install status clean

report: $(STAMP)
	$(PY) build.py all $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)

install: $(STAMP)

status: $(STAMP)
	$(PY) build.py status

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	touch $(STAMP)

clean:
	$(PY) build.py clean
