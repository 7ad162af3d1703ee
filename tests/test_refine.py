"""Token refinement: refined tokens decode closer to the source than the encoder's, the reported error
is the error of the returned tokens, chunked refinement is consistent with chunked decoding, and bad
options fail clearly."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from magvit2.cli.main import main
from magvit2.data.video_io import read_video, to_tensor, write_video
from magvit2.inference.refine import RefineOptions, encode_refined, refine_ids
from magvit2.inference.streaming import InferenceOptions, TokenizerRunner
from magvit2.models import TokenizerConfig, VideoTokenizer
from magvit2.models.tiling import pad_to_multiple
from magvit2.modules.causal import CausalCache

SMALL = {"ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1, "norm_groups": 4, "temporal_downsample": [True]}


def _model(quantizer: dict) -> VideoTokenizer:
    torch.manual_seed(0)
    return VideoTokenizer(TokenizerConfig.from_dict({**SMALL, "quantizer": quantizer})).eval()


@pytest.fixture(scope="module")
def frames(clips_dir) -> np.ndarray:
    """9 frames of bigbuckbunny (a training clip), 35x45 pixels (odd: exercises the padding)."""
    return read_video(clips_dir / "bigbuckbunny.mp4", max_frames=9)[:, 300:335, 600:645]


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()) ** 2).mean())


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()))


@pytest.mark.parametrize(
    "quantizer", [{"kind": "lfq", "bits": 6}, {"kind": "fsq", "levels": [5, 5, 3]}], ids=["lfq", "fsq"]
)
def test_refined_tokens_decode_closer_and_report_their_error(frames, quantizer):
    model = _model(quantizer)
    video = to_tensor(frames[:, :32, :44]).unsqueeze(0)
    with torch.no_grad():
        latent = model.encoder(video)
    plain = model.encode(video)
    ids0, _ = refine_ids(model, latent, video, RefineOptions(steps=0))
    assert torch.equal(ids0, plain)  # no steps: the encoder's tokens

    ids, mse = refine_ids(model, latent, video, RefineOptions(steps=15, lr=0.1))
    assert ids.shape == plain.shape and ids.dtype == plain.dtype
    assert 0 < float((ids != plain).float().mean()) < 1  # some tokens changed
    refined_mse, plain_mse = _mse(model.decode(ids), video), _mse(model.decode(plain), video)
    assert float(mse[0]) == pytest.approx(refined_mse, rel=1e-4)  # reported = error of what is returned
    assert refined_mse < 0.9 * plain_mse


def test_loss_ignores_padding():
    """Only the real frames/pixels count: refining towards a target whose padding is garbage gives the
    same tokens as refining towards a target whose padding is the decoder's own output."""
    model = _model({"kind": "lfq", "bits": 6})
    torch.manual_seed(1)
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        latent = model.encoder(video)
    noisy = video.clone()
    noisy[:, :, 3:] = 5.0  # frames 3, 4 are padding
    noisy[..., 12:, :] = -5.0  # rows 12.. are padding
    opts = RefineOptions(steps=6)
    a, mse_a = refine_ids(model, latent, noisy, opts, frames=3, height=12, width=16)
    b, mse_b = refine_ids(model, latent, video, opts, frames=3, height=12, width=16)
    assert torch.equal(a, b) and torch.allclose(mse_a, mse_b)
    c, _ = refine_ids(model, latent, noisy, opts)  # with the garbage counted the search goes elsewhere
    assert not torch.equal(a, c)


def test_runner_refines_chunk_by_chunk_consistently(frames):
    """Chunked refinement (5-frame chunks of 9 frames): the reconstruction the runner returns equals
    decoding its tokens (the decoder cache follows the chosen tokens), and it is closer to the source
    than the encoder's."""
    model = _model({"kind": "lfq", "bits": 6})
    plain = np.concatenate([r for _, r in TokenizerRunner(model, InferenceOptions(max_chunk_frames=5))
                            .reconstruct(iter(frames))])  # fmt: skip
    runner = TokenizerRunner(model, InferenceOptions(max_chunk_frames=5, refine_steps=12))
    sink: list[torch.Tensor] = []
    refined = np.concatenate([r for _, r in runner.reconstruct(iter(frames), sink)])
    clip = runner.encode_frames(iter(frames))
    assert torch.equal(clip.ids, torch.cat(sink))  # deterministic
    decoded = np.concatenate(list(runner.decode_clip(clip)))
    assert np.array_equal(decoded, refined)
    assert _psnr(refined, frames) > _psnr(plain, frames) + 0.5


