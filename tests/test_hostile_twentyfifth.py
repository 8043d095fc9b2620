"""Hostile round 25: leftovers of verify and convert --int8 with models that crop in the graph, reports written at
a symlink loop, eval-coco's wording for a cropping model under the plain recipe, references of uneven sample counts,
and recipes fuzzed against verify.

`verify --images --boxes` (and int8 calibration) gave a model that crops in the graph every box of an image in one
call: 3,000 boxes in one image ran out of memory (400 took 3.4 GB). Valid recipes drawn at random from the step
catalogue (apply, then verify on the tiny HRNet, both backends) found a right patch that FAILed on OpenVINO alone:
a UDP refinement on maps the two graphs computed 3e-5 apart was allowed only the refinement's own rounding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clikit import invoke, one_line_exit_2

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
IMAGES = ROOT / "examples" / "images"


# --- a model that crops in the graph: an image's boxes in parts ------------------------------------------------


def _boxes_file(path: Path, counts: dict[str, int]) -> Path:
    path.write_text(json.dumps({name: [[5.0 + i, 10.0, 40.0, 80.0] for i in range(n)] for name, n in counts.items()}))
    return path


def test_box_image_samples_feed_a_crowded_image_in_parts_and_count_images(tmp_path, monkeypatch):
    from graphsurgery import crops
    from graphsurgery.quantize import CALLER
    from graphsurgery.runners import Port
    from graphsurgery.samples import box_image_samples, chunks

    monkeypatch.setattr(crops, "BOXES_PER_CALL", 3, raising=False)  # the one constant coco.py imports too
    boxes = _boxes_file(tmp_path / "b.json", {"astronaut.jpg": 8, "cameraman.jpg": 1})
    samples = box_image_samples(IMAGES, boxes, Port("image", "uint8", (1, None, None, 3)), CALLER)
    assert [len(extras["boxes"]) for _, extras in samples.groups] == [3, 3, 2, 1]
    assert len(samples) == 2 and samples.description.startswith("2 whole images") and "9 person boxes" in (
        samples.description)
    assert all(len(x) == 1 for x, _ in chunks(samples, 1))  # each call: one image, its part of the boxes
    given = json.loads(boxes.read_text())
    np.testing.assert_array_equal(samples.extras["boxes"], given["astronaut.jpg"] + given["cameraman.jpg"])


def test_verify_with_boxes_in_parts_passes_and_counts_images(tmp_path, monkeypatch):
    """Each box's answer is its own: fed two at a time, five boxes still pass, and the report counts one image."""
    from graphsurgery import crops
    from graphsurgery.verification import verify

    from modelkit import pose_model

    monkeypatch.setattr(crops, "BOXES_PER_CALL", 2, raising=False)
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "astronaut.jpg").write_bytes((IMAGES / "astronaut.jpg").read_bytes())
    boxes = _boxes_file(tmp_path / "b.json", {"astronaut.jpg": 5})
    report = verify(RECIPES / "hrnet_coco_topdown.yaml", pose_model(tmp_path / "plain.onnx", dynamic_batch=True),
                    images=folder, boxes=boxes, backends=["onnxruntime"])
    assert report, report.failures()
    assert (report.samples, report.unit) == (1, "images") and "5 person boxes" in report.inputs


def test_a_cropping_model_given_with_the_plain_recipe_is_named_with_its_inputs(plain, tmp_path):
    """eval-coco (and verify) --patched <a model that crops in the graph> under the plain pose recipe said "the
    patched model has 2 inputs besides none"."""
    from graphsurgery.api import apply

    from examples.synthetic_coco import write_coco_set

    top_down = apply(RECIPES / "hrnet_coco_topdown.yaml", plain, tmp_path / "top_down.onnx").output
    annotations = write_coco_set(tmp_path / "images", images=1, seed=0)
    for command in (["eval-coco", RECIPES / "hrnet_coco_pose.yaml", plain, "--ann", annotations, "--images",
                     tmp_path / "images", "--backends", "onnxruntime"],
                    ["verify", RECIPES / "hrnet_coco_pose.yaml", plain, "--random", "1", "--backends", "onnxruntime"]):
        result = invoke(*command, "--patched", top_down)
        one_line_exit_2(result, "top_down.onnx", "takes the inputs 'image', 'boxes'", "one image input",
                        "the recipe this model was patched with")
        assert "besides none" not in result.output


# --- a reference of uneven sample counts -------------------------------------------------------------------------


