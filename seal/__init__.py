"""SEAL (Self-Adapting LLMs) on ARC: an LLM + LoRA that writes its own test-time training recipes.

Run ``python -m seal stage=loop`` (see ``seal/__main__.py``); the stages live in ``seal/stages.py``.
"""
