"""A processor with the real `google/paligemma-3b-pt-224` token-id layout, built offline.

The real tokenizer is Gemma's 256,000 SentencePiece pieces followed by PaliGemma's detection and segmentation
pieces — <loc0000…1023> at 256000…257023, <seg000…127> at 257024…257151 — and <image> at 257152, which is the
config's `image_token_index` (pad 0, eos 1, bos 2). The hub is out of reach here, so this builds a Gemma-style
BPE trained on the given texts (the demo's tokenizer trainer) and fills ids up to 256000 with unused pieces, so
every id the model sees sits where the real checkpoint puts it. `PaliGemmaProcessor` then registers <image> as a
special token and the loc/seg pieces as ordinary added tokens, exactly as it does for the real tokenizer
(transformers/models/paligemma/processing_paligemma.py, `PaliGemmaProcessor.__init__`).

Used by bench/make_random_3b.py (the random-weight 3B checkpoint of the GPU runs) and by the fidelity tests.
"""
from __future__ import annotations

import json
from typing import Iterable

GEMMA_VOCAB = 256000  # ids below this are Gemma's text pieces in the real tokenizer
LOC = tuple(f"<loc{i:04d}>" for i in range(1024))
SEG = tuple(f"<seg{i:03d}>" for i in range(128))
IMAGE_TOKEN_INDEX = GEMMA_VOCAB + len(LOC) + len(SEG)  # 257152


def layout_tokenizer(texts: Iterable[str], image_token_index: int = IMAGE_TOKEN_INDEX):
    """A `GemmaTokenizer` with real PaliGemma's special-token ids and a small BPE trained on `texts`."""
    from transformers import GemmaTokenizer

    from .tiny import train_tokenizer

    if GEMMA_VOCAB + len(LOC) + len(SEG) != image_token_index:
        raise ValueError(f"<image> must follow the seg tokens at {GEMMA_VOCAB + len(LOC) + len(SEG)}, "
                         f"not {image_token_index}")
    small = train_tokenizer(list(texts))
    model = json.loads(small.backend_tokenizer.to_str())["model"]
    vocab = dict(model["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    for i in range(len(vocab), GEMMA_VOCAB):
        vocab[f"<unused{i}>"] = i
    for j, tok in enumerate(LOC + SEG):
        vocab[tok] = GEMMA_VOCAB + j
    vocab["<image>"] = image_token_index
    return GemmaTokenizer(vocab=vocab, merges=merges)


def image_processor(image_size: int, patch_size: int):
    """SigLIP's image processor for `image_size`-pixel squares, `(image_size // patch_size)²` image tokens: the
    torchvision backend when present (as on Colab), else the PIL one — the same preprocessing."""
    try:
        import torchvision  # noqa: F401
        from transformers import SiglipImageProcessor as ImageProcessor
    except ImportError:
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil as ImageProcessor
    ip = ImageProcessor(size={"height": image_size, "width": image_size})
    ip.image_seq_length = (image_size // patch_size) ** 2
    return ip


def layout_processor(texts: Iterable[str], config):
    """The `PaliGemmaProcessor` of a PaliGemma `config` (the shipped 3B one: 224 px, 256 image tokens) whose
    tokenizer has the real id layout."""
    from transformers import PaliGemmaProcessor

    vc = config.vision_config
    proc = PaliGemmaProcessor(image_processor=image_processor(vc.image_size, vc.patch_size),
                              tokenizer=layout_tokenizer(texts, config.image_token_id))
    if proc.image_token_id != config.image_token_id or len(proc.tokenizer) > config.text_config.vocab_size:
        raise RuntimeError(f"tokenizer layout broken: <image> = {proc.image_token_id}, {len(proc.tokenizer)} tokens")
    return proc
