"""The training loss: next-token cross-entropy on the answer (suffix) tokens only.

`suffix_loss` (the default) asks the model for logits at just the last K positions — the ones whose next
token carries a label — through `logits_to_keep`. With left padding the suffix is flush right, so K is the
longest suffix + 1 (counted on the host when the batch is built, so the step never waits on the GPU for
it) and the [batch, K, vocab] logits replace the [batch, seq, 257k] tensor of the plain loss
(for the 3B model at seq 280 the full fp32 logits alone are ~0.3 GB per example). Going through the model's
own forward keeps DDP's hooks, peft, the lm_head and any logit soft-capping exactly as in `full_loss`.

Both return (sum of token losses, number of label tokens) so gradient accumulation can normalise by the
token count of the whole optimizer step.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .batches import IGNORE, logits_needed  # noqa: F401 - one definition, used here and by the batches

MODEL_INPUTS = ("input_ids", "pixel_values", "attention_mask", "token_type_ids", "position_ids")


def token_ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of CE over positions t predicting labels[t+1] (logits and labels cover the same positions)."""
    targets = labels[:, 1:]
    logits = logits[:, :-1].float()  # the loss in fp32, as transformers does
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
    return loss, (targets != IGNORE).sum()


def suffix_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) at just the positions that predict suffix tokens: the last `logits_to_keep` of each row."""
    labels = batch["labels"]
    keep = batch.get("logits_to_keep") or logits_needed(labels)  # precomputed on the host by batches.collate
    out = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}, logits_to_keep=keep, use_cache=False)
    return out.logits, labels[:, -keep:]


def suffix_loss(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss sum, token count) computing logits only at the positions that predict suffix tokens."""
    return token_ce_sum(*suffix_logits(model, batch))


def full_loss(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss sum, token count) from the plain HF forward with `labels=`: logits at every position and
    transformers' own causal-LM loss (a mean over label tokens, turned back into a sum)."""
    labels = batch["labels"]
    out = model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}, labels=labels, use_cache=False)
    n = (labels[:, 1:] != IGNORE).sum()
    return out.loss * n, n


LOSSES = {"suffix": suffix_loss, "full": full_loss}
