"""What a model already does to its own image input, read from its first nodes, and the recipe's input steps that
would do it again.

Many models prepare their input inside the graph: a Keras `Rescaling(1/255)` or `Normalization` layer exported by
tf2onnx, a torch forward's `(x - mean) / std` or `x.float() / 255`, a BGR ↔ RGB flip, an NHWC → NCHW Transpose, a
Cast of a uint8 input. A recipe copied onto such a model (`scale: {divide: 255}`, ImageNet's `normalize`) does it a
second time: the patched model is silently wrong, and verify's numpy twin, applying the same steps, agrees with it
(round 101). The walk is conservative: from the input, one node at a time while the tensor has a single reader
(a Shape reads no values), only Cast, Transpose, Identity, elementwise Mul/Div/Add/Sub by a small per-channel
constant, and a channel reversal (Gather [2, 1, 0], Slice with step −1, Split + Concat reversed); it stops at the
first other node, so a Conv, MatMul or Gemm ends it, and nothing after one is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import onnx

from graphsurgery.errors import ModelError, node_named, quoted
from graphsurgery.folding import plain_constants, small_value
from graphsurgery.model import FLOAT_TYPES, call_key, function_key, node_reads, onnx_op
from graphsurgery.recipe import InputSection

#: The nodes walked at most: a model's own preparation is a handful of them
MOST_NODES = 16
#: Model-local functions entered at most, one inside another (torch's `export_modules_as_functions` nests them)
MOST_CALLS = 4
#: Nodes at most that compute a constant the walk reads (a ConstantOfShape, a Constant divided by a Constant)
MOST_FOLDS = 4
#: A constant of more values than this is no per-channel mean or std
MOST_VALUES = 4096
#: Dividing by a number in this range scales pixels (0–255) down: 255, 256, 127.5, 128
PIXEL_DIVISORS = (100.0, 300.0)
_INTEGERS = {onnx.TensorProto.UINT8, onnx.TensorProto.INT8}
#: what the model does (an `OwnStep`'s kind) → the recipe's input steps that would do it again
DOUBLED_BY = {"cast": ("cast",), "layout": ("layout",), "reverse": ("reverse_channels",),
              "scale": ("scale", "normalize"), "normalize": ("normalize",), "pixels": ("scale", "normalize")}
#: An offset this large, before any factor, is a mean in pixel units (Caffe's 123.675): the model takes 0–255
PIXEL_MEAN = 2.0
#: Nodes that change an input's shape and none of its values, walked through
RESHAPES = {"Reshape", "Unsqueeze", "Squeeze", "Flatten"}
#: Factors per channel within this range, and offsets below `NO_MEAN`, are no input normalization's (1 / std is
#: 3.3–5 on 0–1 values, 1/58 on pixels, 2 for [−1, 1]) but a learnt affine layer's: a Keras BatchNormalization
#: on the input, exported as Mul + Add (round 102: refused the recipe's `normalize` that the model was trained with)
NEAR_ONE = (0.5, 2.0)
NO_MEAN = 0.1


@dataclass(frozen=True)
class OwnStep:
    """One thing the model does to its input: `kind` (a key of DOUBLED_BY, or "factor": a uniform factor that
    scales no pixel range, shown but doubled by nothing), what it does in words, the node that does it, and whether
    it multiplies or divides (`multiplies`); a Transpose's `perm`."""

    kind: str
    does: str
    node: str
    multiplies: bool = False
    perm: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"{self.does} ({self.node})"


def own_input_steps(proto: onnx.ModelProto, name: str) -> list[OwnStep]:
    """What the model does to its input `name` before its network reads it, in order (`OwnStep`s); [] when its
    first reader is anything else (a Conv: a plain torch export)."""
    declared = _declared(proto, name)
    if declared is None:
        return []
    functions = {function_key(function): function for function in proto.functions}
    found = _walk(proto.graph.node, proto.graph.initializer, {o.name for o in proto.graph.output}, name, *declared,
                  functions, MOST_CALLS)
    for index, step in enumerate(found):  # a mean in pixel units after a factor is in the factor's units
        if step.kind == "pixels" and any(before.multiplies for before in found[:index]):
            found[index] = OwnStep("normalize", step.does, step.node)
    if any(step.kind in ("normalize", "pixels") for step in found):  # a uniform factor beside a mean is the std's
        found = [OwnStep("normalize", s.does, s.node, True) if s.kind == "factor" else s for s in found]
    return _net_layout(found)


