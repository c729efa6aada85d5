"""tinylm: train, shrink and run small language models."""

__version__ = "0.1.0"
