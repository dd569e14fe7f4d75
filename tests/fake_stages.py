"""Cheap stand-in entry points for testing the runner's caching and atomicity (not product code)."""
import os
import time

from tamrin.atomic import write_json


def write_config(ctx) -> None:
    """Write the stage's own config and the upstream results it read, so tests can see what ran with what (and a
    config change changes the output, as it would in a real stage)."""
    from tamrin.runner import config_of
    from tamrin.stages import STAGES

    upstream = {k: (v / "out.json").read_text() for k, v in ctx.inputs.items() if (v / "out.json").is_file()}
    write_json(ctx.out_dir / "out.json", {"stage": ctx.stage, "config": config_of(STAGES[ctx.stage], ctx.cfg),
                                          "inputs": upstream, "salt": os.environ.get("TAMRIN_FAKE_SALT", "")})


def slow_writer(ctx) -> None:
    """Writes a partial file, then signals and waits to be killed mid-stage."""
    (ctx.out_dir / "partial.bin").write_bytes(b"x" * 1000)
    marker = os.environ["TAMRIN_TEST_MARKER"]
    open(marker, "w").close()
    time.sleep(60)


def failing(ctx) -> None:
    (ctx.out_dir / "half.json").write_text("{")
    raise RuntimeError("boom")
