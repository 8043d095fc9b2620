"""One graph for the whole job: a patched person detector's boxes feed a patched top-down pose model.

The detector (patched with a detector recipe: `image` in; `boxes` x1, y1, x2, y2 in image pixels, `scores`,
`classes`, `count` out, [1, D, …]) and the top-down pose model (patched with recipes/hrnet_coco_topdown.yaml:
`image` and `boxes` [N, 4] COCO x, y, w, h in; `keypoints`, `scores` out) become one model: the image goes in once,
and out come every person the detector found (`person_boxes` [N, 4] x1, y1, x2, y2, `person_scores` [N]) and their
`keypoints` [N, K, 2] and `keypoint_scores` [N, K, 1] in image pixels. Between them a few nodes keep the
detections of the person class among the first `count` rows (`Compress`, in the detector's order: best first) and
turn their corners into COCO boxes. The numpy twin of that glue (`select_people`) lets `verify_chain` compare the
chained model with the two models run one after the other.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from graphsurgery import __version__
from graphsurgery.chain_parts import part_difference
from graphsurgery.compare import differences
from graphsurgery.crop_positions import CROP_NODES, MANY_BOXES, PositionsCut, cut_at_positions, graph_positions
from graphsurgery.cutting import cut_between, needed_nodes
from graphsurgery.errors import ArgumentError, GraphsurgeryError, ModelError, printable, whole
from graphsurgery.longrun import FirstPart, say_long_run
from graphsurgery.model import (
    PROVENANCE_KEY,
    model_opset,
    nested_graphs,
    node_reads,
    outer_reads,
    provenance,
    real_inputs,
    shapes_only,
)
from graphsurgery.modelio import check_output_path, command, external_tensors, load_model, model_paths, save_model
from graphsurgery.safeio import input_path, output_path
from graphsurgery.samples import many_person_boxes, random_person_boxes
from graphsurgery.scopes import SPLICED
from graphsurgery.steps.nms import class_count

DETECTOR_OUTPUTS = ("boxes", "scores", "classes", "count")
#: what the glue takes from the detector: each output's element type and dims (D: the detector's rows; "?" any)
DETECTOR_PORTS = {"boxes": (TensorProto.FLOAT, (1, "D", 4)), "scores": (TensorProto.FLOAT, (1, "D")),
                  "classes": (TensorProto.INT64, (1, "D")), "count": (TensorProto.INT64, (1,))}
#: the pose model's boxes input: COCO x, y, w, h of each person, as many as the detector found ("?": dynamic)
POSE_PORTS = {"boxes": (TensorProto.FLOAT, ("?", 4))}
GLUE = f"{SPLICED}/chain"
POSE_PREFIX = "pose/"
#: the pose model's inputs, as the glue feeds them in the chained model
POSE_FED = {"image": f"{GLUE}/image", "boxes": f"{GLUE}/coco_boxes"}
POSE_INPUTS = tuple(POSE_FED)
#: the pose model's outputs, as the chained model's (its other names go after POSE_PREFIX)
POSE_RENAMED = {"keypoints": "keypoints", "scores": "keypoint_scores"}
#: the chained model's outputs: what the detector kept of the people, and their keypoints
OUTPUTS = ("person_boxes", "person_scores", *POSE_RENAMED.values())
#: before a detector's tensor or node named as the chained model names its own (`detector_name`), and its functions
DETECTOR_RENAMED = f"{GLUE}/detector/"


@dataclass(frozen=True)
class ChainResult:
    written: list[Path]
    outputs: list[str]
    notes: list[str] = field(default_factory=list)


def select_people(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, count: np.ndarray,
                  person_class: int) -> tuple[np.ndarray, np.ndarray]:
    """The glue's numpy twin: the person rows among the first `count` of image 0, as corners and as COCO
    x, y, w, h boxes, and their scores."""
    rows = np.arange(boxes.shape[1]) < int(count[0])
    people = rows & (classes[0] == person_class)
    corners = boxes[0][people].astype(np.float32)
    return corners, scores[0][people].astype(np.float32)


@command
def chain(detector: str | Path, pose: str | Path, out: str | Path, *, person_class: int = 0,
          force: bool = False, also_reads: Iterable[str | Path] = ()) -> ChainResult:
    """Write the chained model to `out` (atomically; neither input is modified). `also_reads`: other files the
    caller reads and `out` must not replace (`chain --check`'s images: `-o a.jpg --check a.jpg --force` wrote the
    model over the image, then failed to read it)."""
    detector, pose, out = input_path(detector, "detector file"), input_path(pose, "pose model file"), output_path(out)
    if not isinstance(also_reads, (str, os.PathLike, Iterable)):  # 5: "'int' object is not iterable"
        raise ArgumentError(f"also_reads is a path or a list of paths, not {type(also_reads).__name__}")
    also_reads = [input_path(path, "file") for path in ([also_reads] if isinstance(also_reads, (str, os.PathLike))
                                                        else also_reads)]
    if not whole(person_class) or not 0 <= person_class < 2**63:  # an int64 constant in the graph (0.5 went in)
        raise GraphsurgeryError(f"person class {person_class!r} is not a class index", fix="give the detector's "
                                "class index of a person (COCO: 0)")
    person_class = int(person_class)  # numpy's int64 passes the check, not into the provenance's JSON
    check_output_path(out, [*model_paths(detector), *model_paths(pose), *also_reads], force)
    first, second = load_model(detector), load_model(pose)
    for loaded in (first, second):
        if external_tensors(loaded.proto):
            raise ModelError("the model keeps its weights in an external data file", path=loaded.path,
                             fix="chain models saved whole (onnx.save without external data)")
    _check_signatures(first.proto, second.proto, detector, pose)
    # onnx.compose cuts the detector always (the glue takes its outputs), the pose model where it has others
    pose_cut = any(output.name not in POSE_RENAMED for output in second.proto.graph.output)
    _check_bodies(first.proto, detector, DETECTOR_OUTPUTS)
    _check_bodies(second.proto, pose, POSE_RENAMED if pose_cut else None)
    _check_cuttable(first.proto, detector)
    if pose_cut:
        _check_cuttable(second.proto, pose)
    notes = _check_person_class(first.proto, person_class, detector) + _left_out(first.proto, second.proto)
    if model_opset(first.proto) != model_opset(second.proto):
        raise ModelError(f"the detector has opset {model_opset(first.proto)} and the pose model "
                         f"{model_opset(second.proto)}", path=pose, fix="export (or --upgrade-opset) both at one opset")
    _check_domains(first.proto, second.proto, pose)
    _check_fed_constants(first.proto, detector, "detector")
    _check_fed_constants(second.proto, pose, "pose model")
    glued, estimator = _with_glue(first.proto, person_class), _with_prefix(second.proto)
    glued.ir_version = estimator.ir_version = max(first.proto.ir_version, second.proto.ir_version)
    merged = onnx.compose.merge_models(
        glued, estimator,
        io_map=[(glue, POSE_PREFIX + name) for name, glue in POSE_FED.items()],
        outputs=[f"{GLUE}/person_boxes", f"{GLUE}/person_scores", *(POSE_PREFIX + name for name in POSE_RENAMED)],
        producer_name=first.proto.producer_name or "graphsurgery",
        producer_version=first.proto.producer_version)
    for output, name in zip(merged.graph.output, OUTPUTS):
        _rename(merged.graph, output.name, name)
    _people_named(merged.graph, second.proto)
    entry = {"chain": {"detector": provenance(first.proto), "pose": provenance(second.proto),
                       "person_class": person_class}, "tool": f"graphsurgery {__version__}"}
    merged.metadata_props.add(key=PROVENANCE_KEY, value=json.dumps([entry]))
    return ChainResult(save_model(merged, out, replace=force), list(OUTPUTS), notes)


def _check_fed_constants(model: onnx.ModelProto, path: Path, what: str) -> None:
    """Refuse a part that lists constants as graph inputs too (IR 3 wants it; torch's `keep_initializers_as_inputs`
    writes it). onnx.compose's cut of the detector keeps such a constant as an input without its value ("missing
    from input feed"), and ONNX Runtime folds none of them in the part alone: a chained model taking the image alone
    differed from it (1.3e-3 on keypoint scores) and FAILed. Round 82: such a patched model was refused as "not a
    patched …" model, its fix to apply the recipe it had."""
    listed = [value.name for value in model.graph.input if value.name not in real_inputs(model)]
    if listed:
        more = ", …" if len(listed) > 1 else ""
        raise ModelError(f"the {what} lists {len(listed)} of its constants ({listed[0]!r}{more}) as graph inputs too",
                         path=path, fix="save it without them among its inputs (IR 4 or later; onnxruntime's "
                                        "tools/python/remove_initializer_from_input.py does it)")


