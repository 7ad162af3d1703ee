"""LPIPS-style perceptual loss on VGG16 features, loaded from a local file (never downloaded).

The VGG16 trunk is defined here with torchvision's exact layer layout (``features.0`` ... ``features.29``)
so that torchvision's ``vgg16`` state dict loads directly; torchvision is not a dependency.

Supported weight files (``.safetensors`` or a ``torch.save`` file read with ``weights_only=True``):

* a torchvision VGG16 state dict (``features.*``; ``classifier.*`` is ignored), e.g.
  ``vgg16-397923af.pth``: gives the trunk;
* richzhang's LPIPS linear heads (``weights/v0.1/vgg.pth`` in the ``lpips`` package, also taming's
  ``vgg_lpips.pth``): only ``lin{i}.model.1.weight``; combine with a trunk file;
* the ``lpips`` package's full ``LPIPS(net="vgg").state_dict()``: ``net.slice{1..5}.{j}.*`` for the trunk,
  ``lin{i}.model.1.weight`` (and the duplicate ``lins.{i}.*``), ``scaling_layer.*``;
* this module's own ``LPIPS.state_dict()`` (``net.features.*``, ``lin{i}.model.1.weight``).

When the files give the trunk but no linear heads, every head weight is 1: each layer's squared
difference of unit-normalised features is summed over channels. This is LPIPS's "baseline"
(``lpips=False``) variant: a VGG feature distance that was not calibrated on human judgements.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

logger = logging.getLogger(__name__)

# torchvision's vgg16 "D" configuration: conv widths, "M" = 2x2 max pool.
_VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip
# Indices in ``features`` of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (torchvision numbering).
VGG16_TAPS: tuple[int, ...] = (3, 8, 15, 22, 29)
VGG16_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
# LPIPS v0.1 ScalingLayer constants: inputs in [-1, 1] -> ImageNet-normalised.
LPIPS_SHIFT: tuple[float, float, float] = (-0.030, -0.088, -0.188)
LPIPS_SCALE: tuple[float, float, float] = (0.458, 0.448, 0.450)
# The lpips package splits torchvision's features[0:30] into five slices at these boundaries.
_LPIPS_SLICE_STARTS: tuple[int, ...] = (0, 4, 9, 16, 23)


class VGG16Features(nn.Module):
    """VGG16 convolutional trunk up to relu5_3, with torchvision's module indices.

    ``state_dict`` keys are ``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias}``, exactly the
    ``features.*`` keys of torchvision's ``vgg16``.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in _VGG16_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(item), kernel_size=3, padding=1), nn.ReLU()]
                in_ch = int(item)
        self.features = nn.Sequential(*layers)  # indices 0..29 as in torchvision

    def forward(self, x: Tensor) -> list[Tensor]:
        """``(N, 3, H, W)`` ImageNet-normalised images -> the five tapped activations (relu1_2 .. relu5_3)."""
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG16_TAPS:
                outs.append(x)
        return outs


class NetLinLayer(nn.Module):
    """LPIPS's 1x1 linear head: ``model.1`` is a bias-free ``Conv2d(C, 1, 1)`` (``model.0`` is its
    dropout slot, an identity at inference), so keys read ``lin{i}.model.1.weight`` as in LPIPS."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, 1, H, W)``."""
        return self.model(x)


