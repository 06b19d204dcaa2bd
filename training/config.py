"""Typed schema of the training configuration (config/cfg_pretrain.yaml and friends).

YAML files hold values; these dataclasses hold the types, defaults and one-line docs. They are
registered in Hydra's ConfigStore as ``pretrain_schema``, which the primary YAML files list first in
their defaults, so a misspelt key (``lrr=1``) or a wrong type (``epochs=abc``) stops the run at
start-up with the key's name.

Knob names follow the reference (TinyRecursiveModels' cfg_pretrain.yaml and its Trelis fork). The
reference needs ``+`` before project_name, run_name, load_checkpoint, checkpoint_path and
eval_save_outputs because its YAML lacks them; here they exist in the schema with a None/empty
default, and Hydra accepts ``+key=value`` on a key whose value is None (or a list), so both
``+run_name=x`` and ``run_name=x`` work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf.errors import OmegaConfBaseException

from models.config import ArchConfig
from utils.errors import UserError
from utils.schema import unknown_key_message

NONFINITE_POLICIES = ("stop", "skip")
DISTRIBUTED_STRATEGIES = ("ddp", "fsdp2")
WANDB_MODES = ("auto", "online", "offline", "disabled")
CARRY_POLICIES = ("reset", "restore")
REINIT_STRATEGIES = ("mean", "normal")
OPTIMIZERS = ("adam_atan2", "adamw")
BEST_MODES = ("max", "min")
LOGGERS = ("console", "jsonl", "wandb", "tensorboard")


@dataclass
class EvaluatorConfig:
    # Registry name of the evaluator ("arc"; the reference spelling "arc@ARC" is accepted).
    name: str = "arc"
    # ARC evaluator options; None keeps the evaluator's own default.
    submission_K: Optional[int] = None
    pass_Ks: Optional[List[int]] = None
    aggregated_voting: Optional[bool] = None
    # ARC: drop copies that decode to an empty grid before voting (the reference votes them; True in
    # the Kaggle flow). None keeps the evaluator's default (False, the reference's scores).
    ignore_empty_predictions: Optional[bool] = None
    # Anything else a future evaluator accepts, passed through as keyword arguments.
    kwargs: Dict[str, Any] = field(default_factory=dict)

    def build_kwargs(self) -> dict[str, Any]:
        known = {"submission_K": self.submission_K, "pass_Ks": self.pass_Ks, "aggregated_voting": self.aggregated_voting,
                 "ignore_empty_predictions": self.ignore_empty_predictions}
        out = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in known.items() if v is not None}
        out.update(self.kwargs)
        return out


@dataclass
class PretrainConfig:
    # Architecture (config group `arch`, files config/arch/*.yaml).
    arch: ArchConfig = field(default_factory=ArchConfig)

    # --- Data ---
    # Built dataset folders for training (several are combined).
    data_paths: List[str] = field(default_factory=lambda: ["data/arc1-aug-1000"])
    # HRM's spelling of one training folder (its README: `data_path=data/sudoku-extreme-1k-aug-1000`):
    # data_path=X is data_paths=[X].
    data_path: Optional[str] = None
    # Folders for evaluation; empty means the test split of data_paths.
    data_paths_test: List[str] = field(default_factory=list)
    # Evaluators run at every evaluation (one per evaluation data path).
    evaluators: List[EvaluatorConfig] = field(default_factory=list)

    # --- Schedule of the run ---
    global_batch_size: int = 768
    # Evaluation batch size (all ranks together); None = global_batch_size.
    eval_global_batch_size: Optional[int] = None
    epochs: int = 100000
    # Evaluate (and checkpoint) every this many epochs; must divide epochs. None = only at the end.
    eval_interval: Optional[int] = 10000
    # Skip evaluations before this many eval intervals have passed.
    min_eval_interval: int = 0
    # Stop after this many optimizer steps (None = the full epochs); for smoke tests and benchmarks.
    max_steps: Optional[int] = None
    # Wall-clock budget of one launch in minutes (None = none): training stops early, keeping time for the
    # final evaluation and checkpoint, which still run (Kaggle runs, preemptible pods).
    max_train_minutes: Optional[float] = None
    # Minutes kept for that final evaluation; None = predicted from the measured step time.
    final_eval_reserve_minutes: Optional[float] = None

    # --- Optimizers (AdamATan2 for weights, sign-SGD for puzzle embeddings, one shared schedule) ---
    lr: float = 1e-4
    lr_min_ratio: float = 1.0
    lr_warmup_steps: int = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    puzzle_emb_lr: float = 1e-2
    puzzle_emb_weight_decay: float = 0.1
    # Loading a checkpoint with another puzzle count: new table rows = "mean" of the old rows, or
    # "normal" draws with the old rows' per-dimension mean and std.
    puzzle_emb_reinit_strategy: str = "mean"

    # --- Weights averaging and freezing ---
    ema: bool = False
    ema_rate: float = 0.999
    # Train only the puzzle embeddings (trunk requires_grad False: no weight gradients are computed).
    freeze_weights: bool = False
    # With freeze_weights: unfreeze the trunk after this many epochs (None = frozen throughout).
    freeze_weights_epochs: Optional[int] = None

    # --- Evaluation ---
    # Batch keys / model outputs saved per rank at each evaluation (e.g. [inputs, preds, puzzle_identifiers]).
    eval_save_outputs: List[str] = field(default_factory=list)
    # ACT steps at evaluation (None = arch.halt_max_steps).
    halt_max_steps_eval: Optional[int] = None
    # Keep at most this many augmented copies per task at evaluation (None = all).
    eval_max_augmentations: Optional[int] = None

    # --- Names and folders ---
    project_name: Optional[str] = None
    run_name: Optional[str] = None
    # wandb entity (team); None = the logged-in user's default.
    entity: Optional[str] = None
    # Run folder: checkpoints, config.yaml, metrics.jsonl. None = checkpoints/<project_name>/<run_name>.
    checkpoint_path: Optional[str] = None
    # Initial weights: a checkpoint folder of this framework, or a reference .pt / state-dict file.
    load_checkpoint: Optional[str] = None
    # Restart from the newest complete checkpoint in checkpoint_path when there is one.
    resume: bool = True
    # Push every checkpoint to this Hugging Face model repo (org/name) in the background; None = off.
    hub_repo_id: Optional[str] = None
    hub_private: bool = True
    # Files left out of the uploads (globs), e.g. ["train_state.*"] (optimizer state: only for resuming).
    hub_exclude: List[str] = field(default_factory=list)

    # --- Checkpoints ---
    checkpoint_every_eval: bool = True
    # Also checkpoint every N optimizer steps (None = off).
    checkpoint_every_n_steps: Optional[int] = None
    # Keep the newest K checkpoints (0 = keep all).
    checkpoint_keep: int = 3
    # ACT carry after a resume: "reset" (every row starts a new example: small checkpoints) or
    # "restore" (save the carry with each checkpoint: the resumed run continues bit for bit).
    carry_on_resume: str = "reset"

    # --- Robustness ---
    # A non-finite loss: "stop" the run (naming the newest good checkpoint) or "skip" the step.
    nonfinite_policy: str = "stop"
    # Under nonfinite_policy=skip: this many consecutive non-finite losses stop the run (exit code 3).
    nonfinite_max_skips: int = 10

    # --- Hardware ---
    seed: int = 0
    # "auto" (cuda > mps > cpu), or a torch device string.
    device: str = "auto"
    # torch.compile the model; None = on for CUDA (env DISABLE_COMPILE turns it off, as the reference).
    compile: Optional[bool] = None
    # Compute precision: "bf16", "fp16" (float16 with a gradient scaler: T4, V100, Colab), "off" (float32);
    # true = arch.forward_dtype as configured, false = off; None = true on CUDA, off elsewhere (CPU/MPS
    # compute in float32 whatever is asked: models.layers.resolve_forward_dtype). training/precision.py.
    autocast: Optional[str] = None
    # Multi-process gradient averaging: "ddp" ("fsdp2" is reserved and refused at start-up for now).
    distributed: str = "ddp"
    # How long a rank waits for the others in a collective before the job stops (minutes; PyTorch's
    # gloo default). A rank that hangs then ends the job instead of blocking it.
    dist_timeout_minutes: float = 30.0

    # --- Logging ---
    # wandb: "auto" = online with WANDB_API_KEY (or WANDB_MODE), offline without; or online/offline/disabled.
    wandb_mode: str = "auto"
    # Print the training metrics every N steps (0 = only at evaluations).
    log_interval: int = 50

    # --- Everyday training features (training/accumulation.py, grad_monitor.py, curriculum.py, ...);
    # every default reproduces the reference ---
    # Micro-batches per optimizer step: global_batch_size stays the effective batch, each micro-batch has
    # global_batch_size / (K x ranks) rows and its own ACT carry; DDP synchronises on the last one only.
    gradient_accumulation_steps: int = 1
    # Clip the dense weights' gradient norm to this (None = off, as the reference); train/grad_norm is logged anyway.
    grad_clip_norm: Optional[float] = None
    # Warn naming a trainable parameter group whose gradient is zero or non-finite for this many
    # consecutive steps (0 = off); per-group norms are logged every log_interval steps.
    grad_monitor_patience: int = 100
    # Dense-weight optimizer: "adam_atan2" (reference) or "adamw" (same betas, weight decay, schedule;
    # eps adamw_eps). The puzzle table always trains with sign-SGD.
    optimizer: str = "adam_atan2"
    adamw_eps: float = 1e-8
    # Keep the best evaluation's checkpoint as <run>/best (outside the checkpoint_keep rotation) by this
    # logged evaluation metric (e.g. ARC/pass@2); None = off. checkpoint_best_mode: max or min.
    checkpoint_best_metric: Optional[str] = None
    checkpoint_best_mode: str = "max"
    # Where metrics go: any of console, jsonl, wandb (wandb_mode decides online/offline), tensorboard.
    loggers: List[str] = field(default_factory=lambda: ["console", "jsonl", "wandb"])
    # Depth curriculum: a list of {until_fraction or until_step, H_cycles, L_cycles}; training uses the
    # first entry whose bound is not yet reached, then the arch's own depth. Empty = off.
    arch_schedule: List[Dict[str, Any]] = field(default_factory=list)

    def validate(self) -> None:
        """Raise ValueError naming the field for values the schema's types cannot rule out."""
        choices = {"nonfinite_policy": NONFINITE_POLICIES, "distributed": DISTRIBUTED_STRATEGIES,
                   "wandb_mode": WANDB_MODES, "carry_on_resume": CARRY_POLICIES,
                   "puzzle_emb_reinit_strategy": REINIT_STRATEGIES, "optimizer": OPTIMIZERS,
                   "checkpoint_best_mode": BEST_MODES}
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise ValueError(f"{key}={getattr(self, key)!r}; valid: {', '.join(valid)}")
        if not self.data_paths:
            raise ValueError("data_paths is empty")
        if self.global_batch_size < 1 or self.epochs < 1:
            raise ValueError("global_batch_size and epochs must be >= 1")
        if self.eval_global_batch_size is not None and self.eval_global_batch_size < 1:
            raise ValueError(f"eval_global_batch_size must be >= 1, got {self.eval_global_batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for key in ("puzzle_emb_lr", "weight_decay", "puzzle_emb_weight_decay", "lr_min_ratio", "lr_warmup_steps"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ValueError(f"{key} must be in [0, 1), got {getattr(self, key)}")
        if not 0.0 <= self.ema_rate <= 1.0:
            raise ValueError(f"ema_rate must be in [0, 1], got {self.ema_rate}")
        if self.distributed == "fsdp2":
            raise ValueError("distributed=fsdp2 is not implemented yet; use distributed=ddp")
        if self.freeze_weights and self.arch.puzzle_emb_ndim == 0:
            raise ValueError("freeze_weights=True but the model has no puzzle embedding (arch.puzzle_emb_ndim=0)")
        if self.eval_interval is not None and (self.eval_interval < 1 or self.epochs % self.eval_interval):
            raise ValueError(f"eval_interval={self.eval_interval} must divide epochs={self.epochs}")
        for key in ("max_train_minutes", "final_eval_reserve_minutes"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.checkpoint_keep < 0:
            raise ValueError("checkpoint_keep must be >= 0")
        self._validate_training_features()
        if self.nonfinite_max_skips < 1:
            raise ValueError(f"nonfinite_max_skips must be >= 1, got {self.nonfinite_max_skips}")
        if self.dist_timeout_minutes <= 0:
            raise ValueError(f"dist_timeout_minutes must be > 0, got {self.dist_timeout_minutes}")
        self.arch.validate()

    def _validate_training_features(self) -> None:
        from training.precision import parse_autocast  # the one place autocast spellings are known

        parse_autocast(self.autocast)
        k = self.gradient_accumulation_steps
        if k < 1 or self.global_batch_size % k:
            raise ValueError(f"gradient_accumulation_steps={k} must be >= 1 and divide global_batch_size="
                             f"{self.global_batch_size}")
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            raise ValueError(f"grad_clip_norm must be > 0 (or null), got {self.grad_clip_norm}")
        if self.grad_monitor_patience < 0:
            raise ValueError(f"grad_monitor_patience must be >= 0, got {self.grad_monitor_patience}")
        unknown = [x for x in self.loggers if x not in LOGGERS]
        if unknown:
            raise ValueError(f"loggers: unknown {unknown}; valid: {', '.join(LOGGERS)}")
        from training.curriculum import parse_schedule

        parse_schedule(self.arch_schedule)


def register_configs() -> None:
    """Put the schema into Hydra's ConfigStore (idempotent). Called by pretrain.py and the tests."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="pretrain_schema", node=PretrainConfig)


def to_pretrain_config(cfg: Any) -> PretrainConfig:
    """A composed DictConfig -> PretrainConfig (resolving interpolations), validated.

    Raises UserError (one line naming the key) for a key the schema lacks (``+lrr=1e-3``, which
    Hydra appends and the dataclass would silently drop) or a value that cannot be right.
    """
    from omegaconf import OmegaConf

    unknown = unknown_key_message(OmegaConf.to_container(cfg, resolve=False), PretrainConfig)
    if unknown:
        raise UserError(unknown)
    try:
        obj = OmegaConf.to_object(cfg)
        if isinstance(obj, dict):  # composed without the schema (e.g. a bare YAML file): type it now
            obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PretrainConfig), cfg))
    except OmegaConfBaseException as exc:  # a wrong type or a missing value, named by OmegaConf
        raise UserError(f"config: {str(exc).splitlines()[0]} (key {getattr(exc, 'full_key', '?')})") from None
    assert isinstance(obj, PretrainConfig)
    if obj.data_path is not None:  # HRM's command line: one folder
        obj.data_paths, obj.data_path = [obj.data_path], None
    try:
        obj.validate()
    except ValueError as exc:
        raise UserError(f"config: {exc}") from None
    return obj


def check_world_size(cfg: PretrainConfig, world_size: int) -> None:
    """Batch sizes must split evenly over the ranks (checked before any process group or data)."""
    for key in ("global_batch_size", "eval_global_batch_size"):
        value = getattr(cfg, key)
        if value is not None and value % world_size:
            raise UserError(f"config: {key}={value} is not divisible by the {world_size} ranks (world size)")
