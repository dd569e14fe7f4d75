#!/usr/bin/env bash
# Fetch (here, where PyPI is reachable) the wheels the GPU machine lacks or has in other versions, into .whl/
# (ignored via .git/info/exclude) so a device call can carry them. Pinned to the versions Tamrin is developed with.
# bitsandbytes ships CUDA builds for every toolkit (43 MB); we keep CPU + CUDA 12.8/13.0/13.2 builds only so the
# carried tree stays under the 64 MiB limit. Usage: bash bench/make_wheels.sh   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
PY=${PY:-/tmp/venv/bin/python}
PLAT="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64"
mkdir -p .whl
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT -d .whl \
  bitsandbytes==0.50.2 transformers==5.24.0 peft==0.21.2 accelerate==1.15.0 tokenizers==0.23.3 safetensors==0.8.0 \
  regex==2026.11.19 "huggingface-hub>=1.31,<2" nltk==3.10.4 defusedxml==0.7.1 \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 \
  ijson==3.6.0
$PY -m pip wheel -q --no-deps -w .whl rouge_score==0.1.2   # sdist only on PyPI; pure Python
$PY - <<'PYEOF'
import glob, os, zipfile
keep = ("cpu", "cuda128", "cuda130", "cuda132")
for path in glob.glob(".whl/bitsandbytes-*.whl"):
    src = zipfile.ZipFile(path)
    names = src.namelist()
    drop = {n for n in names if "/libbitsandbytes_" in n and not any(f"_{k}." in n for k in keep)}
    if not drop:
        continue
    tmp = path + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for n in names:
            if n in drop:
                continue
            data = src.read(n)
            if n.endswith(".dist-info/RECORD"):
                data = b"".join(l for l in data.splitlines(keepends=True) if l.split(b",")[0].decode() not in drop)
            dst.writestr(n, data)
    os.replace(tmp, path)
    print("trimmed", path, f"{os.path.getsize(path)/2**20:.1f} MiB")
PYEOF
du -sh .whl
