"""verify of a model exported with a static batch over 1: the decoder probe fed it one sample, ONNX Runtime refused
("Got invalid dimensions for input … Got: 1 Expected: 2"), and verify ended in an internal error for every recipe
with a probe (heatmap decoding, detectors). The probe now runs on the first batch."""

from __future__ import annotations

import onnx
import pytest

from graphsurgery.api import apply
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.verification import verify
from test_hostile_fortysecond import DETECTOR_RECIPE, IMAGES, POSE_RECIPE, PROBE, mutated, probe_failures

from modelkit import pose_model


def with_batch(model: onnx.ModelProto, batch: int, path) -> str:
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def pose(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pose")
    return with_batch(onnx.load(pose_model(folder / "dynamic.onnx", dynamic_batch=True)), 2, folder / "batch2.onnx")


def test_the_right_patch_of_a_static_batch_passes_with_the_probe(pose):
    report = verify(POSE_RECIPE, pose, random=4)
    assert report, report.failures()
    assert [pair.name for pair in report.probes] == [f"onnxruntime: {PROBE}"]


def test_a_wrong_patch_of_a_static_batch_fails_in_the_probe(pose, tmp_path):
    wrong = apply(mutated(POSE_RECIPE, tmp_path, "output", "heatmap_argmax", invalid="minus_one"), pose,
                  tmp_path / "wrong.onnx").output
    report = verify(POSE_RECIPE, pose, patched=wrong, random=4, backends=("onnxruntime",))
    assert not report and [line for line in probe_failures(report) if "keypoints" in line]


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from modelkit import zoo_model

    folder = tmp_path_factory.mktemp("detector")
    dynamic = onnx.load(zoo_model(folder / "dynamic.onnx", "yolov8-tiny", opset=17, dynamic_batch=True))
    return with_batch(dynamic, 2, folder / "batch2.onnx")


def test_a_detector_of_a_static_batch_passes_with_the_probe(detector):
    """Random images: a new size every batch (the recipe resizes), 2 of each; the probe runs on the first batch of
    each size (boxes_to_image maps back through the image), a batch of 2 each time."""
    report = verify(DETECTOR_RECIPE, detector, random=8, backends=("onnxruntime",))
    assert report, report.failures()
    sizes = [f"{w}×{h}" for w, h in dict.fromkeys(report.sizes)]
    assert len(sizes) == 4
    assert [pair.name for pair in report.probes] == [f"onnxruntime: {PROBE}", *(
        f"onnxruntime: {PROBE} of a {size} image" for size in sizes[1:])]


def test_images_of_two_sizes_for_a_batch_of_two_are_refused_by_their_sizes(detector):
    """Was "2 images do not divide into batches of 2": a batch has one size, and the two photos have two."""
    with pytest.raises(GraphsurgeryError) as refused:
        verify(DETECTOR_RECIPE, detector, images=IMAGES, backends=("onnxruntime",))
    assert "batches of 2, each of one size; the 2 images are of 2 sizes (1, 1 of each)" in str(refused.value)
    assert refused.value.fix.startswith("use images of one size, 2 or a multiple of 2 of each size")
