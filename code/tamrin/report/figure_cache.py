"""The report's figures, drawn only when stale, by a child process that overlaps with the report's rendering.

A figure is stale when its file is missing or its key changed: the key hashes the figure's data (the spec's
arguments), the drawing code (figures.py) and the matplotlib version. `Drawing` starts a child Python process
first thing in the report stage; the child reads results/ itself (nothing large crosses the pipe), decides which
figures are stale, puts a placeholder where a stale figure has no file yet and says it is ready, then draws them
(each into a temporary file renamed over the final one) and prints {files, keys}; the parent records the redrawn
ones in figures/.figures-cache.json. This is the only drawing path: the report stage and the tests both go
through it.

Why the placeholders: once every figure path holds an image, Typst can lay the whole document out while the
figures are being drawn (`Drawing.ready`, then a first compile in a thread); Typst memoises that work, so the
compile after the drawing redoes only what the real figures change (report/build.py). The placeholders never
reach a PDF: the only compile whose output is kept runs after the child has exited, and a placeholder left by a
child that failed has no key in the cache file, so the next run draws it again.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..atomic import write_text

CACHE_FILE = ".figures-cache.json"
# A 1×1 transparent PNG and an empty SVG of the figures' usual 6.2 × 2.6 in shape: placeholders for figures
# that have no file yet (their size only moves page breaks, which the compile after the drawing redoes anyway)
PLACEHOLDERS = {
    ".png": bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c"
                          "6360606060000000050001a5f645400000000049454e44ae426082"),
    ".svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="446" height="187" viewBox="0 0 446 187"/>',
}
DRAWING_CODE = (Path(__file__).with_name("figures.py"), Path(__file__).with_name("figures_extra.py"))


@dataclass(frozen=True)
class FigureSpec:
    """One figure: the file it becomes under figures/, the function that draws it, and that function's data
    (everything the drawing depends on besides the drawing code and the matplotlib version)."""

    file: str
    draw: Callable[..., Path]
    args: tuple


def code_fingerprint() -> str:
    """Hash of the drawing code and the matplotlib version: a change of either redraws every figure."""
    from importlib import metadata

    try:
        mpl = metadata.version("matplotlib")
    except metadata.PackageNotFoundError:  # pragma: no cover - matplotlib is a dependency
        mpl = "?"
    return hashlib.sha256(b"".join(f.read_bytes() for f in DRAWING_CODE) + mpl.encode()).hexdigest()


def figure_key(spec: FigureSpec, fingerprint: str) -> str:
    data = json.dumps([spec.file, spec.draw.__name__, spec.args], sort_keys=True, default=str)
    return hashlib.sha256((fingerprint + data).encode()).hexdigest()


def read_cache(out: Path) -> dict[str, str]:
    try:
        return json.loads((out / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def stale(specs: list[FigureSpec], out: Path, fingerprint: str) -> list[FigureSpec]:
    """The figures whose file is missing or whose cached key differs."""
    cache = read_cache(out)
    return [s for s in specs if not (cache.get(s.file) == figure_key(s, fingerprint) and (out / s.file).is_file())]


def record(out: Path, keys: dict[str, str]) -> None:
    """Record `keys` ({file: key}) in the cache file, keeping the other figures' entries."""
    cache = read_cache(out)
    cache.update(keys)
    write_text(out / CACHE_FILE, json.dumps(cache, indent=1, sort_keys=True))


class Drawing:
    """The figures drawn by a child Python process started first thing, so Python's start-up, matplotlib's
    import and the drawing overlap with the caller reading, rendering and linting the templates on the second
    core. `wait()` records the redrawn figures in the cache and returns {file: redrawn}, or raises if the child
    failed. (Two children were measured to gain nothing on two cores: each pays matplotlib's import.)"""

    def __init__(self, results: Path, out: Path, smooth_window: int) -> None:
        import os
        import subprocess
        import sys
        import tempfile

        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        # stderr to a file, not a pipe: `ready` reads stdout alone, and a full stderr pipe would stall the child
        self._err = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        code_dir = str(Path(__file__).resolve().parents[2])
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([code_dir, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        self._proc: subprocess.Popen | None = subprocess.Popen(
            [sys.executable, "-c", "from tamrin.report.figure_cache import child_main; child_main()",
             str(results), str(out), str(smooth_window)],
            env=env, stdout=subprocess.PIPE, stderr=self._err, text=True)
        self._ready = False

    def ready(self) -> bool:
        """Block until every figure path holds an image (the final one, or a placeholder while it is drawn);
        False when the child ended without saying so (`wait` then raises its error)."""
        if self._proc is None or self._ready:
            return self._ready
        line = self._proc.stdout.readline()
        self._ready = line.strip() == '{"ready": true}'
        return self._ready

    def wait(self) -> dict[str, bool]:
        if self._proc is None:
            raise RuntimeError("the figures were already collected")
        proc, self._proc = self._proc, None
        out, _ = proc.communicate()
        self._err.seek(0)
        err = self._err.read()
        self._err.close()
        if proc.returncode != 0:
            last = err.strip().splitlines()[-1] if err.strip() else f"exit code {proc.returncode}"
            raise RuntimeError(f"drawing the figures failed: {last}\n{err[-3000:]}")
        done = json.loads(out.strip().splitlines()[-1])
        if done["keys"]:
            record(self.out, done["keys"])
        return {f: f in done["keys"] for f in done["files"]}

    def close(self) -> None:
        """Stop a running drawing (the caller is already failing for another reason)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.communicate()
            self._proc = None
            self._err.close()


def child_main() -> None:
    """Child-process entry of `Drawing`: argv = results dir, figures dir, configured smoothing window."""
    import os
    import sys

    from .context import load_results
    from .figures import figure_specs, smoothing_window

    results, out, configured = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    r = load_results(results)
    specs = list(figure_specs(r, smoothing_window(len(r["finetune"]["loss"]), configured)).values())
    fingerprint = code_fingerprint()
    todo = stale(specs, out, fingerprint)
    for spec in todo:
        path = out / spec.file
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(PLACEHOLDERS[path.suffix])
    print(json.dumps({"ready": True}), flush=True)
    for spec in todo:
        path = out / spec.file
        drawn = spec.draw(*spec.args, path.with_name(f".drawing-{path.name}"))  # same suffix: same format
        os.replace(drawn, path)  # a reader sees the placeholder or the whole figure, never half of it
    print(json.dumps({"files": [s.file for s in specs],
                      "keys": {s.file: figure_key(s, fingerprint) for s in todo}}))
