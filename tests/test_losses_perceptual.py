"""LPIPS / VGG16 perceptual loss: weight formats, values against a plain re-computation, errors.

The ``lpips`` pip package needs torchvision (not a dependency), so the reference here is an independent
functional re-computation of LPIPS v0.1, and weights are random (same architecture, no downloads).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from magvit2.losses import LPIPS, PerceptualLoss, VGG16Features

# torchvision vgg16.features indices of the 13 convolutions and the layers after which LPIPS taps.
CONV_IDS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
POOL_AFTER = {2, 7, 14, 21}  # a 2x2 max pool follows these convs (after their ReLU)
TAP_AFTER = {2, 7, 14, 21, 28}  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
# lpips package slices of features[0:30]
SLICES = [(1, 0, 4), (2, 4, 9), (3, 9, 16), (4, 16, 23), (5, 23, 30)]


def random_weights(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random VGG16 trunk in torchvision naming (+ a classifier) and random positive LPIPS heads."""
    g = torch.Generator().manual_seed(seed)
    trunk: dict[str, torch.Tensor] = {}
    in_ch = 3
    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    for idx, out_ch in zip(CONV_IDS, widths, strict=True):
        fan_in = in_ch * 9
        trunk[f"features.{idx}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=g) * (2 / fan_in) ** 0.5
        trunk[f"features.{idx}.bias"] = torch.randn(out_ch, generator=g) * 0.05
        in_ch = out_ch
    trunk["classifier.0.weight"] = torch.randn(8, 4, generator=g)  # ignored on load
    trunk["classifier.6.bias"] = torch.randn(3, generator=g)
    lins = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
        for i, c in enumerate([64, 128, 256, 512, 512])
    }
    return trunk, lins


def to_lpips_package_format(trunk: dict, lins: dict) -> dict[str, torch.Tensor]:
    """What ``lpips.LPIPS(net='vgg').state_dict()`` holds for these weights."""
    out = {
        "scaling_layer.shift": torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1),
        "scaling_layer.scale": torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1),
    }
    for s, lo, hi in SLICES:
        for idx in range(lo, hi):
            for p in ("weight", "bias"):
                if f"features.{idx}.{p}" in trunk:
                    out[f"net.slice{s}.{idx}.{p}"] = trunk[f"features.{idx}.{p}"]
    for key, value in lins.items():
        out[key] = value
        i = key[3]
        out[f"lins.{i}.model.1.weight"] = value
    return out