def normalize_channels(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Divide ``(N, C, H, W)`` features by their L2 norm over channels (LPIPS ``normalize_tensor``)."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a tensor dict from ``.safetensors`` or a ``torch.save`` file (``weights_only=True``, CPU;
    :func:`magvit2.convert.checkpoint.read_state_dict`, which also unwraps Lightning's ``state_dict``);
    errors name the file as perceptual weights."""
    from magvit2.convert.checkpoint import read_state_dict as read_checkpoint

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"perceptual weights file {str(path)!r} does not exist")
    try:
        state, _ = read_checkpoint(path)
    except ValueError as err:  # the message names the file
        raise ValueError(f"could not read perceptual weights: {err}") from err
    return {str(k): v for k, v in state.items()}


_LPIPS_SLICE_KEY = re.compile(r"^net\.slice([1-5])\.(\d+)\.(weight|bias)$")
_TV_KEY = re.compile(r"^(?:net\.)?features\.(\d+)\.(weight|bias)$")
# lin{i}.model.1.weight (LPIPS, dropout on), lin{i}.model.0.weight (dropout off),
# lins.{i}.model.1.weight (the lpips package's ModuleList duplicate of lin{i}).
_LIN_KEY = re.compile(r"^lins?\.?(\d)\.model\.[01]\.weight$")


def _sort_keys(sd: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor], list[str]]:
    """Split a state dict into trunk (our ``features.N.*`` names), lin heads (``lin{i}.model.1.weight``)
    and unexpected keys; classifier and scaling-layer keys are dropped."""
    trunk: dict[str, Tensor] = {}
    lins: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in sd.items():
        if key.startswith("classifier.") or key.startswith("scaling_layer."):
            continue
        if m := _LPIPS_SLICE_KEY.match(key):
            slice_id, idx = int(m.group(1)), int(m.group(2))
            lo = _LPIPS_SLICE_STARTS[slice_id - 1]
            hi = _LPIPS_SLICE_STARTS[slice_id] if slice_id < 5 else 30
            if not lo <= idx < hi:
                unexpected.append(key)
                continue
            trunk[f"features.{idx}.{m.group(3)}"] = value
        elif m := _TV_KEY.match(key):
            trunk[f"features.{m.group(1)}.{m.group(2)}"] = value
        elif m := _LIN_KEY.match(key):
            lins.setdefault(f"lin{m.group(1)}.model.1.weight", value)
        else:
            unexpected.append(key)
    return trunk, lins, unexpected


class LPIPS(nn.Module):
    """LPIPS distance (v0.1) with a VGG16 trunk.

    ``forward(x, y)`` takes two image batches ``(N, 3, H, W)`` in ``[-1, 1]`` and returns ``(N,)``:
    sum over relu1_2..relu5_3 of the spatial mean of ``lin_l((norm(f_l(x)) - norm(f_l(y)))**2)``.
    The module is frozen: parameters have ``requires_grad=False`` and it always stays in eval mode;
    gradients flow to the inputs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.net = VGG16Features()
        for i, ch in enumerate(VGG16_CHANNELS):
            self.add_module(f"lin{i}", NetLinLayer(ch))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """Stay in eval mode whatever the parent module does."""
        return super().train(False)

    def heads(self) -> list[NetLinLayer]:
        """The five linear heads lin0..lin4."""
        return [getattr(self, f"lin{i}") for i in range(len(VGG16_CHANNELS))]

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """``(N, 3, H, W)`` x2 in ``[-1, 1]`` -> LPIPS distance ``(N,)``."""
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects two (N, 3, H, W) batches of the same shape, got {tuple(x.shape)} "
                f"and {tuple(y.shape)}"
            )
        n = x.shape[0]
        both = torch.cat([x, y], dim=0)
        both = (both - self.shift.to(both.dtype)) / self.scale.to(both.dtype)
        total = x.new_zeros(n)
        for feats, head in zip(self.net(both), self.heads(), strict=True):
            fx, fy = normalize_channels(feats[:n]), normalize_channels(feats[n:])
            total = total + head((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return total

    def load_weights(self, state_dicts: Mapping[str, Mapping[str, Tensor]]) -> bool:
        """Load the trunk and heads from one or more state dicts ``{file name: state dict}``.

        Returns True when LPIPS heads were found, False when they were set to ones ("baseline").
        Raises ValueError naming the files and the missing/unexpected keys.
        """
        trunk: dict[str, Tensor] = {}
        lins: dict[str, Tensor] = {}
        names = ", ".join(repr(str(n)) for n in state_dicts)
        for name, sd in state_dicts.items():
            t, lin, unexpected = _sort_keys(sd)
            if unexpected:
                raise ValueError(
                    f"perceptual weights file {str(name)!r}: unexpected keys {sorted(unexpected)[:8]}"
                    f"{' ...' if len(unexpected) > 8 else ''} (expected torchvision vgg16 'features.*', "
                    f"lpips 'net.slice{{1..5}}.*' or 'lin{{i}}.model.1.weight')"
                )
            trunk.update(t)
            lins.update(lin)
        expected_trunk = set(self.net.state_dict())
        missing = sorted(expected_trunk - set(trunk), key=_natural)
        extra = sorted(set(trunk) - expected_trunk, key=_natural)
        if missing or extra:
            hint = ""
            if not trunk and lins:
                hint = (
                    " (this holds only LPIPS linear heads, like richzhang's vgg.pth: also give a VGG16 "
                    "trunk file, e.g. torchvision's vgg16 state dict)"
                )
            raise ValueError(
                f"perceptual weights {names}: VGG16 trunk keys missing {missing[:8]}"
                f"{' ...' if len(missing) > 8 else ''}, unexpected {extra[:8]}{hint}"
            )
        expected_lins = {f"lin{i}.model.1.weight" for i in range(len(VGG16_CHANNELS))}
        if lins and set(lins) != expected_lins:
            raise ValueError(
                f"perceptual weights {names}: LPIPS heads missing {sorted(expected_lins - set(lins))}, "
                f"unexpected {sorted(set(lins) - expected_lins)}"
            )
        self._load_checked(self.net, trunk, names)
        if lins:
            for i, head in enumerate(self.heads()):
                self._load_checked(head, {"model.1.weight": lins[f"lin{i}.model.1.weight"]}, names)
        else:
            for head in self.heads():
                nn.init.ones_(head.model[1].weight)
        return bool(lins)

    @staticmethod
    def _load_checked(module: nn.Module, sd: Mapping[str, Tensor], names: str) -> None:
        """``load_state_dict`` with a ValueError naming the files when a shape does not match."""
        own = module.state_dict()
        for key, value in sd.items():
            if tuple(own[key].shape) != tuple(value.shape):
                raise ValueError(
                    f"perceptual weights {names}: {key!r} has shape {tuple(value.shape)}, "
                    f"expected {tuple(own[key].shape)}"
                )
        module.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)

    @classmethod
    def from_file(cls, path: str | Path, lin_path: str | Path | None = None) -> LPIPS:
        """Build LPIPS from a local weight file, optionally plus a separate file of linear heads.

        ``path``: torchvision VGG16 state dict, the lpips package's full state dict, or our own.
        ``lin_path``: LPIPS heads (richzhang's ``vgg.pth``); heads in ``lin_path`` override any in
        ``path``. Without heads anywhere the heads are ones (the unlearned "baseline" LPIPS; logged).
        """
        files = {str(path): read_state_dict(path)}
        if lin_path is not None:
            files[str(lin_path)] = read_state_dict(lin_path)
        model = cls()
        if not model.load_weights(files):
            logger.info(
                "perceptual weights %s hold no LPIPS linear heads: using all-ones heads (baseline LPIPS)",
                ", ".join(files),
            )
        return model


def _natural(key: str) -> tuple:
    """Sort key so that features.10 comes after features.2."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key))


class PerceptualLoss(nn.Module):
    """LPIPS between an input and its reconstruction, for images or videos; zero when no weights.

    Args:
        path: weight file for :meth:`LPIPS.from_file`; ``None`` turns the loss off (returns 0, builds
            no network).
        lin_path: optional separate file of LPIPS linear heads.
        frames_per_video: for videos, evaluate only this many randomly chosen frames per clip (the same
            frames for input and reconstruction); ``None`` uses every frame.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        lin_path: str | Path | None = None,
        frames_per_video: int | None = None,
    ) -> None:
        super().__init__()
        if frames_per_video is not None and frames_per_video < 1:
            raise ValueError(f"frames_per_video must be >= 1 or None, got {frames_per_video}")
        if path is None and lin_path is not None:
            raise ValueError(f"lin_path {str(lin_path)!r} given without a VGG16 trunk file (path=None)")
        self.frames_per_video = frames_per_video
        self.lpips = LPIPS.from_file(path, lin_path) if path is not None else None
        # The frozen network comes from the user's file, so it is kept out of checkpoints (about 59 MB).
        self.register_state_dict_post_hook(_drop_lpips_keys)
        self.register_load_state_dict_pre_hook(_fill_lpips_keys)

    @property
    def enabled(self) -> bool:
        """Whether weights were given (otherwise the loss is a constant 0)."""
        return self.lpips is not None

    def forward(self, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Mean LPIPS of ``(B, 3, H, W)`` images or ``(B, 3, T, H, W)`` videos (per frame) -> scalar."""
        if self.lpips is None:
            return x.new_zeros(())
        if x.shape != y.shape:
            raise ValueError(f"PerceptualLoss inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        if x.ndim == 5:
            t = x.shape[2]
            k = self.frames_per_video
            if k is not None and k < t:
                idx = torch.stack([torch.randperm(t, generator=generator)[:k] for _ in range(x.shape[0])]).to(
                    x.device
                )
                gather = idx.view(x.shape[0], 1, k, 1, 1).expand(-1, x.shape[1], -1, *x.shape[3:])
                x, y = x.gather(2, gather), y.gather(2, gather)
            x = rearrange(x, "b c t h w -> (b t) c h w")
            y = rearrange(y, "b c t h w -> (b t) c h w")
        elif x.ndim != 4:
            raise ValueError(f"PerceptualLoss expects (B,3,H,W) or (B,3,T,H,W), got {tuple(x.shape)}")
        return self.lpips(x, y).mean()


def _drop_lpips_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict hook: remove the frozen LPIPS tensors (``{prefix}lpips.*``)."""
    for key in [k for k in state_dict if k.startswith(prefix + "lpips.")]:
        del state_dict[key]


def _fill_lpips_keys(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook: supply the frozen LPIPS tensors a checkpoint does not carry."""
    if getattr(module, "lpips", None) is not None:
        for key, value in module.lpips.state_dict().items():
            state_dict.setdefault(prefix + "lpips." + key, value)
