"""Typed architecture configuration shared by every model (TRM, HRM, transformer baseline).

Field names follow the reference YAML files (config/arch/trm.yaml in TinyRecursiveModels) so their
configs and overrides carry over. Plain dataclasses with simple types: the trainer registers them in
Hydra's ConfigStore; code below the entry point receives these objects, never a DictConfig.

To add knobs (for example LoRA), append fields with defaults; nothing else needs to change.
The run-time sizes (batch_size, seq_len, vocab_size, num_puzzle_identifiers, causal) are not config:
they come from the dataset and are passed to ``models.registry.build_model``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

LOSS_TYPES = ("stablemax_cross_entropy", "softmax_cross_entropy")
POS_ENCODINGS = ("rope", "learned", "none")
FORWARD_DTYPES = ("bfloat16", "float32", "float16")


@dataclass
class LossConfig:
    # Loss head wrapping the model; the reference spells it "losses@ACTLossHead" (accepted too).
    name: str = "ACTLossHead"
    # Per-token loss: "stablemax_cross_entropy" (reference ARC default) or "softmax_cross_entropy".
    loss_type: str = "stablemax_cross_entropy"
    # Extra loss terms (models/losses.py), logged separately; the defaults leave the reference loss bit for bit.
    # Weight of label cells that differ from the input cell (1.0 = reference: every cell counts the same).
    changed_cell_weight: float = 1.0
    # ACT ponder cost: each ACT step a row takes adds ponder_cost x -log sigmoid(q_halt) (0 = off).
    ponder_cost: float = 0.0


@dataclass
class ArchConfig:
    # Registry name: "trm" | "hrm" | "transformers_baseline" (reference "module@Class" aliases accepted).
    name: str = "trm"
    # Loss head and per-token loss.
    loss: LossConfig = field(default_factory=LossConfig)

    # Probability that a training row gets a random minimum number of ACT steps in [2, halt_max_steps].
    halt_exploration_prob: float = 0.1
    # Maximum ACT (outer supervision) steps per example; evaluation runs exactly this many by default.
    halt_max_steps: int = 16

    # Outer recursion cycles per ACT step (all but the last run without gradient).
    H_cycles: int = 3
    # Latent (z_L) updates per outer cycle.
    L_cycles: int = 6
    # Blocks in the H module (HRM only; TRM ignores it and shares one network).
    H_layers: int = 0
    # Blocks in the L module (the one shared network in TRM).
    L_layers: int = 2

    # Model width.
    hidden_size: int = 512
    # Attention heads (head_dim = hidden_size // num_heads).
    num_heads: int = 8
    # SwiGLU expansion: inner width = round(expansion * hidden * 2/3) rounded up to a multiple of 256.
    expansion: float = 4.0

    # Width of the per-puzzle learned embedding; 0 disables the puzzle table.
    puzzle_emb_ndim: int = 512
    # Prefix positions reserved for the puzzle embedding; 0 means ceil(puzzle_emb_ndim / hidden_size).
    puzzle_emb_len: int = 16

    # Position encoding: "rope", "learned" or "none".
    pos_encodings: str = "rope"
    # Compute dtype on GPU; CPU (and GPUs without bf16) fall back to float32, see layers.resolve_forward_dtype.
    forward_dtype: str = "bfloat16"
    # TRM: replace attention by an MLP across the sequence (the Sudoku variant).
    mlp_t: bool = False
    # True: halt when q_halt > 0 and train only q_halt (TRM). False: Q-learning with q_continue (HRM).
    no_ACT_continue: bool = True
    # Epsilon of the weightless RMS norm.
    rms_norm_eps: float = 1e-5
    # RoPE base.
    rope_theta: float = 10000.0

    # Evaluation: stop rows whose q_halt says halt (they stop changing) and finish when all halted.
    # False (reference behaviour): evaluation always runs halt_max_steps.
    adaptive_halting: bool = False

    # LoRA (models/lora.py; Trelis-fork names): rank 0 = off. Adapters on the linear layers whose module
    # names match lora_targets; every other weight frozen except parameters matching lora_trainable.
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: List[str] = field(default_factory=lambda: ["*"])
    lora_trainable: List[str] = field(default_factory=list)

    def validate(self) -> None:
        """Raise ValueError naming the offending field for values the models cannot run with."""
        if self.loss.loss_type not in LOSS_TYPES:
            raise ValueError(f"arch.loss.loss_type={self.loss.loss_type!r}; valid: {', '.join(LOSS_TYPES)}")
        if self.loss.changed_cell_weight < 0 or self.loss.ponder_cost < 0:
            raise ValueError("arch.loss.changed_cell_weight and arch.loss.ponder_cost must be >= 0")
        if self.pos_encodings not in POS_ENCODINGS:
            raise ValueError(f"arch.pos_encodings={self.pos_encodings!r}; valid: {', '.join(POS_ENCODINGS)}")
        if self.forward_dtype not in FORWARD_DTYPES:
            raise ValueError(f"arch.forward_dtype={self.forward_dtype!r}; valid: {', '.join(FORWARD_DTYPES)}")
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(f"arch.hidden_size={self.hidden_size} is not divisible by arch.num_heads={self.num_heads}")
        for name in ("halt_max_steps", "H_cycles", "L_cycles", "hidden_size", "num_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"arch.{name} must be >= 1, got {getattr(self, name)}")
        if self.puzzle_emb_ndim < 0 or self.puzzle_emb_len < 0:
            raise ValueError("arch.puzzle_emb_ndim and arch.puzzle_emb_len must be >= 0")
        if self.puzzle_emb_len > 0 and self.puzzle_emb_ndim > self.puzzle_emb_len * self.hidden_size:
            raise ValueError(
                f"arch.puzzle_emb_ndim={self.puzzle_emb_ndim} does not fit in puzzle_emb_len={self.puzzle_emb_len}"
                f" x hidden_size={self.hidden_size} prefix positions")
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            raise ValueError(f"arch.halt_exploration_prob must be in [0, 1], got {self.halt_exploration_prob}")

    @property
    def prefix_len(self) -> int:
        """Number of prefix positions in front of the grid tokens (puzzle embedding slots)."""
        if self.puzzle_emb_len > 0:
            return self.puzzle_emb_len
        return -(self.puzzle_emb_ndim // -self.hidden_size)  # ceil division
