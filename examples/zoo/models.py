"""Two common architectures, small and with seeded stand-in weights (no checkpoint needed):

- `ResNetClassifier`: a ResNet-style classifier: 7×7 stride-2 stem and max pool, stages of BasicBlocks (the
  first at stride 1, the others halving the size), global average pooling, one fully connected layer.
- `SimpleBaseline`: Xiao et al. 2018, "Simple Baselines for Human Pose Estimation and Tracking": a ResNet trunk
  down to 1/32 and three 4×4 stride-2 deconvolutions (+ BN + ReLU) back up to 1/4, then a 1×1 conv to one heatmap
  per joint: 384×288 in, 96×72 heatmaps of 17 COCO joints out (mmpose decodes it with DARK or UDP).
- `SimccPose`: an RTMPose-shaped SimCC model (Li et al. 2022, Jiang et al. 2023): a ResNet trunk down to 1/32, a
  1×1 conv to one feature map per joint, flattened, and two linear heads classifying x and y at two bins per
  input pixel: 256×192 in, `simcc_x` [., 17, 384] and `simcc_y` [., 17, 512] out (mmpose's SimCC decoding).
- `YoloV8Detector`: a YOLOv8-shaped anchor-free detector (ultralytics): a plain strided Conv+BN+SiLU trunk (no CSP,
  no FPN), at strides 8, 16 and 32 a box branch (4 × 16 DFL bins) and a class branch, decoded in the graph as
  ultralytics exports it: 320×320 in (the tiny one 128×160), one `output0` [., 4 + 80, A] out, A the anchors
  (2100; 420), of cx, cy, w, h in input pixels and per-class sigmoid scores.

The weights are random but not trivial: Kaiming-normal convolutions and BatchNorm layers with non-identity
statistics (so folding BN into the convolutions at export is exercised), all drawn from one seeded generator. The
detector's BatchNorm statistics and class biases are then calibrated on seeded noise so that, like a trained
detector, it finds a few dozen candidates in an image (`_calibrate_detector`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from graphsurgery.errors import GraphsurgeryError

from examples.hrnet.model import BasicBlock


@dataclass(frozen=True)
class ZooConfig:
    kind: Literal["classifier", "pose", "simcc", "detector"]
    widths: tuple[int, ...]  # channels of each stage
    blocks: tuple[int, ...]  # BasicBlocks per stage (detector: 3×3 Convs after each stage's stride-2 Conv)
    input_size: tuple[int, int]  # (H, W)
    classes: int = 1000
    deconv_width: int = 256
    joints: int = 17
    split_ratio: int = 2  # SimCC bins per input pixel
    strides: tuple[int, ...] = (8, 16, 32)  # detector levels; stage i of the trunk is at stride 2**(i + 1)
    reg_max: int = 16  # DFL bins per box side
    decoded: bool = True  # detector: boxes and scores (ultralytics' export), or the raw head before DFL and sigmoid


PRESETS: dict[str, ZooConfig] = {
    "resnet": ZooConfig("classifier", (64, 128, 256), (2, 2, 2), (224, 224)),
    "resnet-tiny": ZooConfig("classifier", (8, 16, 32), (1, 1, 1), (224, 224)),
    "simplebaseline": ZooConfig("pose", (64, 128, 256, 512), (2, 2, 2, 2), (384, 288)),
    "simplebaseline-tiny": ZooConfig("pose", (8, 16, 32, 64), (1, 1, 1, 1), (384, 288), deconv_width=16),
    "rtmpose": ZooConfig("simcc", (64, 128, 256, 512), (1, 1, 1, 1), (256, 192)),
    "rtmpose-tiny": ZooConfig("simcc", (8, 16, 32, 64), (1, 1, 1, 1), (256, 192)),
    "yolov8": ZooConfig("detector", (16, 32, 64, 128, 256), (0, 1, 2, 2, 1), (320, 320), classes=80),
    "yolov8-tiny": ZooConfig("detector", (4, 8, 8, 16, 16), (0, 0, 1, 1, 1), (128, 160), classes=80),
    "yolov8-tiny-raw": ZooConfig("detector", (4, 8, 8, 16, 16), (0, 0, 1, 1, 1), (128, 160), classes=80,
                                 decoded=False),
}
HOT_CLASSES = 3  # detector classes that fire; the others keep ultralytics' prior (see _calibrate_detector)
CANDIDATES = 40  # detector scores above 0.25 per calibration image


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


class ConvBnSiLU(nn.Sequential):
    """Ultralytics' `Conv`: a bias-free convolution, BatchNorm and SiLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


