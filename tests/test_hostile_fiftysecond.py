"""Hostile round 52: mutation testing of verify — wrong patched models that `verify --patched` passed.

Each splice-added constant and node of a right patch was perturbed (a threshold, a table entry, a comparison, a
rounding) and verified with the default settings. The survivors that differ from the right patch on inputs a user
feeds:

- heatmap_argmax's validity test: the decoder probe's joints lowered to a peak of exactly 0 were judged "on the
  score <= 0 threshold", a near tie, so `score >= 0` for `> 0` passed; and no probe joint had a peak just above 0,
  so a threshold of 1e-3 or 0.5 for 0 passed (a weak joint then marked invalid).
- heatmap_argmax's position tables: no probe map was flat, tied or peaked in a corner, so a table with two cells
  swapped (a flat map, as a grey crop gives, answered (4, 0) for (0, 0)) passed.
- resize `fit: crop`: verify's random sizes gave resized sides 0 and 1 above the cut modulo 4 only, so a centre cut
  from round((h' − 225) / 2) or a Floor for the Round passed (one pixel off for ~half of the image sizes); a centred
  letterbox of YOLOv8-tiny's size saw even spares only, so padding rounded up passed.
- simcc_decode had no decoder probe: its validity threshold, its (−1, −1) and its position tables were free.
- detections were compared as sets of the rows with a class, wherever they stood: a boxes_to_image sorting its rows
  the other way (the first `count` rows zeros) or filling the scores past the count with −1 passed.

Fixed in `compare` (`exact`: on the probe no near tie for exact steps), `decoder_probe.cell_probes` (maps of flat,
tied, corner and small peaks, on the joints the first probe leaves alone), `decoder_probe.run_simcc_probe`,
`Resize.offset_sizes` and `compare_detections._layout_differs`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from graphsurgery.api import apply
from graphsurgery.verification import verify

from modelkit import POSE_LETTERBOX, pose_model

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
POSE = RECIPES / "hrnet_coco_pose.yaml"
CLASSIFIER = RECIPES / "imagenet_classifier.yaml"


def _spliced(model: onnx.ModelProto, step: str, op: str) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if node.name.startswith(f"graphsurgery/post/{step}/")
            and node.op_type == op] or [node for node in model.graph.node
                                        if node.name.startswith(f"graphsurgery/pre/{step}/") and node.op_type == op]


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(tensor for tensor in model.graph.initializer if tensor.name == name)


def _validity_test(model: onnx.ModelProto) -> tuple[onnx.NodeProto, onnx.TensorProto]:
    """heatmap_argmax's `peak > 0` (a Greater against a scalar 0 whose result picks the answer) and its 0."""
    scalars = {t.name: t for t in model.graph.initializer if t.name.startswith("graphsurgery/post/heatmap_argmax/")
               and numpy_helper.to_array(t).shape == () and numpy_helper.to_array(t) == 0}
    found = [(node, scalars[node.input[1]]) for node in _spliced(model, "heatmap_argmax", "Greater")
             if node.input[1] in scalars]
    assert len(found) == 1, found
    return found[0]


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def pose(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pose")
    plain = pose_model(folder / "plain.onnx")
    return plain, apply(POSE, plain, folder / "right.onnx").output


def _probe_failed(report) -> bool:
    return any("probe output" in line for line in report.failures())


def test_a_validity_test_of_at_least_zero_fails_on_the_probe(pose, tmp_path):
    """Round 52: heatmap_argmax patched with `peak >= 0` for `> 0` answered the probe's joints lowered to a peak of
    exactly 0 at their peak ((60, 12) for (0, 0)); each was judged on the "score <= 0 threshold", a near tie, and the
    patch passed. On the probe the graph and the twins read one float32 map: no tie there."""
    plain, right = pose
    model = onnx.load(str(right))
    node, _ = _validity_test(model)
    node.op_type = "GreaterOrEqual"
    report = verify(POSE, plain, patched=_save(model, tmp_path / "wrong.onnx"), random=2, backends=["onnxruntime"])
    assert not report and _probe_failed(report), report.failures()


@pytest.mark.parametrize("threshold", [1e-3, 0.5])
def test_a_validity_threshold_above_zero_fails_on_the_cell_probe(pose, tmp_path, threshold):
    """Round 52: heatmap_argmax patched to call a joint valid above 1e-3 or 0.5 for above 0 passed: no map of the
    samples or of the probe peaked between 0 and the threshold. The cell probe has joints peaking at 1e-6, 1e-3,
    0.05 and 0.5."""
    plain, right = pose
    model = onnx.load(str(right))
    _, zero = _validity_test(model)
    zero.CopyFrom(numpy_helper.from_array(np.array(threshold, np.float32), zero.name))
    report = verify(POSE, plain, patched=_save(model, tmp_path / "wrong.onnx"))
    assert not report and _probe_failed(report), report.failures()


@pytest.mark.parametrize("table", ["positions", "coordinates"])
def test_a_position_table_with_two_cells_swapped_fails_on_the_cell_probe(pose, tmp_path, table):
    """Round 52: heatmap_argmax's tables of flat positions and of coordinates with their first two cells swapped
    passed: no map peaked in cell (0, 0) or (1, 0), which a flat map (a grey crop) and a corner peak give."""
    plain, right = pose
    model = onnx.load(str(right))
    tensor = _initializer(model, f"graphsurgery/post/heatmap_argmax/{table}")
    values = numpy_helper.to_array(tensor).copy()
    flat = values.reshape(-1) if table == "positions" else values
    flat[[0, 1]] = flat[[1, 0]]
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    report = verify(POSE, plain, patched=_save(model, tmp_path / "wrong.onnx"), random=2, backends=["onnxruntime"])
    assert not report and _probe_failed(report), report.failures()


def test_a_position_table_with_its_last_two_columns_swapped_fails_on_the_cell_probe(pose, tmp_path):
    """Round 58: with the last two columns of every row swapped, the column is found through the same table (the
    peak's value is gathered from the swapped position), so the answer differs only where those two cells tie, which
    no case had: it passed. The cell probe ties them in the middle row."""
    plain, right = pose
    model = onnx.load(str(right))
    tensor = _initializer(model, "graphsurgery/post/heatmap_argmax/positions")
    values = numpy_helper.to_array(tensor).copy()
    values[:, [-2, -1]] = values[:, [-1, -2]]
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    report = verify(POSE, plain, patched=_save(model, tmp_path / "wrong.onnx"), random=2, backends=["onnxruntime"])
    assert not report and _probe_failed(report), report.failures()


def test_the_last_of_tied_maxima_fails_on_the_cell_probe(pose, tmp_path):
    """Round 52: heatmap_argmax taking the last of tied maxima (rows and columns not holding the peak numbered −1,
    the largest number taken) differs from the authors' first only where two cells hold the maximum, which neither
    the samples nor the probe had, and passed. The cell probe has maps tied in a row, in a column, and flat, and
    compares them exactly: tied values are no near tie there."""
    plain, right = pose
    model = onnx.load(str(right))
    for name in ("last_row", "last_column"):
        tensor = _initializer(model, f"graphsurgery/post/heatmap_argmax/{name}")
        tensor.CopyFrom(numpy_helper.from_array(np.array(-1, numpy_helper.to_array(tensor).dtype), tensor.name))
    chooses = _spliced(model, "heatmap_argmax", "ReduceMin")
    assert len(chooses) == 2
    for node in chooses:
        node.op_type = "ReduceMax"
    wrong = _save(model, tmp_path / "wrong.onnx")
    report = verify(POSE, plain, patched=wrong, random=2, backends=["onnxruntime"])
    assert not report and _probe_failed(report), report.failures()


def test_the_right_pose_patches_pass_with_the_cell_probe(tmp_path):
    """Guard (new: fails on the code before, which has one probe map): right patches of the exact decoders (the
    authors' zeroed joints, mmpose's (−1, −1) with its gating, keypoints in original-image pixels) pass with the
    cell probe compared exactly, on both backends."""
    plain = pose_model(tmp_path / "plain.onnx", input_hw=(64, 48))
    for recipe in (POSE, RECIPES / "hrnet_coco_pose_image.yaml"):
        report = verify(recipe, plain, random=2)
        assert report, report.failures()
        assert len(report.probes) == 1 and report.probes[0].results[0].positions == 4 * 17
    minus_one = tmp_path / "minus_one.yaml"
    minus_one.write_text(POSE.read_text().replace("heatmap_argmax: {}", "heatmap_argmax: {invalid: minus_one}")
                         .replace("- to_image: {mode: crop}", "- quarter_offset: {gating: mmpose}\n"
                                  "    - to_image: {mode: crop}"))
    report = verify(minus_one, plain, random=2)
    assert report, report.failures()


def test_the_cell_probe_is_left_out_where_steps_refine(tmp_path):
    """Guard (of new functions): the cell probes' maps; a refinement (DARK, UDP) or `method: argmax` is no exact
    step: their probe stays one map, every joint lowered there for the refinements."""
    from graphsurgery.decoder_probe import cell_probes

    maps = np.random.default_rng(0).normal(size=(1, 17, 8, 6)).astype(np.float32)
    probes = cell_probes(maps)
    assert len(probes) == 3 and all(probe.shape == maps.shape for probe in probes)
    assert (probes[0][0, 0] == 1).all()  # flat
    assert all((probe[:, 1::3].max(axis=(2, 3)) <= -1).all() for probe in probes)  # left to `_probed_joints`
    from graphsurgery.recipe import as_recipe
    from graphsurgery.verification import _decided_exactly

    assert _decided_exactly(as_recipe(POSE))
    assert not _decided_exactly(as_recipe(RECIPES / "mmpose_heatmap_dark.yaml"))
    argmax = POSE.read_text().replace("heatmap_argmax: {}", "heatmap_argmax: {method: argmax}")
    (tmp_path / "argmax.yaml").write_text(argmax)
    assert not _decided_exactly(as_recipe(tmp_path / "argmax.yaml"))  # ties are the runtimes' before opset 12


# --- resize fit crop: the centre cut's offset ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> tuple[Path, Path]:
    from quirkykit import classifier as quirky_classifier

    folder = tmp_path_factory.mktemp("classifier")
    plain = quirky_classifier(folder / "plain.onnx", opset=13, ir_version=7, hw=(224, 224))  # ImageNet's
    return plain, apply(CLASSIFIER, plain, folder / "right.onnx").output


def _crop_target(model: onnx.ModelProto) -> onnx.TensorProto:
    """The model's size the centre cut's excess is measured from: round((h' − H) / 2)."""
    subs = [node for node in _spliced(model, "resize", "Sub")
            if any(node.output[0] in n.input for n in _spliced(model, "resize", "Cast"))]
    assert len(subs) == 1, subs
    return _initializer(model, subs[0].input[1])


@pytest.mark.parametrize("mistake", ["cut from H + 1", "offset rounded down"])
def test_a_centre_cut_one_pixel_off_fails_at_random_4(classifier, tmp_path, mistake):
    """Round 52: a `fit: crop` patch whose centre cut started at round((h' − 225) / 2) for round((h' − 224) / 2), or
    rounded the offset down, passed: verify's image sizes gave resized sides of 0 or 1 above the cut modulo 4, where
    both answers agree. Now leading sizes give each remainder (`Resize.offset_sizes`), so even --random 4 fails it."""
    plain, right = classifier
    model = onnx.load(str(right))
    if mistake == "cut from H + 1":
        target = _crop_target(model)
        target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) + 1, target.name))
    else:
        rounds = _spliced(model, "resize", "Round")
        assert len(rounds) == 1
        rounds[0].op_type = "Floor"
    report = verify(CLASSIFIER, plain, patched=_save(model, tmp_path / "wrong.onnx"), random=4,
                    backends=["onnxruntime"])
    assert not report, report.failures()