def _check_signatures(detector: onnx.ModelProto, pose: onnx.ModelProto, detector_path: Path, pose_path: Path) -> None:
    outputs = {o.name for o in detector.graph.output}
    inputs = real_inputs(detector)  # a constant listed as an input too (IR 3) is not the caller's to feed
    if inputs != ["image"] or not set(DETECTOR_OUTPUTS) <= outputs:
        raise ModelError(f"not a patched detector: inputs {inputs}, outputs {sorted(outputs)}", path=detector_path,
                         fix="apply recipes/yolov8_detector.yaml (input `image`; outputs boxes, scores, classes, "
                             "count) to the plain detector first")
    _check_detector_outputs(detector, detector_path)
    pose_inputs = real_inputs(pose)
    pose_outputs = {o.name for o in pose.graph.output}
    if sorted(pose_inputs) != sorted(POSE_INPUTS) or not set(POSE_RENAMED) <= pose_outputs:
        raise ModelError(f"not a patched top-down pose model: inputs {pose_inputs}, outputs {sorted(pose_outputs)}",
                         path=pose_path, fix="apply recipes/hrnet_coco_topdown.yaml (inputs image and boxes) to the "
                                             "plain pose model first")
    _check_ports(pose.graph.input, POSE_PORTS, pose_path, "the pose model's input",
                 "patch the pose model with recipes/hrnet_coco_topdown.yaml (boxes [N, 4] float32)")
    types = {name: _type_name(next(i for i in model.graph.input if i.name == "image"))
             for name, model in (("detector", detector), ("pose", pose))}
    image = {name: f"{types[name]} [{', '.join(map(str, _dims(model, 'image')))}]"
             for name, model in (("detector", detector), ("pose", pose))}
    if image["detector"] != image["pose"]:
        # of one type, they differ in dims: other recipes were no fix (round 49: a dynamic-batch detector)
        raise ModelError(f"the two models take different images: detector {image['detector']}, pose {image['pose']}",
                         path=pose_path,
                         fix="export both at the same image size, batch 1 (the chain feeds one image [1, H, W, 3] to "
                             "both)" if types["detector"] == types["pose"]
                         else "patch both with recipes that take the same image (uint8 [1, H, W, 3] BGR)")


