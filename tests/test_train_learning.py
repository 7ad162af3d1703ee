"""A real learning test: the ``tiny`` preset trained on CPU on crops of bigbuckbunny.mp4 frames 0-99
reconstructs frames 110-131, which it never saw, clearly better than trivial baselines, without
codebook collapse.

Recipe: 200 steps of 4 random 64x64 crops (frames downscaled to 96x170, flips), L1 + LFQ losses (no
GAN), AdamW lr 1e-3 (betas 0.9, 0.99), EMA 0.95; evaluated on 64x64 centre crops of the 22 held-out
frames with the EMA weights.

How the thresholds were chosen (measured with exactly this recipe, 2 threads): the untrained model
reaches 13.01 dB on the held-out crops, predicting each crop's mean colour 14.45 dB; the trained EMA
model 16.43 dB (SSIM 0.36; the raw weights 16.66 dB), after 15.26 dB at step 50 and 15.86 dB at step
100. The floor, 15.5 dB, sits about 1 dB above the mean-colour baseline and 0.9 dB below what training
reaches. Distinct codes over the held-out crops (22 x 64 tokens): 172 after training (669 untrained);
a collapsed codebook gives a handful, and the floor is 64 (one per token position of a crop).

Step time: 0.3-0.5 s on 2 otherwise idle cores (forward + backward + AdamW of 4 x 64 x 64 images),
so 200 steps take about 1-1.5 minutes; on a loaded machine it took 2.7 s/step. The test uses the
process's threads (one in each pytest-xdist worker).
"""

from __future__ import annotations

import time

import pytest

from magvit2.data import read_video, write_png_frames
from magvit2.evaluation import psnr
from magvit2.training.config import load_train_config
from magvit2.training.trainer import Trainer

STEPS = 200
PSNR_FLOOR = 15.5  # dB; see the module docstring
CODES_FLOOR = 64


@pytest.mark.slow
def test_tiny_preset_learns_bigbuckbunny(tmp_path, clips_dir):
    frames = read_video(clips_dir / "bigbuckbunny.mp4", max_frames=132, size=(96, 170))
    write_png_frames(tmp_path / "train", frames[:100])
    write_png_frames(tmp_path / "heldout", frames[110:132])
    cfg = load_train_config(
        None,
        [
            f"output_dir={tmp_path / 'run'}",
            f"max_steps={STEPS}",
            "seed=0",
            "progress=false",
            "model.preset=tiny",
            f"data.paths=[{tmp_path / 'train'}]",
            "data.num_frames=1",
            "data.image_ratio=1.0",
            "data.resolution=64",
            "data.batch_size=4",
            "data.hflip=true",
            "data.cache_decoded=true",
            "loss.adversarial_weight=0",
            "optim.lr=1e-3",
            "optim.betas=[0.9, 0.99]",
            "optim.warmup_steps=10",
            "optim.min_lr_ratio=0.1",
            "ema_decay=0.95",
            f"checkpoint_every={STEPS}",
            f"validation.paths=[{tmp_path / 'heldout'}]",
            "validation.num_frames=1",
            "validation.resolution=64",
            "validation.short_side=96",
            "validation.every=0",
            "validation.batch_size=22",
        ],
    )
    trainer = Trainer(cfg)
    untrained = trainer.validate(trainer.eval_model())
    clips = trainer.validation_clips()
    assert clips.shape == (22, 3, 1, 64, 64)
    mean_colour = clips.mean(dim=(2, 3, 4), keepdim=True).expand_as(clips)
    baseline = float(psnr(mean_colour, clips, data_range=(-1.0, 1.0)))
    t0 = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t0
    result = trainer.last_validation
    print(f"untrained {untrained}, mean-colour {baseline:.2f} dB, trained {result}, {seconds:.1f} s")
    assert untrained["psnr"] < PSNR_FLOOR - 1.0 and baseline < PSNR_FLOOR - 0.5
    assert result["psnr"] > PSNR_FLOOR
    assert result["used_codes"] >= CODES_FLOOR
    assert result["ssim"] > untrained["ssim"] + 0.1