def test_the_right_crop_patch_passes_on_the_offset_sizes(classifier):
    """Guard (the sizes are new: fails on the code before): the right patch passes on the sizes that tell the
    offsets apart, on both backends."""
    plain, right = classifier
    report = verify(CLASSIFIER, plain, patched=right, random=6)
    assert report, report.failures()
    assert report.sizes[2:] == [(226, 224), (227, 224), (224, 225), (224, 227)]  # round 58: the height's too


def test_offset_sizes_give_each_remainder():
    """Round 52: the sizes verify feeds a centre cut or a centred letterbox give the excess each remainder modulo
    4; none are added for a stretch or a top-left pad."""
    from graphsurgery.samples import RESIZE_SIZES, resize_sizes
    from graphsurgery.steps.resize import Resize

    for resize in (Resize(size=(224, 224), fit="crop", crop_fraction=0.875), Resize(size=(48, 64), fit="letterbox"),
                   Resize(size=(32, 32), fit="crop", crop_fraction=0.875), Resize(size=(128, 160), fit="letterbox")):
        th, tw = resize.target_size()
        excess = set()
        for w, h in resize_sizes(resize):
            rh, rw = resize.resized_hw(h, w)
            excess |= {abs(rh - th) % 4, abs(rw - tw) % 4}
        assert excess == {0, 1, 2, 3}, (resize, resize_sizes(resize))
    assert resize_sizes(Resize(size=(64, 64))) == RESIZE_SIZES
    assert Resize(size=(64, 64), fit="letterbox", pad_anchor="top_left").offset_sizes(RESIZE_SIZES) == ()