def _check_domains(detector: onnx.ModelProto, pose: onnx.ModelProto, path: Path) -> None:
    """One version of each operator set domain both models import: `onnx.compose` joins no two ("different operator
    set ids for a given domain": a local functions' domain at 1 and 2 was an internal error, round 79)."""
    theirs = {opset.domain: opset.version for opset in pose.opset_import}
    for opset in detector.opset_import:
        if theirs.get(opset.domain, opset.version) != opset.version:
            raise ModelError(f"the detector imports operator set {printable(opset.domain)!r} at version "
                             f"{opset.version} and the pose model at {theirs[opset.domain]}", path=path,
                             fix="import one version of that domain in both models")


def _check_bodies(model: onnx.ModelProto, path: Path, cut_to: Collection[str] | None) -> None:
    """No If, Loop or Scan body that `onnx.compose` joins wrong: one reading a constant of a graph around it (its
    add_prefix prefixes the reads after the constants, so they were left unprefixed, an internal error, round 75), or,
    where compose cuts the graph down to `cut_to`, a node output that only bodies read (its Extractor follows node
    inputs, and dropped that node). A body may read the graph's inputs and its nodes' outputs otherwise (round 80:
    a top-level If reading what a Conv made was refused, though compose renames those reads), and what an enclosing
    body takes or makes (round 77)."""
    graph = model.graph
    bodies = [body for body in nested_graphs(graph) if body is not graph]
    joinable = {name for scope in (graph, *bodies) for name in (*(value.name for value in scope.input),
                                                                *(name for node in scope.node for name in node.output))
                } - {tensor.name for tensor in graph.initializer}  # a constant listed as an input too
    for body in bodies:
        reads = sorted(outer_reads(body) - joinable)
        if reads:
            raise ModelError(f"a body of an If, Loop or Scan ({printable(body.name)!r}) reads "
                             f"{printable(reads[0])!r} from the graph around it, which onnx.compose cannot join",
                             path=path, fix="export the model without control flow (torch.onnx traces it away) "
                                            "to chain it")
    if cut_to is None:
        return
    kept = {name for node in needed_nodes(graph, cut_to, lambda node: node.input) for name in node.output}
    for node in needed_nodes(graph, cut_to):
        if kept.isdisjoint(node.output):
            raise ModelError(f"the node {printable(node.name or node.op_type)!r} is read by an If, Loop or Scan body "
                             "alone, which onnx.compose's cut drops", path=path,
                             fix="export the model without control flow (torch.onnx traces it away) to chain it")


