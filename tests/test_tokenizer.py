"""VideoTokenizer: causality, image = one-frame video, chunked = whole, save/load, presets, bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from magvit2.models import (
    Decoder,
    Encoder,
    TokenizerConfig,
    VideoTokenizer,
    get_preset,
    latent_chunks,
    preset_names,
)
from magvit2.modules import CausalCache


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and immune to OpenMP contention on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_config(**kw) -> TokenizerConfig:
    """4x temporal, 4x spatial, 6-bit LFQ, 8-16 channels."""
    args = dict(
        quantizer={"kind": "lfq", "bits": 6},
        ch=8,
        ch_mult=(1, 2, 2),
        num_res_blocks=1,
        temporal_downsample=(True, True),
        norm_groups=4,
    )
    args.update(kw)
    return TokenizerConfig(**args)


def perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Make norms non-identity (so the tests exercise their affine parameters)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module", params=["group", "channel", "channel/replicate"])
def model(request) -> VideoTokenizer:
    """The small model with each normalisation, and with replicate padding: every causality, chunking and
    image test runs on each."""
    torch.manual_seed(0)
    norm, _, padding = request.param.partition("/")
    return perturb(VideoTokenizer(small_config(norm=norm, padding=padding or "zeros")))


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(2, 3, 13, 16, 16) * 2 - 1  # 1 + 4*3 frames -> 4 latent frames


def test_shapes_and_factors(model, video):
    assert model.temporal_factor == 4 and model.spatial_factor == 4
    ids = model.encode(video)
    assert ids.dtype == torch.int64 and ids.shape == (2, 4, 4, 4)
    assert int(ids.min()) >= 0 and int(ids.max()) < 2**6
    rec = model.decode(ids)
    assert rec.shape == video.shape
    codes = model.encode_codes(video)
    assert codes.shape == (2, 6, 4, 4, 4) and set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(model.decode_codes(codes), rec)
    # ids are the signs of the continuous latent
    assert torch.equal(codes, torch.where(model.encode_latent(video) > 0, 1.0, -1.0))


@pytest.mark.parametrize("j", [0, 1, 2])
def test_encoder_is_causal(model, video, j):
    changed = video.clone()
    changed[:, :, 1 + 4 * j :] = torch.rand_like(changed[:, :, 1 + 4 * j :]) * 2 - 1
    a, b = model.encode_latent(video), model.encode_latent(changed)
    assert torch.allclose(a[:, :, : j + 1], b[:, :, : j + 1], atol=1e-6)
    assert not torch.allclose(a[:, :, j + 1], b[:, :, j + 1], atol=1e-3)


def test_first_frame_changes_first_latent(model, video):
    changed = video.clone()
    changed[:, :, 0] = -changed[:, :, 0]
    a, b = model.encode_latent(video), model.encode_latent(changed)
    assert not torch.allclose(a[:, :, 0], b[:, :, 0], atol=1e-3)


def test_decoder_is_causal(model, video):
    codes = model.encode_codes(video)
    changed = codes.clone()
    changed[:, :, 2:] = -changed[:, :, 2:]
    a, b = model.decode_codes(codes), model.decode_codes(changed)
    # latent frames 0, 1 decode to frames 0..4; latent frame 2 starts at frame 5
    assert torch.allclose(a[:, :, :5], b[:, :, :5], atol=1e-6)
    assert not torch.allclose(a[:, :, 5], b[:, :, 5], atol=1e-3)


def test_image_is_a_one_frame_video(model, video):
    image = video[:, :, 0]
    ids = model.encode(image)
    assert ids.shape == (2, 1, 4, 4)
    assert torch.equal(ids, model.encode(video[:, :, :1]))
    # strictly causal: a video's first frame is tokenized exactly like the image
    assert torch.allclose(model.encode_latent(image)[:, :, 0], model.encode_latent(video)[:, :, 0], atol=1e-6)
    rec = model.decode(ids[:, 0])
    assert rec.shape == image.shape
    assert torch.allclose(rec, model.decode(ids)[:, :, 0], atol=1e-6)
    assert torch.allclose(rec, model.decode(model.encode(video))[:, :, 0], atol=1e-5)


def test_latent_chunks():
    assert latent_chunks(5, 4, None) == [(0, 5)]
    assert latent_chunks(5, 4, 9) == [(0, 3), (3, 5)]  # 9 frames, then 8
    assert latent_chunks(5, 4, 8) == [(0, 2), (2, 4), (4, 5)]  # 1+4 = 5 frames, then 8
    assert latent_chunks(5, 4, 1) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert latent_chunks(3, 4, 100) == [(0, 3)]
    with pytest.raises(ValueError, match="max_chunk_frames"):
        latent_chunks(5, 4, 0)


@pytest.mark.parametrize("chunk", [1, 4, 5, 6, 7, 9, 12, 13])
def test_chunked_encode_equals_whole(model, video, chunk):
    whole = model.encode_latent(video)
    chunked = model.encode_latent(video, max_chunk_frames=chunk)
    assert chunked.shape == whole.shape
    assert torch.allclose(chunked, whole, atol=1e-5)
    assert torch.equal(model.encode(video, max_chunk_frames=chunk), model.encode(video))


@pytest.mark.parametrize("chunk", [1, 4, 5, 6, 9, 13])
def test_chunked_decode_equals_whole(model, video, chunk):
    ids = model.encode(video)
    whole = model.decode(ids)
    chunked = model.decode(ids, max_chunk_frames=chunk)
    assert chunked.shape == whole.shape
    assert torch.allclose(chunked, whole, atol=1e-5)
    codes = model.encode_codes(video)
    assert torch.allclose(model.decode_codes(codes, max_chunk_frames=chunk), whole, atol=1e-5)


def test_time_pooled_model_refuses_chunks(video):
    torch.manual_seed(0)
    m = VideoTokenizer(small_config(time_pooled_norm=True)).eval()
    m.encode(video)  # whole video is fine
    with pytest.raises(ValueError, match="time_pooled_norm"):
        m.encode(video, max_chunk_frames=5)
    with pytest.raises(ValueError, match="time_pooled_norm"):
        m.decode(m.encode(video), max_chunk_frames=5)


def test_save_load_roundtrip(model, video, tmp_path):
    model.save_pretrained(tmp_path / "tok")
    assert (tmp_path / "tok" / "config.json").is_file()
    meta = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert meta["ch"] == 8 and meta["quantizer"]["bits"] == 6
    loaded = VideoTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.config == model.config
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k
    assert set(load_file(tmp_path / "tok" / "model.safetensors")) == set(ours)
    assert torch.equal(loaded.encode(video), model.encode(video))
    with pytest.raises(ValueError, match="config.json"):
        VideoTokenizer.from_pretrained(tmp_path / "missing")


def test_forward_trains(video):
    torch.manual_seed(0)
    m = VideoTokenizer(small_config())
    out = m(video[:1, :, :5])
    assert out.reconstruction.shape == (1, 3, 5, 16, 16)
    assert out.quantizer.indices.shape == (1, 2, 4, 4)
    (out.reconstruction.square().mean() + out.quantizer.loss).backward()
    assert m.encoder.conv_in.conv_1.weight.grad.abs().sum() > 0  # straight-through gradient
    assert m.last_layer_weight() is m.decoder.conv_out.conv_1.weight
    assert m.last_layer_weight().grad is not None
    assert m(video[:1, :, 0]).reconstruction.shape == (1, 3, 16, 16)
    with torch.no_grad():  # the training forward decodes the quantized codes, as encode + decode does
        out = m.eval()(video[:1, :, :5])
        torch.testing.assert_close(
            out.reconstruction, m.decode(m.encode(video[:1, :, :5])), atol=1e-6, rtol=1e-5
        )
        torch.testing.assert_close(
            out.reconstruction, m.decode_codes(out.quantizer.codes), atol=1e-6, rtol=1e-5
        )


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (torch.zeros(1, 3, 8, 16, 16), "1\\+4k frames.*got 8"),
        (torch.zeros(1, 3, 5, 18, 16), "multiples of 4.*18x16"),
        (torch.zeros(1, 4, 5, 16, 16), "3 channels"),
        (torch.zeros(1, 3, 5, 16, 16, dtype=torch.uint8), "float.*uint8"),
        (torch.zeros(3, 16, 16), "shape \\(3, 16, 16\\)"),
    ],
)
def test_bad_videos(model, bad, match):
    for fn in (model.encode, model.forward):
        with pytest.raises(ValueError, match=match):
            fn(bad)


def test_bad_ids_and_codes(model):
    with pytest.raises(ValueError, match="integer"):
        model.decode(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="\\[0, 64\\)"):
        model.decode(torch.full((1, 2, 4, 4), 64))
    with pytest.raises(ValueError, match="6 code channels"):
        model.decode_codes(torch.zeros(1, 5, 2, 4, 4))
    with pytest.raises(ValueError, match="unknown tokenizer preset"):
        VideoTokenizer.from_config("nope")
    with pytest.raises(ValueError, match="one per level"):
        small_config(num_res_blocks=(1, 1))
    with pytest.raises(ValueError, match="temporal_downsample"):
        small_config(temporal_downsample=(True,))


def test_matches_open_magvit2_reference(shared_dir):
    """With time-pooled norms our network computes exactly Open-MAGVIT2's video model (their weights)."""
    ref = shared_dir / "fixtures" / "open_magvit2"
    cfg = json.loads((ref / "meta.json").read_text())["video"]["config"]
    config = small_config(
        quantizer={"kind": "lfq", "bits": cfg["z_channels"]},
        ch=cfg["ch"],
        ch_mult=cfg["ch_mult"],
        num_res_blocks=cfg["num_res_blocks"],
        temporal_downsample=None,  # Open-MAGVIT2's rule: levels with ch_mult != 1
        norm_groups=32,
        time_pooled_norm=True,
    )
    model = VideoTokenizer(config).eval()
    state, io = load_file(ref / "video_state_dict.safetensors"), load_file(ref / "video_io.safetensors")
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert torch.allclose(model.encoder(io["input"]), io["latent"], atol=1e-4)
        assert torch.allclose(model.decoder(io["codes"]), io["output"], atol=1e-4)


