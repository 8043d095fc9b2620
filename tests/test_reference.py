"""`verify --reference`: the patched model against the user's own pipeline, recorded in a .npz (not the twins)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from graphsurgery.cli import cli
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.runners import open_runner
from graphsurgery.verification import verify

from conftest import RECIPES
from modelkit import POSE_LETTERBOX, bgr_crops, pose_model

CROP = RECIPES / "hrnet_coco_pose.yaml"
MEAN, STD = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])


def users_pipeline(plain, crops: np.ndarray, *, swap_colours: bool = True) -> dict[str, np.ndarray]:
    """A user's own HRNet code, written here from the authors' description (not the twins): BGR→RGB, /255,
    mean/std, NCHW, the network, first maximum, (0, 0) unless score > 0, heatmap cell × 4 in crop pixels."""
    rgb = crops[..., ::-1] if swap_colours else crops
    x = ((rgb / np.float32(255) - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)
    with open_runner("onnxruntime", plain) as run:
        heatmaps = run({"input": x})["heatmaps"]
    flat = heatmaps.reshape(*heatmaps.shape[:2], -1)
    idx, score = flat.argmax(-1), flat.max(-1)
    y, x_ = np.divmod(idx, heatmaps.shape[3])
    keypoints = np.where((score > 0)[..., None], np.stack([x_, y], -1), 0).astype(np.float32) * 4
    return {"keypoints": keypoints, "scores": score[..., None].astype(np.float32)}


@pytest.fixture(scope="module")
def recorded(tiny_pose_models, tmp_path_factory):
    plain = tiny_pose_models[(17, False)]
    folder = tmp_path_factory.mktemp("reference")
    crops = np.concatenate([bgr_crops(1, seed=5), bgr_crops(1, seed=6)])  # run one at a time: the batch is fixed at 1
    answers = {key: np.concatenate([users_pipeline(plain, crops[i:i + 1])[key] for i in range(2)])
               for key in ("keypoints", "scores")}
    good = folder / "good.npz"
    np.savez(good, input=crops, **answers)
    rgb = {key: np.concatenate([users_pipeline(plain, crops[i:i + 1], swap_colours=False)[key] for i in range(2)])
           for key in ("keypoints", "scores")}
    wrong = folder / "rgb.npz"
    np.savez(wrong, input=crops, **rgb)
    return plain, good, wrong


def test_the_patched_model_matches_the_users_own_pipeline(recorded):
    plain, good, _ = recorded
    report = verify(CROP, plain, reference=good)
    assert report, report.failures()
    assert [p.name for p in report.pairs] == ["onnxruntime: your pipeline → patched",
                                              "openvino: your pipeline → patched", "patched: onnxruntime → openvino"]
    assert {r.output for r in report.pairs[0].results} == {"keypoints", "scores"}
    assert report.samples == 2


def test_a_pipeline_that_differs_from_the_recipe_is_caught(recorded):
    """The user's code skips BGR→RGB: the recipe does not match it, and verify --reference says so."""
    plain, _, wrong = recorded
    report = verify(CROP, plain, reference=wrong, backends=("onnxruntime",))
    assert not report and {r.output for r in report.pairs[0].results if not r} == {"keypoints", "scores"}


def test_cli_exit_codes(recorded):
    plain, good, wrong = recorded
    ok = CliRunner().invoke(cli, ["verify", str(CROP), str(plain), "--reference", str(good)])
    assert ok.exit_code == 0 and "your pipeline → patched" in ok.output, ok.output
    bad = CliRunner().invoke(cli, ["verify", str(CROP), str(plain), "--reference", str(wrong)])
    assert bad.exit_code == 1 and "FAIL" in bad.output


PLAIN_FOR_LIVE: dict = {}


def live_pipeline(inputs: dict, swap_colours: bool = True) -> dict:
    """A user's pipeline as a function (for --reference-pipeline test_reference:live_pipeline), one crop at a time
    (the tiny model's batch is fixed at 1)."""
    model = PLAIN_FOR_LIVE["model"]
    answers = [users_pipeline(model, crop[None], swap_colours=swap_colours) for crop in inputs["input"]]
    return {key: np.concatenate([answer[key] for answer in answers]) for key in ("keypoints", "scores")}


