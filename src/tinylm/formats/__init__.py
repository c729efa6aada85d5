"""Conversions between tinylm checkpoints and other formats (Hugging Face, GGUF, llama2.c, llm.c)."""