def _count(config: TokenizerConfig) -> int:
    """Encoder + decoder parameters built on the meta device (no memory), plus the quantizer's."""
    with torch.device("meta"):
        n = sum(p.numel() for m in (Encoder(config), Decoder(config)) for p in m.parameters())
    try:
        from magvit2.quantizers import build_quantizer

        with torch.device("meta"):
            n += sum(p.numel() for p in build_quantizer(config.quantizer).parameters())
    except ImportError:  # quantizer not merged yet: count its codebook (codebook_size x dim)
        if config.quantizer.kind in ("vq", "cvq"):
            n += config.quantizer.codebook_size * config.quantizer.dim
    return n


def test_preset_parameter_counts(shared_dir):
    assert set(preset_names()) >= {"tiny", "magvit2-video", "loong-246m"}
    assert _count(get_preset("tiny")) <= 5_000_000
    video = get_preset("magvit2-video")
    assert abs(_count(video) / 370_547_349 - 1) < 0.02
    assert abs(_count(get_preset("loong-246m")) / 246e6 - 1) < 0.02
    # key names and shapes equal Open-MAGVIT2's full-size video model
    keys = json.loads((shared_dir / "fixtures" / "open_magvit2" / "video_128_L_keys.json").read_text())
    keys = {k: v for k, v in keys.items() if k.startswith(("encoder.", "decoder."))}
    with torch.device("meta"):
        ours = {f"encoder.{k}": list(v.shape) for k, v in Encoder(video).state_dict().items()}
        ours.update({f"decoder.{k}": list(v.shape) for k, v in Decoder(video).state_dict().items()})
    assert ours == keys