def reference_lpips(x: torch.Tensor, y: torch.Tensor, trunk: dict, lins: dict | None) -> torch.Tensor:
    """LPIPS v0.1 written out with functional calls: (N,3,H,W) in [-1,1] -> (N,)."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(img):
        h = (img - shift) / scale
        feats = []
        for idx in CONV_IDS:
            h = F.relu(F.conv2d(h, trunk[f"features.{idx}.weight"], trunk[f"features.{idx}.bias"], padding=1))
            if idx in TAP_AFTER:
                feats.append(h)
            if idx in POOL_AFTER:
                h = F.max_pool2d(h, 2, 2)
        return feats

    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for layer, (fx, fy) in enumerate(zip(taps(x), taps(y), strict=True)):
        fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        d = (fx - fy) ** 2
        w = lins[f"lin{layer}.model.1.weight"] if lins else torch.ones(1, d.shape[1], 1, 1)
        total += F.conv2d(d, w).mean(dim=(1, 2, 3)).double()
    return total.float()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small convolutions run far faster on one thread on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def weights():
    return random_weights()


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(2, 3, 32, 32, generator=g)).clamp(-1, 1)
    return x, y


def test_vgg16_features_take_torchvision_keys_directly(weights):
    trunk, _ = weights
    vgg = VGG16Features()
    features_only = {k: v for k, v in trunk.items() if k.startswith("features.")}
    assert set(vgg.state_dict()) == set(features_only)
    vgg.load_state_dict(features_only)  # strict
    outs = vgg(torch.zeros(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [64, 128, 256, 512, 512]
    assert [o.shape[-1] for o in outs] == [32, 16, 8, 4, 2]


def test_formats_load_to_identical_outputs(tmp_path, weights, images):
    trunk, lins = weights
    x, y = images
    torch.save(trunk, tmp_path / "vgg16_tv.pth")
    torch.save(lins, tmp_path / "vgg.pth")  # richzhang's heads-only file
    torch.save(to_lpips_package_format(trunk, lins), tmp_path / "lpips_full.pth")
    full = to_lpips_package_format(trunk, lins)
    save_file({k: v.clone() for k, v in full.items()}, str(tmp_path / "lpips_full.safetensors"))
    save_file({k: v.contiguous() for k, v in trunk.items()}, str(tmp_path / "vgg16_tv.safetensors"))

    a = LPIPS.from_file(tmp_path / "vgg16_tv.pth", lin_path=tmp_path / "vgg.pth")
    b = LPIPS.from_file(tmp_path / "lpips_full.pth")
    c = LPIPS.from_file(tmp_path / "lpips_full.safetensors")
    d = LPIPS.from_file(tmp_path / "vgg16_tv.safetensors", lin_path=tmp_path / "vgg.pth")
    torch.save(a.state_dict(), tmp_path / "ours.pth")
    e = LPIPS.from_file(tmp_path / "ours.pth")
    with torch.no_grad():
        outs = [m(x, y) for m in (a, b, c, d, e)]
    for out in outs[1:]:
        assert torch.equal(out, outs[0])
    expected = reference_lpips(x, y, trunk, lins)
    torch.testing.assert_close(outs[0], expected, rtol=1e-4, atol=1e-6)
    assert (outs[0] > 0).all()


def test_value_against_plain_recomputation_tiny_input(tmp_path, weights):
    trunk, lins = weights
    torch.save(to_lpips_package_format(trunk, lins), tmp_path / "full.pth")
    model = LPIPS.from_file(tmp_path / "full.pth")
    g = torch.Generator().manual_seed(5)
    x = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    y = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    with torch.no_grad():
        got = model(x, y)
    torch.testing.assert_close(got, reference_lpips(x, y, trunk, lins), rtol=1e-4, atol=1e-6)
    # the distance of an image to itself is exactly zero
    assert torch.equal(model(x, x), torch.zeros(3))


def test_trunk_without_heads_is_baseline_lpips(tmp_path, weights, images):
    trunk, _ = weights
    x, y = images
    torch.save(trunk, tmp_path / "tv.pth")
    model = LPIPS.from_file(tmp_path / "tv.pth")
    for head in model.heads():
        w = head.model[1].weight
        assert torch.equal(w, torch.ones_like(w))
    with torch.no_grad():
        torch.testing.assert_close(model(x, y), reference_lpips(x, y, trunk, None), rtol=1e-4, atol=1e-6)


def test_frozen_eval_and_gradient_reaches_input(tmp_path, weights, images):
    trunk, lins = weights
    torch.save(to_lpips_package_format(trunk, lins), tmp_path / "full.pth")
    loss = PerceptualLoss(tmp_path / "full.pth")
    loss.train()
    assert not loss.lpips.training
    assert all(not p.requires_grad for p in loss.parameters())
    x, y = images
    y = y.clone().requires_grad_(True)
    loss(x, y).backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())
    # checkpoints of the loss do not carry the frozen network, and still load strictly
    assert not any(k.startswith("lpips.") for k in loss.state_dict())
    loss.load_state_dict({}, strict=True)


def test_errors_name_the_file_and_keys(tmp_path, weights):
    trunk, lins = weights
    torch.save(lins, tmp_path / "vgg.pth")
    with pytest.raises(ValueError, match=r"vgg\.pth.*only LPIPS linear heads"):
        LPIPS.from_file(tmp_path / "vgg.pth")
    partial = {k: v for k, v in trunk.items() if k != "features.28.bias"}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"partial\.pth.*missing \['features\.28\.bias'\]"):
        LPIPS.from_file(tmp_path / "partial.pth")
    torch.save({**trunk, "decoder.conv.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"extra\.pth.*unexpected keys \['decoder\.conv\.weight'\]"):
        LPIPS.from_file(tmp_path / "extra.pth")
    bad = dict(trunk)
    bad["features.0.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(bad, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"shape\.pth.*features\.0\.weight.*\(64, 3, 5, 5\)"):
        LPIPS.from_file(tmp_path / "shape.pth")
    torch.save(trunk, tmp_path / "vgg16.pth")
    torch.save({k: v for k, v in lins.items() if not k.startswith("lin4")}, tmp_path / "heads4.pth")
    with pytest.raises(ValueError, match=r"heads4\.pth.*missing \['lin4\.model\.1\.weight'\]"):
        LPIPS.from_file(tmp_path / "vgg16.pth", lin_path=tmp_path / "heads4.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"could not read perceptual weights: .*junk\.pth: not a checkpoint"):
        LPIPS.from_file(tmp_path / "junk.pth")
    torch.save({"a": 1}, tmp_path / "notensors.pth")
    with pytest.raises(ValueError, match=r"notensors\.pth: expected a state dict of str -> tensor"):
        LPIPS.from_file(tmp_path / "notensors.pth")
    with pytest.raises(ValueError, match=r"missing\.pth.*does not exist"):
        PerceptualLoss(tmp_path / "missing.pth")


def test_disabled_without_path_costs_nothing():
    loss = PerceptualLoss(None)
    assert not loss.enabled and sum(1 for _ in loss.parameters()) == 0
    x = torch.randn(2, 3, 4, 8, 8)
    out = loss(x, x + 1)
    assert out.shape == () and out.item() == 0.0


def test_video_is_per_frame_mean_and_frame_subset(tmp_path, weights):
    trunk, lins = weights
    torch.save(to_lpips_package_format(trunk, lins), tmp_path / "full.pth")
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 3, 16, 16, generator=g) * 2 - 1
    y = torch.rand(2, 3, 3, 16, 16, generator=g) * 2 - 1
    full = PerceptualLoss(tmp_path / "full.pth")
    with torch.no_grad():
        per_frame = torch.stack([reference_lpips(x[:, :, t], y[:, :, t], trunk, lins) for t in range(3)], 1)
        torch.testing.assert_close(full(x, y), per_frame.mean(), rtol=1e-4, atol=1e-6)
        one = PerceptualLoss(tmp_path / "full.pth", frames_per_video=1)
        pairs = set()
        for seed in range(12):
            got = one(x, y, generator=torch.Generator().manual_seed(seed))
            # each clip contributes one of its own frames: the result is the mean over one such choice
            hits = [
                (i, j)
                for i in range(3)
                for j in range(3)
                if torch.isclose((per_frame[0, i] + per_frame[1, j]) / 2, got, rtol=1e-4, atol=1e-6)
            ]
            assert len(hits) == 1
            pairs.add(hits[0])
    assert len({i for i, _ in pairs}) >= 2 and len({j for _, j in pairs}) >= 2  # drawn at random
    assert any(i != j for i, j in pairs)  # each clip draws its own frame