# --- simcc_decode: a probe of its own ------------------------------------------------------------------------------

SIMCC = RECIPES / "mmpose_rtmpose_simcc.yaml"


@pytest.fixture(scope="module")
def simcc(tmp_path_factory) -> tuple[Path, Path]:
    from test_simcc import two_head_model

    folder = tmp_path_factory.mktemp("simcc")
    plain = two_head_model(folder / "plain.onnx")
    return plain, apply(SIMCC, plain, folder / "right.onnx").output


@pytest.mark.parametrize("threshold", [1e-5, 1e-3])
def test_a_simcc_validity_threshold_above_zero_fails_on_its_probe(simcc, tmp_path, threshold):
    """Round 52: simcc_decode had no decoder probe, and a patch calling a joint valid above 1e-5 or 1e-3 for
    mmpose's above 0 passed (no vector of the samples peaked between; from 0.01 on, their samples fail it). Its
    probe rewrites one batch's two heads joint by joint: peaks at the ends, flat and tied vectors, maxima of 0,
    −0.5, just above 0, x's above, below and equal to y's."""
    plain, right = simcc
    model = onnx.load(str(right))
    scalars = {t.name: t for t in model.graph.initializer if t.name.startswith("graphsurgery/post/simcc_decode/")
               and numpy_helper.to_array(t).shape == () and numpy_helper.to_array(t) == 0}
    tests = [node for node in _spliced(model, "simcc_decode", "Greater") if node.input[1] in scalars]
    assert len(tests) == 1
    zero = scalars[tests[0].input[1]]
    zero.CopyFrom(numpy_helper.from_array(np.array(threshold, np.float32), zero.name))
    report = verify(SIMCC, plain, patched=_save(model, tmp_path / "wrong.onnx"))
    assert not report and _probe_failed(report), report.failures()