def _net_layout(found: list[OwnStep]) -> list[OwnStep]:
    """`found` with its last Transpose the model's own NHWC → NCHW ("layout") where its Transposes add up to that,
    the others plain transposes. Round 107: tf2onnx's `inputs_as_nchw` Transpose to NHWC, then one back to NCHW
    before the Conv, read as the model taking NHWC, refused the `layout: {to: NCHW}` its NCHW input needs."""
    axes = (0, 1, 2, 3)
    for step in found:
        axes = tuple(axes[axis] for axis in step.perm) if step.perm else axes
    last = max((index for index, step in enumerate(found) if step.perm), default=None)
    if last is None or axes != (0, 3, 1, 2):
        return found
    return [replace(step, kind="layout") if index == last else step for index, step in enumerate(found)]


def shared_steps(proto: onnx.ModelProto, name: str) -> list[OwnStep]:
    """What some of the readers of input `name` do to it where it has more than one (a skip connection beside a
    `/ 255`): the walk stops there, and what one reader does is not what the whole network takes, so a recipe
    repeating it is likely, not certainly, wrong (noted, not refused)."""
    declared = _declared(proto, name)
    if declared is None:
        return []
    readers, constants, producers = _view(proto.graph.node, proto.graph.initializer)
    users = _users(readers, name)
    if len(users) < 2:
        return []
    found = []
    for node in users:
        step = _one_step(node, name, *declared, constants, producers, readers)[0] if onnx_op(node) else None
        found += step if isinstance(step, list) else [step] if step is not None else []
    return [step for step in found if step.kind in ("scale", "normalize", "pixels")]


def _declared(proto: onnx.ModelProto, name: str) -> tuple[int, list] | None:
    """Input `name`'s element type and dims (None for a dim not a number), or None where it is no graph input."""
    declared = next((value.type.tensor_type for value in proto.graph.input if value.name == name), None)
    if declared is None:
        return None
    return declared.elem_type, [d.dim_value or None for d in declared.shape.dim] if declared.HasField("shape") else []


def _view(nodes, initializers) -> tuple[dict, dict, dict]:
    """A graph's or function body's readers of each name, plain constants and producers of each name."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for read in node_reads(node):
            readers.setdefault(read, []).append(node)
    return readers, plain_constants(initializers, nodes), {out: node for node in nodes for out in node.output}


def _users(readers: dict, name: str) -> list[onnx.NodeProto]:
    """The nodes reading `name`'s values (a Shape reads none)."""
    return [node for node in readers.get(name, []) if not (node.op_type == "Shape" and onnx_op(node))]


def _walk(nodes, initializers, outputs: set, name: str, element: int, dims: list, functions: dict, calls: int
          ) -> list[OwnStep]:
    """`own_input_steps`' walk from `name` through `nodes` (a graph's, a branch's or a function body's), into a
    model-local function called on it (round 104: torch's `export_modules_as_functions` put a `/ 255` inside one)
    and into an If reading it where both branches do the same (what one branch alone does is not what the model
    always does)."""
    readers, constants, producers = _view(nodes, initializers)
    found: list[OwnStep] = []
    for _ in range(MOST_NODES):
        users = _users(readers, name)
        if len(users) != 1 or name in outputs:
            break
        node = users[0]
        called = None if onnx_op(node) or calls == 0 else functions.get(call_key(node))
        if called is not None and name in node.input and list(node.input).index(name) < len(called.input):
            formal = called.input[list(node.input).index(name)]
            return found + _walk(_bound(called, node), [], set(called.output), formal, element, dims, functions,
                                 calls - 1)
        if node.op_type == "If" and onnx_op(node) and calls > 0:  # both branches, where they do the same
            walks = [_walk(branch.g.node, branch.g.initializer, {o.name for o in branch.g.output}, name, element,
                           dims, functions, calls - 1) for branch in node.attribute if branch.HasField("g")]
            kinds = {tuple(step.kind for step in walk) for walk in walks}
            return found + walks[0] if len(walks) == 2 and len(kinds) == 1 else found
        if not onnx_op(node):
            break
        step, name, element, dims = _one_step(node, name, element, dims, constants, producers, readers)
        if name is None:
            break
        found += step if isinstance(step, list) else [step] if step is not None else []
    return found


