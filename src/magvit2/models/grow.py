"""Start a deeper tokenizer from a shallower one's weights (function-preserving growth).

A model whose config has more residual blocks per level (``num_res_blocks``,
``decoder_num_res_blocks``, ``num_mid_blocks``) than the one that wrote a state dict can take every
tensor of it; each block the state dict lacks starts as the identity: a :class:`ResBlock` adds its
second conv's output to its input, so zeroing that conv makes ``x -> x``. The grown model then
computes exactly what the source model did, and training only has to add to it (the new blocks'
second convs receive gradients at once, their first convs as soon as those move off zero).

A model with a feedback network (``TokenizerConfig.feedback``) can likewise start from one without:
the feedback network starts as a copy of the encoder (its extra input channels, the reconstruction,
with zero weights) whose last conv is zeroed, so it adds nothing until training moves it. A further
feedback stage (``feedback_stages``) that the state dict lacks starts the same way as a copy of the
stage before it (:func:`start_feedback_stage`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from magvit2.modules.blocks import ResBlock


def load_growing(model: nn.Module, state: dict[str, Tensor], source: str = "state dict") -> list[str]:
    """Load ``state`` into ``model``; residual blocks that ``state`` lacks start as the identity.

    Args:
        model: the (possibly deeper) model; changed in place.
        state: a state dict of the same architecture with at most fewer residual blocks.
        source: where ``state`` came from, for error messages.

    Returns:
        The names of the blocks that were added (empty when the architectures match), and
        ``"feedback"`` when the feedback network was started by :func:`start_feedback`.

    Raises:
        ValueError: if ``state`` has tensors the model lacks, a tensor of another shape, or the model
            lacks keys outside whole new residual blocks (a change other than adding blocks).
    """
    new_feedback, new_stages = _new_feedback(model, state)
    new_prefixes = (["feedback."] if new_feedback else []) + [f"more_feedback.{i}." for i in new_stages]
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(tuple(new_prefixes))}
    _check_source_fits(own, state, source)
    new_blocks = _new_blocks(model, own, state, tuple(new_prefixes), source)
    model.load_state_dict(state, strict=False)
    modules = dict(model.named_modules())
    for name in new_blocks:
        nn.init.zeros_(modules[name].conv2.conv_1.weight)
    if new_feedback:
        start_feedback(model)
        new_blocks.append("feedback")
    for i in new_stages:
        start_feedback_stage(model, i)
        new_blocks.append(f"more_feedback.{i}")
    return new_blocks


def _new_feedback(model: nn.Module, state: dict[str, Tensor]) -> tuple[bool, list[int]]:
    """Whether the model's first feedback network is new (absent from ``state``), and which of its
    further feedback stages (``more_feedback.i``) are."""
    has_feedback = getattr(model, "feedback", None) is not None
    new_feedback = has_feedback and not any(k.startswith("feedback.") for k in state)
    stages = range(len(getattr(model, "more_feedback", ())))
    return new_feedback, [i for i in stages if not any(k.startswith(f"more_feedback.{i}.") for k in state)]


def _check_source_fits(own: dict[str, Tensor], state: dict[str, Tensor], source: str) -> None:
    """Every tensor of ``state`` must exist in the model (``own``) with the same shape."""
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(
            f"{source}: has tensors the model lacks ({', '.join(unexpected[:4])}, ...): growing can only "
            f"add residual blocks, the model must have at least the source's blocks"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{source}: {key} has shape {tuple(value.shape)}, the model's has {tuple(own[key].shape)}; "
                f"growing can only add residual blocks (same channels, same quantizer)"
            )


def _new_blocks(
    model: nn.Module, own: dict[str, Tensor], state: dict[str, Tensor], skip: tuple[str, ...], source: str
) -> list[str]:
    """Names of the residual blocks ``state`` lacks (outside the new feedback networks ``skip``);
    every other missing key is an error, as is a new block that changes the channel count."""
    modules = dict(model.named_modules())
    new_blocks = [
        name
        for name, module in modules.items()
        if isinstance(module, ResBlock)
        and not (name + ".").startswith(skip)
        and not any(k.startswith(name + ".") for k in state)
    ]
    prefixes = tuple(b + "." for b in new_blocks)
    stray = sorted(k for k in set(own) - set(state) if not k.startswith(prefixes))
    if stray:
        raise ValueError(
            f"{source}: lacks {', '.join(stray[:4])}, which are not parts of whole new residual blocks; "
            f"growing can only add residual blocks"
        )
    for name in new_blocks:
        if modules[name].nin_shortcut is not None:
            raise ValueError(
                f"{source}: new block {name} changes the channel count, so it cannot start as the identity"
            )
    return new_blocks


def start_feedback(model: nn.Module) -> None:
    """Make ``model.feedback`` a copy of ``model.encoder`` that adds nothing to the latent.

    The feedback network's first conv takes ``[video, reconstruction]``: the video's input weights are
    the encoder's, the reconstruction's zero; its last conv (to the latent) is zeroed, so the model
    computes exactly what it did without feedback, and that conv receives gradients at once.
    """
    state = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    key = "conv_in.conv_1.weight"
    state[key] = torch.cat([state[key], torch.zeros_like(state[key])], dim=1)
    model.feedback.load_state_dict(state)
    nn.init.zeros_(model.feedback.conv_out.conv_1.weight)
    nn.init.zeros_(model.feedback.conv_out.conv_1.bias)


def start_feedback_stage(model: nn.Module, index: int) -> None:
    """Make ``model.more_feedback[index]`` (feedback stage ``index + 2``) a copy of the stage before it
    whose last conv is zeroed: the model computes exactly what it did with one stage fewer, and the
    new stage starts from features that already serve the same task."""
    previous = model.feedback if index == 0 else model.more_feedback[index - 1]
    net = model.more_feedback[index]
    net.load_state_dict({k: v.clone() for k, v in previous.state_dict().items()})
    nn.init.zeros_(net.conv_out.conv_1.weight)
    nn.init.zeros_(net.conv_out.conv_1.bias)