def test_a_simcc_position_table_with_two_cells_swapped_fails_on_its_probe(simcc, tmp_path):
    """Round 52: simcc_decode's table of x positions with its last two swapped passed: no x vector of the samples
    peaked at either end (this model repeats each bin 4 times, so a first maximum lies on a multiple of 4)."""
    plain, right = simcc
    model = onnx.load(str(right))
    tensor = _initializer(model, "graphsurgery/post/simcc_decode/positions")
    values = numpy_helper.to_array(tensor).copy()
    values.reshape(-1)[[-1, -2]] = values.reshape(-1)[[-2, -1]]
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    report = verify(SIMCC, plain, patched=_save(model, tmp_path / "wrong.onnx"), random=2, backends=["onnxruntime"])
    assert not report and _probe_failed(report), report.failures()


def test_the_right_simcc_patch_passes_its_probe(simcc):
    """Guard (the probe is new: fails on the code before, which had none): the right patch passes on both backends,
    every joint of the probe compared."""
    plain, right = simcc
    report = verify(SIMCC, plain, patched=right, random=2)
    assert report, report.failures()
    assert len(report.probes) == 1 and report.probes[0].results[0].positions >= 16




def test_a_letterbox_padding_rounded_up_fails(tmp_path):
    """Round 52: a centred letterbox whose top/left padding was rounded up, (spare + 1) // 2 for spare // 2,
    passed for a 160 × 128 model (YOLOv8-tiny's size): every size verify fed left an even spare on both sides, where
    the two agree. `Resize.offset_sizes` adds images whose spare is odd."""
    plain = pose_model(tmp_path / "plain.onnx", input_hw=(128, 160))
    recipe = tmp_path / "letterbox.yaml"
    recipe.write_text(POSE_LETTERBOX)
    model = onnx.load(str(apply(recipe, plain, tmp_path / "right.onnx").output))
    constants = {tensor.name: numpy_helper.to_array(tensor).tolist() for tensor in model.graph.initializer}
    halves = [node for node in _spliced(model, "resize", "Div") if constants.get(node.input[1]) == [2, 2]]
    assert len(halves) == 1
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 1], np.int64), "round_up"))
    add = onnx.helper.make_node("Add", [halves[0].input[0], "round_up"], ["rounded_up"], name="round_up")
    model.graph.node.insert(list(model.graph.node).index(halves[0]), add)
    halves[0].input[0] = "rounded_up"
    report = verify(recipe, plain, patched=_save(model, tmp_path / "wrong.onnx"), random=4,
                    backends=["onnxruntime"])
    assert not report, report.failures()


