"""A ninth round of hostile or careless inputs (a red-team run of eval-coco, convert, hostile model files and the
leftovers of round eight). Found: a model file named `.json` or `.textproto` was parsed by onnx as JSON or text
format (eval-coco --patched ann.json: an internal ParseError), and a binary model so named was unreadable; an
element type of 999 was an internal ValueError from the checker; a tensor with more raw bytes than its dims need, or
an external length that disagrees with them, passed the checker and `apply` copied it into the patched model; an
output listed twice made apply say "set output.target" and convert write it; a 255-byte output name was refused for
its `<name>.data`, which no model without external data writes. eval-coco took a COCO file_name holding NUL to the
system calls (internal error), keypoints of 1e300 into COCOeval (overflow warnings, exit 0), integers of 400 digits
in boxes, areas and scores (internal OverflowError), `true` as a box side and an image width of 0.5 px (every box
clipped away); its Python API took `limit=2.5`, `"2"` or NaN to a TypeError, True as one image. convert's API took
`calibration_random="2"` (TypeError) and `input_shapes` of -5, 1.5, 2**40 and "abc" to OpenVINO; `convert --int8
--calibration` with too many images was told to "verify on a folder of a few dozen images". Leftovers: `steps ''`
listed every step; a recipe key such as `1:` or `null:` was reported at the mapping's line; `inspect("")` said ".:
is a directory"; `verify(images=[])` was a TypeError from pathlib; a command with standard output closed exited 0
having written nothing; a deleted current folder was an internal error. Each is now one line and exit 2 (a clear
TypeError for a wrong type in the API), with no input changed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from clikit import invoke, one_line_exit_2
from graphsurgery.errors import GraphsurgeryError, RecipeError

from conftest import RECIPES
from examples.synthetic_coco import joint_detector, write_coco_set

CROP = RECIPES / "hrnet_coco_pose.yaml"


def digest(*paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


# --- hostile model files -------------------------------------------------------------------------------------------

def _variant(plain, path, change):
    model = onnx.load(str(plain))
    change(model)
    path.write_bytes(model.SerializeToString())
    return path


def _longer_bias(model):
    model.graph.initializer[1].raw_data += b"\0" * 4


def _external_length_lies(model, folder):
    tensor = model.graph.initializer[0]
    (folder / "w.bin").write_bytes(tensor.raw_data)
    tensor.data_location = TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    tensor.external_data.add(key="location", value="w.bin")
    tensor.external_data.add(key="length", value="8")


def _output_twice(model):
    model.graph.output.append(model.graph.output[0])


def _element_type_999(model):
    model.graph.input[0].type.tensor_type.elem_type = 999


@pytest.mark.parametrize("command", ["inspect", "apply", "convert"])
@pytest.mark.parametrize("change, needle", [
    (_longer_bias, "tensor 'conv.bias' holds 72 bytes where its 1-d FLOAT shape [17] needs 68"),
    (_external_length_lies, "tensor 'conv.weight' holds 8 bytes where its 4-d FLOAT shape [17, 3, 4, 4] needs 3,264"),
    (_output_twice, "output 'heatmaps' is listed 2 times"),
    (_element_type_999, "Invalid tensor data type 999"),
], ids=["raw-data-too-long", "external-length", "output-twice", "element-type-999"])
def test_a_broken_model_is_refused_by_every_command(plain, tmp_path, command, change, needle):
    """Too many raw bytes and a lying external length passed the checker (apply copied them; only the runtimes
    refused the patched model); an output listed twice made apply say "set output.target" (and convert wrote
    it); an element type of 999 was an internal error (the checker's ValueError)."""
    model = _variant(plain, tmp_path / "m.onnx",
                     (lambda m: change(m, tmp_path)) if change is _external_length_lies else change)
    before = digest(*tmp_path.iterdir())
    args = {"inspect": ["inspect", model], "apply": ["apply", CROP, model, "-o", tmp_path / "out.onnx"],
            "convert": ["convert", model, "-o", tmp_path / "out.xml"]}[command]
    one_line_exit_2(invoke(*args), "m.onnx", needle)
    assert digest(*tmp_path.iterdir()) == before  # nothing written, nothing changed


@pytest.mark.parametrize("suffix", [".json", ".textproto", ".onnxtext"])
def test_a_model_is_read_as_protobuf_whatever_its_name(plain, tmp_path, suffix):
    """onnx.load picks JSON or text format by the name: eval-coco --patched ann.json was an internal ParseError, and
    a binary model named so was "not a readable ONNX model"."""
    import graphsurgery

    model = tmp_path / f"model{suffix}"
    model.write_bytes(plain.read_bytes())
    assert graphsurgery.inspect(model).nodes == 1
    text = tmp_path / f"text{suffix}"
    text.write_text(json.dumps({"images": [], "annotations": []}))
    one_line_exit_2(invoke("inspect", text), f"text{suffix}", "not a readable ONNX model")


def test_an_input_that_is_also_an_output_is_named_by_convert(plain, tmp_path):
    """It said "OpenVINO made 2 inputs of the model's 1 — report this (OpenVINO changed the model's signature)"."""
    model = _variant(plain, tmp_path / "m.onnx", lambda m: m.graph.output.append(
        helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 256, 192])))
    one_line_exit_2(invoke("convert", model, "-o", tmp_path / "o.xml"), "input 'input' is also an output",
                    "remove 'input' from the model's outputs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.parametrize("command", ["apply", "convert"])
def test_an_output_name_of_255_bytes_is_written(plain, patched, tmp_path, command):
    """`<name>.data` (260 bytes) was looked up for a model that writes no data file: "File name too long"."""
    if command == "apply":
        out = tmp_path / ("x" * 250 + ".onnx")
        result = invoke("apply", CROP, plain, "-o", out)
    else:
        out = tmp_path / ("x" * 251 + ".xml")
        result = invoke("convert", patched, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and len(out.name) == 255


# --- eval-coco -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco")
    annotations = write_coco_set(folder / "images", images=2, seed=0)
    return annotations, folder / "images", joint_detector(folder / "detector.onnx", opset=17)


def _eval_coco(coco, tmp_path, change=None, detections=None):
    """eval-coco on a copy of the annotations changed by `change` (and `detections` as --boxes), on ONNX Runtime."""
    source, images, detector = coco
    data = json.loads(source.read_text())
    if change is not None:
        data = change(data) or data
    annotations = tmp_path / "ann.json"
    annotations.write_text(data if isinstance(data, str) else json.dumps(data))
    args = ["eval-coco", CROP, detector, "--ann", annotations, "--images", images, "--backends", "onnxruntime"]
    inputs = [annotations, detector, *images.iterdir()]
    if detections is not None:
        (tmp_path / "det.json").write_text(detections)
        args += ["--boxes", tmp_path / "det.json"]
        inputs.append(tmp_path / "det.json")
    before = digest(*inputs)
    result = invoke(*args)
    assert digest(*inputs) == before
    return result


def _set(where, key, value):
    def change(data):
        data[where][0][key] = value
    return change


def _keypoint(value):
    def change(data):
        data["annotations"][0]["keypoints"][0] = value
    return change


def _bbox(index, value):
    def change(data):
        data["annotations"][0]["bbox"][index] = value
    return change


@pytest.mark.parametrize("change, needles", [
    (_set("images", "file_name", "a\x00b.png"), ["ann.json", "holds a NUL character"]),
    (_keypoint(1e300), ["ann.json", "annotation 1 has keypoint values that are not finite numbers of pixels"]),
    (_keypoint(10**400), ["ann.json", "annotation 1 has keypoint values"]),
    (_set("annotations", "area", 10**400), ["ann.json", "annotation 1 has area 1000"]),
    (_bbox(2, 10**400), ["ann.json", "a missing or malformed field", "in a bbox"]),
    (_bbox(0, True), ["ann.json", "True in a bbox"]),
    (_set("images", "width", 0.5), ["ann.json", "image 1 has width 0.5, not a number of pixels"]),
], ids=["nul-file-name", "keypoint-1e300", "keypoint-400-digits", "area-400-digits", "bbox-400-digits",
        "bbox-true", "width-half-a-pixel"])
def test_hostile_coco_ground_truth_is_one_line(coco, tmp_path, change, needles):
    """A NUL in a file_name reached the system calls (ValueError: an internal error); 1e300 overflowed COCOeval's
    distances (warnings on stderr, exit 0); integers of 400 digits overflowed float() (an internal error); true
    was a box side of 1; an image 0.5 px wide clipped every box of it away in silence."""
    one_line_exit_2(_eval_coco(coco, tmp_path, change), *needles)


@pytest.mark.parametrize("score", ["1" + "0" * 400, "true"])
def test_hostile_detection_scores_are_one_line(coco, tmp_path, score):
    """A score of 400 digits was an internal OverflowError, a score of true a score of 1."""
    text = '[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 40], "score": ' + score + "}]"
    one_line_exit_2(_eval_coco(coco, tmp_path, detections=text), "det.json", "in a score")


@pytest.mark.parametrize("limit", [0, -1, 2.5, "2", True, float("nan")])
def test_the_eval_coco_api_takes_a_whole_positive_limit(coco, limit):
    """2.5 and NaN were TypeErrors from a slice, "2" from a comparison, and True one image."""
    import graphsurgery

    annotations, images, detector = coco
    with pytest.raises(GraphsurgeryError, match=r"limit=.* \(--limit\) is not a positive number of images"):
        graphsurgery.eval_coco(CROP, detector, annotations, images, backends=["onnxruntime"], limit=limit)


def test_the_eval_coco_api_checks_its_arguments_up_front(coco, tmp_path):
    """`progress="x"` failed once the first crop had run; "" was the current folder; None backends a TypeError
    from iterating None."""
    import graphsurgery

    annotations, images, detector = coco
    with pytest.raises(TypeError, match="progress is a function"):
        graphsurgery.eval_coco(CROP, detector, annotations, images, backends=["onnxruntime"], progress="x")
    with pytest.raises(GraphsurgeryError, match="an empty path names no annotation file"):
        graphsurgery.eval_coco(CROP, detector, "", images, backends=["onnxruntime"])
    with pytest.raises(GraphsurgeryError, match=r"a path of only blanks \(' '\) names no image folder"):
        graphsurgery.eval_coco(CROP, detector, annotations, " ", backends=["onnxruntime"])
    with pytest.raises(TypeError, match="backends is a list of backend names"):
        graphsurgery.eval_coco(CROP, detector, annotations, images, backends=None)
    assert graphsurgery.eval_coco(CROP, detector, annotations, images, backends=["onnxruntime"], limit=1).images == 1


# --- convert -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("count", ["2", 2.5, True])
def test_the_convert_api_takes_a_whole_number_of_calibration_samples(patched, tmp_path, count):
    """"2" was a TypeError from a comparison."""
    import graphsurgery

    with pytest.raises(GraphsurgeryError, match=r"calibration samples \(--calibration-random\): give a whole"):
        graphsurgery.convert(patched, tmp_path / "o.xml", int8=True, calibration_random=count)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dims", [(-5, 256, 192, 3), (1.5, 256, 192, 3), (2**40, 256, 192, 3), "abc", 5, ()])
def test_the_convert_api_takes_input_shapes_as_the_cli_does(patched, tmp_path, dims):
    """-5 and 2**40 went to OpenVINO (the CLI refuses dims over 2**31 - 1: an internal error there), 1.5 was a
    six-line TypeError from OpenVINO, "abc" three dims 'a', 'b', 'c', 5 a TypeError (no len)."""
    import graphsurgery

    with pytest.raises(GraphsurgeryError, match="input_shapes gives 'input' the dims"):
        graphsurgery.convert(patched, tmp_path / "o.xml", input_shapes={"input": dims})
    assert list(tmp_path.iterdir()) == []


def test_convert_with_too_many_calibration_images_is_not_told_to_verify(patched, tmp_path):
    """convert --int8 --calibration of 460 images said "verify holds them all at once … verify on a folder of a few
    dozen images"."""
    import cv2

    folder = tmp_path / "calibration"
    folder.mkdir()
    tiny = cv2.imencode(".png", np.zeros((2, 2, 3), np.uint8))[1].tobytes()
    for index in range(460):
        (folder / f"{index:04d}.png").write_bytes(tiny)
    result = invoke("convert", patched, "-o", tmp_path / "o.xml", "--int8", "--calibration", folder)
    one_line_exit_2(result, "460 crops", "at most 455", "int8 calibration (convert --int8) a few hundred")
    assert "verify holds" not in result.output and not (tmp_path / "o.xml").exists()


# --- leftovers of round eight --------------------------------------------------------------------------------------

def test_steps_with_an_empty_name_is_refused():
    """`steps ''` listed every step, exit 0."""
    one_line_exit_2(invoke("steps", ""), "unknown step ''")


@pytest.mark.parametrize("key", ["1", "null", "true"])
def test_a_recipe_key_that_is_not_a_string_is_reported_at_its_line(plain, tmp_path, key):
    """The line was the mapping's (line 4 for a key on line 23: the first line of the recipe's top level)."""
    import graphsurgery

    text = CROP.read_text().rstrip("\n") + f"\n{key}: x\n"
    line = text.count("\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(RecipeError, match=f"r.yaml: line {line}: .*Keys should be strings"):
        graphsurgery.apply(recipe, plain, tmp_path / "o.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


@pytest.mark.parametrize("call", [
    lambda gs, plain, out: gs.inspect(""),
    lambda gs, plain, out: gs.apply(CROP, "", out / "p.onnx"),
    lambda gs, plain, out: gs.apply("", plain, out / "p.onnx"),
    lambda gs, plain, out: gs.convert(" ", out / "p.xml"),
    lambda gs, plain, out: gs.run("", plain, out / "run", backend="onnxruntime"),
    lambda gs, plain, out: gs.chain("", plain, out / "c.onnx"),
    lambda gs, plain, out: gs.verify(CROP, plain, images="", backends="onnxruntime"),
    lambda gs, plain, out: gs.verify(CROP, plain, images=out, boxes="", backends="onnxruntime"),
])
def test_an_empty_input_path_is_named_as_empty(plain, tmp_path, call):
    """inspect("") said ".: is a directory, not an ONNX file" (Path("") is the current folder)."""
    import graphsurgery

    with pytest.raises(GraphsurgeryError, match=r"^(an empty path|a path of only blanks \(' '\)) names no "
                                                r"(model file|detector file|recipe file|image folder|boxes file) — "
                                                r"fix: give the path of the"):
        call(graphsurgery, plain, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("images", [[], ["photo.jpg"], ()])
def test_verify_says_it_takes_one_folder_of_images(plain, images):
    """A list was a TypeError from pathlib ("expected str, bytes or os.PathLike object, not list")."""
    import graphsurgery

    with pytest.raises(GraphsurgeryError, match="verify takes one folder of images"):
        graphsurgery.verify(CROP, plain, images=images, backends="onnxruntime")


@pytest.mark.parametrize("args", [["inspect", "{plain}"], ["inspect", "--json", "{plain}"], ["steps"]])
def test_a_command_with_standard_output_closed_exits_2(plain, args):
    """`graphsurgery inspect m.onnx >&-` printed nothing and exited 0 (sys.stdout is None: every write is lost,
    and the next file opened takes descriptor 1, where C libraries print)."""
    command = [sys.executable, "-m", "graphsurgery", *(a.format(plain=plain) for a in args)]
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60,
                          preexec_fn=lambda: os.close(1))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "standard output is closed" in done.stderr and "Traceback" not in done.stderr


def test_a_deleted_current_folder_is_one_line(plain, tmp_path):
    """apply -o x.onnx in a folder deleted under the shell: internal error (FileNotFoundError)."""
    gone = tmp_path / "gone"
    gone.mkdir()
    script = (f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m graphsurgery apply "{CROP}" "{plain}" '
              "-o x.onnx")
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "the current folder no longer exists" in done.stderr and "internal error" not in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["inspect", ""], ["apply", " ", "{plain}"],
                                  ["verify", CROP, "{plain}", "--images", ""],
                                  ["eval-coco", CROP, "{plain}", "--ann", "", "--images", "."]])
def test_an_empty_input_path_on_the_command_line_is_named_as_empty(plain, args):
    """`inspect ''` said ".: is a directory, not an ONNX file", `verify --images ''` ".: the folder holds no images"."""
    result = invoke(*(str(a).format(plain=plain) for a in args))
    assert result.exit_code == 2 and "names no file or folder to read" in result.output, result.output
    assert "Traceback" not in result.output and ".: " not in result.output


# --- full disks and read-only folders ------------------------------------------------------------------------------

def test_a_full_disk_is_not_blamed_on_standard_output(plain, tmp_path, monkeypatch):
    """With no byte free, the scratch folder's owner file failed with an OSError naming no file, which the CLI took
    for standard output's: "standard output: No space left on device" (apply, convert, run)."""
    import errno
    from pathlib import Path

    from graphsurgery import safeio

    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name == safeio.OWNER:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    out = tmp_path / "p.onnx"
    one_line_exit_2(invoke("apply", CROP, plain, "-o", out), "p.onnx: cannot create files in the output folder (No "
                    "space left on device)", "free disk space")
    assert list(tmp_path.iterdir()) == []


def test_openvino_failing_to_write_the_ir_is_one_line(patched, tmp_path, monkeypatch):
    """ov.save_model on a full disk raised RuntimeError("basic_ios::clear: iostream error"): an internal error."""
    import openvino

    def full(model, path, **kwargs):
        open(path, "wb").close()
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(openvino, "save_model", full)
    one_line_exit_2(invoke("convert", patched, "-o", tmp_path / "o.xml"), "o.xml: could not write the IR (OpenVINO: "
                    "basic_ios::clear: iostream error;", "bytes free there", "free disk space")
    assert list(tmp_path.iterdir()) == []


def test_an_ovms_repository_on_a_read_only_file_system_is_one_line(patched, tmp_path, monkeypatch):
    """Creating DIR/<name>/1 raised OSError (Read-only file system): an internal error."""
    import errno
    from pathlib import Path

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    one_line_exit_2(invoke("convert", patched, "--ovms", tmp_path), "cannot create the folder",
                    "(Read-only file system)", "choose a writable folder")
    assert list(tmp_path.iterdir()) == []


# --- outputs over the other files a command reads or writes -------------------------------------------------------

@pytest.mark.parametrize("option, name, out", [("--boxes", "b.xml", "b.xml"), ("--annotations", "a.bin", "a.xml")])
def test_convert_never_writes_over_its_calibration_files(patched, coco, tmp_path, option, name, out):
    """Only the model's files were checked: `convert -o b.xml --int8 --boxes b.xml --force` replaced the boxes file
    with the IR (after minutes of quantizing), `-o a.xml --annotations a.bin` the annotations with its weights."""
    _, images, _ = coco
    given = tmp_path / name
    given.write_text("{}")
    extra = ["--max-drop", "0.5"] if option == "--annotations" else []
    result = invoke("convert", patched, "-o", tmp_path / out, "--int8", "--calibration", images, option, given,
                    *extra, "--force")
    one_line_exit_2(result, f"{name}: the output would overwrite an input of this command")
    assert given.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_eval_coco_never_writes_its_report_over_a_results_file(coco, tmp_path):
    """`--results res --json res/unpatched-onnxruntime.json` replaced the results file with the report."""
    annotations, images, detector = coco
    report = tmp_path / "res" / "unpatched-onnxruntime.json"
    result = invoke("eval-coco", CROP, detector, "--ann", annotations, "--images", images, "--backends",
                    "onnxruntime", "--results", tmp_path / "res", "--json", report)
    one_line_exit_2(result, "--json names a COCO results file that --results writes")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["nosuch"], "No such command 'nosuch'"),
    (["verify"], "Missing argument 'RECIPE'"),
    (["eval-coco", "r.yaml", "m.onnx", "--limit", "0"], "0 is not in the range x>=1"),
    (["inspect", "m.onnx", "--no-such-option"], "No such option '--no-such-option'"),
    (["run", "m.onnx", "a.jpg", "--batch", "two"], "'two' is not a valid integer"),
    # click's parser raises these without a context: "Error: Option '--json' requires an argument." (round 50)
    (["verify", "r.yaml", "m.onnx", "--json"], "Option '--json' requires an argument."),
    (["run", "m.onnx", "-o"], "Option '-o' requires an argument."),
])
def test_click_usage_errors_are_one_line_with_the_usage_as_the_fix(args, message):
    """Click printed three lines (usage, a hint, the error) for a bad option value or a missing argument."""
    from click.testing import CliRunner

    from graphsurgery.cli import cli

    result = CliRunner().invoke(cli, args, prog_name="graphsurgery")
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("error: "), result.output
    assert message in result.output and f"(see `graphsurgery{' ' + args[0] if args[0] != 'nosuch' else ''} -h`)" \
        in result.output