def _check_cuttable(model: onnx.ModelProto, path: Path) -> None:
    """No sparse initializer or quantization annotation in a graph `onnx.compose` cuts: its Extractor raises
    "len_sparse_initializer is 1, it must be 0", an internal error (round 77)."""
    graph = model.graph
    if graph.sparse_initializer or graph.quantization_annotation:
        held = "sparse initializers" if graph.sparse_initializer else "quantization annotations"
        raise ModelError(f"the model holds {held}, which onnx.compose cannot cut out the part chain joins",
                         path=path, fix="store its constants dense, without annotations, and chain that")


def _left_out(detector: onnx.ModelProto, pose: onnx.ModelProto) -> list[str]:
    """A note naming the outputs of either model the chained model does not give (a detector's second head, a pose
    model's kept heatmaps): they were dropped without a word (round 49)."""
    dropped = [f"the detector's {printable(o.name)}" for o in detector.graph.output if o.name not in DETECTOR_OUTPUTS]
    dropped += [f"the pose model's {printable(o.name)}" for o in pose.graph.output
                if o.name not in POSE_RENAMED]
    if not dropped:
        return []
    return [f"the chained model gives {', '.join(OUTPUTS)}; it leaves out {', '.join(dropped)} (run the models one "
            "after the other for those)"]


def _check_detector_outputs(detector: onnx.ModelProto, path: Path) -> None:
    """The detector's outputs as the glue takes them (a float `count`, boxes of 5 values, a batch of 2 or a `scores`
    of other rows than `boxes` were told as a graphsurgery bug, or were internal errors under --check), and an
    image that they depend on (a detector of constants made OpenVINO die of SIGFPE while it compiled the chain)."""
    _check_ports(detector.graph.output, DETECTOR_PORTS, path, "the detector's output",
                 "patch the detector with recipes/yolov8_detector.yaml (boxes [1, D, 4], scores and classes [1, D], "
                 "count [1])")
    reached = {"image"}
    for node in detector.graph.node:  # in topological order (the checker saw to it)
        if reached.intersection(node_reads(node)):
            reached.update(node.output)
    if constant := [name for name in DETECTOR_PORTS if name not in reached]:
        raise ModelError(f"the detector's output {constant[0]!r} does not depend on its image", path=path,
                         fix="chain a detector that finds people in the image (patched with a detector recipe)")


def _check_person_class(detector: onnx.ModelProto, person_class: int, path: Path) -> list[str]:
    """A person class the detector cannot output is refused: the chain would find nobody, in silence. Its class
    count is read from its graph (`nms.class_count`); a detector with a suppression of its own does not say it,
    and then the notes say that the class is not checked (no ONNX op can stop a run on a bad value)."""
    classes = class_count(onnx.shape_inference.infer_shapes(shapes_only(detector)))
    if classes is None:
        return [f"the detector's class count cannot be read from its graph, so person class {person_class} is "
                "not checked against it: a class it never outputs finds nobody"]
    if person_class >= classes:
        raise ModelError(f"person class {person_class} is beyond the detector's classes (0 to {classes - 1}): the "
                         "chain would find nobody", path=path,
                         fix="give the detector's class index of a person (--person-class; COCO: 0)")
    return []


def _check_ports(values, ports: dict, path: Path, what: str, fix: str) -> None:
    """Each of `ports` (name: element type and dims) among `values` as the glue takes it. A dim of 1 may be dynamic
    (a batch), "?" must be (the people), "D" is one number (or dynamic) across the ports, any other is exact."""
    rows: dict[str, int] = {}
    for name, (elem, want) in ports.items():
        value = next(v for v in values if v.name == name)
        dims = [d.dim_value if d.dim_value else "?" for d in value.type.tensor_type.shape.dim]
        known = rows.get("D")  # the rows of the ports before this one

        def fits(d, w) -> bool:
            if w == "D":
                return d == "?" or rows.setdefault("D", d) == d
            return d == "?" if w == "?" else d == w or (w == 1 and d == "?")

        if value.type.tensor_type.elem_type != elem or len(dims) != len(want) or not all(map(fits, dims, want)):
            shown = ", ".join(f"D = {known}" if w == "D" and known else str(w) for w in want)
            raise ModelError(f"{what} {name!r} is {onnx.helper.tensor_dtype_to_np_dtype(elem).name} [{shown}] in a "
                             f"chain, not {_type_name(value)} [{', '.join(map(str, dims))}]", path=path, fix=fix)


