"""Tools that work on finished checkpoints: push to the Hub, export, merge LoRA, refit puzzle rows."""
