"""The mmpose recipes on models exported from PyTorch here (examples/zoo, tiny widths, seeded weights): a
SimpleBaseline decoded with DARK and with UDP, an RTMPose-shaped SimCC model; each patched, then `verify` on both
backends (every output compared with the unpatched pipeline: the plain model + the recipe's numpy twins, which are
mmpose's own functions as written), at opsets 11 and 17; and the top-down graph built around the DARK decoder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from graphsurgery.api import apply
from graphsurgery.verification import verify

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[tuple[str, int], Path]:
    from modelkit import zoo_model

    folder = tmp_path_factory.mktemp("mmpose")
    return {(name, opset): zoo_model(folder / f"{name}{opset}.onnx", f"{name}-tiny", opset=opset)
            for name in ("simplebaseline", "rtmpose") for opset in (11, 17)}


def test_the_simcc_export_has_two_heads(models):
    model = onnx.load(str(models["rtmpose", 17]))
    dims = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    assert dims == {"simcc_x": [1, 17, 384], "simcc_y": [1, 17, 512]}


@pytest.mark.parametrize("opset", [11, 17])
def test_the_simcc_model_verifies_on_both_backends(models, tmp_path, opset):
    plain = models["rtmpose", opset]
    recipe = RECIPES / "mmpose_rtmpose_simcc.yaml"
    patched = apply(recipe, plain, tmp_path / "patched.onnx").output
    assert [o.name for o in onnx.load(str(patched)).graph.output] == ["keypoints", "scores"]
    report = verify(recipe, plain, patched=patched, random=4)
    assert report, report.failures()
    assert {r.output for pair in report.pairs for r in pair.results} == {"keypoints", "scores"}


def test_dark_is_ill_conditioned_on_seeded_heatmaps():
    """Why DARK and UDP are proven on peaked maps (decode-only tests, the synthetic COCO set) and not on the seeded
    SimpleBaseline: its maps are not Gaussian, mmpose's Newton step there jumps by up to ~150 cells, and two float
    implementations of it (the twin, the graph) part by 1e-4 of that: more than 1e-3 cells, for no wrong patch."""
    import torch

    from graphsurgery.steps.dark import DarkRefine
    from graphsurgery.steps.output import HeatmapArgmax

    from examples.zoo.models import build_zoo_model
    from stepkit import chain

    with torch.no_grad():
        heatmaps = build_zoo_model("simplebaseline-tiny")(torch.randn(2, 3, 384, 288, generator=torch.Generator()
                                                                       .manual_seed(0))).numpy()
    argmax = chain((HeatmapArgmax(invalid="minus_one"),), (np.float32, ("N", 17, 96, 72)), 17, ("keypoints",))
    dark = chain((HeatmapArgmax(invalid="minus_one"), DarkRefine()), (np.float32, ("N", 17, 96, 72)), 17,
                 ("keypoints",))
    steps = np.abs(dark.twin({"output": heatmaps})[0] - argmax.twin({"output": heatmaps})[0])
    assert steps.max() > 20  # a refinement is at most half a cell on a Gaussian


@pytest.mark.parametrize("recipe", ["mmpose_heatmap_dark.yaml", "mmpose_heatmap_udp.yaml"])
def test_dark_and_udp_score_identical_ap_on_the_synthetic_coco_set(tmp_path, recipe):
    """The synthetic set's joint detector makes peaked heatmaps, as a trained network does: unpatched (plain model +
    mmpose's decoders as written) and patched score the same AP/AR on both backends, and it is a real score."""
    from graphsurgery.coco import evaluate_coco

    from examples.synthetic_coco import joint_detector, write_coco_set

    annotations = write_coco_set(tmp_path / "images", images=6, seed=1)
    plain = joint_detector(tmp_path / "detector.onnx", opset=17)
    report = evaluate_coco(RECIPES / recipe, plain, annotations, tmp_path / "images")
    assert report, [p.stats for p in report.pipelines]
    assert len(report.pipelines) == 4 and report.pipelines[0].stats[0] > 0.5


TOP_DOWN_DECODERS = {  # the top-down recipe's decode (argmax, quarter offset, back to the image) replaced by
    "dark": "    - heatmap_argmax: {invalid: minus_one}\n    - dark_refine: {}\n    - to_image: {mode: boxes}\n",
    "udp": "    - heatmap_argmax: {invalid: minus_one}\n    - udp_refine: {}\n    - to_image: {mode: crop, udp: true}\n"
           "    - to_image: {mode: boxes, units: crop}\n",  # UDP's crop mapping (input / (heatmap − 1)) first
}


