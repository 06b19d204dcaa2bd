"""SEAL (Self-Adapting LLMs): an LLM + LoRA that writes its own fine-tuning data (self-edits).

Run ``python -m seal [preset=...] [stage=...]`` (see ``seal/__main__.py``). One self-edit loop
(``seal/loop.py``) drives every domain in ``seal/domains/``: few-shot ARC and knowledge incorporation.
"""