@pytest.mark.parametrize("call", ["apply", "verify", "evaluate_coco", "run_bench", "convert_ir"])
def test_api_flags_are_bools_not_truthy_text(plain, tmp_path, call):
    """upgrade_opset="no" upgraded the opset and make_parents="no" made folders: every flag of the Python API is
    True or False, refused as a TypeError before anything is read or written."""
    from graphsurgery.api import apply
    from graphsurgery.benchmark import Settings, run_bench
    from graphsurgery.coco import evaluate_coco
    from graphsurgery.irconvert import convert_ir
    from graphsurgery.verification import verify

    calls = {
        "apply": lambda: apply(CROP, plain, tmp_path / "out.onnx", upgrade_opset="no"),
        "verify": lambda: verify(CROP, plain, random=1, upgrade_opset="no"),
        "evaluate_coco": lambda: evaluate_coco(CROP, plain, tmp_path / "a.json", tmp_path, upgrade_opset="no"),
        "run_bench": lambda: run_bench(CROP, plain, Settings(upgrade_opset="no")),
        "convert_ir": lambda: convert_ir(plain, tmp_path / "sub" / "m.xml", make_parents="no"),
    }
    with pytest.raises(TypeError, match=r"must be True or False, not str 'no'"):
        calls[call]()
    assert list(tmp_path.iterdir()) == []


def test_eval_coco_writes_its_report_into_the_results_folder_it_makes(coco, tmp_path):
    """The report's folder is checked up front (`--json missing/r.json` printed the report, then the error), but a
    report inside the results folder the command makes is no missing folder."""
    annotations, images, detector = coco
    result = invoke("eval-coco", CROP, detector, "--ann", annotations, "--images", images, "--backends",
                    "onnxruntime", "--results", tmp_path / "res", "--json", tmp_path / "res" / "report.json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "res" / "report.json").is_file() and (tmp_path / "res" / "unpatched-onnxruntime.json").is_file()
