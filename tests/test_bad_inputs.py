"""The catalogue of bad inputs (issue 6).

Every mistake a user can make with a recipe, a model or a path is one case: a function that writes the bad files
into an empty folder and returns the command line. Each case must give exit code 2 and a single line that names
the file (and the YAML path or tensor) and says how to fix it, with no traceback; afterwards every file in the
folder is byte-for-byte unchanged and nothing was added (no output, no partial file, no temp file).
Images are checked through `graphsurgery.images.read_image`, which `run` and `verify` use to read them.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import struct
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import graphsurgery.modelio
from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.images import MAX_PIXELS, read_image

from conftest import RECIPES, ROOT
from modelkit import pose_model

RECIPE = (RECIPES / "hrnet_coco_pose.yaml").read_text()
PYTHON = ROOT / ".venv" / "bin" / "python"


@dataclass(frozen=True)
class Invocation:
    """A command line and what its one-line error must contain: the file it names, and further needles."""

    args: list
    names: Path | str
    needles: tuple[str, ...] = ()


Case = Callable[[Path, pytest.MonkeyPatch], Invocation]
CATALOGUE: list[Case] = []


def case(fn: Case) -> Case:
    CATALOGUE.append(fn)
    return fn


# --- building bad files -------------------------------------------------------------------------------------


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def model(folder: Path, name: str = "model.onnx", **kw) -> Path:
    return pose_model(folder / name, **kw)


def edited_model(folder: Path, edit: Callable[[onnx.ModelProto], None], name: str = "model.onnx") -> Path:
    """The tiny pose model, changed by `edit` and saved without any check."""
    proto = onnx.load(str(pose_model(folder / ".template.onnx")))
    (folder / ".template.onnx").unlink()
    edit(proto)
    path = folder / name
    path.write_bytes(proto.SerializeToString())
    return path


def external_model(folder: Path, location: str = "weights.data", offset: str | None = None) -> Path:
    """The tiny pose model in `folder/m/`, its weights in an external file whose location (and offset) are then
    set to `location` (and `offset`)."""
    (folder / "m").mkdir()
    path = folder / "m" / "model.onnx"
    proto = onnx.load(str(pose_model(path)))
    onnx.save_model(proto, str(path), save_as_external_data=True, location="weights.data", size_threshold=0)
    proto = onnx.load(str(path), load_external_data=False)
    for tensor in proto.graph.initializer:
        entries = {entry.key: entry for entry in tensor.external_data}
        entries["location"].value = location
        if offset is not None:
            (entries.get("offset") or tensor.external_data.add(key="offset")).value = offset
    path.write_bytes(proto.SerializeToString())
    return path


def apply_with(folder: Path, recipe_text: str | None = RECIPE, model_path: Path | None = None,
               recipe_path: Path | None = None) -> tuple[list, Path, Path]:
    recipe_path = recipe_path or write(folder, "recipe.yaml", recipe_text)
    model_path = model_path or model(folder)
    return ["apply", recipe_path, model_path, "-o", folder / "out.onnx"], recipe_path, model_path


def recipe_case(folder: Path, text: str | bytes, *needles: str) -> Invocation:
    args, recipe_path, _ = apply_with(folder, text)
    return Invocation(args, recipe_path, needles)


def model_case(folder: Path, model_path: Path, *needles: str, recipe_text: str = RECIPE) -> Invocation:
    args, _, _ = apply_with(folder, recipe_text, model_path)
    return Invocation(args, model_path, needles)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height RGB pixels, with no pixel data (nothing is allocated)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


CLASSIFIER_RECIPE = "version: 1\nname: c\noutput:\n  steps:\n    - softmax: {}\n    - topk: {k: 5}\n"
OUTPUT_ONLY = "version: 1\nname: decode\noutput:\n  steps:\n    - heatmap_argmax: {}\n"


# --- recipes ------------------------------------------------------------------------------------------------


@case
def recipe_yaml_syntax_error(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("name: hrnet-coco-pose", "name: [unclosed"), "line 6, column 1",
                       "YAML syntax error")


@case
def recipe_tab_indentation(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("  steps:\n    - heatmap", "\tsteps:\n    - heatmap"), "line", "column")


@case
def recipe_empty_file(tmp, mp):
    return recipe_case(tmp, "", "empty")


@case
def recipe_only_comments(tmp, mp):
    return recipe_case(tmp, "# nothing here\n\n", "empty")


@case
def recipe_not_a_mapping(tmp, mp):
    return recipe_case(tmp, "- cast\n- layout\n", "mapping", "not a list")


@case
def recipe_a_plain_string(tmp, mp):
    return recipe_case(tmp, "hrnet please\n", "mapping", "not a str")


@case
def recipe_not_utf8(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("→", "->").encode() + "# Größe\n".encode("latin-1"), "UTF-8", "line 22")


@case
def recipe_nul_character(tmp, mp):
    return recipe_case(tmp, RECIPE + "x: \x00\n", "U+0000", "line 22")


@case
def recipe_unknown_top_level_key(tmp, mp):
    return recipe_case(tmp, RECIPE + "outptu: {}\n", "unknown key 'outptu'", "'output'", "line 22")


@case
def recipe_unknown_step_suggests_closest(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("- normalize:", "- normalise:"), "input.steps[4]", "'normalize'")


@case
def recipe_step_on_the_wrong_side(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("- heatmap_argmax: {}", "- heatmap_argmax: {}\n    - cast: {}"),
                       "'cast' is an input step", "input.steps")


@case
def recipe_wrong_parameter_type(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("divide: 255", "divide: lots"), "input.steps[3].scale.divide",
                       "line 14", "graphsurgery steps scale")


@case
def recipe_boolean_where_a_number_goes(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("divide: 255", "divide: true"), "input.steps[3].scale.divide",
                       "valid number")


@case
def recipe_string_where_a_number_goes(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("divide: 255", "divide: '255'"), "input.steps[3].scale.divide",
                       "valid number")


@case
def recipe_wrong_type_for_a_flag(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("keep_original: true", "keep_original: maybe"), "output.keep_original",
                       "line 21")


@case
def recipe_step_parameters_not_a_mapping(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("- to_image: {mode: crop}", "- to_image: [crop]"),
                       "output.steps[1].to_image", "must be a mapping")


@case
def recipe_mean_and_std_lengths_differ(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("std: [0.229, 0.224, 0.225]", "std: [0.229, 0.224]"),
                       "input.steps[4].normalize", "3 values but std has 2")


@case
def recipe_zero_std(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("0.224,", "0.0,"), "input.steps[4].normalize", "zero")


@case
def recipe_invalid_layout(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("layout: NHWC", "layout: HWC"), "input.tensor.layout", "'NHWC'")


@case
def recipe_invalid_colour(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("color: BGR", "color: YUV"), "input.tensor.color", "'BGR'")


@case
def recipe_unsupported_version(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("version: 1", "version: 2"), "unsupported recipe version 2",
                       "reads `version: 1`")


@case
def recipe_missing_version(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("version: 1\n", ""), "'version' is missing", "add `version:`")


@case
def recipe_duplicate_key(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("version: 1\n", "version: 1\nversion: 1\n"), "duplicate key", "line 5")


@case
def recipe_python_object_tag_refused(tmp, mp):
    marker = tmp / "pwned"
    text = RECIPE.replace("divide: 255", f"divide: !!python/object/apply:os.system ['touch {marker}']")
    return recipe_case(tmp, text, "tag not allowed", "line 14")


@case
def recipe_python_name_tag_refused(tmp, mp):
    return recipe_case(tmp, "!!python/name:os.system\n", "tag not allowed")


@case
def recipe_alias_bomb_bounded(tmp, mp):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10^9 values if expanded
    return recipe_case(tmp, "\n".join(lines) + "\n", "expands to more than", "anchors and aliases")


@case
def recipe_self_referencing_alias(tmp, mp):
    return recipe_case(tmp, "version: 1\nname: x\noutput: &loop {steps: [*loop]}\n", "nests deeper")


@case
def recipe_nesting_overflow(tmp, mp):
    return recipe_case(tmp, "version: 1\nname: x\ndescription: " + "[" * 20_000 + "]" * 20_000 + "\n",
                       "nests deeper")


@case
def recipe_absurd_number_1e308(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("divide: 255", "divide: 1e308"), "input.steps[3].scale", "sensible size")


@case
def recipe_infinite_and_nan_numbers(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("0.485", ".nan").replace("divide: 255", "divide: .inf"),
                       "input.steps[3].scale", "finite")


@case
def recipe_huge_list(tmp, mp):
    huge = "[" + ", ".join(["0.5"] * 100_001) + "]"
    return recipe_case(tmp, RECIPE.replace("[0.485, 0.456, 0.406]", huge), "expands to more than")


@case
def recipe_negative_dim(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("color: BGR}", "color: BGR, shape: [1, -256, 192, 3]}"),
                       "input.tensor.shape", "between 1 and")


@case
def recipe_enormous_dim(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("color: BGR}", "color: BGR, shape: [1, 99999999999999, 192, 3]}"),
                       "input.tensor.shape", "between 1 and")


@case
def recipe_topk_k_above_the_classes(tmp, mp):
    args, _, model_path = apply_with(tmp, CLASSIFIER_RECIPE.replace("k: 5", "k: 49"))
    return Invocation(args, model_path, ("output.steps[1].topk", "set k to at most 48"))


@case
def recipe_topk_k_astronomical(tmp, mp):
    return recipe_case(tmp, CLASSIFIER_RECIPE.replace("k: 5", "k: 99999999999999999999"),
                       "output.steps[1].topk.k", "less than or equal to 1000000")


@case
def recipe_too_large(tmp, mp):
    return recipe_case(tmp, RECIPE + "# " + "x" * 1_100_000 + "\n", "larger than")


@case
def recipe_missing(tmp, mp):
    args, _, _ = apply_with(tmp, recipe_path=tmp / "nope.yaml")
    return Invocation(args, tmp / "nope.yaml", ("no such recipe",))


@case
def recipe_is_a_directory(tmp, mp):
    (tmp / "recipes").mkdir()
    args, _, _ = apply_with(tmp, recipe_path=tmp / "recipes")
    return Invocation(args, tmp / "recipes", ("directory",))


@case
def recipe_names_an_unproduced_result(tmp, mp):
    return recipe_case(tmp, RECIPE.replace("names: {keypoints: keypoints", "names: {joints: keypoints"),
                       "output.names", "'joints'", "line 20")


# --- recipe against model -----------------------------------------------------------------------------------


@case
def model_input_target_not_in_model(tmp, mp):
    args, _, model_path = apply_with(tmp, RECIPE.replace("input:\n", "input:\n  target: images\n"))
    return Invocation(args, model_path, ("no input named 'images'", "its inputs: 'input'", "input.target"))


@case
def model_output_target_not_in_model(tmp, mp):
    args, _, model_path = apply_with(tmp, RECIPE.replace("output:\n", "output:\n  target: logits\n"))
    return Invocation(args, model_path, ("no output named 'logits'", "'heatmaps'", "output.target"))


@case
def model_several_real_inputs_none_chosen(tmp, mp):
    def second_input(proto):
        proto.graph.input.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, [1, 17, 64, 48]))
        proto.graph.node[0].output[0] = "conv"
        proto.graph.node.append(helper.make_node("Add", ["conv", "bias"], ["heatmaps"], name="add"))

    return model_case(tmp, edited_model(tmp, second_input), "2 inputs", "'input', 'bias'", "input.target")


@case
def model_normalize_length_differs_from_channels(tmp, mp):
    recipe_text = RECIPE.replace("[0.485, 0.456, 0.406]", "[0.5, 0.5, 0.5, 0.5]").replace(
        "[0.229, 0.224, 0.225]", "[0.2, 0.2, 0.2, 0.2]")
    return model_case(tmp, model(tmp), "input.steps[4].normalize", "4 mean/std values", "3 channels",
                      recipe_text=recipe_text)


@case
def model_channel_count_does_not_match_normalize(tmp, mp):
    def one_channel(proto):
        proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1
        weight = proto.graph.initializer[0]
        weight.CopyFrom(numpy_helper.from_array(np.full((17, 1, 4, 4), 0.1, np.float32), weight.name))

    recipe_text = RECIPE.replace("color: BGR}", "color: RGB}").replace("    - reverse_channels: {}\n", "")
    return model_case(tmp, edited_model(tmp, one_channel), "input.steps[3].normalize", "1 channels",
                      "give 1 values", recipe_text=recipe_text)


@case
def model_output_not_a_4d_heatmap(tmp, mp):
    def flatten(proto):
        proto.graph.node.append(helper.make_node("Flatten", ["heatmaps"], ["flat"], name="flatten"))
        proto.graph.output[0].CopyFrom(helper.make_tensor_value_info("flat", TensorProto.FLOAT, [1, 17 * 64 * 48]))

    return model_case(tmp, edited_model(tmp, flatten), "output.steps[0].heatmap_argmax", "not a 4-D heatmap",
                      recipe_text=OUTPUT_ONLY)


@case
def model_recipe_applied_twice(tmp, mp):
    plain = model(tmp, "plain.onnx")
    apply(write(tmp, "first.yaml", RECIPE), plain, tmp / "patched.onnx")
    return model_case(tmp, tmp / "patched.onnx", "already applied", "--force")


# --- model files --------------------------------------------------------------------------------------------


@case
def model_missing(tmp, mp):
    return model_case(tmp, tmp / "missing.onnx", "no such model")


@case
def model_is_a_directory(tmp, mp):
    (tmp / "model.onnx").mkdir()
    return model_case(tmp, tmp / "model.onnx", "directory")


@case
def model_empty_file(tmp, mp):
    return model_case(tmp, write(tmp, "model.onnx", b""), "empty")


@case
def model_truncated(tmp, mp):
    data = model(tmp, "full.onnx").read_bytes()
    return model_case(tmp, write(tmp, "model.onnx", data[: len(data) * 2 // 3]), "truncated")


@case
def model_random_bytes(tmp, mp):
    return model_case(tmp, write(tmp, "model.onnx", np.random.default_rng(1).bytes(4096)), "not ONNX")


@case
def model_is_a_serialized_tensor(tmp, mp):
    tensor = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(3, 4), "w")
    return model_case(tmp, write(tmp, "model.onnx", tensor.SerializeToString()), "not")


@case
def model_is_a_serialized_graph(tmp, mp):
    graph = onnx.load(str(model(tmp, "full.onnx"))).graph
    return model_case(tmp, write(tmp, "model.onnx", graph.SerializeToString()), "not an ONNX model")


@case
def model_is_a_yaml_file(tmp, mp):
    return model_case(tmp, write(tmp, "model.onnx", RECIPE), "not")


@case
def model_without_graph_inputs(tmp, mp):
    constant = helper.make_node("Constant", [], ["heatmaps"], name="const",
                                value=numpy_helper.from_array(np.zeros((1, 17, 64, 48), np.float32)))
    graph = helper.make_graph([constant], "g", [], [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT,
                                                                                      [1, 17, 64, 48])])
    path = tmp / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return model_case(tmp, path, "no inputs to patch")


@case
def model_with_a_cycle(tmp, mp):
    def cycle(proto):
        proto.graph.node[0].output[0] = "conv"
        proto.graph.node.extend([helper.make_node("Add", ["conv", "loop"], ["heatmaps"], name="add"),
                                 helper.make_node("Relu", ["heatmaps"], ["loop"], name="relu")])

    return model_case(tmp, edited_model(tmp, cycle), "ONNX checker", "topologically sorted", "re-export")


@case
def model_unknown_op_domain(tmp, mp):
    def custom(proto):
        proto.graph.node[0].domain = "com.example.secret"
        proto.opset_import.append(helper.make_opsetid("com.example.secret", 1))

    return model_case(tmp, edited_model(tmp, custom), "'com.example.secret'", "node 'conv'", "custom ops")


@case
def model_unknown_op(tmp, mp):
    def unknown(proto):
        proto.graph.node[0].op_type = "Frobnicate"

    return model_case(tmp, edited_model(tmp, unknown), "ONNX checker", "Frobnicate")


@case
def model_ir_version_too_new(tmp, mp):
    def newer(proto):
        proto.ir_version = onnx.IR_VERSION + 1

    return model_case(tmp, edited_model(tmp, newer), f"IR version {onnx.IR_VERSION + 1}", "newer")


@case
def model_opset_too_new(tmp, mp):
    def newer(proto):
        proto.opset_import[0].version = onnx.defs.onnx_opset_version() + 1

    return model_case(tmp, edited_model(tmp, newer), f"opset {onnx.defs.onnx_opset_version() + 1}", "newer")


@case
def model_larger_than_protobuf_allows(tmp, mp):
    path = tmp / "model.onnx"
    with open(path, "wb") as f:  # sparse: costs no disk blocks
        f.truncate(2**31 + 4096)
    return model_case(tmp, path, "cannot exceed 2 GB", "external data")


@case
def model_external_data_missing(tmp, mp):
    path = external_model(tmp)
    (path.parent / "weights.data").unlink()
    return model_case(tmp, path, "'weights.data'", "missing", "'conv.weight'")


@case
def model_external_data_truncated(tmp, mp):
    path = external_model(tmp)
    data = path.parent / "weights.data"
    data.write_bytes(data.read_bytes()[:100])
    return model_case(tmp, path, "reads past the end", "'weights.data'")


@case
def model_external_data_escapes_with_dotdot(tmp, mp):
    write(tmp, "secret.bin", b"s3cret" * 1000)
    return model_case(tmp, external_model(tmp, "../secret.bin"), "'../secret.bin'", "outside the model's folder")


@case
def model_external_data_escapes_far_with_dotdot(tmp, mp):
    return model_case(tmp, external_model(tmp, "../../../../../../etc/passwd"), "outside the model's folder")


@case
def model_external_data_absolute_path(tmp, mp):
    secret = write(tmp, "secret.bin", b"s3cret" * 1000)
    return model_case(tmp, external_model(tmp, str(secret)), str(secret), "outside the model's folder")


@case
def model_external_data_symlink_out_of_folder(tmp, mp):
    secret = write(tmp, "secret.bin", b"s3cret" * 1000)
    path = external_model(tmp, "link.data")
    (path.parent / "link.data").symlink_to(secret)
    return model_case(tmp, path, "'link.data'", "outside the model's folder")


@case
def model_external_data_symlink_inside_folder(tmp, mp):
    path = external_model(tmp, "link.data")
    (path.parent / "link.data").symlink_to("weights.data")
    return model_case(tmp, path, "'link.data'", "symbolic link")


@case
def model_external_data_offset_not_a_number(tmp, mp):
    return model_case(tmp, external_model(tmp, offset="12ab"), "not a number", "'conv.weight'")


@case
def model_external_data_without_location(tmp, mp):
    return model_case(tmp, external_model(tmp, ""), "without a location")


# --- paths --------------------------------------------------------------------------------------------------


@case
def path_output_equal_to_input(tmp, mp):
    args, _, model_path = apply_with(tmp)
    return Invocation([*args[:3], "-o", model_path], model_path, ("overwrite an input",))


@case
def path_output_equal_to_input_spelled_differently(tmp, mp):
    args, _, model_path = apply_with(tmp)
    (tmp / "sub").mkdir()
    other = tmp / "sub" / ".." / "model.onnx"
    return Invocation([*args[:3], "-o", other], other, ("overwrite an input",))


@case
def path_output_equal_to_recipe(tmp, mp):
    args, recipe_path, _ = apply_with(tmp)
    return Invocation([*args[:3], "-o", recipe_path, "--force"], recipe_path, ("overwrite an input",))


@case
def path_missing_output_folder(tmp, mp):
    args, _, _ = apply_with(tmp)
    out = tmp / "no" / "such" / "out.onnx"
    return Invocation([*args[:3], "-o", out], out, ("folder does not exist", "create"))


@case
def path_output_is_a_directory(tmp, mp):
    args, _, _ = apply_with(tmp)
    (tmp / "out.onnx").mkdir()
    return Invocation([*args, "--force"], tmp / "out.onnx", ("is a directory",))


@case
def path_output_exists_without_force(tmp, mp):
    args, _, _ = apply_with(tmp)
    write(tmp, "out.onnx", b"precious")
    return Invocation(args, tmp / "out.onnx", ("output exists", "--force"))


@case
def path_output_data_file_exists_without_force(tmp, mp):
    args, _, _ = apply_with(tmp)
    write(tmp, "out.onnx.data", b"precious")
    return Invocation(args, tmp / "out.onnx", ("out.onnx.data exists", "--force"))


@case
def path_folder_refusing_new_files_real_proc(tmp, mp):
    """A real folder that refuses new files: /proc (tests run as root, so a chmod-ed folder would not refuse)."""
    args, _, _ = apply_with(tmp)
    out = Path("/proc/graphsurgery-out.onnx")
    return Invocation([*args[:3], "-o", out], out, ("cannot create files", "writable folder"))


@case
def path_read_only_folder_simulated_by_os_access(tmp, mp):
    args, _, _ = apply_with(tmp)
    real_access = os.access
    mp.setattr(graphsurgery.modelio.os, "access",
               lambda p, mode, **kw: False if mode & os.W_OK else real_access(p, mode, **kw))
    return Invocation(args, tmp / "out.onnx", ("not writable",))


def _disk_full_midway(proto, path, *args, **kwargs):
    """Stands in for onnx.save_model: writes part of the file, then the disk is full."""
    Path(path).write_bytes(b"\x08\x07" * 512)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@case
def path_disk_full_midway_simulated(tmp, mp):
    args, _, _ = apply_with(tmp)
    mp.setattr(onnx, "save_model", _disk_full_midway)
    return Invocation(args, tmp / "out.onnx", ("No space left on device", "nothing was written"))


@case
def path_disk_full_while_copying_external_data_simulated(tmp, mp):
    path = external_model(tmp)

    def full(src, dst, count, *offsets):
        os.write(dst, b"\0" * min(count, 100))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    mp.setattr(graphsurgery.modelio.os, "copy_file_range", full)
    args, _, _ = apply_with(tmp, model_path=path)
    return Invocation(args, tmp / "out.onnx", ("No space left on device",))


@case
def path_final_rename_fails_after_data_file_moved_simulated(tmp, mp):
    path = external_model(tmp)
    real_link = os.link

    def link(src, dst):  # a new output is placed by a hard link (`safeio.place`)
        if Path(dst).name == "out.onnx":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_link(src, dst)

    mp.setattr(graphsurgery.safeio.os, "link", link)
    args, _, _ = apply_with(tmp, model_path=path)
    return Invocation(args, tmp / "out.onnx", ("could not write the output",))


# --- inspect ------------------------------------------------------------------------------------------------


@case
def inspect_random_bytes(tmp, mp):
    path = write(tmp, "model.onnx", np.random.default_rng(2).bytes(999))
    return Invocation(["inspect", path], path, ("not ONNX",))


@case
def inspect_external_data_escape(tmp, mp):
    write(tmp, "secret.bin", b"s3cret" * 1000)
    path = external_model(tmp, "../secret.bin")
    return Invocation(["inspect", "--json", path], path, ("outside the model's folder",))


@case
def inspect_cycle(tmp, mp):
    def cycle(proto):
        proto.graph.node[0].input[0] = "loop"
        proto.graph.node.append(helper.make_node("Relu", ["heatmaps"], ["loop"], name="relu"))

    path = edited_model(tmp, cycle)
    return Invocation(["inspect", path], path, ("ONNX checker",))


# --- the checks every case must pass ------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry below `folder` (hidden ones too): file contents by hash, symlink targets, directories."""
    entries: dict[str, tuple] = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            key = str(path.relative_to(folder))
            if path.is_symlink():
                entries[key] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[key] = ("dir",)
            elif path.stat().st_size > 64 << 20:  # sparse giants: size and mtime stand in for the contents
                stat = path.stat()
                entries[key] = ("file", stat.st_size, stat.st_mtime_ns)
            else:
                entries[key] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return entries


