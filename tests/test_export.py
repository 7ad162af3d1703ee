"""Exporting a training checkpoint as a model folder (``magvit2 convert checkpoint``), fp16 weights."""

import pytest
import torch

from magvit2 import VideoTokenizer
from magvit2.cli.main import main
from magvit2.training.checkpoint import save_checkpoint
from magvit2.training.config import config_to_yaml, load_train_config, tokenizer_config

SMALL = ["model.preset=null", "model.config={ch: 8, ch_mult: [1, 2], num_res_blocks: 1, norm_groups: 4}"]


def _run_with_checkpoints(root, steps=(10, 20)):
    """A run folder with checkpoints whose raw and EMA weights differ; returns (model, ema) of the last."""
    cfg = load_train_config(None, SMALL + [f"output_dir={root}"])
    torch.manual_seed(0)
    for step in steps:
        model = VideoTokenizer(tokenizer_config(cfg))
        ema = {
            k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
            for k, v in model.state_dict().items()
        }
        save_checkpoint(
            root / "checkpoints",
            step,
            {"model": model.state_dict(), "ema": ema},
            {"step": step},
            extra_files={"config.yaml": config_to_yaml(cfg)},
        )
    return model, ema


def _same(a: dict, b: dict, atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(
        torch.allclose(a[k].float(), b[k].float(), atol=atol, rtol=0) for k in a
    )


def test_export_takes_newest_ema_raw_and_fp16(tmp_path, capsys):
    model, ema = _run_with_checkpoints(tmp_path / "run")
    assert main(["convert", "checkpoint", str(tmp_path / "run"), str(tmp_path / "ema")]) == 0
    assert "step 20" in capsys.readouterr().out
    assert _same(VideoTokenizer.from_pretrained(tmp_path / "ema").state_dict(), ema)
    assert main(["convert", "checkpoint", str(tmp_path / "run"), str(tmp_path / "raw"), "--raw"]) == 0
    assert _same(VideoTokenizer.from_pretrained(tmp_path / "raw").state_dict(), model.state_dict())
    step10 = tmp_path / "run" / "checkpoints" / "step-00000010"
    assert main(["convert", "checkpoint", str(step10), str(tmp_path / "s10")]) == 0
    assert not _same(VideoTokenizer.from_pretrained(tmp_path / "s10").state_dict(), ema)
    # float16: half the file, weights within fp16 rounding (not equal), loaded as float32
    args = ["convert", "checkpoint", str(tmp_path / "run"), str(tmp_path / "half"), "--dtype", "float16"]
    assert main(args) == 0
    half = VideoTokenizer.from_pretrained(tmp_path / "half").state_dict()
    assert all(v.dtype == ema[k].dtype for k, v in half.items())
    assert _same(half, ema, atol=2e-3) and not _same(half, ema)
    size = lambda d: (tmp_path / d / "model.safetensors").stat().st_size
    assert size("half") < 0.55 * size("ema")


def test_export_errors(tmp_path, capsys):
    _run_with_checkpoints(tmp_path / "run")
    assert main(["convert", "checkpoint", str(tmp_path / "run"), str(tmp_path / "out")]) == 0
    assert main(["convert", "checkpoint", str(tmp_path / "run"), str(tmp_path / "out")]) == 1
    assert "--overwrite" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["convert", "checkpoint", str(tmp_path / "empty"), str(tmp_path / "x")]) == 1
    assert "expected a training checkpoint folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="floating dtype"):
        VideoTokenizer.from_pretrained(tmp_path / "out").save_pretrained(tmp_path / "y", dtype=torch.int8)
