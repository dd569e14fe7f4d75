"""PaliGemma processors and models built offline: the demo's tiny random-weight PaliGemma, and a processor with the
real `google/paligemma-3b-pt-224` token-id layout (bench/make_random_3b.py's random 3B checkpoint, fidelity tests).

Nothing here touches the Hugging Face hub. The tiny model is saved as an ordinary `save_pretrained` folder (config
+ weights + processor), so the rest of the pipeline loads it with exactly the calls it uses for the real model —
`from_pretrained(folder, quantization_config=...)` — and the code path after construction is the paper's. Its
shapes: every Linear width is a multiple of 128 so bitsandbytes NF4 (block size 64, and its CPU kernels) quantizes
every projection; Gemma keeps PaliGemma's multi-query attention (one KV head).

The real tokenizer is Gemma's 256,000 SentencePiece pieces followed by PaliGemma's detection and segmentation pieces
— <loc0000…1023> at 256000…257023, <seg000…127> at 257024…257151 — and <image> at 257152, the config's
`image_token_index` (pad 0, eos 1, bos 2). `layout_tokenizer` trains the demo's small BPE and fills the ids up to
256000 with unused pieces, so every id the model sees sits where the real checkpoint puts it; `PaliGemmaProcessor`
then registers <image> as a special token and the loc/seg pieces as ordinary added tokens, exactly as it does for
the real tokenizer (transformers/models/paligemma/processing_paligemma.py, `PaliGemmaProcessor.__init__`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

# PaliGemma's tokenizer layout: Gemma's first five ids, then SentencePiece byte fallback pieces.
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]
PATCH = 16  # tiny SigLIP patch side (the real model uses 14 px patches on 224 px images)
GEMMA_VOCAB = 256000  # ids below this are Gemma's text pieces in the real tokenizer
LOC = tuple(f"<loc{i:04d}>" for i in range(1024))
SEG = tuple(f"<seg{i:03d}>" for i in range(128))
IMAGE_TOKEN_INDEX = GEMMA_VOCAB + len(LOC) + len(SEG)  # 257152


def _bpe(texts: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab, merges) of a Gemma-style BPE trained on `texts`.

    Gemma tokenizes without pre-splitting (spaces become "▁" and BPE runs over the whole string). Training here
    splits at "▁" so no merge crosses a word boundary; applying the learned merges to unsplit text then yields the
    same word pieces ("▁red", "red"). Byte-fallback pieces keep unseen characters representable."""
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


def layout_tokenizer(texts: Iterable[str], image_token_index: int = IMAGE_TOKEN_INDEX):
    """A `GemmaTokenizer` with real PaliGemma's special-token ids and a small BPE trained on `texts`."""
    from transformers import GemmaTokenizer

    if image_token_index != IMAGE_TOKEN_INDEX:
        raise ValueError(f"<image> must follow the seg tokens at {IMAGE_TOKEN_INDEX}, not {image_token_index}")
    vocab, merges = _bpe(texts)
    vocab = dict(vocab)
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


def build_processor(texts: Iterable[str], image_size: int):
    """The tiny model's `PaliGemmaProcessor` (SigLIP image processor + a BPE trained on `texts`)."""
    from transformers import GemmaTokenizer, PaliGemmaProcessor

    vocab, merges = _bpe(texts)
    return PaliGemmaProcessor(image_processor=image_processor(image_size, PATCH),
                              tokenizer=GemmaTokenizer(vocab=vocab, merges=merges))


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
    """Build the tiny random PaliGemma and its processor from `texts` and save both to `folder` (fp32)."""
    import torch
    from transformers import PaliGemmaForConditionalGeneration

    processor = build_processor(texts, image_size)
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
