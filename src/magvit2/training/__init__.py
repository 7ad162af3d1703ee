"""magvit2.training: the tokenizer trainer, its typed config, checkpoints, EMA, schedule, distribution."""

from magvit2.config_io import resolve_path
from magvit2.training.config import (
    ModelSection,
    OptimSection,
    TrainConfig,
    ValidationSection,
    config_to_yaml,
    load_train_config,
)
from magvit2.training.trainer import Trainer, train

__all__ = [
    "ModelSection",
    "OptimSection",
    "TrainConfig",
    "Trainer",
    "ValidationSection",
    "config_to_yaml",
    "load_train_config",
    "resolve_path",
    "train",
]
