"""Save a random-weight PaliGemma-3B (the real architecture, from the shipped config) with a processor, so the
`paper` profile can run end to end with `model.id` pointing at the folder — no hub access needed.

The weights are random (transformers' initialisation, seed 0) and saved in bf16 (≈5.9 GB). The tokenizer is a
Gemma-style BPE trained on the given texts (the data stage's questions and answers) and padded with unused
pieces to PaliGemma's id layout: <loc0000…1023> at 256000…257023, <seg000…127> at 257024…257151 and <image> at
257152 = `image_token_index` of the config, so the processor's image tokens land where the model expects them.

Usage (GPU machine): python bench/make_random_3b.py OUT_DIR [--data results/data] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "code"))


def build_processor(texts: list[str], config):
    """The processor saved with the checkpoint: PaliGemma's real token-id layout (tamrin.vlm.tiny)."""
    from tamrin.vlm.tiny import layout_processor

    return layout_processor(texts, config)


def texts_from(data_dir: Path | None) -> list[str]:
    from tamrin.contract.facts import ANSWERS

    texts = ["answer en ", *ANSWERS]
    if data_dir is not None:
        for split in ("train", "test"):
            path = Path(data_dir) / f"{split}.jsonl"
            if path.exists():
                for line in path.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        row = json.loads(line)
                        texts += [row["question"], str(row["answer"])]
    return texts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, default=None, help="results/data folder whose questions train the tokenizer")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true",
                    help="CPU dry run of bench/gpu_run.sh: the demo's tiny random PaliGemma instead of the 3B")
    args = ap.parse_args(argv)
    if args.tiny:
        from tamrin.vlm.tiny import save_tiny_base

        save_tiny_base(args.out, texts_from(args.data), width=128, layers=1, image_size=64)
        print(f"saved the tiny random PaliGemma + processor to {args.out}")
        return 0

    from transformers import GenerationConfig

    from tamrin.vlm.footprint import load_config
    from tamrin.vlm.memory_analysis import save_random_checkpoint

    config = load_config()
    save_random_checkpoint(args.out, device=args.device)
    proc = build_processor(texts_from(args.data), config)
    proc.save_pretrained(args.out)
    GenerationConfig(bos_token_id=config.text_config.bos_token_id, eos_token_id=config.text_config.eos_token_id,
                     pad_token_id=config.text_config.pad_token_id).save_pretrained(args.out)
    print(f"saved random-weight PaliGemma-3B + processor to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
