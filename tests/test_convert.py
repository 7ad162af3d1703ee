"""Conversion of Open-MAGVIT2 checkpoints: exactness against the reference fixtures, key accounting at
full size (meta tensors), EMA selection, safe loading, errors, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from magvit2.cli.main import main
from magvit2.convert import (
    ConversionError,
    convert_open_magvit2,
    convert_state_dict,
    ema_name,
    load_open_magvit2,
    open_magvit2_config,
    read_state_dict,
    reverse_bits,
)
from magvit2.models import VideoTokenizer, get_preset
from magvit2.quantizers.lfq import LFQ

TOL = 1e-4
EXECUTED: list[str] = []


def _mark_executed(tag: str) -> str:
    """Would record that unpickling ran checkpoint code (it must not)."""
    EXECUTED.append(tag)
    return tag


class _Hyper:
    """A metadata object whose unpickling would call ``_mark_executed``."""

    def __reduce__(self):
        return (_mark_executed, ("hyper_parameters",))


@pytest.fixture(scope="module")
def fixtures(shared_dir: Path) -> Path:
    path = shared_dir / "fixtures" / "open_magvit2"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


def _ids(latent: torch.Tensor) -> torch.Tensor:
    """Open-MAGVIT2's token id: sum over channels of [latent > 0] * 2^i."""
    shape = (1, latent.shape[1]) + (1,) * (latent.ndim - 2)
    return ((latent > 0).long() * (2 ** torch.arange(latent.shape[1])).view(shape)).sum(1)


def _meta_state(keys: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in keys.items()}


def _to_open_magvit2_image_keys(config) -> dict[str, list[int]]:
    """Open-MAGVIT2 2D key names and shapes of an image model, derived from our (meta) model."""
    with torch.device("meta"):
        model = VideoTokenizer(config)
    keys = {}
    for k, v in model.state_dict().items():
        shape = list(v.shape)
        if ".conv_1." in k:
            k = k.replace(".conv_1.", ".")
            if len(shape) == 5:
                shape = shape[:2] + shape[3:]
        keys[k] = shape
    return keys


# ------------------------------------------------------------------------------------------ exactness
def test_video_time_pooled_reproduces_reference(fixtures: Path, tmp_path: Path) -> None:
    io = load_file(str(fixtures / "video_io.safetensors"))
    report = convert_open_magvit2(fixtures / "video_state_dict.safetensors", tmp_path, time_pooled_norm=True)
    assert report.kind == "video" and report.weights == "raw" and report.skipped == {}
    assert report.consumed == 81 and report.parameters == report.source_parameters == 2_927_157
    model = VideoTokenizer.from_pretrained(tmp_path)
    assert model.config.time_pooled_norm and model.config.quantizer.options["bit_order"] == "lsb"
    assert model.config.ch == 32 and model.config.ch_mult == (1, 2, 2)
    latent = model.encode_latent(io["input"])
    assert (latent - io["latent"]).abs().max() <= TOL
    assert (model.decode_codes(io["codes"]) - io["output"]).abs().max() <= TOL
    ids = model.encode(io["input"])
    assert torch.equal(ids, _ids(io["latent"]))
    assert (model.decode(ids) - io["output"]).abs().max() <= TOL
    with pytest.raises(ValueError, match="max_chunk_frames"):
        model.encode(io["input"], max_chunk_frames=5)


@pytest.mark.parametrize("pooled", [False, True])
def test_image_inflated_reproduces_reference(fixtures: Path, pooled: bool) -> None:
    io = load_file(str(fixtures / "image_io.safetensors"))
    model, report = load_open_magvit2(fixtures / "image_state_dict.safetensors", time_pooled_norm=pooled)
    assert report.kind == "image" and report.consumed == 81 and report.source_parameters == 838_325
    assert report.inflated == 26  # every 2D conv kernel (3x3 and 1x1)
    assert model.config.temporal_downsample == (False, False) and model.temporal_factor == 1
    k = model.encoder.conv_in.conv_1.weight
    assert k.shape[2] == 3 and k[:, :, :2].abs().max() == 0  # kernel only in the last time slot
    latent = model.encode_latent(io["input"])  # (2, 3, 32, 32) image -> (2, 18, 1, 8, 8)
    assert (latent[:, :, 0] - io["latent"]).abs().max() <= TOL
    out = model.decode_codes(io["codes"])
    assert out.shape == io["output"].shape and (out - io["output"]).abs().max() <= TOL
    ids = model.encode(io["input"])[:, 0]
    assert torch.equal(ids, _ids(io["latent"]))
    # an image model applied to a video tokenizes each frame on its own (temporal factor 1)
    clip = torch.stack([io["input"][1], io["input"][0]], dim=1)[None]  # (1, 3, 2, 32, 32)
    if not pooled:
        frames = model.encode_latent(clip)[0].transpose(0, 1)
        assert (frames - io["latent"].flip(0)).abs().max() <= TOL


