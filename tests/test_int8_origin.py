"""`verify --precision int8 --patched X.xml` judges an int8 IR by its own decode: its agreement with the f32
pipeline is measured, not judged (int8 answers differently by design). So the IR must be the one patched from PLAIN
with RECIPE: `apply` records the plain model's SHA-256 in the provenance, `convert` carries the provenance into the
IR, and verify refuses an IR of another network, or of this one patched with other input steps, which PASSed.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.model import PROVENANCE_KEY, provenance
from graphsurgery.modelio import load_model, network_sha256
from graphsurgery.quantize import calibration_set, convert_int8
from graphsurgery.verification import verify

from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("origin")
    return {"plain": pose_model(folder / "plain.onnx"), "other": pose_model(folder / "other.onnx", seed=1)}


def int8_ir(recipe: Path, plain: Path, folder: Path, name: str) -> Path:
    patched = apply(recipe, plain, folder / f"{name}.onnx").output
    return convert_int8(patched, folder / f"{name}.int8.xml", calibration_set(patched, random=4)).xml


def test_the_ir_patched_from_plain_with_the_recipe_passes(models, tmp_path):
    ir = int8_ir(RECIPE, models["plain"], tmp_path, "right")
    report = verify(RECIPE, models["plain"], patched=ir, random=3, precision="int8", backends=("openvino",))
    assert report, report.failures()


def test_an_ir_of_other_input_steps_is_refused(models, tmp_path):
    """A std of 0.3 for every channel: the int8 model decodes its own heatmaps exactly, and PASSed."""
    wrong = tmp_path / "wrong_std.yaml"
    text = RECIPE.read_text()
    assert "std: [0.229, 0.224, 0.225]" in text
    wrong.write_text(text.replace("std: [0.229, 0.224, 0.225]", "std: [0.3, 0.3, 0.3]"))
    ir = int8_ir(wrong, models["plain"], tmp_path, "wrong")
    with pytest.raises(GraphsurgeryError, match="was patched with recipe .*, not with") as raised:
        verify(RECIPE, models["plain"], patched=ir, random=3, precision="int8", backends=("openvino",))
    assert raised.value.path == str(ir)


def test_an_ir_of_another_network_is_refused(models, tmp_path):
    """The same architecture and recipe, other weights: the CLI's one line, exit 2."""
    ir = int8_ir(RECIPE, models["other"], tmp_path, "other")
    result = CliRunner().invoke(cli, ["verify", str(RECIPE), str(models["plain"]), "--patched", str(ir), "--random",
                                      "3", "--precision", "int8"], terminal_width=200)
    assert result.exit_code == 2, result.output
    assert "patched from another model than" in result.output and "PASS" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_an_ir_without_provenance_is_refused(models, tmp_path):
    """An int8 IR of a patched model whose metadata was stripped (or converted by another tool) traces to nothing."""
    patched = apply(RECIPE, models["plain"], tmp_path / "p.onnx").output
    proto = onnx.load(str(patched))
    del proto.metadata_props[:]
    stripped = tmp_path / "stripped.onnx"
    onnx.save(proto, str(stripped))
    ir = convert_int8(stripped, tmp_path / "stripped.int8.xml", calibration_set(stripped, random=4)).xml
    with pytest.raises(GraphsurgeryError, match="records no provenance"):
        verify(RECIPE, models["plain"], patched=ir, random=3, precision="int8", backends=("openvino",))


def test_an_ir_patched_before_the_digest_was_recorded_is_refused(models, tmp_path):
    patched = apply(RECIPE, models["plain"], tmp_path / "p.onnx").output
    proto = onnx.load(str(patched))
    entries = provenance(proto)
    assert entries[-1]["model_sha256"] == network_sha256(load_model(models["plain"]))
    del entries[-1]["model_sha256"]
    next(p for p in proto.metadata_props if p.key == PROVENANCE_KEY).value = json.dumps(entries)
    older = tmp_path / "older.onnx"
    onnx.save(proto, str(older))
    ir = convert_int8(older, tmp_path / "older.int8.xml", calibration_set(older, random=4)).xml
    with pytest.raises(GraphsurgeryError, match="records no SHA-256 of the model it was patched from"):
        verify(RECIPE, models["plain"], patched=ir, random=3, precision="int8", backends=("openvino",))