def test_bad_refine_options():
    with pytest.raises(ValueError, match=r"\(--refine-steps\) must be >= 0"):
        InferenceOptions(refine_steps=-1)
    with pytest.raises(ValueError, match=r"\(--refine-lr\) must be > 0"):
        InferenceOptions(refine_steps=3, refine_lr=0.0)


def test_tiled_refinement_refines_each_tile_and_keeps_the_tiled_grid(frames):
    """--tile with --refine-steps (35x45 frames in 16-pixel tiles, 5-frame chunks): every tile's owned
    tokens are those a search on that tile alone finds, and the tiled reconstruction is closer to the
    source than tiled plain encoding."""
    model = _model({"kind": "lfq", "bits": 6})
    opts = {"tile": 16, "overlap": 8, "max_chunk_frames": 5}
    plain_runner = TokenizerRunner(model, InferenceOptions(**opts))
    runner = TokenizerRunner(model, InferenceOptions(**opts, refine_steps=10))
    plain = np.concatenate([r for _, r in plain_runner.reconstruct(iter(frames))])
    sink: list[torch.Tensor] = []
    refined = np.concatenate([r for _, r in runner.reconstruct(iter(frames), sink)])
    ids = torch.cat(sink)
    assert ids.shape == plain_runner.encode_frames(iter(frames)).ids.shape
    assert _psnr(refined, frames) > _psnr(plain, frames) + 0.5

    # the first tile and the last (whose bottom row and right column are padding), each encoded and
    # refined on its own chunk by chunk over its real pixels only, give the tokens they own
    s = model.spatial_factor
    padded, pad_b, pad_r = pad_to_multiple(to_tensor(frames).unsqueeze(0), s)
    assert pad_b and pad_r  # 35x45 frames: the last tile's loss must leave the padding out
    tiles = runner._plan(ids.shape[-2], ids.shape[-1], model.encoder).tiles
    for tile in (tiles[0], tiles[-1]):
        rows, cols = (
            slice(tile.top * s, (tile.top + tile.size_h) * s),
            slice(tile.left * s, (tile.left + tile.size_w) * s),
        )
        real_h, real_w = (
            min(rows.stop, frames.shape[1]) - rows.start,
            min(cols.stop, frames.shape[2]) - cols.start,
        )
        enc_cache, dec_cache, found = CausalCache(), CausalCache(), []
        for a, b in [(0, 5), (5, 9)]:
            chunk = padded[:, :, a:b, rows, cols]
            with torch.inference_mode():
                latent = model.encoder(chunk, enc_cache)
            options = RefineOptions(steps=10)
            found.append(refine_ids(model, latent, chunk, options, dec_cache, b - a, real_h, real_w)[0][0])
        (r0, r1), (c0, c1) = tile.own_rows, tile.own_cols
        assert r1 - r0 < ids.shape[-2] and c1 - c0 < ids.shape[-1]  # a real tile, not the frame
        own = torch.cat(found)[:, r0 - tile.top : r1 - tile.top, c0 - tile.left : c1 - tile.left]
        assert torch.equal(ids[:, r0:r1, c0:c1], own)


def test_cli_reconstruct_refine_steps(tmp_path, capsys, frames):
    model_dir = tmp_path / "m"
    _model({"kind": "lfq", "bits": 6}).save_pretrained(model_dir)
    src = tmp_path / "clip.mp4"
    write_video(src, frames, fps=10, lossless=True)
    psnr = {}
    for steps in ("0", "10"):
        out = tmp_path / f"rec{steps}.mp4"
        code = main(["reconstruct", str(src), "-o", str(out), "--model", str(model_dir), "-q",
                     "--refine-steps", steps])  # fmt: skip
        assert code == 0
        psnr[steps] = float(re.search(r"PSNR ([\d.]+) dB", capsys.readouterr().out).group(1))
    assert psnr["10"] > psnr["0"] + 0.5