def test_causal_default_loads_video_weights(fixtures: Path) -> None:
    """Without the switch: same weights, identical on one frame, different on the 9-frame clip."""
    io = load_file(str(fixtures / "video_io.safetensors"))
    path = fixtures / "video_state_dict.safetensors"
    causal, report = load_open_magvit2(path)
    pooled, _ = load_open_magvit2(path, time_pooled_norm=True)
    assert not causal.config.time_pooled_norm and report.config.to_dict() == causal.config.to_dict()
    one = io["input"][:, :, :1]
    assert (causal.encode_latent(one) - pooled.encode_latent(one)).abs().max() <= 1e-5
    codes = io["codes"][:, :, :1]
    assert (causal.decode_codes(codes) - pooled.decode_codes(codes)).abs().max() <= 1e-5
    # on the clip the per-frame statistics give another function (documented in the README)
    assert (causal.encode_latent(io["input"]) - io["latent"]).abs().max() > 0.1
    assert (causal.decode_codes(io["codes"]) - io["output"]).abs().max() > 0.1
    # ... which is strictly causal and chunkable: latent frame 0 ignores the later frames
    full = causal.encode_latent(io["input"])
    assert (causal.encode_latent(io["input"], max_chunk_frames=3) - full).abs().max() <= 1e-5
    assert (full[:, :, :1] - causal.encode_latent(one)).abs().max() <= 1e-5
    assert (pooled.encode_latent(io["input"])[:, :, :1] - pooled.encode_latent(one)).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------ full size
def test_full_video_key_list_consumed(fixtures: Path) -> None:
    keys = json.loads((fixtures / "video_128_L_keys.json").read_text())
    for pooled in (False, True):
        tensors, report = convert_state_dict(_meta_state(keys), time_pooled_norm=pooled)
        skipped = sum(len(v) for v in report.skipped.values())
        assert report.consumed + skipped == len(keys)
        assert set(report.skipped) == {"discriminator"}
        assert all(k.startswith("loss.discriminator.") for k in report.skipped["discriminator"])
        assert report.name == "open-magvit2-video-128" and report.parameters == 370_547_349
        expected = get_preset("open-magvit2-video-128")
        expected.time_pooled_norm = pooled
        assert report.config.to_dict() == expected.to_dict()
        assert report.config.to_dict() == open_magvit2_config("open-magvit2-video-128", pooled).to_dict()
        assert set(tensors) == {k for k in keys if not k.startswith("loss.")}


def test_full_image_released_checkpoint_consumed(fixtures: Path) -> None:
    keys = json.loads((fixtures / "image_128_L_released_ckpt_keys.json").read_text())
    raw = json.loads((fixtures / "image_128_L_keys.json").read_text())
    state = _meta_state(keys)
    tensors, report = convert_state_dict(state)  # default: EMA when present
    assert report.weights == "ema" and report.name == "open-magvit2-image-128"
    assert report.consumed == len(raw) == 283 and report.source_parameters == 112_021_653
    assert report.skipped == {
        "EMA counters": ["model_ema.decay", "model_ema.num_updates"],
        "raw weights (EMA chosen)": list(raw),
    }
    assert report.config.to_dict() == open_magvit2_config("open-magvit2-image-128").to_dict()
    _, report = convert_state_dict(state, ema=False)
    assert report.weights == "raw" and report.consumed == 283
    assert sorted(report.skipped["EMA copy (raw weights chosen)"]) == sorted(ema_name(k) for k in raw)
    # a checkpoint holding only the EMA copy: names recovered from the dot-less EMA names
    ema_only = {k: v for k, v in state.items() if k.startswith("model_ema.")}
    tensors_ema, report = convert_state_dict(ema_only)
    assert report.weights == "ema" and report.consumed == 283 and set(tensors_ema) == set(tensors)