def live_pipeline_without_colour_swap(inputs: dict) -> dict:
    return live_pipeline(inputs, swap_colours=False)


def test_a_live_pipeline_is_called_on_random_samples(recorded, monkeypatch):
    plain, _, _ = recorded
    PLAIN_FOR_LIVE["model"] = plain
    report = verify(CROP, plain, reference_pipeline=live_pipeline, random=3, backends=("onnxruntime",))
    assert report, report.failures()
    assert report.samples == 3 and "through live_pipeline()" in report.inputs
    wrong = verify(CROP, plain, reference_pipeline="test_reference:live_pipeline_without_colour_swap", random=2,
                   backends=("onnxruntime",))
    assert not wrong and {r.output for r in wrong.pairs[0].results if not r} == {"keypoints", "scores"}
    result = CliRunner().invoke(cli, ["verify", str(CROP), str(plain), "--reference-pipeline",
                                      "test_reference:live_pipeline", "--random", "2"])
    assert result.exit_code == 0 and "your pipeline → patched" in result.output, result.output


def test_a_live_pipeline_meets_every_caller_size_of_a_resizing_recipe(tmp_path):
    """A classifier recipe resizes, so verify's random samples come in several sizes: the pipeline is called once
    per size. A package that resizes with another filter than the recipe (nearest instead of linear) is caught."""
    from graphsurgery.model import ModelFacts
    from graphsurgery.recipe import load_recipe, parse_recipe
    from graphsurgery.twins import run_unpatched

    from modelkit import zoo_model

    plain = zoo_model(tmp_path / "resnet.onnx", "resnet-tiny", opset=11)
    recipe = load_recipe(RECIPES / "imagenet_classifier.yaml")
    nearest = parse_recipe((RECIPES / "imagenet_classifier.yaml").read_text()
                           .replace("interpolation: linear", "interpolation: nearest"))
    facts = ModelFacts.of(onnx.load(str(plain)), recipe)
    sizes = []

    def package(inputs: dict, how=recipe) -> dict:  # the package's own code: here, the recipe's twins
        sizes.append(inputs["input"].shape[1:3])
        with open_runner("onnxruntime", plain) as run:
            answer = run_unpatched(how, facts, lambda x: run({"input": x}), inputs["input"])
        return {name: answer[name] for name in ("indices", "scores")}

    report = verify(recipe, plain, reference_pipeline=package, random=4, backends=("onnxruntime",))
    assert report, report.failures()
    assert len(set(sizes)) == 4  # one call per caller size
    assert any(note.startswith("4 random images fed 4 of the 8 caller sizes") for note in report.notes), report.notes
    wrong = verify(recipe, plain, reference_pipeline=lambda inputs: package(inputs, nearest), random=4,
                   backends=("onnxruntime",))
    assert not wrong


def test_by_default_a_live_pipeline_meets_every_size_verify_feeds(tmp_path):
    """verify's default takes each caller size once (round 58: 12 for a letterbox pose recipe); the live pipeline
    took 8 samples, so it never met the later sizes, and a package wrong at the last size alone PASSed. It now
    meets every size verify feeds."""
    from graphsurgery.model import ModelFacts
    from graphsurgery.recipe import load_recipe
    from graphsurgery.twins import run_unpatched

    plain, path = pose_model(tmp_path / "plain.onnx", input_hw=(128, 160)), tmp_path / "letterbox.yaml"
    path.write_text(POSE_LETTERBOX)
    recipe = load_recipe(path)
    facts = ModelFacts.of(onnx.load(str(plain)), recipe)
    fed = verify(recipe, plain, backends=("onnxruntime",)).sizes
    called = []

    def package(inputs: dict) -> dict:  # the recipe's twins, except at verify's last size
        called.append(inputs["input"].shape[2:0:-1])
        with open_runner("onnxruntime", plain) as run:
            answer = run_unpatched(recipe, facts, lambda x: run({"input": x}), inputs["input"])
        return {"keypoints": answer["keypoints"] + (called[-1] == fed[-1]), "scores": answer["scores"]}

    assert len(fed) > 8
    report = verify(recipe, plain, reference_pipeline=package, backends=("onnxruntime",))
    assert not report and called == list(fed)
    assert not any("not fed" in note for note in report.notes), report.notes