def _bound(function: onnx.FunctionProto, call: onnx.NodeProto) -> list[onnx.NodeProto]:
    """`function`'s body as `call` runs it: each attribute a call sets (`ref_attr_name`: an epsilon, an axis) given
    the call's value, else the function's default, else left out (ONNX's rule: the op's own default holds). Round
    106: a Gather's axis or a BatchNormalization's epsilon so set stopped the walk (`_attributes`), and a
    `(x − 123) / √var` in a function was normalized again; a value of another type than the reference's (an axis
    of 1.0) stays a reference, where the walk still stops."""
    given = {a.name: a for a in function.attribute_proto} | {a.name: a for a in call.attribute if not a.ref_attr_name}
    body = []
    for node in function.node:
        if any(attr.ref_attr_name for attr in node.attribute):
            node = onnx.NodeProto.FromString(node.SerializeToString())
            attributes = []
            for attr in node.attribute:
                value = given.get(attr.ref_attr_name) if attr.ref_attr_name else None
                if value is not None and value.type == attr.type:
                    bound = onnx.AttributeProto()
                    bound.CopyFrom(value)
                    bound.name = attr.name
                    attributes.append(bound)
                elif not attr.ref_attr_name or value is not None:
                    attributes.append(attr)
            del node.attribute[:]
            node.attribute.extend(attributes)
        body.append(node)
    return body


def _one_step(node: onnx.NodeProto, name: str, element: int, dims: list, constants: dict, producers: dict,
              readers: dict):
    """The `OwnStep` `node` is (None for one that changes nothing: an Identity, a Cast between floats, a Mul by 1;
    a list for a BatchNormalization), the tensor it makes, its element type and dims; a name of None where `node`
    is none of those the walk knows."""
    op, named = node.op_type, node_named(node)
    stop = None, None, element, dims
    if op == "Identity" and len(node.output) == 1:
        return None, node.output[0], element, dims
    if op in RESHAPES or (op == "Clip" and element in FLOAT_TYPES):  # round 102: `x.unsqueeze(0)`, a Reshape or a
        # clamp to the pixel range before `/ 255` hid it; past a reshape the channel axis is unknown (no reversal)
        return None, node.output[0], element, dims if op == "Clip" else []
    if op == "Cast":
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if to not in FLOAT_TYPES or (element not in FLOAT_TYPES and element not in _INTEGERS):
            return stop
        kind = None if element in FLOAT_TYPES else OwnStep("cast", f"casts {_type_name(element)} to float",
                                                       named)
        return kind, node.output[0], to, dims
    if op == "Transpose":
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        if perm is None or sorted(perm) != list(range(4)) or len(dims) not in (0, 4):
            return stop
        words = {(0, 3, 1, 2): "transposes NHWC → NCHW", (0, 2, 3, 1): "transposes NCHW → NHWC"}
        step = OwnStep("transpose", words.get(tuple(perm), f"transposes ({perm})"), named, perm=tuple(perm))
        return step, node.output[0], element, [dims[i] for i in perm] if dims else dims
    if op in ("Mul", "Div", "Add", "Sub") and len(node.input) == 2 and element in FLOAT_TYPES:
        if node.input[0] == node.input[1] or (node.input[1] == name and op in ("Div", "Sub")):
            return stop  # the image squared, or a constant divided by it: no preparation
        other = node.input[1] if node.input[0] == name else node.input[0]
        value = _per_channel(constants, producers, other)
        if value is None or (op in ("Mul", "Div") and not value.all()):  # × 0 keeps nothing of the image
            return stop
        if value.size > 1 and value.size not in _channel_counts(dims):  # round 103: past a Flatten, a learnt
            return stop  # weight of one value a pixel ([192]) was taken for a per-channel normalization
        return _arithmetic(op, value, named), node.output[0], element, dims
    if op == "BatchNormalization" and element in FLOAT_TYPES and len(node.output) == 1 and node.input[0] == name:
        steps = _batch_normalization(node, constants, producers, named)
        return (steps, node.output[0], element, dims) if steps is not None else stop
    if op in ("Gather", "Slice", "Split") and _reverses(node, dims, constants, readers):
        made = node.output[0] if op != "Split" else readers[node.output[0]][0].output[0]
        return OwnStep("reverse", "reverses the channels (BGR ↔ RGB)", named), made, element, dims
    return stop


