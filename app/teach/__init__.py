"""Teach AURA from reviewed recordings: samples from notes, LoRA fine-tuning, its report."""
