"""Every script in benchmarks/ runs in its ``--smoke`` mode (tiny sizes, random weights), so none of
them rots; ``previous_model.py`` loads a feedback model folder and runs its loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "previous_model")
#: scripts that write files get a temporary --out-dir
WRITES = {"codecs", "figures", "refine", "vocabulary"}


def test_every_benchmark_has_a_smoke_mode():
    for name in BENCHMARKS:
        assert "--smoke" in (ROOT / "benchmarks" / f"{name}.py").read_text(), name


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_smoke(name, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--smoke"]
    cmd += ["--out-dir", str(tmp_path)] if name in WRITES else []
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip(), r.stderr[-3000:]


def test_previous_model_round_trip_and_feedback_loop(tmp_path):
    """A random two-stage feedback model written with 8-bit feedback weights loads back (dequantized
    within half a step), its loop changes the encoder's tokens, encodes the same whole or chunked, and
    the package refuses its config.json in one line naming the loader."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from previous_model import PreviousModel

    from magvit2.models import TokenizerConfig, VideoTokenizer

    torch.manual_seed(0)
    small = {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "norm_groups": 4, "temporal_downsample": [True]}
    config = TokenizerConfig.from_dict({"quantizer": {"kind": "lfq", "bits": 6}, **small})
    model = PreviousModel(config, stages=2).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    folder = model.save_folder(tmp_path / "previous")
    loaded = PreviousModel.from_folder(folder)
    w, w2 = model.more_feedback[0].conv_in.weight, loaded.more_feedback[0].conv_in.weight
    step = w.flatten(1).abs().amax(1).view(-1, 1, 1, 1, 1) / 127
    assert not torch.equal(w, w2) and ((w - w2).abs() <= step / 2 + 1e-7).all()
    assert torch.equal(model.encoder.conv_in.weight, loaded.encoder.conv_in.weight)
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    ids = loaded.encode(video)
    plain = loaded.quantizer.codes_to_indices(loaded.encoder(video))
    assert ids.shape == plain.shape == (1, 3, 8, 8) and not torch.equal(ids, plain)
    assert torch.equal(loaded.encode(video, max_chunk_frames=3), ids)
    assert loaded.decode(ids).shape == video.shape
    with pytest.raises(ValueError, match=r"config.json: .*feedback.*removed.*benchmarks/previous_model.py"):
        VideoTokenizer.from_pretrained(folder)