def _batch_normalization(node: onnx.NodeProto, constants: dict, producers: dict, named: str) -> list | None:
    """The `OwnStep`s of an inference BatchNormalization on the input, (x − mean) · scale / √(var + ε) + bias, as the
    Sub, Mul and Add it is (round 104: Caffe's and Keras' "data_bn", a mean in pixel units, was not seen); None
    where its constants are not all per channel."""
    attrs = _attributes(node)
    parts = [_per_channel(constants, producers, n) for n in node.input[1:5]]
    if attrs is None or attrs.get("training_mode", 0) or len(parts) != 4 or any(part is None for part in parts):
        return None
    scale, bias, mean, variance = parts
    with np.errstate(all="ignore"):
        factor = scale / np.sqrt(variance + attrs.get("epsilon", 1e-5))
    if not np.isfinite(factor).all() or not factor.all():
        return None
    steps = [_arithmetic("Sub", mean, named), _arithmetic("Mul", factor, named), _arithmetic("Add", bias, named)]
    return [step for step in steps if step is not None]


def _attributes(node: onnx.NodeProto) -> dict | None:
    """`node`'s attributes by name; None where one refers to its function's (`ref_attr_name`: each call sets it, so
    its value is not known here; onnx raised "Cannot get value of reference attribute", an internal error of
    `inspect` and `apply` on a Mod taking `fmod` from its call)."""
    if any(a.ref_attr_name for a in node.attribute):
        return None
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _channel_counts(dims: list) -> set[int]:
    """The sizes the channel axis can have in a tensor of `dims` (NCHW's or NHWC's): none once a reshape hid it."""
    return {dim for dim in (dims[1], dims[3]) if dim} if len(dims) == 4 else set()


def _per_channel(constants: dict, producers: dict, name: str) -> np.ndarray | None:
    """The values of constant `name` where they are one number or one per channel (at most one dim over 1), as a
    flat float array; None for anything else (input-dependent, external, an image-sized bias, integers)."""
    value = _folded(constants, producers, name, MOST_FOLDS)
    if value is None or value.size == 0 or value.size > MOST_VALUES or value.ndim > 4 or value.dtype.kind != "f":
        return None
    if sum(1 for d in value.shape if d > 1) > 1 or not np.isfinite(value).all():
        return None
    return value.astype(np.float64).reshape(-1)


def _folded(constants: dict, producers: dict, name: str, depth: int) -> np.ndarray | None:
    """The value of `name`: a plain constant, or one computed from them by a ConstantOfShape, an elementwise
    Mul/Div/Add/Sub, a Cast or an Identity, at most `depth` nodes deep and MOST_VALUES values (round 104: a divisor
    of 255 made by a ConstantOfShape, or a Constant divided by a Constant, was not seen); None for anything else."""
    value = small_value(constants, name)
    node = producers.get(name)
    if value is not None or depth == 0 or node is None or not onnx_op(node) or not node.input:
        return value
    parts = [_folded(constants, producers, n, depth - 1) if n else None for n in node.input]
    if any(part is None or part.size > MOST_VALUES for part in parts):
        return None
    attrs = _attributes(node)
    if attrs is None:
        return None
    if node.op_type == "ConstantOfShape":
        fill = onnx.numpy_helper.to_array(attrs["value"]) if "value" in attrs else np.zeros(1, np.float32)
        shape = parts[0].astype(np.int64).reshape(-1)
        # in Python's integers: numpy's product of [2^32, 2^32] wraps to 0, and a full array of it was allocated
        if len(shape) > 4 or (shape < 0).any() or math.prod(map(int, shape)) > MOST_VALUES or fill.size != 1:
            return None
        return np.full(tuple(shape), fill.reshape(-1)[0], fill.dtype)
    if node.op_type == "Identity":
        return parts[0]
    if node.op_type == "Cast" and attrs.get("to") in FLOAT_TYPES:
        try:
            return parts[0].astype(onnx.helper.tensor_dtype_to_np_dtype(attrs["to"]))
        except ValueError:  # round 106: a string Constant that is no number ("abc") was an internal error
            return None
    operations = {"Mul": np.multiply, "Div": np.divide, "Add": np.add, "Sub": np.subtract}
    if node.op_type in operations and len(parts) == 2 and all(part.dtype.kind == "f" for part in parts):
        try:
            if math.prod(np.broadcast_shapes(*(part.shape for part in parts))) > MOST_VALUES:
                return None
        except ValueError:  # shapes that do not broadcast: the model is broken, not read
            return None
        with np.errstate(all="ignore"):
            return operations[node.op_type](*parts)
    return None


