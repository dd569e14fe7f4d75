#!/usr/bin/env bash
# Install Tamrin and its dependencies.
#  - Fresh machine: a virtual environment in .venv; torch is installed first, as the CPU build when there is no
#    NVIDIA GPU (a CUDA build is several GB and useless there).
#  - Colab / Kaggle (or TAMRIN_NO_VENV=1): into the running Python, keeping its preinstalled CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}

if [[ -n "${COLAB_RELEASE_TAG:-}${KAGGLE_KERNEL_RUN_TYPE:-}${TAMRIN_NO_VENV:-}" ]]; then
  PY="$PYTHON"
  echo "[install] notebook platform: installing into $($PY -c 'import sys; print(sys.executable)') and keeping its torch"
else
  if [[ ! -x .venv/bin/python ]]; then
    echo "[install] creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
  fi
  PY=.venv/bin/python
fi

# 3.11: what the pinned set needs (pyproject.toml's requires-python); Colab (3.13) and Kaggle (3.12) are newer.
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "Tamrin needs Python >= 3.11"' \
  || { echo "[install] error: Python $("$PY" --version) is too old; Tamrin needs Python >= 3.11" >&2; exit 2; }

TORCH_MIN=2.6  # transformers 5 disables older torch (pyproject.toml says why)
if "$PY" -c 'import torch' 2>/dev/null; then
  have=$("$PY" -c 'import torch; print(torch.__version__)')
  if ! "$PY" -c "import sys, torch; v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < tuple(int(x) for x in '$TORCH_MIN'.split('.')))"; then
    echo "[install] error: the installed torch $have is older than $TORCH_MIN, which transformers 5 needs; upgrade it (pip install 'torch>=$TORCH_MIN' with the build for your CUDA) or install into a fresh environment" >&2
    exit 2
  fi
  echo "[install] keeping the installed torch $have"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[install] NVIDIA GPU found: installing the CUDA build of torch==$TORCH_VERSION"
  "$PY" -m pip install "torch==$TORCH_VERSION"
else
  # The CPU build carries the local version tag +cpu: take it from the configured package sources if they have it,
  # else from PyTorch's CPU index.
  echo "[install] no NVIDIA GPU: installing the CPU build of torch==$TORCH_VERSION"
  "$PY" -m pip install "torch==$TORCH_VERSION+cpu" 2>/dev/null \
    || "$PY" -m pip install "torch==$TORCH_VERSION" --index-url "$TORCH_CPU_INDEX"
fi

# The tested versions (constraints/tested.txt, written by scripts/pin_tested.py); TAMRIN_UNPINNED=1 takes the newest
# versions the bounds in pyproject.toml allow instead.
if [[ -n "${TAMRIN_UNPINNED:-}" ]]; then
  "$PY" -m pip install -e ".[test]"
else
  "$PY" -m pip install -e ".[test]" -c constraints/tested.txt
fi
# Bytecode now, once: otherwise every `build.py` process (and the report's figure child) compiles Tamrin's modules
# again until it has written them; about a tenth of a cold `report-only` (bench/results/report_only*.json).
"$PY" -m compileall -q code build.py >/dev/null || true
echo "[install] done: $("$PY" -c 'import torch, transformers, peft; print("torch", torch.__version__, "| transformers", transformers.__version__, "| peft", peft.__version__)')"
