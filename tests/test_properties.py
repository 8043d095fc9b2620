"""Properties (hypothesis): whatever a recipe or a model file holds, the tool gives a valid model or a clean error.

- Recipes generated from the step registry's pydantic models (every step, every parameter type, plausible and
  absurd values), and mutations of the shipped recipes (a value replaced, a key dropped or added, bytes of the
  text changed): `apply` either writes a model that passes `onnx.checker` with the full check, or raises
  `GraphsurgeryError` — never another exception.
- Byte flips and truncations of a small model: `inspect` and `apply` either work (and the output passes the full
  check) or raise `GraphsurgeryError`.

100 examples per property in the default run (deterministic); 1,000 under the `slow` marker (`make test-slow`).
"""

from __future__ import annotations

import copy
import tempfile
import types
import typing
from pathlib import Path

import onnx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphsurgery.api import apply, inspect_model
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.recipe import parse_recipe
from graphsurgery.registry import steps_for

from conftest import RECIPES
from modelkit import pose_model

SHIPPED = sorted(RECIPES.glob("*.yaml"))
TENSOR_NAMES = ["input", "heatmaps", "keypoints", "scores", "probabilities", "output", "center", "conv.weight", ""]

RUNS = [pytest.param(100, id="100"), pytest.param(1000, id="1000", marks=pytest.mark.slow)]


def _settings(examples: int):
    """The default run is deterministic (the same 100 examples every time); the slow run explores."""
    return settings(max_examples=examples, deadline=None, database=None, derandomize=examples <= 100,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


@pytest.fixture(scope="module")
def plain_model(workdir) -> Path:
    return pose_model(workdir / "plain.onnx")


# --- values ---------------------------------------------------------------------------------------------------

ABSURD = st.sampled_from([None, 0, -1, 2**63, 10**30, 1e308, -1e308, float("nan"), float("inf"), "", "x" * 300,
                          [], {}, True, "NCHW", "\x00", [1, 2, 3], {"a": 1}])
INTS = st.one_of(st.integers(-5, 300), st.integers(), st.sampled_from([0, -1, 2**31, 2**63, 10**30]))
FLOATS = st.one_of(st.floats(-1000, 1000), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 1.0, 255.0, 0.5, 1e-31, 1e31, -0.0]))
SHORT_TEXT = st.one_of(st.sampled_from(TENSOR_NAMES), st.text(max_size=12))