def _arithmetic(op: str, value: np.ndarray, named: str) -> OwnStep | None:
    """The `OwnStep` of an elementwise op by a constant: a uniform factor of 1/100 to 1/300 scales pixels; a
    non-zero offset, or a factor differing per channel, normalizes; another uniform factor is a "factor"."""
    if op in ("Add", "Sub"):
        if not value.any():
            return None
        verb = "subtracts" if op == "Sub" else "adds"
        kind = "pixels" if np.abs(value).max() >= PIXEL_MEAN else "normalize" if np.abs(value).max() >= NO_MEAN \
            else "factor"
        return OwnStep(kind, f"{verb} {_values(value)}", named)
    factor = value if op == "Mul" else 1 / value
    if np.all(factor == 1):
        return None
    verb = "multiplies by" if op == "Mul" else "divides by"
    if np.all(factor == factor[0]):
        low, high = PIXEL_DIVISORS
        kind = "scale" if low <= 1 / abs(factor[0]) <= high else "factor"
        shown = f"{1 / factor[0]:g}" if kind == "scale" else _values(value)
        return OwnStep(kind, f"divides by {shown}" if kind == "scale" else f"{verb} {shown}", named, True)
    low, high = NEAR_ONE
    near_one = bool(np.all((low <= np.abs(factor)) & (np.abs(factor) <= high)))
    return OwnStep("factor" if near_one else "normalize", f"{verb} {_values(value)}", named, True)


def _values(value: np.ndarray) -> str:
    shown = [f"{v:.4g}" for v in value[:4]]
    return shown[0] if len(shown) == 1 else f"[{', '.join(shown)}{', …' if len(value) > 4 else ''}]"


def _type_name(element: int) -> str:
    return onnx.TensorProto.DataType.Name(element).lower()


def _reverses(node: onnx.NodeProto, dims: list, constants: dict, readers: dict) -> bool:
    """Whether `node` reverses a 3-long axis and nothing else: a Gather of [2, 1, 0], a Slice of step −1 over the
    whole axis, or a Split into three that one Concat joins in reverse order on the same axis."""
    attrs = _attributes(node)
    if attrs is None:
        return False
    axis = attrs.get("axis", 0)
    if node.op_type == "Slice":
        parts = [small_value(constants, n) if n else None for n in node.input[1:5]]
        if len(parts) != 4 or any(p is None or p.size != 1 for p in parts):
            return False
        start, end, axis, step = (int(p.reshape(-1)[0]) for p in parts)
        if step != -1 or (start < 2 and start != -1) or end > -4:
            return False
    size = dims[axis] if len(dims) == 4 and -4 <= axis < 4 and axis % 4 in (1, 3) else None
    if size != 3:  # an axis of unknown size, or the batch, is not taken for the channels
        return False
    if node.op_type == "Gather":
        indices = small_value(constants, node.input[1]) if len(node.input) == 2 else None
        return indices is not None and indices.ndim == 1 and indices.tolist() == [2, 1, 0]
    if node.op_type == "Split":
        split = attrs.get("split") or (small_value(constants, node.input[1]) if len(node.input) > 1 and
                                       node.input[1] else None)
        joins = [readers.get(output, []) for output in node.output]
        if len(node.output) != 3 or (split is not None and list(np.asarray(split).reshape(-1)) != [1, 1, 1]):
            return False
        if any(len(join) != 1 or join[0] is not joins[0][0] for join in joins):
            return False
        concat = joins[0][0]
        concat_axis = next((a.i for a in concat.attribute if a.name == "axis"), None)
        return (concat.op_type == "Concat" and list(concat.input) == list(node.output)[::-1]
                and concat_axis is not None and concat_axis % 4 == axis % 4)
    return True