def test_preset_factors():
    for name in ("tiny", "magvit2-video", "loong-246m"):
        cfg = get_preset(name)
        assert (cfg.temporal_factor, cfg.spatial_factor) == (4, 8), name
    tiny = get_preset("tiny")
    assert tiny.quantizer.kind == "lfq" and tiny.quantizer.bits == 18
    assert get_preset("loong-246m").quantizer.kind == "cvq"
    # config round trip through JSON
    assert TokenizerConfig.from_dict(json.loads(json.dumps(tiny.to_dict()))) == tiny


def test_tiny_tokenizes_a_clip():
    torch.manual_seed(0)
    tiny = VideoTokenizer.from_config("tiny").eval()
    clip = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    ids = tiny.encode(clip)
    assert ids.shape == (1, 2, 4, 4) and int(ids.max()) < 2**18
    assert tiny.decode(ids).shape == clip.shape
    assert torch.equal(tiny.encode(clip, max_chunk_frames=1), ids)


def test_chunk_state_does_not_grow(model):
    """The state carried between chunks is the same size after every chunk (memory flat in length)."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 1 + 4 * 6, 16, 16) * 2 - 1
    sizes = []
    with torch.no_grad():
        for cache_user in ("encoder", "decoder"):
            cache, sizes = CausalCache(), []
            for a, b in latent_chunks(7, 4, 5):  # 1 + 4 frames (2 latents), then 4 frames (1 latent)
                if cache_user == "encoder":
                    model.encoder(x[:, :, (0 if a == 0 else 1 + 4 * (a - 1)) : 1 + 4 * (b - 1)], cache)
                else:
                    model.decoder(torch.ones(1, 6, b - a, 4, 4), cache)
                sizes.append(sum(v.numel() for v in cache._state.values() if isinstance(v, torch.Tensor)))
            assert len(sizes) == 6 and len(set(sizes)) == 1, (cache_user, sizes)


def test_from_pretrained_unknown_name_lists_builtin_models(tmp_path):
    from magvit2.models.tokenizer import resolve_pretrained

    with pytest.raises(ValueError, match="not a model directory.*built-in models"):
        VideoTokenizer.from_pretrained(tmp_path / "missing")
    assert resolve_pretrained(tmp_path) == tmp_path


def test_old_config_files_load(tmp_path):
    """config.json files of earlier versions, which carried every quantizer kind's fields and the
    feedback fields switched off, still load; ``feedback: true`` is refused in one line naming the
    loader of the previous built-in model; a quantizer field of another kind at a non-default value is
    refused. New files hold the quantizer kind's own fields only."""
    torch.manual_seed(0)
    model = VideoTokenizer.from_config({"quantizer": {"kind": "lfq", "bits": 6}, "ch": 8, "ch_mult": [1, 2],
                                        "num_res_blocks": 1, "norm_groups": 4})  # fmt: skip
    folder = model.save_pretrained(tmp_path / "m")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["quantizer"] == {"kind": "lfq", "bits": 6, "options": {}}
    unused = {"codebook_size": 65536, "dim": 8, "levels": [8, 8, 8, 5, 5, 5]}  # other kinds' old defaults
    old = {**meta, "feedback": False, "feedback_stages": 1, "feedback_last_repeats": 1,
           "quantizer": {**meta["quantizer"], **unused}}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(old))
    assert torch.equal(
        VideoTokenizer.from_pretrained(folder).encoder.conv_in.weight, model.encoder.conv_in.weight
    )
    for bad, match in (
        (
            {**old, "feedback": True, "feedback_stages": 4},
            r"config.json: .*feedback.*removed.*previous_model.py",
        ),
        ({**old, "quantizer": {**old["quantizer"], "dim": 4}}, r"quantizer 'lfq': unknown field 'dim'"),
    ):
        (folder / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=match):
            VideoTokenizer.from_pretrained(folder)
    vq = TokenizerConfig.from_dict({"quantizer": {"kind": "cvq", "codebook_size": 16, "dim": 4, "bits": 18}})
    assert vq.to_dict()["quantizer"] == {"kind": "cvq", "codebook_size": 16, "dim": 4, "options": {}}