def test_a_package_that_rounds_where_the_recipe_floors_is_caught(tmp_path):
    """The orientation classifier's case: the package rounds the scaled side (353 × 481 → 256 × 349) where the
    recipe floors it (256 × 348). Verify against the package's own pipeline catches it; the same pipeline with the
    recipe's rounding passes."""
    from graphsurgery.model import ModelFacts
    from graphsurgery.recipe import load_recipe, parse_recipe
    from graphsurgery.steps.resize import Resize
    from graphsurgery.twins import run_unpatched

    from modelkit import zoo_model

    assert Resize(size=(224, 224), fit="crop", crop_fraction=0.875).resized_hw(481, 353) == (348, 256)
    assert Resize(size=(224, 224), fit="crop", crop_fraction=0.875, side_rounding="round").resized_hw(481, 353) == (
        349, 256)
    plain = zoo_model(tmp_path / "resnet.onnx", "resnet-tiny", opset=11)
    recipe = load_recipe(RECIPES / "imagenet_classifier.yaml")
    rounding = parse_recipe((RECIPES / "imagenet_classifier.yaml").read_text()
                            .replace("crop_fraction: 0.875}", "crop_fraction: 0.875, side_rounding: round}"))
    facts = ModelFacts.of(onnx.load(str(plain)), recipe)

    def package(inputs: dict, how) -> dict:
        with open_runner("onnxruntime", plain) as run:
            answer = run_unpatched(how, facts, lambda x: run({"input": x}), inputs["input"])
        return {"logits": answer["logits"]}

    assert verify(recipe, plain, reference_pipeline=lambda inputs: package(inputs, recipe), random=4,
                  backends=("onnxruntime",))
    caught = verify(recipe, plain, reference_pipeline=lambda inputs: package(inputs, rounding), random=4,
                    backends=("onnxruntime",))
    assert not caught and any("logits" in line for line in caught.failures())


def test_bad_reference_files_are_one_line_errors(recorded, tmp_path):
    plain, good, _ = recorded
    np.savez(tmp_path / "no_input.npz", crops=np.zeros((1, 256, 192, 3), np.uint8), keypoints=np.zeros((1, 17, 2)))
    np.savez(tmp_path / "no_output.npz", input=np.zeros((1, 256, 192, 3), np.uint8), answer=np.zeros(3))
    np.savez(tmp_path / "pickled.npz", input=np.array([{"a": 1}], dtype=object))
    (tmp_path / "text.npz").write_text("not a zip")
    cases = [("no_input.npz", "lacks the patched model's input(s) 'input'"),
             ("no_output.npz", "none of the reference's arrays (answer) is an output"),
             ("pickled.npz", "not a readable .npz of numeric arrays"), ("text.npz", "not a readable .npz")]
    for name, message in cases:
        with pytest.raises(GraphsurgeryError, match=message.replace("(", r"\(").replace(")", r"\)")):
            verify(CROP, plain, reference=tmp_path / name, backends=("onnxruntime",))
    with pytest.raises(GraphsurgeryError, match="brings its own inputs"):
        verify(CROP, plain, reference=good, random=2)
    result = CliRunner().invoke(cli, ["verify", str(CROP), str(plain), "--reference", str(good), "--seed", "3"])
    assert result.exit_code == 2 and "brings its own inputs and answers" in result.output and "a seed" in \
        result.output, result.output  # a seed it never used was taken in silence (round 89)


def test_a_pipeline_that_answers_no_dict_and_inputs_it_does_not_take_are_refused(recorded, tmp_path):
    plain, _, _ = recorded
    with pytest.raises(GraphsurgeryError, match="returned list, not a dict of arrays"):
        verify(CROP, plain, reference_pipeline=lambda inputs: [inputs["input"]], random=1, backends=("onnxruntime",))
    with pytest.raises(GraphsurgeryError, match="compared on random samples"):
        verify(CROP, plain, reference_pipeline=live_pipeline, images=tmp_path)
    with pytest.raises(GraphsurgeryError, match="brings its own inputs and answers"):
        verify(CROP, plain, reference=recorded[1], reference_pipeline=live_pipeline)