def test_image_256_inferred(fixtures: Path) -> None:
    raw = json.loads((fixtures / "image_128_L_keys.json").read_text())
    # our back-mapping to Open-MAGVIT2's 2D names reproduces the published 128 px key list exactly
    assert _to_open_magvit2_image_keys(open_magvit2_config("open-magvit2-image-128")) == raw
    keys = _to_open_magvit2_image_keys(open_magvit2_config("open-magvit2-image-256"))
    _, report = convert_state_dict(_meta_state(keys))
    assert report.name == "open-magvit2-image-256" and report.config.ch_mult == (1, 1, 2, 2, 4)
    assert report.config.spatial_factor == 16 and report.config.temporal_factor == 1
    assert report.source_parameters == 115_127_829  # published parameter count of the 256 px model


# ------------------------------------------------------------------------------------------ ema, files
def _lightning_checkpoint(fixtures: Path, path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    raw = load_file(str(fixtures / "video_state_dict.safetensors"))
    state = {prefix + k: v for k, v in raw.items()}
    state.update({prefix + ema_name(k): v * 0.5 + 0.25 for k, v in raw.items()})
    state[prefix + "model_ema.decay"] = torch.tensor(0.999)
    state[prefix + "model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    state[prefix + "loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)
    state[prefix + "loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(4, 3, 3, 3)
    torch.save({"state_dict": state, "hyper_parameters": _Hyper(), "epoch": 3}, path)
    return raw


def test_lightning_checkpoint_ema_and_safe_loading(fixtures: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "last.ckpt"
    raw = _lightning_checkpoint(fixtures, ckpt, prefix="module.")
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(ckpt, weights_only=True)  # plain weights-only loading refuses the metadata
    EXECUTED.clear()
    state, stubbed = read_state_dict(ckpt)
    assert not EXECUTED and len(stubbed) == 1 and stubbed[0].endswith("_mark_executed")
    key = "encoder.conv_in.conv_1.weight"
    model, report = load_open_magvit2(ckpt)  # default: EMA
    assert report.weights == "ema" and report.stubbed_globals == stubbed
    assert torch.equal(model.encoder.conv_in.conv_1.weight, raw[key] * 0.5 + 0.25)
    assert report.skipped["discriminator"] == ["loss.discriminator.main.0.weight"]  # prefix removed
    assert report.skipped["LPIPS"] == ["loss.perceptual_loss.net.slice1.0.weight"]
    assert len(report.skipped["EMA counters"]) == 2 and len(report.skipped["raw weights (EMA chosen)"]) == 81
    model, report = load_open_magvit2(ckpt, ema=False)
    assert report.weights == "raw" and torch.equal(model.encoder.conv_in.conv_1.weight, raw[key])
    assert not EXECUTED


def test_errors_name_the_offending_key(fixtures: Path, tmp_path: Path) -> None:
    raw = load_file(str(fixtures / "video_state_dict.safetensors"))
    bad = dict(raw)
    bad["decoder.mid_block.0.norm1.weight"] = torch.ones(65)
    with pytest.raises(ConversionError, match=re.escape("'decoder.mid_block.0.norm1.weight' has shape [65]")):
        convert_state_dict(bad)
    with pytest.raises(ConversionError, match=re.escape("unknown key 'encoder.extra.weight'")):
        convert_state_dict({**raw, "encoder.extra.weight": torch.ones(1)})
    with pytest.raises(ConversionError, match=re.escape("unknown key 'quantize.embedding.weight'")):
        convert_state_dict({**raw, "quantize.embedding.weight": torch.ones(4, 18)})
    missing = {k: v for k, v in raw.items() if k != "decoder.adaptive.1.beta.bias"}
    with pytest.raises(ConversionError, match=re.escape("'decoder.adaptive.1.beta.bias'")):
        convert_state_dict(missing)
    with pytest.raises(ConversionError, match=re.escape("unknown key 'first_stage.conv.weight'")):
        convert_state_dict({**raw, "first_stage.conv.weight": torch.ones(3, 3, 3, 3)})
    with pytest.raises(ConversionError, match="found neither"):  # no encoder.conv_in: unknown layout
        convert_state_dict({"encoder.down.0.block.0.norm1.weight": torch.ones(32)})
    with pytest.raises(ConversionError, match="no model_ema"):
        convert_state_dict(raw, ema=True)
    no_mid = {k: v for k, v in raw.items() if not k.startswith("decoder.mid_block.0.")}
    with pytest.raises(ConversionError, match="encoder has 1 mid blocks, decoder 0"):
        convert_state_dict(no_mid)
    up = "decoder.up.1.upsample.conv1.conv_1.weight"
    wrong_time = {**raw, up: torch.ones(raw[up].shape[0] // 2, *raw[up].shape[1:])}
    with pytest.raises(
        ConversionError, match=re.escape(f"'{up}' has {raw[up].shape[0] // 2} output channels")
    ):
        convert_state_dict(wrong_time)
    last = "encoder.down.0.block.0.conv2.conv_1.weight"
    odd = {**raw, last: torch.ones(raw[last].shape[0] + 1, *raw[last].shape[1:])}
    with pytest.raises(ConversionError, match="not a multiple of ch"):
        convert_state_dict(odd)
    ema = {ema_name(k): v for k, v in raw.items()}
    ema["model_ema.encoderconv_inconv_1weightx"] = torch.ones(1)
    with pytest.raises(ConversionError, match=re.escape("'model_ema.encoderconv_inconv_1weightx'")):
        convert_state_dict(ema)
    path = tmp_path / "bad.safetensors"  # read from a file: the message names it
    save_file(bad, str(path))
    with pytest.raises(ConversionError, match=re.escape(f"{path}: 'decoder.mid_block.0.norm1.weight' has")):
        load_open_magvit2(path)


def test_cli_convert(fixtures: Path, tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "video.ckpt"
    _lightning_checkpoint(fixtures, ckpt)
    out = tmp_path / "out"
    assert main(["convert", "open-magvit2", str(ckpt), str(out), "--no-ema", "--time-pooled-norm"]) == 0
    printed = capsys.readouterr().out
    assert "raw weights" in printed and "skipped (discriminator): 1 keys" in printed
    report = json.loads((out / "conversion.json").read_text())
    assert report["weights"] == "raw" and report["config"]["time_pooled_norm"] is True
    io = load_file(str(fixtures / "video_io.safetensors"))
    model = VideoTokenizer.from_pretrained(out)
    assert (model.encode_latent(io["input"]) - io["latent"]).abs().max() <= TOL
    assert main(["convert", "open-magvit2", str(ckpt), str(out)]) == 1  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", "open-magvit2", str(ckpt), str(out), "--overwrite", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == "ema"
    sd = tmp_path / "ema_only.safetensors"
    save_file({k: v.contiguous() for k, v in read_state_dict(ckpt)[0].items() if "model_ema" in k}, str(sd))
    assert main(["convert", "open-magvit2", str(sd), str(tmp_path / "o2"), "--no-ema"]) == 1


# ------------------------------------------------------------------------------------------ token ids
def test_reverse_bits_maps_msb_ids_to_lsb_ids() -> None:
    torch.manual_seed(0)
    assert reverse_bits(torch.tensor([1, 2**17, 3]), 18).tolist() == [2**17, 1, 2**17 + 2**16]
    codes = torch.randn(2, 18, 3, 4).sign()
    lsb, msb = LFQ(18, bit_order="lsb"), LFQ(18, bit_order="msb")
    assert torch.equal(lsb.codes_to_indices(codes), _ids(codes))
    assert torch.equal(reverse_bits(msb.codes_to_indices(codes), 18), lsb.codes_to_indices(codes))
    assert torch.equal(reverse_bits(reverse_bits(lsb.codes_to_indices(codes), 18), 18), _ids(codes))
    with pytest.raises(ValueError, match="integer"):
        reverse_bits(torch.zeros(2), 18)
    with pytest.raises(ValueError, match="2\\*\\*4"):
        reverse_bits(torch.tensor([16]), 4)


def test_first_release_ids_by_config_edit(fixtures: Path, tmp_path: Path) -> None:
    """The README's recipe: bit_order "msb" in config.json gives the June-2024 (msb-first) ids."""
    io = load_file(str(fixtures / "image_io.safetensors"))
    convert_open_magvit2(fixtures / "image_state_dict.safetensors", tmp_path)
    lsb_ids = VideoTokenizer.from_pretrained(tmp_path).encode(io["input"])
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantizer"]["options"]["bit_order"] = "msb"
    (tmp_path / "config.json").write_text(json.dumps(config))
    msb_ids = VideoTokenizer.from_pretrained(tmp_path).encode(io["input"])
    assert not torch.equal(msb_ids, lsb_ids) and torch.equal(msb_ids, reverse_bits(lsb_ids, 18))
    weights = torch.tensor([2 ** (17 - i) for i in range(18)]).view(1, 18, 1, 1)
    assert torch.equal(msb_ids[:, 0], ((io["latent"] > 0).long() * weights).sum(1))