def _type_name(value: onnx.ValueInfoProto) -> str:
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
    except (KeyError, ValueError, TypeError):
        return f"element type {value.type.tensor_type.elem_type}"


def _dims(model: onnx.ModelProto, name: str) -> list:
    value = next(i for i in model.graph.input if i.name == name)
    return [d.dim_value if d.dim_value else "?" for d in value.type.tensor_type.shape.dim]


def _dtype(model: onnx.ModelProto, name: str) -> int:
    return next(i for i in model.graph.input if i.name == name).type.tensor_type.elem_type


def _without_metadata(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.metadata_props[:]
    return copy


def _with_prefix(pose: onnx.ModelProto) -> onnx.ModelProto:
    """The pose model (without metadata) with each name after POSE_PREFIX: `onnx.compose.add_prefix`'s for its
    tensors, nodes and graphs, `_prefix_functions`' for its local functions and their calls."""
    model = onnx.compose.add_prefix(_without_metadata(pose), POSE_PREFIX, rename_functions=False, inplace=True)
    _prefix_functions(model, POSE_PREFIX)
    return model


def detector_name(name: str) -> str:
    """A detector's tensor name as the chained model keeps it: its own, but where the chained model names tensors
    of its own (its outputs, the glue's, the pose part's after POSE_PREFIX), after DETECTOR_RENAMED (round 78: a
    detector tensor named `keypoints` made the chained model fail the ONNX checker, told as a graphsurgery bug; one
    named like the glue's was an internal error). Renamed whole, the part is still that detector: the parts check
    (`parts_difference`) compares it under these names."""
    taken = name in OUTPUTS or name.startswith((f"{GLUE}/", POSE_PREFIX))
    return DETECTOR_RENAMED + name if taken else name


def _rename_detector(detector: onnx.ModelProto) -> None:
    """Each tensor and node of `detector` named by `detector_name`, in its If, Loop and Scan bodies too, and each of
    its local functions named after DETECTOR_RENAMED, as `onnx.compose.add_prefix` names the pose model's (round 79:
    a node named like a glue node or the pose part's made a model ONNX Runtime refused, "two nodes with same node
    name"; a function named like the pose part's, `pose/…`, an internal error). The parts check renames every name
    of the detector alike (`chain_parts`, bodies included)."""
    for graph in nested_graphs(detector.graph):
        for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer,
                      *(sparse.values for sparse in graph.sparse_initializer)):
            value.name = detector_name(value.name)
        for node in graph.node:
            node.input[:] = map(detector_name, node.input)
            node.output[:] = map(detector_name, node.output)
            node.name = detector_name(node.name)
    _prefix_functions(detector, DETECTOR_RENAMED)


def _prefix_functions(model: onnx.ModelProto, prefix: str) -> None:
    """Each local function of `model` named after `prefix`, and each call of one (its domain and name) alike, in
    the graph, the functions and their If, Loop and Scan bodies: `onnx.compose.add_prefix` renames the calls in the
    graph and the functions alone, by name whatever the domain (round 80: a pose model's call in a Loop body made
    a model ONNX Runtime cannot load, "local:F is not a registered function"; a function `local.Sign` renamed the
    pose model's standard Sign nodes too, an internal error). The parts check expects the calls so renamed."""
    local = {(function.domain, function.name) for function in model.functions}
    for function in model.functions:
        function.name = prefix + function.name
    tops = [model.graph, *(graph for function in model.functions for node in function.node
                           for attribute in node.attribute
                           for graph in ([attribute.g] if attribute.HasField("g") else attribute.graphs))]
    for node in (*(node for function in model.functions for node in function.node),
                 *(node for top in tops for graph in nested_graphs(top) for node in graph.node)):
        if (node.domain, node.op_type) in local:
            node.op_type = prefix + node.op_type


