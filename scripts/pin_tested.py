"""Write constraints/tested.txt: the versions, in this environment (the one the test suite passed with), of
Tamrin's direct dependencies and of the Hugging Face runtime they load.

Not pinned: torch (Colab/Kaggle keep their CUDA build; >= 2.6 is enforced elsewhere) and the scientific/Jupyter
base a notebook platform ships (numpy, scipy, pillow, matplotlib, …): forcing other versions of those into a
running notebook kernel breaks it more often than a version difference breaks Tamrin. Nor fsspec: Colab's
preinstalled gcsfs pins it exactly (gcsfs up to 2025.12.0 requires fsspec==its own version), so any pin clashes
there; datasets' own bounds choose it (bench/pins_dryrun.sh checks the set on Python 3.12 and 3.13).

    python scripts/pin_tested.py            # rewrite constraints/tested.txt from the running environment
    python scripts/pin_tested.py --check    # exit 1 when the file differs from the environment
"""
from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "constraints" / "tested.txt"
PLATFORM = {"torch", "numpy", "scipy", "pillow", "matplotlib", "tqdm", "packaging", "tomli",
            "fsspec"}  # fsspec: pinned exactly by the platform's gcsfs (see above)
HF_RUNTIME = {"safetensors", "hf-xet"}  # loaded by transformers/datasets/huggingface-hub


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def direct_dependencies() -> list[str]:
    import tomllib

    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    return [canonical(Requirement(d).name) for d in deps]


def pins() -> list[str]:
    names = (set(direct_dependencies()) | HF_RUNTIME) - PLATFORM
    out = []
    for name in sorted(names):
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass  # a marker-excluded dependency (bitsandbytes on macOS)
    return out


def render() -> str:
    py = ".".join(map(str, sys.version_info[:2]))
    head = (f"# Versions Tamrin's test suite passed with (Python {py}); written by scripts/pin_tested.py.\n"
            "# Used as `pip install -e . -c constraints/tested.txt` (scripts/install.sh, the notebook).\n"
            "# torch, fsspec and the platform's numpy/scipy/pillow/matplotlib are not pinned (see the script).\n")
    return head + "\n".join(pins()) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = render()
    if args.check:
        same = TARGET.exists() and TARGET.read_text(encoding="utf-8") == text
        print("constraints/tested.txt matches this environment" if same else "constraints/tested.txt differs")
        return 0 if same else 1
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)} ({len(text.splitlines()) - 3} pins)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