def _negated_input(patched: Path, out: Path) -> Path:
    """`patched` whose network reads its input negated: a Neg between the input steps and the network."""
    proto = onnx.load(str(patched))
    nodes = list(proto.graph.node)
    conv = next(node for node in nodes if node.op_type == "Conv" and not node.name.startswith("graphsurgery/"))
    nodes.insert(nodes.index(conv), onnx.helper.make_node("Neg", [conv.input[0]], ["negated"], name="negate"))
    conv.input[0] = "negated"
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(out))
    return out


def test_an_ir_of_a_patched_model_changed_after_apply_is_refused(models, tmp_path):
    """Was a PASS (round 51): a patched model whose network input was negated after apply, its provenance intact,
    converted to int8: its own decode is exact and its input steps are not compared in the IR (OpenVINO folds them
    into the first convolution), so verify PASSed with 0.0 % of its keypoints within one cell of f32's. convert now
    records the SHA-256 of the network it converted, and verify applies the recipe again: it must be that network."""
    right = apply(RECIPE, models["plain"], tmp_path / "p.onnx").output
    changed = _negated_input(right, tmp_path / "changed.onnx")
    ir = convert_int8(changed, tmp_path / "changed.int8.xml", calibration_set(changed, random=4)).xml
    result = CliRunner().invoke(cli, ["verify", str(RECIPE), str(models["plain"]), "--patched", str(ir), "--random",
                                      "3", "--precision", "int8"], terminal_width=300)
    assert result.exit_code == 2, result.output
    assert "converted from another patched model than the one `apply` makes" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "PASS" not in result.output, result.output


def test_an_ir_converted_before_the_converted_digest_was_recorded_is_refused(models, tmp_path):
    """An int8 IR whose rt_info lacks the digest of the model it was converted from cannot be traced."""
    ir = int8_ir(RECIPE, models["plain"], tmp_path, "older")
    text = ir.read_text()
    assert text.count("<converted_sha256 ") == 1
    ir.write_text("\n".join(line for line in text.splitlines() if "<converted_sha256 " not in line))
    with pytest.raises(GraphsurgeryError, match="records no SHA-256 of the patched model it was converted from"):
        verify(RECIPE, models["plain"], patched=ir, random=3, precision="int8", backends=("openvino",))


def test_the_network_digest_reads_external_data(tmp_path):
    """Two models of one graph whose external weights differ have different digests; metadata does not count."""
    digests = []
    for seed in (0, 0, 1):
        folder = tmp_path / f"m{len(digests)}"
        folder.mkdir()
        proto = onnx.load(str(pose_model(folder / "inline.onnx", seed=seed)))
        proto.metadata_props.add(key="note", value=str(len(digests)))
        onnx.save(proto, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="weights.bin", size_threshold=0)
        loaded = load_model(folder / "model.onnx")
        assert loaded.data_files  # the weights are outside the protobuf
        digests.append(network_sha256(loaded))
    assert digests[0] == digests[1] != digests[2]


def test_the_digest_is_of_the_model_as_read(models, tmp_path):
    """apply settles output sizes in memory before splicing: the digest is the file's network, which verify reads."""
    proto = onnx.load(str(models["plain"]))
    proto.graph.output[0].type.tensor_type.shape.dim[2].dim_param = "h"  # a declared size apply settles
    loose = tmp_path / "loose.onnx"
    onnx.save(proto, str(loose))
    patched = apply(RECIPE, loose, tmp_path / "p.onnx").output
    assert provenance(onnx.load(str(patched)))[-1]["model_sha256"] == network_sha256(load_model(loose))


def test_inspect_shows_the_plain_models_digest(models, tmp_path):
    patched = apply(RECIPE, models["plain"], tmp_path / "p.onnx").output
    result = CliRunner().invoke(cli, ["inspect", str(patched)], terminal_width=200)
    assert result.exit_code == 0, result.output
    digest = network_sha256(load_model(models["plain"]))
    assert f"from a model of sha256 {digest[:12]}…" in result.output


def test_external_data_removed_after_reading_is_one_line(tmp_path):
    """The digest reads the external data files again: one removed since the model was read is named, not an
    internal error."""
    from graphsurgery.errors import ModelError

    proto = onnx.load(str(pose_model(tmp_path / "inline.onnx")))
    onnx.save(proto, str(tmp_path / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    loaded = load_model(tmp_path / "model.onnx")
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelError, match="cannot read the model's external data") as raised:
        network_sha256(loaded)
    assert str(raised.value.path).endswith("weights.bin")