# --- detections: laid out as the caller reads them -----------------------------------------------------------------

DETECTOR = RECIPES / "yolov8_detector.yaml"


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> tuple[Path, Path]:
    from examples.zoo.export import export_zoo

    folder = tmp_path_factory.mktemp("detector")
    plain = export_zoo(folder / "yolov8.onnx", "yolov8-tiny", opset=17)
    return plain, apply(DETECTOR, plain, folder / "right.onnx").output


def _producer(model: onnx.ModelProto, output: str) -> onnx.NodeProto:
    return next(node for node in model.graph.node if output in node.output)


@pytest.mark.parametrize("mistake", ["detections last", "scores past the count -1"])
def test_detections_laid_out_otherwise_fail(detector, tmp_path, mistake):
    """Round 52: detections were compared as sets of the rows with a class, wherever they stood, so a patch whose
    boxes_to_image sorted its rows the other way (the first `count` rows zeros, every detection after them: the
    caller reads nothing) passed, and so did one filling the scores past the count with −1 for 0. Now the rows are
    judged laid out as the unpatched pipeline's: detections first, then nms's fill."""
    plain, right = detector
    model = onnx.load(str(right))
    if mistake == "detections last":
        [sort] = [node for node in model.graph.node if node.op_type == "TopK"
                  and node.name.startswith("graphsurgery/post/boxes_to_image/")]
        next(attribute for attribute in sort.attribute if attribute.name == "largest").i = 0
    else:
        fill = _initializer(model, _producer(model, "scores").input[2])
        fill.CopyFrom(numpy_helper.from_array(np.array(-1, np.float32), fill.name))
    report = verify(DETECTOR, plain, patched=_save(model, tmp_path / "wrong.onnx"), random=4,
                    backends=["onnxruntime"])
    assert not report, report.failures()
    assert any("rows past the count" in line or "follows a row without one" in line for line in report.failures())


def test_the_right_detector_patch_passes_the_layout(detector):
    """Guard: the right patch's rows are laid out as the twins' on both backends (and across them). On photos: the
    zoo detector finds nothing in the first 4 random images (they prove nothing), and a few in the photos."""
    plain, right = detector
    report = verify(DETECTOR, plain, patched=right, images=ROOT / "examples" / "images")
    assert report, report.failures()


# --- softmax and topk: the probe of ranked rows (round 52's leftover) -------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_a_topk_whose_answers_do_not_follow_the_scores_fails_on_its_probe(classifier, tmp_path, k):
    """Was a PASS (round 52's leftover, rapidocr_rec): random samples through a network that answers one class
    everywhere never tell a top-k whose class positions were zeroed (k = 1: its first-maximum table) or whose order
    was reversed (k > 1: TopK's `largest` flipped) from the right one. The probe rewrites each row of class scores
    with its peaks on classes that differ from row to row."""
    plain, _ = classifier
    recipe = tmp_path / f"top{k}.yaml"
    text = CLASSIFIER.read_text()
    assert text.count("topk: {k: 5}") == 1
    recipe.write_text(text.replace("topk: {k: 5}", f"topk: {{k: {k}}}"))
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    model = onnx.load(str(right))
    if k == 1:
        table = next(t for t in model.graph.initializer if t.name.startswith("graphsurgery/post/topk")
                     and t.name.endswith("positions"))
        table.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(table)), table.name))
    else:
        node = next(n for n in model.graph.node if n.op_type == "TopK" and n.name.startswith("graphsurgery/post/"))
        next(a for a in node.attribute if a.name == "largest").i = 0
    onnx.save(model, str(tmp_path / "wrong.onnx"))
    assert verify(recipe, plain, random=4, backends=("onnxruntime",))  # the right one passes its probe
    report = verify(recipe, plain, patched=tmp_path / "wrong.onnx", random=4, backends=("onnxruntime",))
    assert not report
    assert any(line.startswith("onnxruntime: output steps on a probe output: indices") for line in report.failures())
