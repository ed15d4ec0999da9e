"""ablate: an architecture-ablation workbench for GPT-style language models."""

__version__ = "0.1.0"
