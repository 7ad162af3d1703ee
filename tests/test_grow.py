"""Growing a tokenizer: more residual blocks start as identities, so the grown model equals the source."""

from __future__ import annotations

import pytest
import torch
from small_models import perturbed
from small_models import small_config as config

from magvit2.models import VideoTokenizer
from magvit2.models.grow import load_growing

pytestmark = pytest.mark.usefixtures("one_thread")


def source_model() -> VideoTokenizer:
    """A random model with every parameter (norm affines included) away from its initial value."""
    torch.manual_seed(0)
    return perturbed(VideoTokenizer(config()))


GROWN = dict(num_res_blocks=(1, 2, 3), num_mid_blocks=2, decoder_num_res_blocks=(2, 1, 2))


def test_grown_model_computes_what_the_source_computed():
    source = source_model()
    torch.manual_seed(5)
    grown = VideoTokenizer(config(**GROWN))
    added = load_growing(grown, source.state_dict())
    assert set(added) == {
        "encoder.down.1.block.1", "encoder.down.2.block.1", "encoder.down.2.block.2",
        "encoder.mid_block.1", "decoder.mid_block.1", "decoder.up.0.block.1", "decoder.up.2.block.1",
    }  # fmt: skip
    video = torch.rand(2, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        a, b = source(video), grown.eval()(video)
    assert torch.equal(a.quantizer.indices, b.quantizer.indices)
    torch.testing.assert_close(b.reconstruction, a.reconstruction, atol=1e-6, rtol=1e-5)
    # every copied tensor is the source's; new blocks are random except their zeroed second conv
    grown_state = grown.state_dict()
    assert all(torch.equal(grown_state[k], v) for k, v in source.state_dict().items())
    modules = dict(grown.named_modules())
    for name in added:
        assert torch.count_nonzero(modules[name].conv2.conv_1.weight) == 0
        assert torch.count_nonzero(modules[name].conv1.conv_1.weight) > 0


def test_new_blocks_learn():
    """A new block's zero conv gets a gradient at once, so training moves the grown model off the source."""
    source = source_model()
    grown = VideoTokenizer(config(num_mid_blocks=2))
    (name,) = [n for n in load_growing(grown, source.state_dict()) if n.startswith("encoder")]
    block = dict(grown.named_modules())[name]
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    out = grown.train()(video)
    ((out.reconstruction - video) ** 2).mean().backward()
    assert block.conv2.conv_1.weight.grad.abs().sum() > 0


def test_growing_refuses_other_changes():
    source = source_model().state_dict()
    with pytest.raises(ValueError, match=r"src: .*has shape .* growing can only add residual blocks"):
        load_growing(VideoTokenizer(config(ch=16, norm_groups=4)), source, source="src")
    deeper = VideoTokenizer(config(num_res_blocks=2)).state_dict()
    with pytest.raises(ValueError, match="has tensors the model lacks"):
        load_growing(VideoTokenizer(config()), deeper)
    no_conv_out = {k: v for k, v in source.items() if not k.startswith("encoder.conv_out")}
    with pytest.raises(ValueError, match="lacks encoder.conv_out.* not parts of whole new residual blocks"):
        load_growing(VideoTokenizer(config()), no_conv_out)
