"""PoseHighResolutionNet (HRNet, Sun et al. 2019) for top-down 2D human pose: 256x192 crop in, 17 COCO heatmaps out.

Written from the paper's description so that the module tree, and therefore `state_dict()`, matches the authors'
`pose_hrnet.py` key for key and shape for shape: the official `pose_hrnet_w32_256x192.pth` loads with strict=True.
Layout: stem (two stride-2 3x3 convs), `layer1` (Bottlenecks), then stages 2-4 of parallel branches at 1/4, 1/8,
1/16 and 1/32 resolution (width C, 2C, 4C, 8C) joined by `transition*` layers, fused by summation after every
module (1x1 conv + nearest upsample from lower, strided 3x3 convs from higher resolutions), and a 1x1 `final_layer`
on the highest-resolution branch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from graphsurgery.errors import GraphsurgeryError

from examples.hrnet.checkpoint import load_checkpoint  # noqa: F401 - where the export script and tests find it

BN_MOMENTUM = 0.1


@dataclass(frozen=True)
class HRNetConfig:
    """The knobs of the official experiment YAML that change the architecture (FUSE_METHOD is always SUM)."""

    name: str = "w32"
    width: int = 32  # channels of the 1/4 branch; branch i has width * 2**i (NUM_CHANNELS 32/64/128/256)
    stem_channels: int = 64  # stem width; layer1 Bottlenecks expand it 4x
    layer1_blocks: int = 4
    num_modules: tuple[int, int, int] = (1, 4, 3)  # stages 2, 3, 4
    num_blocks: int = 4  # BasicBlocks per branch per module
    num_joints: int = 17
    final_conv_kernel: int = 1
    input_size: tuple[int, int] = (256, 192)  # (H, W); heatmaps are 1/4 of it

    def branch_channels(self, num_branches: int) -> list[int]:
        return [self.width * 2**i for i in range(num_branches)]


PRESETS: dict[str, HRNetConfig] = {
    # experiments/coco/hrnet/w32_256x192_adam_lr1e-3.yaml
    "w32": HRNetConfig(),
    # Same four-branch topology, ~1/100 of the compute: for tests.
    "tiny": HRNetConfig(name="tiny", width=8, stem_channels=16, layer1_blocks=1, num_modules=(1, 1, 1), num_blocks=1),
}


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, relu: bool) -> nn.Sequential:
    """Conv (no bias) + BN (+ ReLU): keys `.0.weight`, `.1.*` as in the authors' nn.Sequential blocks."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), _bn(cout)]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _bn(planes)
        self.relu = nn.ReLU()
        self.downsample = _conv_bn(cin, planes, 1, stride, relu=False) if stride != 1 or cin != planes else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1):
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = _bn(cout)
        self.relu = nn.ReLU()
        self.downsample = _conv_bn(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


def _fuse_path(cin: int, cout: int, steps: int) -> nn.Module:
    """Map branch j onto branch i; `steps` = j - i (>0: upsample from lower resolution, <0: downsample)."""
    if steps == 0:
        return nn.Identity()  # the authors store None here; Identity has no state, so keys are unchanged
    if steps > 0:
        upsample = nn.Upsample(scale_factor=2**steps, mode="nearest")
        return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), upsample)
    # -steps stride-2 3x3 convs; only the last one changes the width and it has no ReLU (the sum is ReLU'd).
    n = -steps
    return nn.Sequential(*(_conv_bn(cin, cout if k == n - 1 else cin, 3, 2, relu=k < n - 1) for k in range(n)))


class HighResolutionModule(nn.Module):
    """Parallel branches of BasicBlocks, then every output resolution sums all branches (FUSE_METHOD SUM)."""

    def __init__(self, channels: list[int], num_blocks: int, multi_scale_output: bool):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(BasicBlock(c, c) for _ in range(num_blocks))) for c in channels
        )
        outputs = range(len(channels)) if multi_scale_output else range(1)
        self.fuse_layers = nn.ModuleList(
            nn.ModuleList(_fuse_path(cj, channels[i], j - i) for j, cj in enumerate(channels)) for i in outputs
        )
        self.relu = nn.ReLU()

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        fused = []
        for paths in self.fuse_layers:
            y = paths[0](xs[0])
            for path, x in zip(paths[1:], xs[1:]):
                y = y + path(x)
            fused.append(self.relu(y))
        return fused


def _transition(prev: list[int], cur: list[int]) -> nn.ModuleList:
    """Adapt existing branches whose width changes (stem -> stage 2 only) and spawn the new, half-resolution one."""
    layers: list[nn.Module] = []
    for i, c in enumerate(cur):
        if i < len(prev):
            layers.append(_conv_bn(prev[i], c, 3, 1, relu=True) if prev[i] != c else nn.Identity())
        else:
            steps = i + 1 - len(prev)
            layers.append(
                nn.Sequential(
                    *(_conv_bn(prev[-1], c if k == steps - 1 else prev[-1], 3, 2, relu=True) for k in range(steps))
                )
            )
    return nn.ModuleList(layers)


