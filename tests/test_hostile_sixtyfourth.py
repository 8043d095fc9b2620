"""Hostile round 64: mutation testing of where `to_image: {mode: image}` tells the caller's image from a letterbox's
padding across the height. verify's upscaled images (`samples._upscaled_size`) were all narrower than the model's
aspect, so their padding lay left and right, and the cell probes (`ToImage.edge_cells`) never had a row within half
a model pixel of a top or bottom edge: patches moving the top boundary (first_centre's y) 0.05 or 0.5 caller px
into the padding, or the bottom one (last_centre's y) as far into the padding or 0.05 px into the image, PASSed
on 160 × 128, 192 × 256, 48 × 64 and 72 × 96 models, centred and top-left, with plain argmax, quarter_offset and
UDP's ratio (103 of 216 mutants). verify now also feeds images wider than the model's aspect, chosen by the
recipe's own rows as the narrow ones are by its columns.

TestUpscaledSizes: the sizes chosen (no verify run). TestBoundaryMovedAcrossTheHeight: wrong patches that PASSed
now FAIL on the edge-cell probes of a size padded top and bottom, after the right patch PASSes.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from graphsurgery.api import apply
from graphsurgery.samples import RESIZE_SIZES, UPSCALED, _upscaled_size
from graphsurgery.steps.resize import Resize
from graphsurgery.steps.to_image import ToImage
from graphsurgery.verification import verify

from modelkit import POSE_LETTERBOX, pose_model

FIRST_CENTRE = "graphsurgery/post/to_image/first_centre"
GREATER = "graphsurgery/post/to_image/Greater"


def _wide(resize: Resize, sizes) -> list[tuple[int, int]]:
    """The upscaled sizes whose letterbox pads the height."""
    th, tw = resize.target_size()
    return [(w, h) for w, h in sizes if w * th > tw * h and w * UPSCALED <= tw and h * UPSCALED <= th]


class TestUpscaledSizes:
    @pytest.mark.parametrize("hw", [(128, 160), (256, 192), (96, 72)])
    def test_images_padded_top_and_bottom_with_cells_either_side_of_the_edges(self, hw):
        """A row of 1, 2, 4 or 8 model pixels a cell just outside the top edge (in the pad), one just past the
        bottom edge and one just short of it: each within half a model pixel, at a scale above ten (where a pixel
        short of the edge lies exactly 0.05 caller px inside, and a boundary moved 0.05 px ties)."""
        resize = Resize(size=hw, fit="letterbox", side_rounding="round")
        wide = _wide(resize, _upscaled_size(resize, RESIZE_SIZES))
        rows = np.arange(0, hw[0], 8.0)
        found = set()
        for w, h in wide:
            scale, offset = resize.forward_map((h, w))
            top, bottom = float(offset[1]), float(offset[1]) + resize.resized_hw(h, w)[0]
            assert scale[1] > UPSCALED, (w, h, scale)
            found |= {name for name, low, high in (("top", top - 1, top - 0.51), ("past", bottom - 0.49, bottom),
                                                   ("short", bottom - 1, bottom - 0.5))
                      if ((rows >= low) & (rows <= high)).any()}
        assert found == {"top", "past", "short"}, (wide, found)

    def test_udps_rows_choose_their_own_sizes(self):
        """UDP's rows (128 / 31 model pixels apart) differ from its columns (160 / 39): the rows choose
        (`ToImage.cell_spacing` gives both)."""
        resize = Resize(size=(128, 160), fit="letterbox", side_rounding="round")
        facts = SimpleNamespace(input_size=(160, 128), output_shape=[1, 17, 32, 40])
        spacing = ToImage(mode="image", udp=True).cell_spacing(facts)
        wide = _wide(resize, _upscaled_size(resize, RESIZE_SIZES, spacing))
        rows = np.arange(32, dtype=np.float32) * np.float32(128 / 31)
        tops = [float(resize.forward_map((h, w))[1][1]) for w, h in wide]
        assert any(((rows >= top - 1) & (rows <= top - 0.51)).any() for top in tops), (wide, tops)


def _recipe(folder: Path, variant: str, anchor: str) -> Path:
    text = POSE_LETTERBOX.replace("pad_value: 114}", f"pad_value: 114, pad_anchor: {anchor}}}")
    if variant == "quarter":
        text = text.replace("    - heatmap_argmax: {}\n", "    - heatmap_argmax: {}\n    - quarter_offset: {}\n")
    elif variant == "udp":
        text = text.replace("to_image: {mode: image}", "to_image: {mode: image, udp: true}")
    path = folder / f"{variant}-{anchor}.yaml"
    path.write_text(text)
    return path


def _moved(right: Path, side: str, delta: float) -> onnx.ModelProto:
    """The right patch with its top boundary (first_centre's y) or its bottom one (last_centre's y) moved `delta`
    caller px, the x boundaries kept."""
    model = onnx.load(str(right))
    if side == "top":
        [first] = [tensor for tensor in model.graph.initializer if tensor.name == FIRST_CENTRE]
        value = np.float32(numpy_helper.to_array(first))
        first.CopyFrom(numpy_helper.from_array(np.array([value, value + delta], np.float32), FIRST_CENTRE))
        return model
    nodes = model.graph.node
    [at] = [i for i, node in enumerate(nodes) if node.name == GREATER]
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, delta], np.float32), "moved"))
    nodes.insert(at, helper.make_node("Add", [nodes[at].input[1], "moved"], ["moved_last_centre"]))
    nodes[at + 1].input[1] = "moved_last_centre"
    return model


class TestBoundaryMovedAcrossTheHeight:
    @pytest.mark.parametrize(("hw", "variant", "anchor", "side", "delta"), [
        ((128, 160), "plain", "center", "bottom", -0.05),  # PASSed also with wide sizes taken largest first
        ((128, 160), "plain", "center", "top", -0.5),
        ((256, 192), "quarter", "center", "bottom", 0.05),
        ((96, 72), "udp", "center", "top", -0.05),
        ((96, 72), "plain", "top_left", "bottom", 0.5),
    ])
    def test_fails_on_an_image_padded_top_and_bottom(self, tmp_path, hw, variant, anchor, side, delta):
        plain, recipe = pose_model(tmp_path / "plain.onnx", input_hw=hw), _recipe(tmp_path, variant, anchor)
        right = apply(recipe, plain, tmp_path / "right.onnx").output
        assert verify(recipe, plain, patched=right, backends=["onnxruntime"])
        onnx.save(_moved(right, side, delta), str(tmp_path / "wrong.onnx"))
        report = verify(recipe, plain, patched=tmp_path / "wrong.onnx", backends=["onnxruntime"])
        assert not report
        resize = Resize(size=hw, fit="letterbox", side_rounding="round", pad_anchor=anchor)
        wide = [f"probe output of a {w}×{h} image" for w, h in _wide(resize, report.sizes)]
        assert any(shown in line for line in report.failures() for shown in wide), report.failures()
