"""Knowledge incorporation pieces: passages (data.py), self-edit prompts (prompts.py), grading (grading.py)."""