def test_a_report_that_cannot_be_written_is_a_one_line_error(recorded, tmp_path):
    plain, good, _ = recorded
    result = CliRunner().invoke(cli, ["verify", str(CROP), str(plain), "--reference", str(good), "--backends",
                                      "onnxruntime", "--json", str(tmp_path / "missing" / "report.json")])
    lines = [line for line in result.output.splitlines() if line.strip()]  # refused before the work, not after it
    assert result.exit_code == 2 and len(lines) == 1 and "the output folder does not exist" in lines[0]


def quantised(plain, path):
    """The tiny pose model with its heatmaps rounded to tenths: every map has exact ties at its maximum."""
    model = onnx.load(str(plain))
    graph = model.graph
    out = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["raw_maps" if name == out else name for name in node.output]
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(10, np.float32), "ten"))
    graph.node.extend([onnx.helper.make_node("Mul", ["raw_maps", "ten"], ["tenths"]),
                       onnx.helper.make_node("Round", ["tenths"], ["rounded"]),
                       onnx.helper.make_node("Div", ["rounded", "ten"], [out])])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "not-kept"])
def test_near_ties_are_judged_on_the_heatmaps_the_reference_recorded(recorded, tmp_path, keep):
    """A user's pipeline whose own float arithmetic differs from the runtime's by 1e-6 (another framework) breaks
    exact ties its own way: its keypoints then differ from the patched model's at tied maxima. With its heatmaps
    recorded those are near ties, judged on them as verify judges its own; without, every one is real. So too where
    the recipe does not keep the heatmaps (keep_original: false, as DARK's and SimCC's): they were set aside as "not
    compared"."""
    recipe = CROP
    if not keep:
        recipe = tmp_path / "unkept.yaml"
        recipe.write_text(CROP.read_text().replace("keep_original: true", "keep_original: false"))
    plain = quantised(recorded[0], tmp_path / "quantised.onnx")
    crops = np.concatenate([bgr_crops(1, seed=s) for s in range(4)])
    rng = np.random.default_rng(0)
    answers = {"keypoints": [], "scores": [], "heatmaps": []}
    with open_runner("onnxruntime", plain) as run:
        for crop in crops:
            x = ((crop[None, ..., ::-1] / np.float32(255) - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)
            maps = run({"input": x})["heatmaps"] + rng.uniform(0, 1e-6, (1, 17, 64, 48)).astype(np.float32)
            flat = maps.reshape(1, 17, -1)
            y, x_ = np.divmod(flat.argmax(-1), 48)
            score = flat.max(-1)
            answers["keypoints"].append(np.where((score > 0)[..., None], np.stack([x_, y], -1), 0) * np.float32(4))
            answers["scores"].append(score[..., None])
            answers["heatmaps"].append(maps)
    answers = {key: np.concatenate(value).astype(np.float32) for key, value in answers.items()}
    with_maps, without = tmp_path / "with_maps.npz", tmp_path / "without.npz"
    np.savez(with_maps, input=crops, **answers)
    np.savez(without, input=crops, keypoints=answers["keypoints"], scores=answers["scores"])

    blind = verify(recipe, plain, reference=without, backends=("onnxruntime",))
    keypoints = next(r for r in blind.pairs[0].results if r.output == "keypoints")
    assert not blind and keypoints.mismatches > 5  # ties broken the other way, counted as real
    assert any("holds no 'heatmaps'" in note for note in blind.notes)
    judged = verify(recipe, plain, reference=with_maps, backends=("onnxruntime",))
    assert judged, judged.failures()
    keypoints = next(r for r in judged.pairs[0].results if r.output == "keypoints")
    assert keypoints.mismatches == 0 and keypoints.match_rate < 0.9
    assert any("judged on the reference's own 'heatmaps'" in note for note in judged.notes)
    assert not any("not compared" in note for note in judged.notes), judged.notes


def test_recorded_heatmaps_do_not_excuse_a_wrong_pipeline(recorded, tmp_path):
    """The RGB pipeline's keypoints, recorded with its own heatmaps: its maxima are nowhere near the patched
    model's, so no mismatch is a near tie."""
    plain, _, _ = recorded
    crops = np.concatenate([bgr_crops(1, seed=5), bgr_crops(1, seed=6)])
    answers = [users_pipeline(plain, crops[i:i + 1], swap_colours=False) for i in range(2)]
    x = ((crops / np.float32(255) - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)  # BGR bytes as RGB
    with open_runner("onnxruntime", plain) as run:
        maps = np.concatenate([run({"input": x[i:i + 1]})["heatmaps"] for i in range(2)])
    path = tmp_path / "rgb_maps.npz"
    np.savez(path, input=crops, heatmaps=maps,
             **{key: np.concatenate([a[key] for a in answers]) for key in ("keypoints", "scores")})
    report = verify(CROP, plain, reference=path, backends=("onnxruntime",))
    keypoints = next(r for r in report.pairs[0].results if r.output == "keypoints")
    assert not report and keypoints.mismatches > 10


@pytest.fixture
def machine_of_one_and_a_half_samples(monkeypatch):
    """A machine whose half holds a sample and a half of keypoints and scores (17 × 3 float32) held by the three
    pipelines of a reference verify (yours, the patched model on two backends)."""
    from graphsurgery import verification

    monkeypatch.setattr(verification, "usable_memory",
                        lambda: int(2 * 1.5 * 17 * 3 * 4 * verification.HELD_PER_PIPELINE * 3))


def test_a_recording_too_large_to_compare_here_is_refused_naming_it(recorded, machine_of_one_and_a_half_samples):
    """verify's outputs check (a model of large outputs ran the machine out of memory) holds for recordings too."""
    plain, good, _ = recorded
    with pytest.raises(GraphsurgeryError) as refused:
        verify(CROP, plain, reference=good)
    assert refused.value.path == str(good) and "2 samples" in refused.value.message
    assert refused.value.fix.startswith("record at most 1 samples"), refused.value.fix


def test_a_live_pipeline_on_too_many_samples_is_refused_with_the_count_that_fits(recorded,
                                                                                 machine_of_one_and_a_half_samples):
    plain, _, _ = recorded
    PLAIN_FOR_LIVE["model"] = plain
    with pytest.raises(GraphsurgeryError, match="3 samples") as refused:
        verify(CROP, plain, reference_pipeline=live_pipeline, random=3)
    assert refused.value.path == str(plain) and "--random 1" in refused.value.fix


def moved_keypoints(right, out, shift: float) -> None:
    """`right` with its keypoints moved by `shift` px after the decode, all else as it is, written to `out`."""
    model = onnx.load(str(right))
    producer = next(node for node in model.graph.node if "keypoints" in node.output)
    producer.output[list(producer.output).index("keypoints")] = "keypoints_unshifted"
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(shift, np.float32), "shift"))
    model.graph.node.append(onnx.helper.make_node("Add", ["keypoints_unshifted", "shift"], ["keypoints"]))
    onnx.save(model, str(out))


