"""Round 88: verify's probes after one cut and one runner per way of cutting (`decoder_probe.ProbeCuts`).

Sharing the cuts changed no verdict (76 mutation and right-patch cases on four backend orders, the same before and
after), but the probes it serves still had holes, in silence. A SimCC recipe had no probe on float16 or float64
heads (it took float32 heads only, as the heatmap probe did before round 56) nor where the graph crops person
boxes (the heatmap probe ran there): a position table with its last two entries swapped, or joints valid above
1e-3 for above 0, PASSed on both backends. And where no probe could run, a patched IR (`--patched X.xml`) and a
SimCC graph that cannot be cut said nothing (round 70 gave the heatmap and detector probes a note), so a wrong
patch PASSed with nothing to tell the user that its output steps went unproven.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphsurgery import decoder_probe
from graphsurgery.api import apply
from graphsurgery.irconvert import convert_ir
from graphsurgery.runners import open_runner
from graphsurgery.verification import verify
from test_simcc import K, two_head_model

from modelkit import POSE_LETTERBOX, pose_model

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SIMCC = RECIPES / "mmpose_rtmpose_simcc.yaml"
POSE = RECIPES / "hrnet_coco_pose.yaml"
POSITIONS = "graphsurgery/post/simcc_decode/positions"
UNPROBED = "the output steps were not probed"


def _heads_cast(plain: Path, path: Path, to: int) -> Path:
    """`plain` (two SimCC heads) with both heads cast to the element type `to` at the end, as a model exported half
    or ending in a Cast gives them."""
    model = onnx.load(str(plain))
    for node in model.graph.node:
        node.output[:] = [f"{name}_wide" if name in ("simcc_x", "simcc_y") else name for name in node.output]
    model.graph.node.extend(helper.make_node("Cast", [f"{name}_wide"], [name], to=to)
                            for name in ("simcc_x", "simcc_y"))
    for value in model.graph.output:
        if value.name in ("simcc_x", "simcc_y"):
            value.type.tensor_type.elem_type = to
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _simcc_wrong(right: Path, path: Path, mistake: str, **save) -> Path:
    """The right SimCC patch with its x positions' last two entries swapped, or joints valid above 1e-3."""
    model = onnx.load(str(right))
    if mistake == "positions":
        tensor = next(t for t in model.graph.initializer if t.name == POSITIONS)
        values = numpy_helper.to_array(tensor).copy()
        values.reshape(-1)[[-1, -2]] = values.reshape(-1)[[-2, -1]]
    else:
        zeros = {t.name: t for t in model.graph.initializer if t.name.startswith("graphsurgery/post/simcc_decode/")
                 and numpy_helper.to_array(t).shape == () and numpy_helper.to_array(t) == 0}
        [test] = [node for node in model.graph.node if node.name.startswith("graphsurgery/post/simcc_decode/")
                  and node.op_type == "Greater" and node.input[1] in zeros]
        tensor, values = zeros[test.input[1]], np.array(1e-3, np.float32)
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    onnx.save(model, str(path), **save)
    return path


@pytest.fixture(scope="module", params=[TensorProto.FLOAT16, TensorProto.DOUBLE], ids=["float16", "float64"])
def simcc_cast(request, tmp_path_factory) -> tuple[Path, Path]:
    """(plain, right patch) of a SimCC model whose heads are float16 or float64."""
    folder = tmp_path_factory.mktemp("simcc_cast")
    plain = _heads_cast(two_head_model(folder / "wide.onnx"), folder / "plain.onnx", request.param)
    return plain, apply(SIMCC, plain, folder / "right.onnx").output


