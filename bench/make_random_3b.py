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


GEMMA_VOCAB = 256000  # ids below this are Gemma's text pieces in the real tokenizer
LOC = tuple(f"<loc{i:04d}>" for i in range(1024))
SEG = tuple(f"<seg{i:03d}>" for i in range(128))
IMAGE_TOKEN_INDEX = GEMMA_VOCAB + len(LOC) + len(SEG)  # 257152


def build_processor(texts: list[str], config):
    """The `PaliGemmaProcessor` of a PaliGemma `config` (the shipped 3B one: 224 px, 256 image tokens) whose
    tokenizer has the real id layout: the demo's small BPE (tamrin.vlm.tiny) with the ids up to 256000 filled with
    unused pieces, so every id the model sees sits where the real checkpoint puts it. `PaliGemmaProcessor` then
    registers <image> as a special token and the loc/seg pieces as ordinary added tokens, exactly as it does for the
    real tokenizer (transformers/models/paligemma/processing_paligemma.py, `PaliGemmaProcessor.__init__`). The
    fidelity tests check Tamrin's batches against it."""
    from transformers import GemmaTokenizer, PaliGemmaProcessor

    from tamrin.vlm.tiny import image_processor, train_bpe

    if config.image_token_id != IMAGE_TOKEN_INDEX:
        raise ValueError(f"<image> must follow the seg tokens at {IMAGE_TOKEN_INDEX}, not {config.image_token_id}")
    vocab, merges = train_bpe(texts)
    vocab = {**vocab, **{f"<unused{i}>": i for i in range(len(vocab), GEMMA_VOCAB)},
             **{tok: GEMMA_VOCAB + j for j, tok in enumerate(LOC + SEG)}, "<image>": IMAGE_TOKEN_INDEX}
    vc = config.vision_config
    proc = PaliGemmaProcessor(image_processor=image_processor(vc.image_size, vc.patch_size),
                              tokenizer=GemmaTokenizer(vocab=vocab, merges=merges))
    if proc.image_token_id != config.image_token_id or len(proc.tokenizer) > config.text_config.vocab_size:
        raise RuntimeError(f"tokenizer layout broken: <image> = {proc.image_token_id}, {len(proc.tokenizer)} tokens")
    return proc


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