def from_annotation(annotation) -> st.SearchStrategy:
    """A strategy for any value of a pydantic field's type (as recipe YAML would hold it), or an absurd one."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        plain = st.booleans()
    elif annotation is int:
        plain = INTS
    elif annotation is float:
        plain = FLOATS
    elif annotation is str:
        plain = SHORT_TEXT
    elif annotation is type(None):
        plain = st.none()
    elif origin is typing.Annotated:  # a constrained type (e.g. detect's strides): the values of its base type
        plain = from_annotation(args[0])
    elif origin is typing.Literal:
        plain = st.sampled_from(args)
    elif origin in (typing.Union, types.UnionType):
        plain = st.one_of(*map(from_annotation, args))
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        plain = st.one_of(st.lists(from_annotation(args[0]), max_size=5),
                          st.integers(1, 5).flatmap(lambda n: st.lists(st.floats(0.01, 2), min_size=n, max_size=n)))
    elif origin is tuple:
        plain = st.tuples(*map(from_annotation, args)).map(list)
    else:
        raise TypeError(f"no strategy for {annotation!r}: extend from_annotation")
    return st.one_of(plain, plain, plain, ABSURD)  # mostly the right type


def step_items(side: str) -> st.SearchStrategy:
    """`{step_name: {params}}` for every registered step of one side, with optional parameters."""
    variants = []
    for name, cls in sorted(steps_for(side).items()):
        params = {field: from_annotation(info.annotation) for field, info in cls.model_fields.items()}
        required = {field: params.pop(field) for field, info in cls.model_fields.items() if info.is_required()}
        variants.append(st.fixed_dictionaries(required, optional=params).map(lambda p, n=name: {n: p}))
    return st.one_of(*variants)


DIMS = st.one_of(st.integers(-2, 300), st.sampled_from([None, "N", 256, 192, 3, 1]))
CANONICAL_INPUT = [{"cast": {}}, {"layout": {"to": "NCHW"}}, {"reverse_channels": {}}, {"scale": {"divide": 255}},
                   {"normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}]


def _canonical_subset(mask: list[bool]) -> list[dict]:
    return [step for step, keep in zip(CANONICAL_INPUT, mask) if keep]


INPUT_STEPS = st.one_of(st.lists(step_items("input"), max_size=6),
                        st.lists(st.booleans(), min_size=5, max_size=5).map(_canonical_subset))
OUTPUT_STEPS = st.one_of(
    st.lists(step_items("output"), max_size=4),
    st.sampled_from(
        [
            [{"heatmap_argmax": {}}],
            [{"heatmap_argmax": {}}, {"to_image": {"mode": "crop"}}],
            [{"heatmap_argmax": {}}, {"quarter_offset": {}}, {"to_image": {"mode": "original"}}],
            [{"softmax": {"axis": 1}}, {"topk": {"k": 3}}],
        ]
    ),
)

INPUT_SECTION = st.fixed_dictionaries({}, optional={
    "tensor": st.fixed_dictionaries({}, optional={
        "dtype": st.sampled_from(["uint8", "float16", "float32", "int8"]),
        "layout": st.sampled_from(["NCHW", "NHWC"]), "color": st.sampled_from(["RGB", "BGR"]),
        "shape": st.one_of(st.none(), st.lists(DIMS, min_size=3, max_size=5))}),
    "model": st.fixed_dictionaries({}, optional={"layout": st.sampled_from(["NCHW", "NHWC"]),
                                                 "color": st.sampled_from(["RGB", "BGR"])}),
    "steps": INPUT_STEPS,
    "target": SHORT_TEXT,
    "name": SHORT_TEXT,
})
OUTPUT_SECTION = st.fixed_dictionaries({"steps": OUTPUT_STEPS}, optional={
    "target": SHORT_TEXT,
    "names": st.dictionaries(st.sampled_from(["keypoints", "scores", "indices", "probabilities", "x"]), SHORT_TEXT,
                             max_size=3),
    "keep_original": st.one_of(st.booleans(), ABSURD),
})
RECIPES_FROM_REGISTRY = st.fixed_dictionaries(
    {"version": st.one_of(st.just(1), st.just(1), ABSURD), "name": st.sampled_from(["generated", "x", "bad name!"])},
    optional={"input": INPUT_SECTION, "output": OUTPUT_SECTION, "description": SHORT_TEXT},
)


# --- the property -------------------------------------------------------------------------------------------


def valid_model_or_clean_error(text: str, model: Path, folder: Path, outcomes: list[str]) -> None:
    """`apply` writes a model passing the full checker, or refuses with a GraphsurgeryError."""
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        out = Path(scratch) / "out.onnx"
        try:
            apply(parse_recipe(text, source="generated.yaml"), model, out)
        except GraphsurgeryError as exc:
            assert "\n" not in str(exc)
            outcomes.append("refused")
            return
        onnx.checker.check_model(str(out), full_check=True)
        assert sorted(p.name for p in Path(scratch).iterdir()) == ["out.onnx"]
        outcomes.append("valid")


def _dump(data) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@pytest.mark.parametrize("examples", RUNS)
def test_recipes_generated_from_the_registry(examples, plain_model, workdir):
    outcomes: list[str] = []

    @_settings(examples)
    @given(RECIPES_FROM_REGISTRY)
    def prop(data):
        valid_model_or_clean_error(_dump(data), plain_model, workdir, outcomes)

    prop()
    assert outcomes.count("valid") >= examples // 20, outcomes.count("valid")  # the success branch is exercised


# --- mutations of the shipped recipes ---------------------------------------------------------------------


def _paths(data, prefix=()):
    """Every (path, value) in a nested dict/list."""
    yield prefix, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _paths(value, prefix + (index,))


def _mutate(data, path, how, value):
    if not path:
        return value if how == "replace" else data
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "delete":
        del parent[last]
    elif how == "add" and isinstance(parent, dict):
        parent[f"{last}_extra" if isinstance(last, str) else "extra"] = value
    elif how == "add":
        parent.insert(last, value)
    return data


@st.composite
def mutated_recipes(draw) -> str:
    text = draw(st.sampled_from(SHIPPED)).read_text()
    if draw(st.booleans()):  # structural: change a value, drop or add a key / item
        data = yaml.safe_load(text)
        paths = [p for p, _ in _paths(data)]
        for _ in range(draw(st.integers(1, 3))):
            paths = [p for p, _ in _paths(data)]
            path = draw(st.sampled_from(paths))
            how = draw(st.sampled_from(["replace", "delete", "add"]))
            value = draw(st.one_of(ABSURD, INTS, FLOATS, SHORT_TEXT, step_items("input"), step_items("output")))
            data = _mutate(data, path, how, copy.deepcopy(value))  # drawn lists/dicts are shared objects
        return _dump(data)
    raw = bytearray(text.encode())  # textual: flip, delete or insert bytes
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(raw) - 1))
        how = draw(st.sampled_from(["flip", "delete", "insert"]))
        byte = draw(st.sampled_from(b" :-[]{}&*!|>'\"#\n\t0123456789\x00\xff") | st.integers(0, 255))
        if how == "flip":
            raw[at] = byte
        elif how == "delete":
            del raw[at]
        else:
            raw.insert(at, byte)
    return bytes(raw).decode("utf-8", errors="surrogateescape")


@pytest.mark.parametrize("examples", RUNS)
def test_mutated_recipes(examples, plain_model, workdir):
    outcomes: list[str] = []

    @_settings(examples)
    @given(mutated_recipes())
    def prop(text):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # invalid bytes: hand them over as bytes, as a file would
            text = text.encode("utf-8", errors="surrogateescape")
        if isinstance(text, bytes):
            with pytest.raises(GraphsurgeryError):
                parse_recipe(text, source="generated.yaml")
            outcomes.append("refused")
            return
        valid_model_or_clean_error(text, plain_model, workdir, outcomes)

    prop()
    assert "valid" in outcomes and "refused" in outcomes


# --- hostile model files ------------------------------------------------------------------------------------


@st.composite
def damaged_models(draw, original: bytes) -> bytes:
    """Byte flips (biased towards the graph structure around the weights) or a truncation."""
    raw = bytearray(original)
    if draw(st.integers(0, 4)) == 0:
        return bytes(raw[: draw(st.integers(0, len(raw) - 1))])
    edges = st.one_of(st.integers(0, 400), st.integers(len(raw) - 400, len(raw) - 1), st.integers(0, len(raw) - 1))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(edges)
        raw[at] = draw(st.integers(0, 255))
    return bytes(raw)


@pytest.mark.parametrize("examples", RUNS)
def test_damaged_model_files(examples, plain_model, workdir):
    original = plain_model.read_bytes()
    recipe = parse_recipe((RECIPES / "hrnet_coco_pose.yaml").read_text(), source="hrnet_coco_pose.yaml")
    outcomes: list[str] = []

    @_settings(examples)
    @given(damaged_models(original))
    def prop(damaged):
        with tempfile.TemporaryDirectory(dir=workdir) as scratch:
            path = Path(scratch) / "damaged.onnx"
            path.write_bytes(damaged)
            try:
                inspect_model(path)
                apply(recipe, path, Path(scratch) / "out.onnx")
            except GraphsurgeryError as exc:
                assert "\n" not in str(exc) and str(path) in str(exc)
                outcomes.append("refused")
            else:
                onnx.checker.check_model(str(Path(scratch) / "out.onnx"), full_check=True)
                outcomes.append("valid")
            assert path.read_bytes() == damaged

    prop()
    assert "valid" in outcomes and "refused" in outcomes
