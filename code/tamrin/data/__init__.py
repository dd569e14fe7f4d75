"""Data stage: a CLEVR subset (HF hub or official layout) or synthetic CLEVR-like scenes → results/data/."""
