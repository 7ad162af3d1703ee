"""Checkpoints: exact round trip of weights and nested state, atomic folders, pruning."""

import math

import torch

from magvit2.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from magvit2.training.ema import EMA
from magvit2.training.schedule import warmup_cosine


def _optimizer_state():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def test_round_trip_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model, opt = _optimizer_state()
    state = {
        "optimizer": opt.state_dict(),
        "rng": torch.get_rng_state(),
        "data": {"position": 17},
        "pair": (1, "a"),
    }
    save_checkpoint(tmp_path, 5, {"model": model.state_dict()}, state)
    step, weights, loaded = load_checkpoint(latest_checkpoint(tmp_path))
    assert step == 5
    for k, v in model.state_dict().items():
        assert torch.equal(weights["model"][k], v)
    assert torch.equal(loaded["rng"], state["rng"]) and loaded["data"] == {"position": 17}
    assert loaded["pair"] == (1, "a")
    # the restored optimiser continues exactly like the original
    model2 = torch.nn.Linear(3, 2)
    model2.load_state_dict(weights["model"])
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3)
    opt2.load_state_dict(loaded["optimizer"])
    x = torch.randn(4, 3)
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters(), strict=False))


def test_keep_last_and_stale_tmp_ignored(tmp_path):
    w = {"model": {"w": torch.zeros(2)}}
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, w, {"s": step}, keep_last=2)
    (tmp_path / "step-00000009.tmp-123").mkdir()  # a save that was killed half-way
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]
    assert latest_checkpoint(tmp_path).name == "step-00000004"


def test_ema_update_matches_formula():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.9)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for k, v in model.state_dict().items():
        assert torch.allclose(ema.state_dict()[k], 0.9 * before[k] + 0.1 * v)


def test_warmup_cosine_values():
    assert warmup_cosine(0, 10, 110) == 0.1
    assert warmup_cosine(9, 10, 110) == 1.0
    assert math.isclose(warmup_cosine(60, 10, 110), 0.5)
    assert math.isclose(warmup_cosine(110, 10, 110, min_ratio=0.1), 0.1)
    assert math.isclose(warmup_cosine(500, 10, 110, min_ratio=0.1), 0.1)
