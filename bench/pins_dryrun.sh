#!/usr/bin/env bash
# Does the pinned set (constraints/tested.txt) resolve on today's notebook platforms? A pip dry run per platform,
# against PyPI only (no local config), binary wheels only, with the platform's preinstalled torch as a requirement
# (Kaggle: Python 3.12 + torch 2.10; Colab: Python 3.13 + torch 2.11) and, for Colab, its preinstalled gcsfs (which
# pins fsspec exactly: the clash that made fsspec leave the pins). Outputs: bench/results/pins_py3XX_dryrun.txt.
# rouge-score is published as a source distribution only (pure Python): its wheel is built first into W and found
# there (pip refuses --no-binary beside --python-version).
#
#   PY312=/path/python3.12 PY313=/path/python3.13 bash bench/pins_dryrun.sh
# Each interpreter needs pip >= 23.3 (PEP 714 metadata: torch and its CUDA wheels are resolved without downloading).
set -uo pipefail
cd "$(dirname "$0")/.."
PLAT="--platform linux_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64"
for n in $(seq 5 39); do PLAT="$PLAT --platform manylinux_2_${n}_x86_64"; done  # pip matches each tag exactly

dry_run() {  # constraints file, python, version (3.12), output file, extra requirements…
  local pins=$1 py=$2 ver=$3 out=$4; shift 4
  local target; target=$(mktemp -d)
  {
    echo "# $(date -u +%Y-%m-%dT%H:%MZ)  $("$py" -m pip --version | cut -d' ' -f1-2) on Python $("$py" -c 'import platform; print(platform.python_version())')"
    echo "# pip install --dry-run --target T --only-binary=:all: --find-links W --python-version $ver --implementation cp <manylinux x86_64 tags> -c $pins '.[test]' $*"
    env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null "$py" -m pip install --dry-run --target "$target" --only-binary=:all: \
      --find-links "$WHEELS" --python-version "$ver" --implementation cp $PLAT --progress-bar off \
      -c "$pins" ".[test]" "$@" 2>&1 | grep -v -E '^\s*(Downloading|Obtaining|Using cached)'
    echo "# exit status: ${PIPESTATUS[0]}"
  } > "$out"
  rm -rf "$target"
  tail -n 3 "$out"
}

mkdir -p bench/results
WHEELS=$(mktemp -d)
PIP_CONFIG_FILE=/dev/null "${PY312:-python3.12}" -m pip wheel -q --no-deps -w "$WHEELS" rouge-score==0.1.2
# Colab's gcsfs: a release that pins fsspec exactly (gcsfs <= 2025.12.0 does; 2026.x asks fsspec >= 2026.7.0).
GCSFS=${GCSFS:-2025.12.0}
dry_run constraints/tested.txt "${PY312:-python3.12}" 3.12 bench/results/pins_py312_dryrun.txt "torch==2.10.0"
dry_run constraints/tested.txt "${PY313:-python3.13}" 3.13 bench/results/pins_py313_dryrun.txt "torch==2.11.0" \
  "gcsfs==$GCSFS"
# The same Colab check with the earlier pins (fsspec==2026.9.0 among them), to show the clash that was removed.
if [[ -n "${WITH_FSSPEC_PIN:-}" ]]; then
  old=$(mktemp); cat constraints/tested.txt > "$old"; echo "fsspec==2026.9.0" >> "$old"
  dry_run "$old" "${PY313:-python3.13}" 3.13 bench/results/pins_py313_dryrun_fsspec_pinned.txt "torch==2.11.0" \
    "gcsfs==$GCSFS"
  rm -f "$old"
fi
rm -rf "$WHEELS"