@pytest.mark.parametrize("shift", [0.0, 3.0])
def test_a_reference_of_the_kept_heatmaps_alone_checks_the_keypoints_on_them(tmp_path, shift):
    """A reference recording the network's own output alone (the heatmaps the recipe keeps) was compared on the
    heatmaps: a patch whose keypoints were 3 px off PASSed, with a note that they were not compared (round 89). The
    output steps' twins now decode the recorded heatmaps, and the patched keypoints and scores are held to them."""
    from graphsurgery.api import apply

    plain = pose_model(tmp_path / "plain.onnx", dynamic_batch=True)
    right = apply(CROP, plain, tmp_path / "right.onnx").output
    crops = bgr_crops(3, seed=7)
    with open_runner("onnxruntime", right) as run:
        recorded = run({"input": crops})
    np.savez(tmp_path / "heatmaps.npz", input=crops, heatmaps=recorded["heatmaps"])
    moved_keypoints(right, tmp_path / "patched.onnx", shift)
    report = verify(CROP, plain, patched=tmp_path / "patched.onnx", reference=tmp_path / "heatmaps.npz",
                    backends=("onnxruntime",))
    assert {result.output for result in report.pairs[0].results} == {"heatmaps", "keypoints", "scores"}
    assert any("'keypoints', 'scores' are not in the reference: compared with the recipe's output steps" in note
               for note in report.notes), report.notes
    keypoints = next(result for result in report.pairs[0].results if result.output == "keypoints")
    assert keypoints.positions == 3 * 17
    if shift:
        assert not report and keypoints.mismatches == 3 * 17, report.failures()
        assert keypoints.max_distance == pytest.approx(shift * 2**0.5)  # x and y moved
    else:
        assert report and keypoints.matches == 3 * 17, report.failures()