def assert_refused(exit_code: int, output: str, invocation: Invocation) -> None:
    """Exit code 2, one line naming the file, saying how to fix it, no traceback."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert exit_code == 2, output
    assert len(lines) == 1, output
    line = lines[0]
    assert "Traceback" not in output
    assert line.startswith("error: "), line
    assert str(invocation.names) in line, line
    assert " — fix: " in line, line
    for needle in invocation.needles:
        assert needle in line, f"{needle!r} not in {line!r}"


def test_catalogue_has_at_least_40_cli_cases():
    assert len(CATALOGUE) >= 40
    assert len({fn.__name__ for fn in CATALOGUE}) == len(CATALOGUE)


@pytest.mark.parametrize("bad", CATALOGUE, ids=lambda fn: fn.__name__)
def test_bad_input_is_refused_cleanly(bad, tmp_path, monkeypatch):
    invocation = bad(tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    result = CliRunner().invoke(cli, [str(a) for a in invocation.args])
    monkeypatch.undo()
    assert_refused(result.exit_code, result.output, invocation)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "pwned").exists()


REAL_PROCESS = ["recipe_python_object_tag_refused", "recipe_alias_bomb_bounded", "model_is_a_serialized_graph",
                "model_with_a_cycle", "model_external_data_symlink_out_of_folder", "path_output_equal_to_input"]


@pytest.mark.parametrize("name", REAL_PROCESS)
def test_no_traceback_reaches_stderr_of_a_real_process(name, tmp_path, monkeypatch):
    bad = next(fn for fn in CATALOGUE if fn.__name__ == name)
    invocation = bad(tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "GRAPHSURGERY_DEBUG"}
    done = subprocess.run([str(PYTHON), "-m", "graphsurgery", *map(str, invocation.args)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.stdout == ""
    assert_refused(done.returncode, done.stderr, invocation)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "pwned").exists()


def test_force_applies_the_same_recipe_again(tmp_path):
    recipe_path = write(tmp_path, "half.yaml", "version: 1\nname: half\ninput:\n  steps: [{scale: {divide: 2}}]\n")
    apply(recipe_path, model(tmp_path), tmp_path / "once.onnx")
    args = ["apply", str(recipe_path), str(tmp_path / "once.onnx"), "-o", str(tmp_path / "twice.onnx")]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "already applied" in refused.output
    assert not (tmp_path / "twice.onnx").exists()
    result = CliRunner().invoke(cli, [*args, "--force"])
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(str(tmp_path / "twice.onnx"), full_check=True)
    assert len(json.loads(next(p.value for p in onnx.load(str(tmp_path / "twice.onnx")).metadata_props
                               if p.key == "graphsurgery.provenance"))) == 2


def test_a_patched_model_given_to_verify_as_plain_is_told_to_use_the_unpatched_one(tmp_path):
    """verify, bench and eval-coco have no --force: the line told them to pass it."""
    recipe_path = write(tmp_path, "half.yaml", "version: 1\nname: half\ninput:\n  steps: [{scale: {divide: 2}}]\n")
    apply(recipe_path, model(tmp_path), tmp_path / "once.onnx")
    refused = CliRunner().invoke(cli, ["verify", str(recipe_path), str(tmp_path / "once.onnx"), "--random", "1"])
    assert refused.exit_code == 2 and "already applied" in refused.output, refused.output
    assert "use the unpatched model" in refused.output and "`graphsurgery apply --force`" in refused.output


def test_existing_output_is_replaced_with_force(tmp_path):
    args, _, _ = apply_with(tmp_path)
    write(tmp_path, "out.onnx", b"old")
    result = CliRunner().invoke(cli, [*map(str, args), "--force"])
    assert result.exit_code == 0, result.output
    onnx.checker.check_model(str(tmp_path / "out.onnx"), full_check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "out.onnx", "recipe.yaml"]


# --- bugs are not user errors: one line, exit code 1, traceback on request ----------------------------------


def _broken_inspect(path):
    raise ZeroDivisionError("a bug")


def test_internal_error_is_one_line_with_exit_code_3(tmp_path, monkeypatch):
    monkeypatch.delenv("GRAPHSURGERY_DEBUG", raising=False)
    monkeypatch.setattr("graphsurgery.api.inspect_model", _broken_inspect)  # as `inspect` calls it
    result = CliRunner().invoke(cli, ["inspect", str(model(tmp_path))])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 3 and len(lines) == 1, result.output  # not 1, which means "no parity"
    assert "internal error (ZeroDivisionError: a bug)" in lines[0] and "report" in lines[0]
    assert "GRAPHSURGERY_DEBUG=1" in lines[0] and "Traceback" not in result.output


def test_internal_error_traceback_with_debug(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHSURGERY_DEBUG", "1")
    monkeypatch.setattr("graphsurgery.api.inspect_model", _broken_inspect)  # as `inspect` calls it
    result = CliRunner().invoke(cli, ["inspect", str(model(tmp_path))])
    assert isinstance(result.exception, ZeroDivisionError)


def test_internal_error_in_a_real_process(tmp_path):
    script = ("import graphsurgery.api as p, sys\n"
              "def broken(path): raise KeyError('oops')\n"
              "p.inspect_model = broken\n"
              "from graphsurgery.cli import main\n"
              "sys.argv = ['graphsurgery', 'inspect', sys.argv[1]]\n"
              "main()\n")
    path = model(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "GRAPHSURGERY_DEBUG"}
    done = subprocess.run([str(PYTHON), "-c", script, str(path)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "internal error (KeyError: 'oops')" in done.stderr
    debug = subprocess.run([str(PYTHON), "-c", script, str(path)], capture_output=True, text=True,
                           env={**env, "GRAPHSURGERY_DEBUG": "1"}, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "KeyError: 'oops'" in debug.stderr


# --- images: what `run` and `verify` read -------------------------------------------------------------------


def _image_refused(path: Path, *needles: str) -> None:
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(GraphsurgeryError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ") and " — fix: " in message
    for needle in needles:
        assert needle in message, message
    assert (path.read_bytes() if path.is_file() else None) == before


def _rgb(shape, seed=0, dtype=np.uint8, high=256):
    return np.random.default_rng(seed).integers(0, high, shape, dtype=dtype)


def _truncated_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_rgb((64, 64, 3))).save(buffer, format="PNG")
    return buffer.getvalue()[:300]


def _encoded(format_name: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_rgb((16, 16, 3))).save(buffer, format=format_name)
    return buffer.getvalue()


BAD_IMAGES = {
    "zero_bytes.jpg": (b"", "empty"),
    "gif_named.jpg": (_encoded("GIF"), "a GIF image, not JPEG or PNG"),
    "tiff_named.png": (_encoded("TIFF"), "a TIFF image, not JPEG or PNG"),
    "bmp_named.jpg": (_encoded("BMP"), "a BMP image, not JPEG or PNG"),
    "ppm_named.png": (_encoded("PPM"), "a PPM image, not JPEG or PNG"),
    "not_an_image.jpg": (b"this is text, not a JPEG\n" * 20, "not a readable"),
    "truncated.png": (_truncated_png(), "decoding failed"),
    "enormous_header.png": (png_header(100_000, 100_000), f"{MAX_PIXELS:,}"),
    "big_header.png": (png_header(12_000, 9_000), "12000×9000"),
    "header_only.png": (png_header(640, 480), "decoding failed"),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_is_refused(name, tmp_path):
    content, needle = BAD_IMAGES[name]
    _image_refused(write(tmp_path, name, content), needle)


def test_missing_image_and_folder_are_refused(tmp_path):
    _image_refused(tmp_path / "missing.jpg", "no such image")
    _image_refused(tmp_path, "directory")


def test_grayscale_loads_as_three_equal_bgr_channels(tmp_path):
    from PIL import Image

    gray = _rgb((20, 30))
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    image = read_image(tmp_path / "gray.png")
    assert image.dtype == np.uint8 and image.shape == (20, 30, 3)
    assert all(np.array_equal(image[..., c], gray) for c in range(3))


def test_rgba_loads_as_bgr_without_alpha(tmp_path):
    from PIL import Image

    rgba = _rgb((20, 30, 4))
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    assert image.dtype == np.uint8 and image.shape == (20, 30, 3)
    assert np.array_equal(image, rgba[..., 2::-1])


def test_16_bit_loads_as_8_bit_bgr(tmp_path):
    from PIL import Image

    gray16 = _rgb((20, 30), dtype=np.uint16, high=65536)
    Image.fromarray(gray16).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")  # really stored with 16 bits
    image = read_image(tmp_path / "gray16.png")
    assert image.dtype == np.uint8 and image.shape == (20, 30, 3)
    expected = (gray16 >> 8).astype(np.uint8)  # the high byte: what 65535 → 255 scaling by 1/256 gives
    assert np.abs(image[..., 0].astype(int) - expected).max() <= 1


# --- images through `run` and `verify` ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_patched(tmp_path_factory) -> tuple[Path, Path]:
    """(plain, patched) tiny pose models, written once for the image tests."""
    folder = tmp_path_factory.mktemp("image_models")
    plain = model(folder, "plain.onnx")
    return plain, apply(RECIPES / "hrnet_coco_pose.yaml", plain, folder / "patched.onnx").output


def _bad_image(folder: Path, name: str) -> Path:
    return write(folder, name, BAD_IMAGES[name][0])


CLI_BAD_IMAGES = ["zero_bytes.jpg", "not_an_image.jpg", "truncated.png", "enormous_header.png"]


@pytest.mark.parametrize("name", CLI_BAD_IMAGES)
def test_run_refuses_a_bad_image(name, tmp_path, tiny_patched):
    image = _bad_image(tmp_path / "images", name)
    before = snapshot(tmp_path / "images")
    result = CliRunner().invoke(cli, ["run", str(tiny_patched[1]), str(image), "-o", str(tmp_path / "out"),
                                      "--backend", "onnxruntime"])
    assert_refused(result.exit_code, result.output, Invocation([], image, (BAD_IMAGES[name][1],)))
    assert snapshot(tmp_path / "images") == before


def test_run_leaves_no_output_behind_on_a_bad_image(tmp_path, tiny_patched):
    from PIL import Image

    Image.fromarray(_rgb((40, 30, 3))).save(write(tmp_path / "images", "a_good.png", b""))
    _bad_image(tmp_path / "images", "not_an_image.jpg")
    result = CliRunner().invoke(cli, ["run", str(tiny_patched[1]), str(tmp_path / "images"), "-o",
                                      str(tmp_path / "out"), "--backend", "onnxruntime"])
    assert result.exit_code == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["zero_bytes.jpg", "enormous_header.png"])
def test_verify_refuses_a_bad_image(name, tmp_path, tiny_patched):
    image = _bad_image(tmp_path / "images", name)
    before = snapshot(tmp_path)
    result = CliRunner().invoke(cli, ["verify", str(RECIPES / "hrnet_coco_pose.yaml"), str(tiny_patched[0]),
                                      "--patched", str(tiny_patched[1]), "--images", str(tmp_path / "images"),
                                      "--backends", "onnxruntime"])
    assert_refused(result.exit_code, result.output, Invocation([], image, (BAD_IMAGES[name][1],)))
    assert snapshot(tmp_path) == before


def test_run_reads_grayscale_rgba_and_16_bit_images(tmp_path, tiny_patched):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(_rgb((48, 40)), "L").save(folder / "gray.png")
    Image.fromarray(_rgb((48, 40, 4)), "RGBA").save(folder / "rgba.png")
    Image.fromarray(_rgb((48, 40), dtype=np.uint16, high=65536)).save(folder / "deep.png")
    result = CliRunner().invoke(cli, ["run", str(tiny_patched[1]), str(folder), "-o", str(tmp_path / "out"),
                                      "--backend", "onnxruntime"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "out" / "keypoints.json").read_text())
    assert len(results) == 3 and all(len(r["keypoints"]) == 17 * 3 for r in results)


def test_a_closed_pipe_is_not_an_internal_error():
    """`graphsurgery schema | head -c 0`: the reader is gone before the first write. Exit 141 as for a writer killed
    by SIGPIPE (it was 1, "no parity", for `verify … | head` under `set -o pipefail`)."""
    process = subprocess.Popen([str(PYTHON), "-m", "graphsurgery", "schema"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141
    assert stderr == ""


@pytest.mark.parametrize("command", [
    ["apply", RECIPES / "hrnet_coco_pose.yaml", "MODEL", "-o", "-"],
    ["verify", RECIPES / "hrnet_coco_pose.yaml", "MODEL", "--random", "1", "--json", "-"],
    ["run", "MODEL", ROOT / "examples" / "images", "-o", "-"],
], ids=["apply -o", "verify --json", "run -o"])
def test_a_dash_for_an_output_is_refused_not_written_as_a_file_named_dash(command, tmp_path, monkeypatch):
    """Round 44's leftover: `--json -` and `-o -` wrote a file named "-" where standard output was meant."""
    from clikit import invoke, one_line_exit_2

    monkeypatch.chdir(tmp_path)
    model = pose_model(tmp_path / "plain.onnx")
    result = invoke(*[model if part == "MODEL" else part for part in command])
    one_line_exit_2(result, "'-' would be a file named '-'", "./-")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["plain.onnx"]
