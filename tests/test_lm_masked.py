"""The masked video model (:mod:`magvit2.lm.masked`, :mod:`magvit2.lm.tasks`): the cosine schedule masks
the intended share, given tokens never change, a small model overfits one clip and N-step decoding
reproduces it under every task, each task's condition reaches the CLI's outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_lm_train import config, data, one_line_error, write  # noqa: F401  (data: a fixture)

from magvit2.cli.main import main
from magvit2.lm.config import LMConfig
from magvit2.lm.masked import DecodeOptions, MaskedVideoLM, decode, mask_counts, schedule_mask
from magvit2.lm.tasks import TASKS, Box, MaskedSection, parse_region, random_tasks, task_mask
from magvit2.models import VideoTokenizer
from magvit2.tokens import load_tokens

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> MaskedVideoLM:
    torch.manual_seed(0)
    args = dict(kind="masked", vocabulary=64, height=2, width=2, max_frames=3, split_tokens=[3, 3], dim=32,
                depth=2, heads=2)  # fmt: skip
    return MaskedVideoLM(LMConfig(**(args | kw))).eval()


# ---------------------------------------------------------------------------------------------- schedule


def test_cosine_schedule_masks_the_intended_share():
    """Of n tokens to generate, ceil(cos(pi/2 r) n) are masked, r ~ U(0, 1): mean share 2/pi, median
    cos(pi/4); given tokens are never masked and every window masks at least one."""
    g = torch.Generator().manual_seed(0)
    given = torch.zeros(4000, 4, 4, 4, dtype=torch.bool)
    given[:2000, :1] = True  # half the windows: the first latent frame given (48 to generate)
    masked = schedule_mask(given, g)
    assert not (masked & given).any()
    n = (~given).flatten(1).sum(1).double()
    share = masked.flatten(1).sum(1) / n
    assert share.min() > 0 and share.max() <= 1
    assert float(share.mean()) == pytest.approx(2 / math.pi + 0.5 / 56, abs=0.015)
    assert float(share.median()) == pytest.approx(math.cos(math.pi / 4), abs=0.03)
    # decoding leaves floor(n cos(pi/2 (s+1)/N)) masked after step s, one fewer at least, 0 at the end
    counts = torch.stack(mask_counts(torch.tensor([64, 3]), 12))
    assert counts[:, 0].tolist() == [math.floor(64 * math.cos(math.pi / 2 * (s + 1) / 12)) for s in range(12)]
    assert counts[:, 1].tolist() == [2, 1] + [0] * 10


def test_task_masks_and_regions():
    p = task_mask("predict", 5, 2, 3, prompt=2)
    assert p[:2].all() and not p[2:].any()
    i = task_mask("interpolate", 5, 2, 3, prompt=1, end=2)
    assert i[0].all() and not i[1:3].any() and i[3:].all()
    box = Box(1, 1, 2, 2)
    o, n = task_mask("outpaint", 3, 4, 4, box=box), task_mask("inpaint", 3, 4, 4, box=box)
    assert int(o.sum()) == 12 and o[:, 1:3, 1:3].all() and torch.equal(n, ~o)
    assert not task_mask("class", 3, 2, 2).any()
    assert (
        task_mask("outpaint", 1, 8, 8)[0, 2:6, 2:6].all() and int(task_mask("outpaint", 1, 8, 8).sum()) == 16
    )
    assert parse_region("8,4,9,4", 32, 32, 8) == Box(1, 0, 2, 1)
    with pytest.raises(ValueError, match="none of the 3"):
        task_mask("predict", 3, 2, 2, prompt=3)
    with pytest.raises(ValueError, match="--region"):
        parse_region("0,0,40,8", 32, 32, 8)
    tasks, given = random_tasks(200, 4, 4, 4, MaskedSection(), torch.Generator().manual_seed(0))
    assert set(tasks.tolist()) == set(range(len(TASKS))) and given.shape == (200, 4, 4, 4)
    assert not given[tasks == TASKS.index("class")].any()


# ---------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("task", TASKS)
def test_given_tokens_never_change_and_decoding_takes_n_calls(task):
    model = tiny(num_classes=2)
    calls = []
    forward = model.masked_hidden
    model.masked_hidden = lambda *a: calls.append(a[0].shape[0]) or forward(*a)
    ids = torch.randint(0, 64, (3, 3, 2, 2))
    given = task_mask(task, 3, 2, 2, prompt=1, end=1, box=Box(0, 0, 1, 2))[None].expand(3, -1, -1, -1)
    options = DecodeOptions(steps=5, temperature=1.5, top_k=20, cfg=3.0)
    out = decode(model, ids, given, task, torch.tensor([0, 1, 1]), options, torch.Generator().manual_seed(1))
    assert torch.equal(out[given], ids[given]) and out.shape == ids.shape
    # one call per step (class rows and "no class" rows together); fewer when fewer tokens than steps
    assert calls == [6] * min(5, int((~given[0]).sum()))
    again = decode(
        model, ids, given, task, torch.tensor([0, 1, 1]), options, torch.Generator().manual_seed(1)
    )
    assert torch.equal(out, again)


def test_small_model_overfits_one_clip_and_n_step_decoding_reproduces_it():
    """Trained on one clip with the task mix, greedy 12-step decoding gives the clip back from any
    task's condition (from nothing at all for ``class``); the scored bits per token fall near 0."""
    model = tiny(dim=48).train()
    clip = torch.randint(0, 64, (1, 3, 2, 2), generator=torch.Generator().manual_seed(3))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    ids = clip.expand(16, -1, -1, -1)
    for _ in range(150):
        tasks, given = random_tasks(16, 3, 2, 2, MaskedSection(), g)
        masked = schedule_mask(given, g)
        loss = -(model(ids, masked, None, tasks).sum() / masked.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for task in TASKS:
        given = task_mask(task, 3, 2, 2, prompt=1, end=1, box=Box(0, 1, 2, 1))[None]
        start = torch.where(given, clip, torch.zeros_like(clip))
        out = decode(model, start, given, task, None, DecodeOptions(steps=12, temperature=0.0))
        assert torch.equal(out, clip), task
    with torch.no_grad():
        bits = -model.log_prob(clip).mean() / math.log(2)
    assert float(bits) < 0.5


# ---------------------------------------------------------------------------------------------- CLI


def test_masked_train_generate_eval(data, tmp_path, capsys):  # noqa: F811
    """``lm train`` with ``model.kind: masked``; ``lm generate --task`` keeps each task's given tokens
    (those of the encoded prompt clip) exactly and writes the AR model's outputs; ``lm eval`` reports
    the same metrics; a task without its condition is refused in one line."""
    model = {"kind": "masked", "dim": 32, "depth": 2, "heads": 2, "split_tokens": [3, 3]}
    learn = dict(max_steps=20, model=model, optim__grad_accum_steps=1, data__stages=[], data__frames=4,
                 data__batch_size=8, validation__every=10)  # fmt: skip
    cfg = write(tmp_path / "c.yaml", config(data, tmp_path / "run", **learn))
    assert main(["lm", "train", str(cfg)]) == 0
    assert "held-out bits per token" in capsys.readouterr().out
    lm = tmp_path / "run" / "final"
    assert json.loads((lm / "config.json").read_text())["model"]["kind"] == "masked"
    tok = VideoTokenizer.from_pretrained(data / "tok")
    from magvit2.data.video_io import read_video, to_tensor

    truth = tok.encode(to_tensor(read_video(data / "clip.mp4")[:13])[None])[0]  # (4, 2, 3)

    def gen(name, *extra):
        argv = ["lm", "generate", "--lm", str(lm), "-o", str(tmp_path / f"{name}.mp4"), "--frames", "13",
                "--device", "cpu", "--steps", "4", *extra]  # fmt: skip
        assert main(argv) == 0
        return load_tokens(tmp_path / f"{name}.safetensors")

    clip = ["--prompt", str(data / "clip.mp4")]
    predict = gen("p", *clip, "--prompt-frames", "5")
    assert predict.frames == 13 and torch.equal(predict.ids[:2], truth[:2])
    inter = gen("i", "--task", "interpolate", *clip)
    assert torch.equal(inter.ids[[0, 3]], truth[[0, 3]])
    out = gen("o", "--task", "outpaint", *clip, "--region", "0,4,8,4")  # pixels -> token column 1
    assert torch.equal(out.ids[:, :, 1], truth[:, :, 1])
    inp = gen("n", "--task", "inpaint", *clip, "--region", "0,4,8,4")
    assert torch.equal(inp.ids[:, :, [0, 2]], truth[:, :, [0, 2]])
    free = gen("c", "--task", "class", "--seed", "3")
    assert free.ids.shape == (4, 2, 3) and torch.equal(gen("c2", "--seed", "3").ids, free.ids)
    capsys.readouterr()
    argv = ["lm", "eval", "--lm", str(lm), str(data / "val"), "--json", "--device", "cpu", "--continuations",
            "2", "--steps", "4"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bits"]["masked_order_steps"] == 4 and report["bits"]["lm_bits_per_token"] > 0
    assert report["continuation"]["clips"] == 2 and "repeat_last_frame_psnr" in report["continuation"]
    argv = ["lm", "generate", "--lm", str(lm), "-o", str(tmp_path / "x.mp4"), "--frames", "13", "--task",
            "inpaint"]  # fmt: skip
    err = one_line_error(capsys, argv)
    assert "--prompt" in err
