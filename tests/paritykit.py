"""Deliberately wrong patches, for showing that verify and eval-coco catch them.

- `wrong_recipe`: the HRNet recipe with one mistake people make by hand: colour order not swapped, std omitted.
- `shift_keypoints`: a patched model whose keypoints output is moved by a fixed offset (an off-by-one decode),
  made by editing the patched graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
CROP_RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
IMAGE_RECIPE = ROOT / "recipes" / "hrnet_coco_pose_image.yaml"

MISTAKES = {
    # the caller's BGR crop goes in unswapped: the recipe claims RGB and drops reverse_channels
    "colour": [("tensor: {dtype: uint8, layout: NHWC, color: BGR}", "tensor: {dtype: uint8, layout: NHWC, color: RGB}"),
               ("    - reverse_channels: {}\n", "")],
    "no_std": [("std: [0.229, 0.224, 0.225]", "std: [1, 1, 1]")],
}


def wrong_recipe(mistake: str, folder: Path, source: Path = CROP_RECIPE) -> Path:
    """Write `source` with `mistake` made into `folder`; every replacement must apply."""
    text = source.read_text()
    for old, new in MISTAKES[mistake]:
        assert old in text, f"{source} no longer contains {old!r}"
        text = text.replace(old, new)
    path = folder / f"{source.stem}.{mistake}.yaml"
    path.write_text(text.replace(f"name: {_name(source)}", f"name: {_name(source)}-{mistake.replace('_', '-')}"))
    return path


def _name(recipe: Path) -> str:
    return next(line.split(":", 1)[1].strip() for line in recipe.read_text().splitlines() if line.startswith("name:"))


def shift_keypoints(patched: Path, out: Path, offset: tuple[float, float], output: str = "keypoints") -> Path:
    """Copy of the patched model whose `output` is the original plus `offset` (x, y)."""
    model = onnx.load(str(patched))
    graph = model.graph
    producer = next(node for node in graph.node if output in node.output)
    inner = f"{output}/before_shift"
    producer.output[list(producer.output).index(output)] = inner
    graph.initializer.append(numpy_helper.from_array(np.array(offset, np.float32), "test/offset"))
    graph.node.append(helper.make_node("Add", [inner, "test/offset"], [output], name="test/shift"))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return out
