"""Adapters on a frozen base model: LoRA modules, merging, adapter-only checkpoints and PEFT export."""