def _with_glue(detector: onnx.ModelProto, person_class: int) -> onnx.ModelProto:
    """The detector (its tensors named as the chained model keeps them, `detector_name`) with the glue after it: the
    image passed on, and the person rows as corners, scores and COCO boxes."""
    model = _without_metadata(detector)
    graph = model.graph
    _rename_detector(model)

    def name(label: str) -> str:
        return f"{GLUE}/{label}"

    def const(label: str, value, dtype) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype), name(label)))
        return name(label)

    def node(op: str, inputs: list[str], label: str, **attrs) -> str:
        graph.node.append(helper.make_node(op, inputs, [name(label)], name=name(label), **attrs))
        return name(label)

    def first_image(tensor: str, label: str) -> str:  # the detector's batch is 1: image 0
        if model_opset(model) >= 13:
            return node("Squeeze", [tensor, const(f"{label}_axis", [0], np.int64)], label)
        return node("Squeeze", [tensor], label, axes=[0])

    boxes = first_image("boxes", "boxes_0")                        # [D, 4]
    scores = first_image("scores", "scores_0")                     # [D]
    classes = first_image("classes", "classes_0")                  # [D]
    slots = node("Gather", [node("Shape", [classes], "slots"), const("axis0", 0, np.int64)], "d", axis=0)
    valid = node("Less", [node("Range", [const("zero", 0, np.int64), slots, const("one", 1, np.int64)], "slot"),
                          first_image("count", "count_0")], "counted")   # the first `count` rows
    person = node("And", [valid, node("Equal", [classes, const("person", person_class, np.int64)], "is_person")],
                  "keep")
    corners = node("Compress", [boxes, person], "person_boxes", axis=0)
    node("Compress", [scores, person], "person_scores", axis=0)
    low = node("Slice", [corners, const("s0", [0], np.int64), const("e2", [2], np.int64),
                         const("a1", [1], np.int64)], "x1y1")
    high = node("Slice", [corners, const("s2", [2], np.int64), const("e4", [4], np.int64),
                          const("a1b", [1], np.int64)], "x2y2")
    node("Concat", [low, node("Sub", [high, low], "wh")], "coco_boxes", axis=1)
    node("Identity", ["image"], "image")
    for label, elem, shape in (("person_boxes", TensorProto.FLOAT, ["people", 4]),
                               ("person_scores", TensorProto.FLOAT, ["people"]),
                               ("coco_boxes", TensorProto.FLOAT, ["people", 4]),
                               ("image", _dtype(detector, "image"), _dims(detector, "image"))):
        graph.output.append(helper.make_tensor_value_info(name(label), elem, [d if d != "?" else None for d in shape]))
    return model


def _people_named(graph: onnx.GraphProto, pose: onnx.ModelProto) -> None:
    """The pose outputs' first dim declared `people`, as the glue's are, where the pose model names it as its
    boxes' count: the chained model declared one count under two names (round 99: `people` on `person_boxes`, the
    pose model's `N` on `keypoints`)."""
    boxes = next((value for value in pose.graph.input if value.name == "boxes"), None)
    dims = boxes.type.tensor_type.shape.dim if boxes is not None else ()
    count = dims[0].dim_param if dims else ""
    for value in graph.output:
        first = value.type.tensor_type.shape.dim[:1]
        if count and value.name in POSE_RENAMED.values() and first and first[0].dim_param == count:
            first[0].dim_param = "people"


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """The tensor `old` named `new`, where bodies read it too (round 80: a pose body reading its keypoints)."""
    for node in (node for body in nested_graphs(graph) for node in body.node):
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for value in graph.output:
        if value.name == old:
            value.name = new


def parts_difference(chained: Path, detector: Path, pose: Path) -> str | None:
    """How the chained model's detector or pose part is not that model, node for node and constant for constant
    (`chain_parts`); None where both are. The answers compared on a few images left wrong constants those images do
    not reach PASSing (round 66); the same graph computes the same answers for every image."""
    model = onnx.load(str(chained))
    return part_difference(model, load_model(detector).proto, DETECTOR_OUTPUTS, detector_name, DETECTOR_RENAMED,
                           "the detector") \
        or part_difference(model, load_model(pose).proto, POSE_RENAMED, _pose_name, POSE_PREFIX, "the pose model")


def _pose_name(name: str) -> str:
    """A pose model's tensor or node name in the chained model, as `chain` renames them: its inputs fed by the
    glue, its keypoints and scores the chained model's outputs, the others after POSE_PREFIX (`onnx.compose`)."""
    return {**POSE_FED, **POSE_RENAMED}.get(name, POSE_PREFIX + name if name else name)