def doubled(section: InputSection, own: list[OwnStep]) -> list[tuple[int, str]]:
    """The recipe's input steps (index, name) that would do again what the model does itself (`own`). A layout
    step is doubled where the model transposes NHWC → NCHW and the recipe takes it to NCHW; a `scale` only where
    it scales down (÷ 255, not × 255 before a model that divides)."""
    names = {name for step in own for name in DOUBLED_BY.get(step.kind, ())}
    found = []
    for index, step in enumerate(section.steps):
        if step.step_name not in names:
            continue
        if step.step_name == "layout" and step.to != "NCHW":
            continue
        if step.step_name == "scale" and abs(step.divide or 1 / step.multiply) <= 1:
            continue
        found.append((index, step.step_name))
    return found


def _said(own: list[OwnStep], steps: list[tuple[int, str]], target: str) -> tuple[str, str]:
    """The line's words: what the model does (only what the recipe doubles) and the recipe's steps that double it."""
    names = {name for _, name in steps}
    shown = [step for step in own if names & set(DOUBLED_BY.get(step.kind, ()))]
    unique = list(dict.fromkeys(name for _, name in steps))
    doing = ", ".join(map(str, shown))
    named = [f"`{name}`" for name in unique]
    listing = f"{', '.join(named[:-1])} and {named[-1]} steps" if len(named) > 1 else f"{named[0]} step"
    return (f"the model already prepares its input {quoted(target)} itself: it {doing}; the recipe's {listing} "
            "would do it again", listing)


def refuse_doubled(section: InputSection, proto: onnx.ModelProto, target: str, model_name: str, force: bool
                   ) -> list[str]:
    """Refuse a recipe whose input steps would do again what the model does to its input itself (`doubled`): the
    patched model would be wrong, and verify PASS it. With `force` (apply --force) it is kept, and the note said
    is returned for the plan."""
    own = own_input_steps(proto, target)
    steps = doubled(section, own)
    if not steps:
        return shared_notes(section, proto, target)
    said, listing = _said(own, steps, target)
    if force:
        return [f"{said}: applied, as --force asked; verify's twin applies them too, so it cannot tell"]
    raise ModelError(said, path=model_name,
                     fix=f"drop the {listing} from input.steps{_model_facet(section, steps)} (to apply them anyway: "
                         "`graphsurgery apply --force`, then give verify or eval-coco the result with --patched; "
                         "force=True in Python)")


def _model_facet(section: InputSection, steps: list[tuple[int, str]]) -> str:
    """What the input section's `model` must say once the doubled steps are dropped: a model that transposes or
    reverses its channels itself takes the tensor as the caller feeds it (round 105: dropping `reverse_channels`
    alone met "the model wants BGR — fix: add a `reverse_channels` step")."""
    names = {name for _, name in steps}
    facet = ["layout: NHWC"] * ("layout" in names) + [f"color: {section.tensor.color}"] * ("reverse_channels" in names)
    return f" and set `model: {{{', '.join(facet)}}}` in the input section" if facet else ""


def doubled_notes(section: InputSection | None, proto: onnx.ModelProto, target: str | None) -> list[str]:
    """verify's note where the recipe doubles what the plain model does itself (a patched model applied with
    --force): its twin applies the same steps, so its PASS says nothing of it."""
    if section is None or target is None:
        return []
    own = own_input_steps(proto, target)
    steps = doubled(section, own)
    if not steps:
        return shared_notes(section, proto, target)
    said, _ = _said(own, steps, target)
    return [f"{said}: verify's twin applies them too, so a PASS cannot tell the model gets its input prepared twice"]


def shared_notes(section: InputSection, proto: onnx.ModelProto, target: str) -> list[str]:
    """apply's and verify's note where one of several readers of the input does what a recipe step does again
    (`shared_steps`): likely prepared twice, which verify's twin cannot tell (round 104)."""
    own = shared_steps(proto, target)
    steps = doubled(section, own)
    if not steps:
        return []
    listing = _said(own, steps, target)[1]
    doing = ", ".join(str(step) for step in own)
    return [f"the model's input {quoted(target)} is read by more than one node, and one of them {doing}: the "
            f"recipe's {listing} would likely do it again for that node, and verify's twin applies them too, so it "
            "cannot tell: drop them if the model takes its input unprepared"]
