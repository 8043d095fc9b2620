"""Two common architectures, small and with seeded stand-in weights (no checkpoint needed):

- `ResNetClassifier`: a ResNet-style classifier: 7×7 stride-2 stem and max pool, stages of BasicBlocks (the
  first at stride 1, the others halving the size), global average pooling, one fully connected layer.
- `SimpleBaseline`: Xiao et al. 2018, "Simple Baselines for Human Pose Estimation and Tracking": a ResNet trunk
  down to 1/32 and three 4×4 stride-2 deconvolutions (+ BN + ReLU) back up to 1/4, then a 1×1 conv to one heatmap
  per joint: 384×288 in, 96×72 heatmaps of 17 COCO joints out (mmpose decodes it with DARK or UDP).
- `SimccPose`: an RTMPose-shaped SimCC model (Li et al. 2022, Jiang et al. 2023): a ResNet trunk down to 1/32, a
  1×1 conv to one feature map per joint, flattened, and two linear heads classifying x and y at two bins per
  input pixel: 256×192 in, `simcc_x` [., 17, 384] and `simcc_y` [., 17, 512] out (mmpose's SimCC decoding).

The weights are random but not trivial: Kaiming-normal convolutions and BatchNorm layers with non-identity
statistics (so folding BN into the convolutions at export is exercised), all drawn from one seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from graphsurgery.errors import GraphsurgeryError

from examples.hrnet.model import BasicBlock


@dataclass(frozen=True)
class ZooConfig:
    kind: Literal["classifier", "pose", "simcc"]
    widths: tuple[int, ...]  # channels of each stage
    blocks: tuple[int, ...]  # BasicBlocks per stage
    input_size: tuple[int, int]  # (H, W)
    classes: int = 1000
    deconv_width: int = 256
    joints: int = 17
    split_ratio: int = 2  # SimCC bins per input pixel


PRESETS: dict[str, ZooConfig] = {
    "resnet": ZooConfig("classifier", (64, 128, 256), (2, 2, 2), (224, 224)),
    "resnet-tiny": ZooConfig("classifier", (8, 16, 32), (1, 1, 1), (224, 224)),
    "simplebaseline": ZooConfig("pose", (64, 128, 256, 512), (2, 2, 2, 2), (384, 288)),
    "simplebaseline-tiny": ZooConfig("pose", (8, 16, 32, 64), (1, 1, 1, 1), (384, 288), deconv_width=16),
    "rtmpose": ZooConfig("simcc", (64, 128, 256, 512), (1, 1, 1, 1), (256, 192)),
    "rtmpose-tiny": ZooConfig("simcc", (8, 16, 32, 64), (1, 1, 1, 1), (256, 192)),
}


class ResNetTrunk(nn.Module):
    """Stem (stride 4) and stages of BasicBlocks; each stage after the first halves the size."""

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        stages, cin = [], widths[0]
        for index, (width, count) in enumerate(zip(widths, blocks)):
            layers = [BasicBlock(cin, width, stride=1 if index == 0 else 2)]
            layers += [BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            cin = width
        self.stages = nn.Sequential(*stages)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))


class ResNetClassifier(nn.Module):
    def __init__(self, config: ZooConfig):
        super().__init__()
        self.config = config
        self.trunk = ResNetTrunk(config.widths, config.blocks)
        self.fc = nn.Linear(config.widths[-1], config.classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.trunk(x), 1), 1))


class SimpleBaseline(nn.Module):
    def __init__(self, config: ZooConfig):
        super().__init__()
        self.config = config
        self.trunk = ResNetTrunk(config.widths, config.blocks)
        layers, cin = [], config.widths[-1]
        for _ in range(3):
            layers += [nn.ConvTranspose2d(cin, config.deconv_width, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(config.deconv_width), nn.ReLU()]
            cin = config.deconv_width
        self.deconv = nn.Sequential(*layers)
        self.final_layer = nn.Conv2d(cin, config.joints, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.final_layer(self.deconv(self.trunk(x)))


class SimccPose(nn.Module):
    def __init__(self, config: ZooConfig):
        super().__init__()
        self.config = config
        self.trunk = ResNetTrunk(config.widths, config.blocks)
        self.final_layer = nn.Conv2d(config.widths[-1], config.joints, 1)
        h, w = config.input_size
        cells = (h // 32) * (w // 32)
        self.mlp_x = nn.Linear(cells, w * config.split_ratio)
        self.mlp_y = nn.Linear(cells, h * config.split_ratio)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = torch.flatten(self.final_layer(self.trunk(x)), 2)  # [N, K, h/32 · w/32]
        return self.mlp_x(features), self.mlp_y(features)


MODELS = {"classifier": ResNetClassifier, "pose": SimpleBaseline, "simcc": SimccPose}


def build_zoo_model(name: str, *, seed: int = 0) -> ResNetClassifier | SimpleBaseline | SimccPose:
    """A zoo model in eval mode with stand-in weights drawn from `seed`."""
    if name not in PRESETS:
        raise GraphsurgeryError(f"unknown zoo model {name!r}", fix=f"use one of {', '.join(PRESETS)}")
    config = PRESETS[name]
    model = MODELS[config.kind](config)
    _seed_weights(model, seed)
    return model.eval()


@torch.no_grad()
def _seed_weights(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
            if m.bias is not None:
                m.bias.normal_(0.0, 0.1, generator=g)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5, generator=g)
            m.bias.normal_(0.0, 0.1, generator=g)
            m.running_mean.normal_(0.0, 0.1, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
