"""PaliGemma stages: QLoRA fine-tuning, evaluation, and the memory analysis."""
