"""The demo's offline model: a tiny random-weight PaliGemma with a tokenizer and processor built locally (nothing here
touches the hub), saved as an ordinary `save_pretrained` folder so the pipeline loads it with the very calls it uses
for `google/paligemma-3b-pt-224` and the code path after construction is the paper's. Every Linear width is a
multiple of 128 so bitsandbytes NF4 (block size 64, and its CPU kernels) quantizes every projection; Gemma keeps
PaliGemma's multi-query attention (one KV head).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

# PaliGemma's tokenizer layout: Gemma's first five ids, then SentencePiece byte fallback pieces.
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]
PATCH = 16  # tiny SigLIP patch side (the real model uses 14 px patches on 224 px images)


def train_bpe(texts: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a Gemma-style BPE trained on `texts`. Gemma tokenizes without pre-splitting (spaces become
    "▁"); training splits at "▁" so no merge crosses a word boundary, and the learned merges on unsplit text then yield
    the same word pieces ("▁red", "red"). Byte-fallback pieces keep unseen characters representable."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    texts = list(texts)
    alphabet = sorted({c for t in texts for c in t.replace(" ", "▁")} | set("abcdefghijklmnopqrstuvwxyz0123456789?\n▁"))
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(vocab_size=4000, special_tokens=SPECIAL_TOKENS + BYTE_TOKENS,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainer)
    bpe = json.loads(tok.to_str())["model"]
    return bpe["vocab"], [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in bpe["merges"]]


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


def tiny_config(processor, width: int, layers: int, image_size: int):
    """A `PaliGemmaConfig` with PaliGemma's structure at toy size, matching `processor`'s vocabulary."""
    from transformers import PaliGemmaConfig

    tok = processor.tokenizer
    vocab = -(-len(tok) // 128) * 128
    # Init std 1/sqrt(width) instead of Gemma's 0.02 (tuned for width 2048): at width 128 the tied
    # embedding/lm_head would otherwise cap every logit near 0.3 and no adapter could make it confident.
    init_std = width ** -0.5
    ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    config = PaliGemmaConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=width, intermediate_size=2 * width,
                           num_hidden_layers=layers, num_attention_heads=max(1, width // 64),
                           image_size=image_size, patch_size=PATCH, vision_use_head=False),
        text_config=dict(model_type="gemma", hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=width,
                         vocab_size=vocab, max_position_embeddings=1024, initializer_range=init_std, **ids),
        image_token_index=processor.image_token_id, vocab_size=vocab, projection_dim=width, hidden_size=width, **ids,
    )
    config.initializer_range = init_std  # the projector's init reads the top-level value
    return config


def save_tiny_base(folder: Path, texts: Iterable[str], *, width: int = 128, layers: int = 2, image_size: int = 64,
                   seed: int = 0) -> Path:
    """Build the tiny random PaliGemma and its processor (SigLIP's image processor + a BPE trained on `texts`) and
    save both to `folder` (fp32)."""
    import torch
    from transformers import GemmaTokenizer, PaliGemmaForConditionalGeneration, PaliGemmaProcessor

    vocab, merges = train_bpe(texts)
    processor = PaliGemmaProcessor(image_processor=image_processor(image_size, PATCH),
                                   tokenizer=GemmaTokenizer(vocab=vocab, merges=merges))
    config = tiny_config(processor, width, layers, image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PaliGemmaForConditionalGeneration(config)
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