@pytest.mark.parametrize("decoder", TOP_DOWN_DECODERS)
def test_the_top_down_graph_takes_the_dark_and_udp_decoders(tmp_path, decoder):
    """Image + boxes in, DARK- or UDP-refined keypoints in image pixels out: crop_boxes (and the flip test) around
    the synthetic detector, the refinement before to_image mode boxes; eval-coco parity on both backends."""
    from graphsurgery.coco import evaluate_coco

    from examples.synthetic_coco import joint_detector, write_coco_set

    topdown = (RECIPES / "hrnet_coco_topdown.yaml").read_text()
    text = topdown.replace("name: hrnet-coco-topdown", f"name: mmpose-topdown-{decoder}").replace(
        "    - heatmap_argmax: {}\n    - quarter_offset: {}\n    - to_image: {mode: boxes}\n",
        TOP_DOWN_DECODERS[decoder])
    assert text.count("to_image") == TOP_DOWN_DECODERS[decoder].count("to_image")  # the decode was replaced
    recipe = tmp_path / f"topdown_{decoder}.yaml"
    recipe.write_text(text)
    annotations = write_coco_set(tmp_path / "images", images=4, seed=2)
    plain = joint_detector(tmp_path / "detector.onnx", opset=17)
    report = evaluate_coco(recipe, plain, annotations, tmp_path / "images")
    assert report, [p.stats for p in report.pipelines]


@pytest.mark.parametrize("recipe, model", [("mmpose_heatmap_dark.yaml", "simplebaseline"),
                                           ("mmpose_heatmap_udp.yaml", "simplebaseline"),
                                           ("mmpose_rtmpose_simcc.yaml", "rtmpose")])
def test_bench_times_every_decoder(models, recipe, model):
    """`bench` runs each mmpose recipe patched against its unpatched pipeline on both runtimes."""
    import json

    import graphsurgery
    from graphsurgery.benchmark import Settings

    result = graphsurgery.bench(RECIPES / recipe, models[model, 17], Settings(iterations=2, warmup=0, threads=1))
    keys = {row["key"] for row in result.pipelines}
    assert {"onnxruntime-plain", "onnxruntime-patched", "openvino-plain", "openvino-patched-f32"} <= keys, keys
    assert all(row["model_ms"]["median"] > 0 for row in result.pipelines)
    assert json.loads(json.dumps(result.to_dict()))["recipe"] == result.recipe


def test_verify_on_peaked_maps_passes_dark_and_catches_udp_in_its_place(tmp_path):
    from examples.synthetic_coco import joint_detector, write_coco_set

    annotations = write_coco_set(tmp_path / "images", images=3, seed=3)
    plain = joint_detector(tmp_path / "detector.onnx", opset=17)
    patched = apply(RECIPES / "mmpose_heatmap_dark.yaml", plain, tmp_path / "dark.onnx").output
    right = verify(RECIPES / "mmpose_heatmap_dark.yaml", plain, patched=patched, images=tmp_path / "images",
                   boxes=annotations)
    assert right, right.failures()
    wrong = verify(RECIPES / "mmpose_heatmap_udp.yaml", plain, patched=patched, images=tmp_path / "images",
                   boxes=annotations, backends=["onnxruntime"])
    assert not wrong and any("keypoints" in line for line in wrong.failures())


def test_the_top_down_graph_takes_the_simcc_decoder(models, tmp_path):
    """Image + boxes in, SimCC keypoints in image pixels out: crop_boxes around the RTMPose-shaped model,
    simcc_decode (crop pixels), then to_image mode boxes with units crop; verify on both backends, and the map back
    equals the authors' transform with the crop's size in place of the heatmap's."""
    from graphsurgery.crops import box_to_center_scale, to_original
    from graphsurgery.steps.to_image import ToImage

    recipe = tmp_path / "topdown_simcc.yaml"
    recipe.write_text((RECIPES / "mmpose_rtmpose_simcc.yaml").read_text().replace(
        "name: mmpose-rtmpose-simcc", "name: mmpose-topdown-simcc").replace(
        "  tensor: {dtype: uint8", "  name: image\n  tensor: {dtype: uint8").replace(
        "    - layout: {to: NCHW}\n", "    - layout: {to: NCHW}\n    - crop_boxes: {}\n").replace(
        "    - simcc_decode: {split_ratio: 2.0}\n",
        "    - simcc_decode: {split_ratio: 2.0}\n    - to_image: {mode: boxes, units: crop}\n"))
    plain = models["rtmpose", 17]
    patched = apply(recipe, plain, tmp_path / "topdown.onnx").output
    names = [i.name for i in onnx.load(str(patched)).graph.input]
    assert names == ["image", "boxes"]
    report = verify(recipe, plain, patched=patched, random=3)
    assert report, report.failures()
    # the map itself, against the authors' transform sized by the crop (192 × 256)
    keypoints = np.array([[[0.0, 0.0], [96.0, 128.0], [191.5, 255.5]]], np.float32)
    box = (40.0, 30.0, 120.0, 300.0)
    step = ToImage(mode="boxes", units="crop", input_size=(192, 256))
    got = step.reference({"keypoints": keypoints, "boxes": np.array([box], np.float32)})["keypoints"][0]
    center, scale = box_to_center_scale(box, 192 / 256)
    np.testing.assert_allclose(got, to_original(keypoints[0], center, scale, (192, 256)), atol=1e-4)
    np.testing.assert_allclose(got[1], center, atol=1e-4)  # the crop's centre is the box's