def _branch(cin: int, width: int, cout: int) -> nn.Sequential:
    """One branch of ultralytics' `Detect` head: two Convs, then a 1×1 convolution to the predictions."""
    return nn.Sequential(ConvBnSiLU(cin, width), ConvBnSiLU(width, width), nn.Conv2d(width, cout, 1))


class YoloV8Detector(nn.Module):
    """YOLOv8's head and in-graph decoding on a plain trunk.

    Head widths are ultralytics' (box branch max(16, C/4, 4·reg_max), class branch max(C, min(classes, 100)), C the
    stride-8 channels). `output0` [N, 4 + classes, A] holds the stride-8 cells first, row-major within a level: cx,
    cy, w, h in input pixels from DFL distances (softmax over the bins, expectation over 0…reg_max-1) about the
    cell centres, then the sigmoid class scores. Like ultralytics' export, `forward` takes the preset's input size
    only: the anchor grid is fixed. With `decoded` false (`yolov8-tiny-raw`) `output0` is the raw head instead,
    [N, 4 · reg_max + classes, A]: the box bins' logits (l, t, r, b, each reg_max) and the class logits.
    """

    def __init__(self, config: ZooConfig):
        super().__init__()
        self.config = config
        stages, cin = [], 3
        for width, count in zip(config.widths, config.blocks):
            stages.append(nn.Sequential(ConvBnSiLU(cin, width, 2), *(ConvBnSiLU(width, width) for _ in range(count))))
            cin = width
        self.trunk = nn.ModuleList(stages)
        channels = [config.widths[stride.bit_length() - 2] for stride in config.strides]
        c2, c3 = max(16, channels[0] // 4, 4 * config.reg_max), max(channels[0], min(config.classes, 100))
        self.box = nn.ModuleList(_branch(c, c2, 4 * config.reg_max) for c in channels)
        self.cls = nn.ModuleList(_branch(c, c3, config.classes) for c in channels)
        self.register_buffer("bins", torch.arange(config.reg_max, dtype=torch.float32)[:, None], persistent=False)

    def head_outputs(self, x: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per level, stride 8 first: raw box logits [N, 4·reg_max, h, w] (side-major: l, t, r, b) and class logits
        [N, classes, h, w]; what `forward` decodes, exposed so tests can decode it independently."""
        levels = {}
        for index, stage in enumerate(self.trunk):
            x = levels[2 ** (index + 1)] = stage(x)
        return [(box(levels[s]), cls(levels[s])) for s, box, cls in zip(self.config.strides, self.box, self.cls)]

    def forward(self, x: Tensor) -> Tensor:
        boxes, scores = [], []
        for stride, (box, cls) in zip(self.config.strides, self.head_outputs(x)):
            n = box.shape[0]
            h, w = (size // stride for size in self.config.input_size)  # not box.shape: output0's shape stays static
            if not self.config.decoded:  # the raw head: [N, 4·reg_max + classes, A], what `dfl_boxes` decodes
                boxes.append(box.reshape(n, 4 * self.config.reg_max, h * w))
                scores.append(cls.reshape(n, self.config.classes, h * w))
                continue
            distances = (box.reshape(n, 4, self.config.reg_max, h * w).softmax(2) * self.bins).sum(2)  # l, t, r, b
            rows, cols = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
            anchors = torch.stack((cols.flatten(), rows.flatten()))  # [2, h·w]: x, y in stride units
            x1y1, x2y2 = anchors - distances[:, :2], anchors + distances[:, 2:]
            boxes.append(torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), 1) * stride)
            scores.append(cls.reshape(n, self.config.classes, h * w).sigmoid())
        return torch.cat((torch.cat(boxes, 2), torch.cat(scores, 2)), 1)


MODELS = {"classifier": ResNetClassifier, "pose": SimpleBaseline, "simcc": SimccPose, "detector": YoloV8Detector}


def build_zoo_model(name: str, *, seed: int = 0) -> ResNetClassifier | SimpleBaseline | SimccPose | YoloV8Detector:
    """A zoo model in eval mode with stand-in weights drawn from `seed`."""
    if name not in PRESETS:
        raise GraphsurgeryError(f"unknown zoo model {name!r}", fix=f"use one of {', '.join(PRESETS)}")
    config = PRESETS[name]
    model = MODELS[config.kind](config)
    _seed_weights(model, seed)
    if isinstance(model, YoloV8Detector):
        _calibrate_detector(model, seed)
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


@torch.no_grad()
def _calibrate_detector(model: YoloV8Detector, seed: int) -> None:
    """Give the stand-in detector a few dozen candidates per image, as a trained one has, instead of none.

    With the seeded BatchNorm statistics the signal shrinks layer by layer until the class logits hardly depend on
    the image. So the BatchNorm statistics are measured, as a trained net's are, on a seeded batch: uniform noise at
    full, 1/2 and 1/4 resolution (nearest-upsampled: fine grain, and flat patches with edges). Class biases are then
    ultralytics' prior log(5 / classes / (640 / stride)²), scores about 1e-5 (at most 0.11 measured), except for the
    first `HOT_CLASSES` (person, bicycle, car), whose logit becomes logit(0.25) + 3 · (e − q) / σ, e the evidence,
    q and σ its quantile and standard deviation over the batch, q placed so that about `CANDIDATES` (cell, class)
    pairs per batch image clear 0.25. A threshold 2 to 3 σ into the tail, not the 9 to 12 σ the prior alone puts
    it at, keeps the count steady from image to image and seed to seed. The box bins keep their seeded weights
    (ultralytics starts them level too): boxes about 15 strides across, so a class's neighbouring candidates overlap.

    Measured, seed 0: scores above 0.25 per image (of 168 000 in yolov8, 33 600 in yolov8-tiny), and in brackets how
    many of those per-class NMS removes at IoU 0.7 / 0.45. yolov8: random uint8 images 70 to 97 (4 to 8 / 25 to 38),
    astronaut.jpg resized 190 (45 / 121), cameraman.jpg 71 (21 / 48); yolov8-tiny: random 38 to 54 (4 to 8 / 20 to
    25), astronaut 27 (6 / 14), cameraman 13 (8 / 10). Seeds 0 to 7: random 12 to 126, astronaut 4 to 332. Low
    contrast finds little, as in a trained model: a small random image letterboxed in grey gives 0 (seed 0).
    """
    h, w = model.config.input_size
    g = torch.Generator().manual_seed(seed)
    batch = torch.cat([nn.functional.interpolate(torch.rand(4, 3, h // f, w // f, generator=g), scale_factor=f)
                       for f in (1, 2, 4)])
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average: the statistics of the one batch
    model.train()
    model.head_outputs(batch)
    model.eval()
    cells = sum((h // stride) * (w // stride) for stride in model.config.strides)
    for stride, branch, (_, logits) in zip(model.config.strides, model.cls, model.head_outputs(batch)):
        final = branch[-1]
        evidence = logits.transpose(0, 1).flatten(1)[:HOT_CLASSES]  # [hot, batch · h · w]
        sigma = evidence.std(1)
        q = evidence.quantile(1 - CANDIDATES / (HOT_CLASSES * cells), dim=1)
        hot_bias = math.log(0.25 / 0.75) + 3 * (final.bias[:HOT_CLASSES] - q) / sigma
        final.weight[:HOT_CLASSES] *= (3 / sigma)[:, None, None, None]
        final.bias.fill_(math.log(5 / model.config.classes / (640 / stride) ** 2))
        final.bias[:HOT_CLASSES] = hot_bias
