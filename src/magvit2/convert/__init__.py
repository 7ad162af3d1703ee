"""Conversion of other projects' tokenizer checkpoints into :class:`magvit2.models.VideoTokenizer`."""

from magvit2.convert.checkpoint import InertGlobal, read_state_dict
from magvit2.convert.open_magvit2 import (
    OPEN_MAGVIT2_ARCHITECTURES,
    ConversionError,
    ConversionReport,
    convert_open_magvit2,
    convert_state_dict,
    ema_name,
    infer_config,
    load_open_magvit2,
    open_magvit2_config,
    reverse_bits,
)

__all__ = [
    "OPEN_MAGVIT2_ARCHITECTURES",
    "ConversionError",
    "ConversionReport",
    "InertGlobal",
    "convert_open_magvit2",
    "convert_state_dict",
    "ema_name",
    "infer_config",
    "load_open_magvit2",
    "open_magvit2_config",
    "read_state_dict",
    "reverse_bits",
]
