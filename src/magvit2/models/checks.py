"""Tokenizer configs read from files and command lines, checked field by field: every mistake is one
ValueError naming the file (or source), the field and what was expected, never a TypeError or
ZeroDivisionError from deep inside the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from magvit2.config_io import check_fields
from magvit2.models.config import TokenizerConfig, drop_removed_keys
from magvit2.quantizers.config import QuantizerConfig, build_quantizer, check_options, config_class

#: Fields that must be > 0 (a zero ``norm_groups`` would divide by zero).
POSITIVE = ("in_channels", "ch", "norm_groups", "norm_eps")
QUANTIZER_POSITIVE = ("bits", "codebook_size", "dim")


def parse_tokenizer_config(data: Any, where: str, field: str = "") -> TokenizerConfig:
    """``data`` (a mapping of :class:`TokenizerConfig` fields, ``quantizer`` a mapping too) ->
    the config, its quantizer built once to check ``options``; ``where``: the file or source and
    ``field`` the path of ``data`` inside it, for the messages."""
    if isinstance(data, dict):
        try:
            data = drop_removed_keys(data)
        except ValueError as err:
            raise ValueError(f"{where}: {field + ': ' if field else ''}{err}") from err
    fields = check_fields(TokenizerConfig, data, where, field, POSITIVE)
    at = f"{field}.quantizer" if field else "quantizer"
    if "quantizer" in fields and not isinstance(fields["quantizer"], QuantizerConfig):
        quantizer = fields["quantizer"]
        try:
            cls, quantizer = (
                config_class(quantizer) if isinstance(quantizer, dict) else (QuantizerConfig, quantizer)
            )
        except ValueError as err:
            raise ValueError(f"{where}: {at}.kind: {err}") from err
        quantizer = check_fields(cls, quantizer, where, at, QUANTIZER_POSITIVE)
        fields["quantizer"] = _quantizer(cls, quantizer, where, at)
    try:
        cfg = TokenizerConfig.from_dict(fields)
    except (ValueError, TypeError, ZeroDivisionError) as err:
        raise ValueError(f"{where}: {field + ': ' if field else ''}{' '.join(str(err).split())}") from err
    return cfg


def _quantizer(cls: type[QuantizerConfig], fields: dict[str, Any], where: str, at: str) -> QuantizerConfig:
    """A quantizer config of class ``cls`` from checked fields, its options checked and the quantizer
    built."""
    try:
        cfg = cls(**fields)
    except ValueError as err:
        raise ValueError(f"{where}: {at}: {err}") from err
    check_options(cfg.kind, cfg.options, f"{where}: {at}.options")
    try:
        build_quantizer(cfg)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{where}: {at}: {' '.join(str(err).split())}") from err
    return cfg


def read_model_config(folder: str | Path) -> TokenizerConfig:
    """The checked config of a ``save_pretrained`` folder (its ``config.json``)."""
    path = Path(folder) / "config.json"
    try:
        meta = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a mapping of TokenizerConfig fields, got {type(meta).__name__}")
    meta = {k: v for k, v in meta.items() if k not in ("format_version", "model")}
    return parse_tokenizer_config(meta, str(path))


def state_dict_mismatch(expected: dict[str, Any], state: dict[str, Any]) -> str:
    """What differs between ``state`` and ``expected`` (a model's ``state_dict()``): an empty string
    when the keys and tensor shapes are the same, otherwise the first three of each kind (for errors)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} has shape {list(v.shape)} (expected {list(expected[k].shape)})"
             for k, v in state.items() if k in expected and v.shape != expected[k].shape]  # fmt: skip
    if not (missing or unexpected or wrong):
        return ""
    return f"missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {wrong[:3]}"