@pytest.mark.parametrize("mistake", ["positions", "threshold"])
def test_a_wrong_simcc_patch_on_heads_not_float32_fails_on_its_probe(simcc_cast, tmp_path, mistake):
    plain, right = simcc_cast
    report = verify(SIMCC, plain, patched=_simcc_wrong(right, tmp_path / "wrong.onnx", mistake), random=2,
                    backends=["onnxruntime"])
    assert not report
    assert any("output steps on a probe output" in line for line in report.failures()), report.failures()


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_the_right_simcc_patch_on_heads_not_float32_passes_its_probe(simcc_cast, backend):
    """Every joint of the probe compared, in the heads' own type, on the backend that probes."""
    plain, right = simcc_cast
    report = verify(SIMCC, plain, patched=right, random=2, backends=[backend])
    assert report, report.failures()
    assert [probe.name for probe in report.probes] == [f"{backend}: output steps on a probe output"]
    assert report.probes[0].results[0].positions == K


def test_the_simcc_heads_are_fed_in_their_own_type(simcc_cast, monkeypatch):
    """The cut is fed the vectors in the type it declares, each pair its own (not float32, which a float16 input
    refuses), and the answers are the cut's own on a runner of its own."""
    plain, right = simcc_cast
    declared = onnx.load(str(plain)).graph.output[0].type.tensor_type.elem_type
    real_run, fed = decoder_probe.ProbeCuts.run, []

    def run_and_check(self, path, feeds):
        shared = real_run(self, path, feeds)
        with open_runner(self.backend, path) as own:
            alone = own(feeds)
        for name in shared:
            np.testing.assert_array_equal(shared[name], alone[name], err_msg=name)
        fed.append({name: feeds[name].dtype for name in ("simcc_x", "simcc_y")})
        return shared

    monkeypatch.setattr(decoder_probe.ProbeCuts, "run", run_and_check)
    assert verify(SIMCC, plain, patched=right, random=2, backends=["onnxruntime"])
    expected = onnx.helper.tensor_dtype_to_np_dtype(declared)
    assert fed and all(set(types.values()) == {expected} for types in fed), fed