@pytest.fixture
def simcc_recorded(tmp_path):
    """A SimCC model, its recipe keeping both heads, the right patch, a crop and the patch's answers to it."""
    from graphsurgery.api import apply
    from test_simcc import RECIPE as SIMCC
    from test_simcc import two_head_model

    plain, recipe = two_head_model(tmp_path / "simcc.onnx"), tmp_path / "simcc.yaml"
    recipe.write_text(SIMCC.replace("KEEP", "true"))
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    crops = np.random.default_rng(4).integers(0, 256, (1, 256, 192, 3), dtype=np.uint8)
    with open_runner("onnxruntime", right) as run:
        return plain, recipe, right, crops, run({"input": crops})


@pytest.mark.parametrize("shift", [0.0, 5.0])
def test_a_reference_of_simccs_two_heads_alone_checks_the_keypoints_on_them(simcc_recorded, tmp_path, shift):
    """As for heatmaps: the two SimCC heads the recipe keeps, recorded alone, are decoded by the output steps'
    twins, and keypoints moved by 5 px FAIL (SimCC reads two model outputs: `_twins_of_recorded` passes the second).
    Not 2 px: this model's vectors repeat each value over 8 bins (4 px), and a keypoint moved within such a run sits
    on values that tie exactly, a near tie (`compare.AxisVectors`)."""
    plain, recipe, right, crops, recorded = simcc_recorded
    np.savez(tmp_path / "heads.npz", input=crops, simcc_x=recorded["simcc_x"], simcc_y=recorded["simcc_y"])
    moved_keypoints(right, tmp_path / "patched.onnx", shift)
    report = verify(recipe, plain, patched=tmp_path / "patched.onnx", reference=tmp_path / "heads.npz",
                    backends=("onnxruntime",))
    keypoints = next(result for result in report.pairs[0].results if result.output == "keypoints")
    assert keypoints.positions == 17
    if shift:
        assert not report and keypoints.mismatches == 17, report.failures()
    else:
        assert report and keypoints.matches == 17, report.failures()


def test_a_reference_of_one_simcc_head_and_wrong_keypoints_fails_not_an_internal_error(simcc_recorded, tmp_path):
    """One of SimCC's two heads recorded beside keypoints: a mismatch's rounding check decoded that head alone, and
    verify ended in KeyError 'simcc_x' (exit 3). Without both heads there is nothing to decode: the keypoints FAIL."""
    plain, recipe, right, crops, recorded = simcc_recorded
    np.savez(tmp_path / "one.npz", input=crops, simcc_x=recorded["simcc_x"], keypoints=recorded["keypoints"] + 2)
    report = verify(recipe, plain, patched=right, reference=tmp_path / "one.npz", backends=("onnxruntime",))
    assert not report and any("keypoints: 0/17 exact" in line for line in report.failures()), report.failures()
    assert any("holds not both of 'simcc_x' and 'simcc_y'" in note for note in report.notes), report.notes


@pytest.mark.parametrize("rows", [3, 6], ids=["averaged", "as-the-model-gives"])
def test_heatmaps_of_a_flip_test_recorded_either_way_judge_only_as_the_model_gives_them(tmp_path, rows):
    """The top-down recipe, which does not keep the heatmaps: 2N of them, the crops then their mirrors, are the
    model's and decide near ties; N already averaged (3 boxes) are set aside with the note, where flip_average's
    twin refused the odd count as a recipe error (exit 2 naming output.steps, the recipe being right)."""
    import cv2

    import test_topdown as topdown
    from graphsurgery.api import apply

    from modelkit import hrnet_model

    plain = hrnet_model(tmp_path / "hrnet.onnx", opset=17)
    patched = apply(topdown.RECIPE, plain, tmp_path / "patched.onnx").output
    image = cv2.imread(str(topdown.IMAGES / "astronaut.jpg"))
    boxes = topdown._boxes(np.random.default_rng(0), image.shape[:2], 3)
    keypoints, scores, maps = topdown._authors(plain, image, boxes)
    maps = np.concatenate([maps, maps[:, :, :, ::-1]]) if rows == 6 else maps
    np.savez(tmp_path / "yours.npz", image=image[None], boxes=boxes, keypoints=keypoints.astype(np.float32),
             scores=scores.astype(np.float32), heatmaps=maps.astype(np.float32))
    report = verify(topdown.RECIPE, plain, patched=patched, reference=tmp_path / "yours.npz",
                    backends=("onnxruntime",))
    assert report, report.failures()
    judged = any("judged on the reference's own 'heatmaps'" in note for note in report.notes)
    assert judged == (rows == 6), report.notes


