"""Hostile round 66: `chain --check` (`verify_chain`) against wrong chained models, made by mutating the graph
`chain` writes (149 mutants of its glue and of its detector and pose parts as they sit in it). What PASSed:

- **TestPosePartOnRandomBoxes**: the pose part was fed only the boxes the detector found (on the tests' photos 9
  people, large, at the image's edges), so a crop_boxes node with its inputs swapped (a Less, a Sub: keypoints 4e-4
  to 8e-4 px off on other boxes) PASSed. The chained model cut at the glue (`chaining._cut_at_glue`) now also runs
  its pose part on `RANDOM_BOXES` random boxes of the first image (inside, partly outside, tiny), against the pose
  model on the same boxes.
- **TestDetectorPartEveryRow**: only the person rows of the detector part were compared, so wrong box arithmetic
  (the DFL projection ×1.01) that an image showed on another class's row PASSed; other images show it on a
  person's. The cut's detector outputs are now compared with the detector's, every row.
- **TestRightChainStillPasses**: the right chained model, on both runtimes, differs by exactly 0 in both new
  comparisons.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from graphsurgery import chaining
from graphsurgery.cli import cli
from graphsurgery.images import read_image

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "examples" / "images"
CHAIN = chaining.chain  # the real one, before a test's monkeypatch


@pytest.fixture(scope="module")
def patched(chain_patched) -> dict[str, Path]:
    return chain_patched


def _node(graph: onnx.GraphProto, name: str) -> onnx.NodeProto:
    return next(node for node in graph.node if node.name == name)


def _swap_inputs(name: str):
    def edit(graph: onnx.GraphProto) -> None:
        node = _node(graph, name)
        node.input[0], node.input[1] = node.input[1], node.input[0]
    return edit


def _dfl_projection_scaled(graph: onnx.GraphProto) -> None:
    """The detector's DFL projection (bins 0..15, the Constant feeding the third level's Mul) × 1.01."""
    node = _node(graph, "/Constant_31")
    node.attribute[0].t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t) * 1.01))


def _check(patched, tmp_path, monkeypatch, edit, images: Path):
    """`chain --check` on `images` (a file or a folder), `chain` writing the chained model `edit` made wrong (None:
    the right one)."""
    def wrong_chain(detector, pose, out, **options):
        result = CHAIN(detector, pose, out, **options)
        if edit is not None:
            model = onnx.load(str(out))
            edit(model.graph)
            onnx.checker.check_model(model, full_check=True)
            onnx.save(model, str(out))
        return result

    monkeypatch.setattr(chaining, "chain", wrong_chain)
    return CliRunner().invoke(cli, ["chain", str(patched["detector"]), str(patched["pose"]), "-o",
                                    str(tmp_path / "chained.onnx"), "--check", str(images), "--force"],
                               terminal_width=200)


PHOTOS = [IMAGES / "astronaut.jpg", IMAGES / "cameraman.jpg"]


class TestPosePartOnRandomBoxes:
    @pytest.mark.parametrize("node", ["pose/graphsurgery/pre/crop_boxes/Less_32",
                                      "pose/graphsurgery/pre/crop_boxes/Sub_30"])
    def test_a_crop_wrong_on_boxes_the_detector_never_found_fails(self, patched, tmp_path, monkeypatch, node):
        result = _check(patched, tmp_path, monkeypatch, _swap_inputs(node), IMAGES)
        assert result.exit_code == 1 and "FAIL: the chained model differs by up to" in result.output, result.output
        assert "PASS" not in result.output


class TestDetectorPartEveryRow:
    def test_box_arithmetic_wrong_on_another_class_row_fails(self, patched, tmp_path, monkeypatch):
        brighter = tmp_path / "astronaut_brighter.png"  # lossless: the pixels the mutant's difference was found on
        image = np.clip(read_image(PHOTOS[0]).astype(np.float32) * 1.5, 0, 255).astype(np.uint8)
        import cv2

        assert cv2.imwrite(str(brighter), image)
        np.testing.assert_array_equal(read_image(brighter), image)
        result = _check(patched, tmp_path, monkeypatch, _dfl_projection_scaled, brighter)
        assert result.exit_code == 1 and "FAIL: the chained model differs by up to" in result.output, result.output
        right = _check(patched, tmp_path, monkeypatch, None, brighter)
        assert right.exit_code == 0 and "PASS" in right.output, right.output


class TestRightChainStillPasses:
    def test_both_new_comparisons_are_exactly_zero_on_both_runtimes(self, patched, tmp_path):
        chained = chaining.chain(patched["detector"], patched["pose"], tmp_path / "chained.onnx").written[-1]
        rows = chaining.verify_chain(chained, patched["detector"], patched["pose"],
                                     [read_image(path)[None] for path in PHOTOS])
        assert {row["backend"] for row in rows} == {"onnxruntime", "openvino"}
        assert all(row["detector"] == 0.0 and row["random_boxes"] == 0.0 for row in rows)