@command
def verify_chain(chained: Path, detector: Path, pose: Path, images: list[np.ndarray], *, person_class: int = 0,
                 backends=("onnxruntime", "openvino")) -> list[dict]:
    """The chained model against the two models run one after the other with the glue's numpy twin between them,
    per backend and image: the largest differences (0 when the graphs compute alike). The chained model cut at the
    glue (`_cut_at_glue`) adds `detector`: its detector part's every row against the detector's, and `random_boxes`:
    its pose part against the pose model on RANDOM_BOXES random boxes of the first image (both infinite, as not
    compared, for a graph that has no glue to cut at, one `chain` did not write, or cannot be cut there); and
    `crop_positions`, the same on every row of a backend: where its pose part's crops sample against the pose
    model's, for MANY_BOXES boxes (`_positions_moved`), with `crop_positions_unread`: why they were not compared
    (None where they were). `backends` as verify takes them (`runners.check_backends`): a str was iterated into the
    backends 'o', 'n', …"""
    from graphsurgery.runners import backend_list, check_backends, open_runner
    from graphsurgery.safeio import scratch_named, temporary_folder

    backends = check_backends(backend_list(backends), "f32", None)
    rows: list[dict] = []
    first_part = FirstPart(len(backends) * len(images))

    def tick() -> None:
        _announce_long_check(first_part.tick(len(rows)), len(backends), len(images))

    with temporary_folder("chain") as folder, scratch_named(folder, f"{chained} (cut at the glue)"):
        model = onnx.load(str(chained))
        part = _cut_at_glue(model, folder / "cut.onnx")
        boxes = many_person_boxes(MANY_BOXES, 66)
        placing, unread = _positions_cuts(model, pose, boxes, folder)
        for backend in backends:
            with open_runner(backend, chained) as run, open_runner(backend, detector) as detect, \
                    open_runner(backend, pose) as estimate, \
                    (open_runner(backend, part) if part else nullcontext()) as cut:
                _compare(backend, run, detect, estimate, cut, images, person_class, detector, rows, tick)
            # after the two models ran: a damaged pose model is named as such, not the chained model's cut (round 28)
            moved = _positions_moved(placing, backend, boxes)
            for row in rows[len(rows) - len(images):]:
                row.update(crop_positions=moved, crop_positions_unread=unread)
    return rows


#: random person boxes (inside the image, partly outside, tiny) fed to the chained model's pose part on the first
#: image: the detector's boxes alone (a few, large, at the image's edges in the tests' photos) left wrong crops (a
#: Less's or a Sub's inputs swapped: keypoints 4e-4 to 8e-4 px off on other boxes) PASSing (round 66). The crops'
#: geometry, not the picture, is what they exercise: one image keeps the check's time near what it was.
RANDOM_BOXES = 30


def _cut_at_glue(model: onnx.ModelProto, out: Path) -> Path | None:
    """The chained model cut where the glue joins its parts (`cutting.cut_between`: what If, Loop and Scan bodies
    read and call kept, round 80), written to `out`: the image and the glue's COCO boxes in, the detector part's
    outputs (every row: the person rows alone left wrong box arithmetic that other images would show PASSing, round
    66) and the pose part's out. Each part as it sits in the chained graph; None for a graph without those tensors,
    or that cannot be cut there."""
    made = {"image", *(name for node in model.graph.node for name in node.output)}
    ends = [*DETECTOR_OUTPUTS, "keypoints", "keypoint_scores"]
    if not made.issuperset(["image", f"{GLUE}/coco_boxes", *ends]):
        return None
    return out if cut_between(model, ["image", f"{GLUE}/coco_boxes"], {}, ends, out) else None


def _positions_cuts(chained: onnx.ModelProto, pose: Path, boxes: np.ndarray, folder: Path
                    ) -> tuple[tuple[PositionsCut, PositionsCut] | None, str | None]:
    """The chained model's pose part (from the glue's COCO boxes) and the pose model (from its boxes input), each
    cut to where its crops sample (`crop_positions`), to be fed `boxes`; else None, and why not."""
    cuts = {"the pose model": cut_at_positions(load_model(pose).proto, folder / "pose_positions.onnx", boxes),
            "the chained model's pose part": cut_at_positions(chained, folder / "chained_positions.onnx", boxes,
                                                              f"{GLUE}/coco_boxes", POSE_PREFIX + CROP_NODES)}
    for what, cut in cuts.items():
        if not isinstance(cut, PositionsCut):
            return None, f"{what}: {cut}"
    return (cuts["the chained model's pose part"], cuts["the pose model"]), None