@pytest.fixture(scope="module")
def simcc(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("simcc")
    plain = two_head_model(folder / "plain.onnx")
    return plain, apply(SIMCC, plain, folder / "right.onnx").output


def test_a_simcc_graph_that_cannot_be_cut_says_it_was_not_probed(simcc, tmp_path):
    """Its constants in external data: the cut, saved elsewhere, would not find them; the heatmap probe said so
    since round 70, the SimCC probe said nothing and the wrong patch PASSed with no word."""
    plain, right = simcc
    wrong = _simcc_wrong(right, tmp_path / "wrong.onnx", "positions", save_as_external_data=True,
                         location="wrong.data", size_threshold=0)
    report = verify(SIMCC, plain, patched=wrong, random=2, backends=["onnxruntime"])
    assert not report.probes
    assert any(note.startswith(UNPROBED) and "cannot be cut at the network output" in note
               for note in report.notes), report.notes


@pytest.mark.parametrize("recipe", ["simcc", "pose"])
def test_a_patched_ir_says_its_output_steps_were_not_probed(simcc, tmp_path, recipe):
    """An IR cannot be cut: the probe never ran on one, and verify said nothing of it (a patch whose position
    table or validity threshold is wrong PASSed, its output steps unproven, with no note)."""
    if recipe == "simcc":
        plain, right = simcc
        wrong, recipe_file = _simcc_wrong(right, tmp_path / "wrong.onnx", "threshold"), SIMCC
    else:
        plain, recipe_file = pose_model(tmp_path / "plain.onnx"), POSE
        model = onnx.load(str(apply(POSE, plain, tmp_path / "right.onnx").output))
        table = next(t for t in model.graph.initializer if t.name == "graphsurgery/post/heatmap_argmax/positions")
        values = numpy_helper.to_array(table).copy()
        values.reshape(-1)[[0, 1]] = values.reshape(-1)[[1, 0]]
        table.CopyFrom(numpy_helper.from_array(values, table.name))
        onnx.save(model, str(tmp_path / "wrong.onnx"))
        wrong = tmp_path / "wrong.onnx"
    xml = convert_ir(wrong, tmp_path / "wrong.xml").xml
    report = verify(recipe_file, plain, patched=xml, random=2, backends=["openvino"])
    assert not report.probes
    assert [note for note in report.notes if note.startswith(UNPROBED)] == [
        "the output steps were not probed (a patched IR cannot be cut: verify the .onnx it was converted from to "
        "probe them): only the samples were compared"], report.notes


def test_openvino_shares_one_runner_across_image_sizes_as_runners_of_their_own(tmp_path, monkeypatch):
    """The shared OpenVINO runner is compiled once and fed the caller's image at every size verify probes (the
    cut reads its shape): each probe's answers equal those of a runner compiled for it alone, and stay as they were
    when later probes run (no state kept, no array reused between calls)."""
    plain, recipe = pose_model(tmp_path / "plain.onnx", input_hw=(128, 160)), tmp_path / "pose.yaml"
    recipe.write_text(POSE_LETTERBOX)
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    caller = onnx.load(str(right)).graph.input[0].name
    real_run, kept, sizes = decoder_probe.ProbeCuts.run, [], set()

    def run_and_check(self, path, feeds):
        shared = real_run(self, path, feeds)
        if len(kept) % 5 == 0:  # a compile of its own for one probe in five: the cell probes at each size too
            with open_runner(self.backend, path) as own:
                alone = own(feeds)
            for name in shared:
                np.testing.assert_array_equal(shared[name], alone[name], err_msg=name)
        kept.append((shared, {name: value.copy() for name, value in shared.items()}))
        sizes.add(feeds[caller].shape)
        return shared

    monkeypatch.setattr(decoder_probe.ProbeCuts, "run", run_and_check)
    report = verify(recipe, plain, patched=right, backends=["openvino"], random=4)
    assert report, report.failures()
    assert len(sizes) == 4 and len(kept) > 8, (sizes, len(kept))
    for shared, copied in kept:
        for name in shared:
            np.testing.assert_array_equal(shared[name], copied[name], err_msg=name)


#: A SimCC model fed whole images and person boxes: the graph crops each box (crop_boxes) and maps the keypoints
#: back into the image
SIMCC_BOXES = """version: 1
name: simcc-boxes
input:
  name: image
  tensor: {dtype: uint8, layout: NHWC, color: BGR}
  model: {layout: NCHW, color: RGB}
  steps:
    - cast: {}
    - layout: {to: NCHW}
    - crop_boxes: {}
    - reverse_channels: {}
    - normalize: {mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375]}
output:
  target: [simcc_x, simcc_y]
  steps:
    - simcc_decode: {split_ratio: 2.0}
    - to_image: {mode: boxes, units: crop}
  names: {keypoints: keypoints, scores: scores}
"""


@pytest.mark.parametrize("mistake", [None, "positions", "threshold"])
def test_a_simcc_recipe_that_crops_boxes_is_probed(simcc, tmp_path, mistake):
    """Where the graph crops person boxes, the SimCC probe was left out in silence (the heatmap probe ran there):
    a position table with its last two swapped, or joints valid above 1e-3, PASSed. It runs on the first box's
    heads, as the heatmap probe reads its maps."""
    plain, recipe = simcc[0], tmp_path / "boxes.yaml"
    recipe.write_text(SIMCC_BOXES)
    right = apply(recipe, plain, tmp_path / "right.onnx").output
    patched = right if mistake is None else _simcc_wrong(right, tmp_path / "wrong.onnx", mistake)
    report = verify(recipe, plain, patched=patched, random=2, backends=["onnxruntime"])
    assert [probe.name for probe in report.probes] == ["onnxruntime: output steps on a probe output"]
    if mistake is None:
        assert report, report.failures()
        assert report.probes[0].results[0].positions == K
    else:
        assert not report
        assert any("output steps on a probe output" in line for line in report.failures()), report.failures()
