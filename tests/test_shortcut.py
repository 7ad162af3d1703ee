"""Cell shortcuts (magvit2.modules.shortcut): values against a loop over cells, zero start, loading."""

from __future__ import annotations

import pytest
import torch

from magvit2.models import TokenizerConfig, VideoTokenizer
from magvit2.modules import CausalCache
from magvit2.modules.shortcut import CellShortcutIn, CellShortcutOut, cell_means, expand_cells
from magvit2.training.trainer import load_initial_weights


def _cells(t: int, rate: int) -> list[range]:
    """Frames of each latent cell of a t-frame video: frame 0 alone, then groups of ``rate``."""
    return [range(0, 1)] + [range(1 + rate * k, 1 + rate * (k + 1)) for k in range((t - 1) // rate)]


def test_cell_means_match_a_loop_over_cells():
    x = torch.randn(2, 3, 9, 8, 12, dtype=torch.float64)
    got = cell_means(x, rate=4, factor=4)
    assert got.shape == (2, 3, 3, 2, 3)
    for n, frames in enumerate(_cells(9, 4)):
        for i in range(2):
            for j in range(3):
                block = x[:, :, frames.start : frames.stop, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
                assert torch.allclose(got[:, :, n, i, j], block.mean(dim=(2, 3, 4)))
    later = cell_means(x[:, :, 1:], rate=4, factor=4, first=False)  # a later chunk: no lone frame
    assert torch.allclose(later, got[:, :, 1:])


def test_expand_cells_spreads_each_value_over_its_cell():
    y = torch.randn(1, 2, 3, 2, 2, dtype=torch.float64)
    out = expand_cells(y, rate=4, factor=4)
    assert out.shape == (1, 2, 9, 8, 8)
    for n, frames in enumerate(_cells(9, 4)):
        for t in frames:
            assert torch.equal(out[:, :, t, :4, 4:], y[:, :, n, 0, 1, None, None].expand(-1, -1, 4, 4))
    assert torch.allclose(cell_means(out, 4, 4), y)


def test_shortcuts_start_at_zero_and_chunks_equal_whole():
    x = torch.randn(1, 3, 13, 8, 8)
    enc, dec = CellShortcutIn(3, 5, rate=4, factor=4), CellShortcutOut(5, 3, rate=4, factor=4)
    assert torch.equal(enc(x), torch.zeros(1, 5, 4, 2, 2))
    torch.nn.init.normal_(enc.proj.weight)
    torch.nn.init.normal_(dec.proj.weight)
    whole = enc(x)
    want = torch.einsum("zc,bcnhw->bznhw", enc.proj.weight, cell_means(x, 4, 4)) + enc.proj.bias.view(
        1, 5, 1, 1, 1
    )
    assert torch.allclose(whole, want, atol=1e-6)
    cache = CausalCache()
    chunks = [enc(x[:, :, :5], cache), enc(x[:, :, 5:], cache)]
    assert torch.allclose(torch.cat(chunks, 2), whole, atol=1e-6)
    cache = CausalCache()
    out = torch.cat([dec(whole[:, :, :2], cache), dec(whole[:, :, 2:], cache)], 2)
    assert torch.allclose(out, dec(whole), atol=1e-6)


def _config(shortcut: bool) -> TokenizerConfig:
    return TokenizerConfig(
        quantizer={"kind": "lfq", "bits": 6},
        ch=8,
        ch_mult=(1, 2, 2),
        num_res_blocks=1,
        temporal_downsample=(True, True),
        norm_groups=4,
        cell_shortcut=shortcut,
    )


def test_model_with_shortcuts_starts_as_the_model_it_loads():
    torch.manual_seed(0)
    plain = VideoTokenizer(_config(False)).eval()
    with_shortcut = VideoTokenizer(_config(True)).eval()
    load_initial_weights(with_shortcut, plain.state_dict(), "plain")
    x = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        a, b = plain(x), with_shortcut(x)
    assert torch.equal(a.reconstruction, b.reconstruction)
    assert torch.equal(a.quantizer.indices, b.quantizer.indices)
    # the encoder's shortcut moves the latent by exactly W @ cell means
    with torch.no_grad():
        with_shortcut.encoder.shortcut.proj.weight.normal_()
        shift = with_shortcut.encoder(x) - plain.encoder(x)
    w = with_shortcut.encoder.shortcut.proj.weight
    assert torch.allclose(shift, torch.einsum("zc,bcnhw->bznhw", w, cell_means(x, 4, 4)), atol=1e-5)


def test_initial_weights_must_otherwise_match():
    plain, with_shortcut = VideoTokenizer(_config(False)), VideoTokenizer(_config(True))
    state = plain.state_dict()
    del state["decoder.conv_out.conv_1.weight"]  # a real module, not an addable one
    with pytest.raises(ValueError, match="init_from 'plain'.*missing"):
        load_initial_weights(with_shortcut, state, "plain")
    with pytest.raises(ValueError, match="unexpected"):
        load_initial_weights(plain, with_shortcut.state_dict(), "plain")