def _positions_moved(cuts: tuple[PositionsCut, PositionsCut] | None, backend: str, boxes: np.ndarray
                     ) -> float | None:
    """The largest difference between where the chained model's pose part and the pose model sample the crops of
    `boxes` on `backend`: RANDOM_BOXES boxes' crops left a wrong crop arithmetic seen on a few boxes in a hundred
    PASSing (round 71); None, not compared, without `cuts`: a pose model whose crop nodes are renamed has no
    positions to cut (verify passes it with a note), and then neither does its part, which the parts check
    (`parts_difference`) proves that model node for node (round 78: such a chain FAILed as "differs by up to
    inf")."""
    if cuts is None:
        return None
    chained, pose = (graph_positions(cut, backend, boxes) for cut in cuts)
    return max(largest_difference(chained.get(POSE_PREFIX + end), pose[end]) for end in cuts[1].ends)


def _compare(backend: str, run, detect, estimate, cut, images: list[np.ndarray], person_class: int, detector: Path,
             rows: list[dict], tick) -> None:
    """One backend's rows of `verify_chain`, appended to `rows` (`tick` after each, for the long-check line)."""
    # the two models first: a node of theirs that fails is that file's fault, named; failing first in the
    # chained model, which this process wrote, it was "a graphsurgery bug" (a damaged pose model; round 28)
    for index, image in enumerate(images):
        found = detect({"image": image})
        corners, scores = select_people(found["boxes"], found["scores"], found["classes"], found["count"],
                                        person_class)
        if not (np.isfinite(corners).all() and np.isfinite(scores).all()):  # NaN against NaN: a PASS of
            # nothing (and `run` refuses such people)
            raise GraphsurgeryError(f"{backend}: on image {index} the detector gave people boxes or scores "
                                    "that are not finite numbers: the check would compare NaN with NaN",
                                    path=detector, fix="check the detector: its boxes must be finite "
                                                       "image pixels, its scores finite")
        coco = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
        want = estimate({"image": image, "boxes": coco})
        got = run({"image": image})
        if got["person_boxes"].shape != corners.shape:
            raise GraphsurgeryError(f"{backend}: image {index}: the chained model found "
                                    f"{len(got['person_boxes'])} people, the two models {len(corners)}")
        parts = _parts(cut, estimate, image, index == 0, found)
        rows.append({"backend": backend, "image": index, "people": len(corners),
                     "boxes": largest_difference(got["person_boxes"], corners),
                     "scores": largest_difference(got["person_scores"], scores),
                     "keypoints": largest_difference(got["keypoints"], want["keypoints"]),
                     "keypoint_scores": largest_difference(got["keypoint_scores"], want["scores"]),
                     **parts})
        tick()


def _parts(cut, estimate, image: np.ndarray, first: bool, found: dict) -> dict:
    """`verify_chain`'s `detector` and `random_boxes` of one image: the cut's outputs against the two models' (the
    random boxes on the first image only), infinite without a cut."""
    if cut is None:
        return {"detector": math.inf, "random_boxes": math.inf}
    boxes = random_person_boxes(np.random.default_rng(66), image.shape[2:0:-1], RANDOM_BOXES if first else 0)
    got, want = cut({"image": image, f"{GLUE}/coco_boxes": boxes}), estimate({"image": image, "boxes": boxes})
    return {"detector": max(largest_difference(got[name], found[name]) for name in DETECTOR_OUTPUTS),
            "random_boxes": max(largest_difference(got["keypoints"], want["keypoints"]),
                                largest_difference(got["keypoint_scores"], want["scores"]))}


def _announce_long_check(seconds: float | None, backends: int, images: int) -> None:
    """One line on stderr when the whole check, extrapolated from its first images, takes over a minute (`longrun`,
    as verify says it): a crowd of 839 people on a few images checked for two minutes without a word (round 31)."""
    if seconds:
        say_long_run(seconds, f"{images:,} images × {backends} backends to check",
                     f"{seconds / backends / images:.1f} s an image, measured on the first", "fewer --check images")


def largest_difference(got: np.ndarray, want: np.ndarray) -> float:
    """max |got − want| (`compare.differences`: a NaN on one side only is an infinite difference); infinite for
    arrays of different shapes."""
    if np.shape(got) != np.shape(want):
        return math.inf
    return float(differences(got, want).max(initial=0))