def _reading_row_0(right, target: str, path):
    """`right` with its output `target` made row 0's for every row of the batch (a patch written for a batch of one:
    `x[0]` broadcast)."""
    from onnx import helper, numpy_helper

    model = onnx.load(str(right))
    for node in model.graph.node:
        node.output[:] = ["pre" if name == target else name for name in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array([0]), "row"))
    model.graph.node.extend([helper.make_node("Gather", ["pre", "row"], ["first"], axis=0),
                             helper.make_node("Shape", ["pre"], ["shape"]),
                             helper.make_node("Expand", ["first", "shape"], [target])])
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def dynamic(tiny_pose_models, tmp_path_factory):
    """A dynamic-batch plain model, its right patch, and a recording of the user's pipeline on one crop."""
    from graphsurgery.api import apply

    plain = tiny_pose_models[(17, True)]
    folder = tmp_path_factory.mktemp("dynamic_reference")
    right = apply(CROP, plain, folder / "right.onnx").output
    crops = bgr_crops(1, seed=5)
    np.savez(folder / "one.npz", input=crops, **users_pipeline(plain, crops))
    return plain, right, folder / "one.npz"


@pytest.mark.parametrize("recorded_as", ["file", "live"])
@pytest.mark.parametrize("target", ["keypoints", "scores"])
def test_a_patch_reading_row_0_of_the_batch_fails_against_one_recorded_sample(dynamic, tmp_path, recorded_as,
                                                                              target):
    """Was a PASS: verify --reference fed the recorded samples as recorded, and `--reference-pipeline` one call per
    size: one sample was a batch of one, where a patch reading row 0 of the batch is right. The samples go among
    companions, as verify feeds them."""
    plain, right, one = dynamic
    PLAIN_FOR_LIVE["model"] = plain
    source = ({"reference": one} if recorded_as == "file"
              else {"reference_pipeline": live_pipeline, "random": 1})
    mutant = _reading_row_0(right, target, tmp_path / "mutant.onnx")
    report = verify(CROP, plain, patched=mutant, backends=("onnxruntime",), **source)
    assert not report
    assert report.failures() and all(f": {target}: " in line for line in report.failures()), report.failures()
    assert verify(CROP, plain, patched=right, **source)


def test_an_output_of_one_row_for_the_samples_fails_not_the_recording(dynamic, tmp_path):
    """Was "the reference's 'keypoints' holds 3 samples; its recorded inputs make 1" (exit 2, the user told to record
    again): a patch answering row 0 alone ([1, 17, 2]) to three recorded crops made the recording look wrong. The
    patched model's output fails, saying it does not follow the batch."""
    from onnx import helper, numpy_helper

    plain, right, _ = dynamic
    crops = bgr_crops(3, seed=7)
    np.savez(tmp_path / "three.npz", input=crops, **users_pipeline(plain, crops))
    model = onnx.load(str(right))
    for node in model.graph.node:
        node.output[:] = ["pre" if name == "keypoints" else name for name in node.output]
    model.graph.initializer.extend(numpy_helper.from_array(np.array([value]), name)
                                   for name, value in (("start", 0), ("end", 1), ("axis", 0)))
    model.graph.node.append(helper.make_node("Slice", ["pre", "start", "end", "axis"], ["keypoints"]))
    onnx.save(model, str(tmp_path / "mutant.onnx"))
    report = verify(CROP, plain, patched=tmp_path / "mutant.onnx", reference=tmp_path / "three.npz",
                    backends=("onnxruntime",))
    assert not report
    assert [line for line in report.failures() if "keypoints: 1 row for the 6 rows of one call" in line], \
        report.failures()
