"""The two networks of latent fusion (NeuralFusion, Weder et al. 2021).

- :class:`FusionNet`: a fully convolutional 2D network over the image grid (no normalization
  layers, zero padding: any resolution) mapping the view-aligned latent features of the
  ``2n + 1`` ray samples, their confidences and the measurement (depth, ray direction,
  validity) to normalized feature updates (``tanh``) for the same samples. A per-pixel encoder
  (1x1 convolutions) is followed by three 3x3 convolutions with dilations 1, 2, 4 (receptive
  field 15 px, enough to see an outlier blob and its surroundings) and a per-pixel decoder
  that sees both the pixel's own encoding and its context.
- :class:`Translator`: a 3D network over a voxel's 3x3x3 (or, with
  ``ModelConfig.translator_context = 5``, 5x5x5) feature neighbourhood (one valid convolution
  of that size, then 1x1x1 convolutions) decoding a normalized TSDF (``tanh``, 1 = the
  truncation) and an occupancy logit. Applied to ``(N, F + 1, 3, 3, 3)`` single-voxel
  neighbourhoods (training and decoding; then each layer is one matmul) or to any
  ``(N, F + 1, D, D, D)`` grid: the same weights, the same result up to float rounding.

:class:`LatentFusionModel` bundles both with their :class:`ModelConfig`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as nnf

from ..core.config import check_known_keys
from ..core.errors import ConfigError
from ..core.latent_integrator import LatentIntegrator, SizeRange, fusion_input_channels


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a latent fusion model (stored with its weights).

    Attributes:
        feature_channels: ``F``, latent channels per voxel.
        samples_per_side: ``n``; ``2n + 1`` samples one voxel apart per ray.
        fusion_hidden: channels of the fusion network's hidden layers.
        translator_hidden: channels of the translator's hidden layers.
        truncation_voxels: TSDF scale of the translator's output (its targets are the true
            signed distance clamped to +-this many voxels).
        free_space_samples: ``S``, free-space samples per ray in front of the band (0 = off;
            see :func:`~recon_ros.core.latent_integrator.free_space_sample_voxels`). Weights
            written before this field existed load with 0.
        free_space_range_voxels: the free-space samples lie within this many voxels in front
            of the band.
        translator_context: ``D``, edge of the voxel neighbourhood the translator decodes from
            (3 or 5; weights written before this field existed load with 3).
    """

    feature_channels: int = 8
    samples_per_side: int = 4
    fusion_hidden: int = 32
    translator_hidden: int = 32
    truncation_voxels: float = 4.0
    free_space_samples: int = 0
    free_space_range_voxels: float = 32.0
    translator_context: int = 3

    def __post_init__(self) -> None:
        for name in ("feature_channels", "samples_per_side", "fusion_hidden",
                     "translator_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name}={value!r} is invalid: must be an int >= 1")
        fs = self.free_space_samples
        if isinstance(fs, bool) or not isinstance(fs, int) or fs < 0:
            raise ConfigError(f"model.free_space_samples={self.free_space_samples!r} is "
                              "invalid: must be an int >= 0")
        if not self.free_space_range_voxels > 0:
            raise ConfigError(f"model.free_space_range_voxels={self.free_space_range_voxels!r}"
                              " is invalid: must be > 0")
        if self.translator_context not in (3, 5):
            raise ConfigError(f"model.translator_context={self.translator_context!r} is "
                              "invalid: must be 3 or 5")
        if not 1.0 <= self.truncation_voxels <= 32.0:
            raise ConfigError(f"model.truncation_voxels={self.truncation_voxels!r} is invalid: "
                              "must be in [1, 32]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        check_known_keys(cls, data, "model")
        return cls(**data)


class FusionNet(nn.Module):
    """``(B, C, H, W) -> (B, (2n + 1) * F, H, W)`` feature updates in [-1, 1].

    Args:
        feature_channels: ``F``.
        samples_per_side: ``n``.
        hidden: hidden channels.
        free_space_samples: ``S``; the output then holds ``(2n + 1 + S) * F`` updates.
    """

    def __init__(self, feature_channels: int, samples_per_side: int, hidden: int,
                 free_space_samples: int = 0) -> None:
        super().__init__()
        c_in = fusion_input_channels(feature_channels, samples_per_side, free_space_samples)
        c_out = (2 * samples_per_side + 1 + free_space_samples) * feature_channels
        self.encode = nn.Sequential(nn.Conv2d(c_in, hidden, 1), nn.ReLU(),
                                    nn.Conv2d(hidden, hidden, 1), nn.ReLU())
        self.context = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=4, dilation=4), nn.ReLU())
        self.decode = nn.Sequential(nn.Conv2d(2 * hidden, hidden, 1), nn.ReLU(),
                                    nn.Conv2d(hidden, c_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.encode(x)
        return torch.tanh(self.decode(torch.cat((e, self.context(e)), dim=1)))


class Translator(nn.Module):
    """``(N, F + 1, D, D, D) -> (N, 2, D - c + 1, ...)``: channel 0 normalized TSDF in
    [-1, 1], channel 1 occupancy logit (``c`` = the context).

    Args:
        feature_channels: ``F``.
        hidden: hidden channels.
        context: ``c``, edge of the valid first convolution (3 or 5): each output voxel
            decodes from its ``c x c x c`` neighbourhood.
    """

    def __init__(self, feature_channels: int, hidden: int, context: int = 3) -> None:
        super().__init__()
        self.context = int(context)
        self.net = nn.Sequential(nn.Conv3d(feature_channels + 1, hidden, self.context),
                                 nn.ReLU(), nn.Conv3d(hidden, hidden, 1), nn.ReLU(),
                                 nn.Conv3d(hidden, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.context
        out = self._neighbourhoods(x) if x.shape[2:] == (c, c, c) else self.net(x)
        return torch.cat((torch.tanh(out[:, :1]), out[:, 1:]), dim=1)

    def _neighbourhoods(self, x: torch.Tensor) -> torch.Tensor:
        """:attr:`net` on (N, F + 1, c, c, c) neighbourhoods as matmuls: the valid c^3
        convolution is the flattened neighbourhood times the flattened kernel, a 1x1x1
        convolution a linear layer. Flattened channels-last, which is free for the
        channels-last views of ``LatentVolume``. Returns (N, 2, 1, 1, 1) raw outputs."""
        conv, _, mid, _, last = self.net
        h = x.permute(0, 2, 3, 4, 1).reshape(x.shape[0], -1)
        h = nnf.relu(nnf.linear(h, conv.weight.permute(0, 2, 3, 4, 1).flatten(1), conv.bias))
        h = nnf.relu(nnf.linear(h, mid.weight.flatten(1), mid.bias))
        return nnf.linear(h, last.weight.flatten(1), last.bias).reshape(-1, 2, 1, 1, 1)


class LatentFusionModel(nn.Module):
    """Fusion network + translator of one :class:`ModelConfig`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.fusion = FusionNet(config.feature_channels, config.samples_per_side,
                                config.fusion_hidden, config.free_space_samples)
        self.translator = Translator(config.feature_channels, config.translator_hidden,
                                     config.translator_context)

    def integrator(self, max_count: float, trained_size_range: SizeRange | None = None
                   ) -> LatentIntegrator:
        """A :class:`LatentIntegrator` running these networks (warning about frame sizes
        outside ``trained_size_range``, if given)."""
        c = self.config
        return LatentIntegrator(self.fusion, self.translator, c.samples_per_side,
                                c.truncation_voxels, max_count,
                                trained_size_range=trained_size_range,
                                free_space_samples=c.free_space_samples,
                                free_space_range_voxels=c.free_space_range_voxels,
                                translator_context=c.translator_context)

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts: fusion network, translator, total."""
        f = sum(p.numel() for p in self.fusion.parameters())
        t = sum(p.numel() for p in self.translator.parameters())
        return {"fusion": f, "translator": t, "total": f + t}