def test_a_reference_whose_answers_hold_fewer_samples_than_its_inputs_is_refused(plain, tmp_path):
    """5 recorded inputs, 3 recorded answers: every output FAILed as "shape differs" (exit 1), as a live pipeline
    answering too few did; a wrong recording is a refusal, exit 2."""
    import onnxruntime

    from graphsurgery.api import apply
    from graphsurgery.errors import GraphsurgeryError
    from graphsurgery.verification import verify

    pose = RECIPES / "hrnet_coco_pose.yaml"
    patched = apply(pose, plain, tmp_path / "patched.onnx").output
    session = onnxruntime.InferenceSession(str(patched), providers=["CPUExecutionProvider"])
    crops = np.random.default_rng(0).integers(0, 256, (5, 256, 192, 3)).astype(np.uint8)
    answers = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": crops})))
    reference = tmp_path / "uneven.npz"
    np.savez(reference, input=crops, **{name: value[:3] for name, value in answers.items()})
    one_line_exit_2(invoke("verify", pose, plain, "--patched", patched, "--reference", reference, "--backends",
                           "onnxruntime"), "uneven.npz", "'keypoints' holds 3 samples", "make 5")

    def too_few(inputs):
        return dict(zip(answers, (value[:1] for value in session.run(None, {"input": inputs["input"]}))))

    with pytest.raises(GraphsurgeryError, match="answered 1 samples of 'keypoints' for inputs that make 2"):
        verify(pose, plain, patched=patched, reference_pipeline=too_few, random=2, backends=["onnxruntime"])


# --- recipe fuzz: a right patch failed on OpenVINO alone ------------------------------------------------------


def test_a_refinement_on_maps_two_graphs_computed_apart_gets_the_float_allowance(plain, tmp_path, monkeypatch):
    """Fuzzed recipe (cast, layout, center_crop, normalize; heatmap_argmax minus_one, udp_refine 17): on OpenVINO
    the patched graph's maps were 3e-5 from the plain model's (the input steps folded into the convolution), UDP's
    step moved one keypoint 0.01 cells, and the same-backend pair allowed only the refinement's own rounding (1e-5
    relative): FAIL on a right patch. Maps that differ (a float output differs) get the allowance across backends
    get. Here the plain model's maps are moved by 3e-5, as OpenVINO's were."""
    from graphsurgery import stability, verification

    from modelkit import pose_model

    run_plain, spreads = verification.run_in_model_batches, []
    rng = np.random.default_rng(0)

    def moved(*args, **kwargs):
        return {name: (value + rng.uniform(-3e-5, 3e-5, value.shape)).astype(value.dtype)
                for name, value in run_plain(*args, **kwargs).items()}

    measure = stability.wobble

    def recorded(*args, **kwargs):
        spreads.append(args[5] if len(args) > 5 else kwargs.get("spread", stability.ROUNDING))
        return measure(*args, **kwargs)

    monkeypatch.setattr(verification, "run_in_model_batches", moved)
    monkeypatch.setattr(stability, "wobble", recorded)
    report = verification.verify(RECIPES / "mmpose_heatmap_udp.yaml",
                                 pose_model(tmp_path / "plain.onnx", dynamic_batch=True), random=4,
                                 backends=["onnxruntime"])
    # the samples' pair measured at the allowance across backends (the decoder probe's, one map on both sides, at
    # the refinement's own rounding: `Probe.wobbles`)
    assert any(spread.atol >= 1e-4 or spread.rtol >= 1e-4 for spread in spreads), spreads
    assert report, report.failures()
    assert not verification._maps_differ({"s": np.ones(2, np.float32)}, {"s": np.ones(2, np.float32)},
                                         {"s": stability.ROUNDING})


# --- a report at a symlink loop ----------------------------------------------------------------------------------


def test_a_report_at_a_symlink_loop_is_refused_and_the_link_kept(plain, tmp_path):
    """`bench --json loop` and `verify --json loop` replaced a link that leads back to itself (it "does not
    exist"); `apply -o loop` refuses it without --force, and reports have no --force."""
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop.name)
    for command in (["bench", RECIPES / "hrnet_coco_pose.yaml", plain, "--iterations", "1", "--warmup", "0"],
                    ["verify", RECIPES / "hrnet_coco_pose.yaml", plain, "--random", "1", "--backends", "onnxruntime"]):
        one_line_exit_2(invoke(*command, "--json", loop), "loop.json", "symlink loop")
        assert loop.is_symlink() and str(loop.readlink()) == loop.name