class PoseHighResolutionNet(nn.Module):
    def __init__(self, config: HRNetConfig = PRESETS["w32"]):
        super().__init__()
        self.config = config
        stem = config.stem_channels
        self.conv1 = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = _bn(stem)
        self.conv2 = nn.Conv2d(stem, stem, 3, 2, 1, bias=False)
        self.bn2 = _bn(stem)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(
            *(Bottleneck(stem if k == 0 else stem * Bottleneck.expansion, stem) for k in range(config.layer1_blocks))
        )

        prev = [stem * Bottleneck.expansion]
        for stage, num_modules in enumerate(config.num_modules, start=2):
            cur = config.branch_channels(stage)
            setattr(self, f"transition{stage - 1}", _transition(prev, cur))
            last = stage == 4  # the last module of stage 4 only outputs the 1/4 branch
            modules = [
                HighResolutionModule(cur, config.num_blocks, multi_scale_output=not (last and m == num_modules - 1))
                for m in range(num_modules)
            ]
            setattr(self, f"stage{stage}", nn.Sequential(*modules))
            prev = cur

        k = config.final_conv_kernel
        self.final_layer = nn.Conv2d(config.width, config.num_joints, k, 1, k // 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        for transition, stage in (
            (self.transition1, self.stage2),
            (self.transition2, self.stage3),
            (self.transition3, self.stage4),
        ):
            xs = [t(ys[i] if i < len(ys) else ys[-1]) for i, t in enumerate(transition)]
            ys = stage(xs)
        return self.final_layer(ys[0])


def build_hrnet(config: HRNetConfig | str = "w32", *, seed: int | None = 0) -> PoseHighResolutionNet:
    """An HRNet in eval mode; `seed=None` keeps PyTorch's default init (cheap, for loading a checkpoint next)."""
    if isinstance(config, str):
        if config not in PRESETS:
            raise GraphsurgeryError(f"unknown HRNet variant {config!r}", fix=f"use one of {', '.join(PRESETS)}")
        config = PRESETS[config]
    model = PoseHighResolutionNet(config)
    if seed is not None:
        seed_weights(model, seed)
    return model.eval()


def _calibration_images(n: int, size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """Octave noise: equal energy per octave, the 1/f spectrum of natural photos (white noise is much harsher)."""
    h, w = size
    images = torch.zeros(n, 3, h, w, dtype=torch.float64)
    for cells in (4, 8, 16, 32, 64, 128, 256):
        coarse = torch.randn(n, 3, cells, max(1, cells * w // h), generator=generator, dtype=torch.float64)
        images += nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return (images - images.mean(dim=(0, 2, 3), keepdim=True)) / images.std(dim=(0, 2, 3), keepdim=True)


@torch.no_grad()
def seed_weights(model: PoseHighResolutionNet, seed: int, calibration_images: int = 4) -> None:
    """Deterministic stand-in weights whose heatmaps look like a trained model's in magnitude.

    The authors' init (conv weights N(0, 0.001), identity BatchNorm) shrinks activations at every conv: heatmaps
    come out ~1e-10, so any parity tolerance passes vacuously. PyTorch's default init gives O(0.1) heatmaps but
    leaves every BatchNorm at mean 0 / var 1, which hides bugs in BN folding (swapped mean/var, wrong eps). So:
    Kaiming-normal convs from a private generator seeded with `seed`; BatchNorm running stats recalibrated on a
    few synthetic 1/f-noise images (in float64, so they do not depend on thread count), which keeps unit-scale
    activations through all four stages and gives every BN non-trivial stats; then each joint's 1x1 readout is
    rescaled to mean 0 and a std drawn from [0.1, 0.2] on those images. On photos this gives per-joint peaks of
    ~0.3-1.2 (a trained model regresses Gaussians of height 1) and no ties for the maximum.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch -> running stats are exactly that batch's stats

    features: list[Tensor] = []
    hook = model.final_layer.register_forward_hook(lambda _m, inputs, _out: features.append(inputs[0]))
    model.double().train()
    try:
        model(_calibration_images(calibration_images, model.config.input_size, g))
    finally:
        hook.remove()
        model.float().eval()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = BN_MOMENTUM

    final = model.final_layer
    heat = nn.functional.conv2d(features[0], final.weight.double(), padding=final.padding)
    mean, std = heat.mean(dim=(0, 2, 3)), heat.std(dim=(0, 2, 3))
    target_std = 0.1 + 0.1 * torch.rand(final.out_channels, generator=g, dtype=torch.float64)
    scale = target_std / std
    final.weight.copy_(final.weight.double() * scale.view(-1, 1, 1, 1))
    final.bias.copy_(-mean * scale)