def test_chunk_error_is_measured_in_the_context_of_the_chosen_earlier_tokens(frames):
    """Refining 9 frames as 5 + 4 (latent 3 + 2) with one cache: the second chunk's reported error is
    that chunk's error when the whole token sequence is decoded at once (the cache was advanced with
    the first chunk's refined tokens, not the encoder's)."""
    from magvit2.modules.causal import CausalCache

    model = _model({"kind": "lfq", "bits": 6})
    video = to_tensor(frames[:, :32, :44]).unsqueeze(0)
    enc_cache, dec_cache, parts, errors = CausalCache(), CausalCache(), [], []
    for a, b in ((0, 5), (5, 9)):
        with torch.no_grad():
            latent = model.encoder(video[:, :, a:b], enc_cache)
        ids, mse = refine_ids(model, latent, video[:, :, a:b], RefineOptions(steps=5), dec_cache)
        parts.append(ids)
        errors.append(float(mse[0]))
    rec = model.decode(torch.cat(parts, dim=1))
    assert errors[1] == pytest.approx(_mse(rec[:, :, 5:], video[:, :, 5:]), rel=1e-4)
    assert errors[0] == pytest.approx(_mse(rec[:, :, :5], video[:, :, :5]), rel=1e-4)


def test_python_api_matches_the_streaming_runner(frames):
    """``encode_refined`` (whole tensor, 5-frame chunks) gives the runner's tokens; with 0 steps it
    gives ``encode``'s."""
    model = _model({"kind": "lfq", "bits": 6})
    video = to_tensor(frames[:, :32, :44]).unsqueeze(0)
    assert torch.equal(encode_refined(model, video, steps=0), model.encode(video))
    runner = TokenizerRunner(model, InferenceOptions(max_chunk_frames=5, refine_steps=4))
    clip = runner.encode_frames(iter(frames[:, :32, :44]))
    assert torch.equal(encode_refined(model, video, steps=4, max_chunk_frames=5)[0], clip.ids)


def test_token_files_and_shards_record_how_tokens_were_found(tmp_path, capsys, frames):
    """``tokenize --refine-steps`` writes the runner's refined tokens and records ``refined steps=N
    lr=X`` in the token file, the shards and the shard manifest (a plain rerun into that folder is
    refused); plain tokens say ``encoder``, and files written before the key existed read as such."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from magvit2.tokens import load_tokens
    from magvit2.tokens.shards import read_shard, shard_metadata

    model = _model({"kind": "lfq", "bits": 6})
    model_dir = tmp_path / "m"
    model.save_pretrained(model_dir)
    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(2):
        write_video(clips / f"c{i}.mkv", frames[:, 8 * i : 8 * i + 24, :32], fps=10, lossless=True)
    m = ("--model", str(model_dir), "-q")
    refine = ("--refine-steps", "3", "--refine-lr", "0.15")
    expected = TokenizerRunner(model, InferenceOptions(refine_steps=3, refine_lr=0.15))
    expected = expected.encode_frames(iter(read_video(clips / "c0.mkv"))).ids

    assert main(["tokenize", str(clips / "c0.mkv"), "-o", str(tmp_path / "r.safetensors"), *m, *refine]) == 0
    refined = load_tokens(tmp_path / "r.safetensors")
    assert refined.encoding == "refined steps=3 lr=0.15"
    assert torch.equal(refined.ids, expected)
    assert main(["tokenize", str(clips / "c0.mkv"), "-o", str(tmp_path / "p.safetensors"), *m]) == 0
    plain = load_tokens(tmp_path / "p.safetensors")
    assert plain.encoding == "encoder" and not torch.equal(plain.ids, refined.ids)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "r.safetensors"), "--json"]) == 0
    assert '"encoding": "refined steps=3 lr=0.15"' in capsys.readouterr().out

    with safe_open(str(tmp_path / "p.safetensors"), framework="pt") as f:  # an older file: no key
        meta = {k: v for k, v in (f.metadata() or {}).items() if k != "encoding"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=meta)
    assert load_tokens(tmp_path / "old.safetensors").encoding == "encoder"

    shards = tmp_path / "shards"
    assert main(["tokenize", str(clips), "-o", str(shards), "--shard-size", "1", *m, *refine]) == 0
    files = sorted(shards.glob("shard-*.parquet"))
    assert [shard_metadata(f)["magvit2.encoding"] for f in files] == ["refined steps=3 lr=0.15"] * 2
    row = read_shard(files[0]).to_pylist()[0]
    assert np.array_equal(np.asarray(row["ids"]), expected.reshape(-1).numpy())
    capsys.readouterr()
    assert main(["tokenize", str(clips), "-o", str(shards), "--shard-size", "1", *m]) == 1
    assert "encoding" in capsys.readouterr().err  # a plain rerun does not mix into refined shards
    assert main(["info", str(shards), "--json"]) == 0
    assert '"encodings": [\n    "refined steps=3 lr=0.15"\n  ]' in capsys.readouterr().out
