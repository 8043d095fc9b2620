"""Property (hypothesis, slow: `make test-slow`): a right patch passes verify, whatever plausible recipe made it.

Recipes are drawn as a user would write them: an input chain that turns each caller dtype, layout and colour into
what the model wants (cast, layout, reverse_channels and one of the usual normalisations in any order, resize /
center_crop / crop_boxes before them, flip_test last), and every output chain (flip_average, the two
decode methods, each refinement, each to_image mode; softmax and top-k). Each recipe either is refused cleanly
(apply or verify: a GraphsurgeryError) or, applied by graphsurgery itself, passes verify on both backends: a failure
is a false alarm of the comparison or a twin and graph that disagree. This probe found DARK through flat peaks,
top-k ties after a softmax over another axis, flip_average's odd batch and the measured float floor
(tests/test_verify_unstable.py); filtered resizes also round their passes (`round: true`, verified in two stages:
tests/test_verify_staged.py). Excluded on purpose: a network fed 0–255 (no normalisation), which amplifies the
input side's float rounding 255-fold.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphsurgery.api import apply
from graphsurgery.errors import GraphsurgeryError
from graphsurgery.recipe import parse_recipe
from graphsurgery.verification import verify

from modelkit import pose_model

pytestmark = pytest.mark.slow

#: the value range the network was trained on, reached as pipelines reach it (a network fed 0–255 amplifies every
#: rounding of the input side 255-fold: not a recipe anyone deploys)
NORMALISATIONS = [
    [{"scale": {"divide": 255}}],
    [{"scale": {"divide": 255}}, {"normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}],
    [{"normalize": {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}}],
    [{"scale": {"multiply": 1 / 127.5}}, {"normalize": {"mean": [1.0, 1.0, 1.0], "std": [1.0, 1.0, 1.0]}}],
]
GEOMETRY = st.lists(st.one_of(
    st.builds(lambda interpolation, fit, antialias, rounded: {"resize": {
        "interpolation": interpolation, "fit": fit, "antialias": antialias,
        **({"clamp": [0, 255], "round": True} if rounded and (antialias or interpolation in ("area", "lanczos"))
           else {})}},
              st.sampled_from(["nearest", "linear", "cubic", "area", "lanczos"]),
              st.sampled_from(["stretch", "crop", "letterbox", "height"]), st.booleans(), st.booleans()),
    st.just({"center_crop": {}}), st.just({"crop_boxes": {}})), max_size=2)
DECODE = st.builds(lambda method, invalid: {"heatmap_argmax": {"method": method, "invalid": invalid}},
                   st.sampled_from(["exact", "argmax"]), st.sampled_from(["zero", "minus_one"]))
REFINE = st.sampled_from([[], [{"quarter_offset": {"gating": "hrnet"}}], [{"quarter_offset": {"gating": "mmpose"}}],
                          [{"dark_refine": {"blur_kernel_size": 3}}], [{"dark_refine": {}}], [{"udp_refine": {}}]])
PLACE = st.sampled_from([[], [{"to_image": {"mode": "crop"}}], [{"to_image": {"mode": "original"}}],
                         [{"to_image": {"mode": "boxes"}}], [{"to_image": {"mode": "image"}}],
                         [{"to_image": {"mode": "crop", "udp": True}}]])
CLASSIFY = st.sampled_from([[{"softmax": {"axis": 1}}], [{"softmax": {"axis": -1}}],
                            [{"softmax": {"axis": 1}}, {"topk": {"k": 1}}], [{"topk": {"k": 3, "source": "output"}}]])


@st.composite
def plausible_recipes(draw) -> dict:
    dtype = draw(st.sampled_from(["uint8", "float32", "float16"]))
    layout, color = draw(st.sampled_from(["NHWC", "NCHW"])), draw(st.sampled_from(["BGR", "RGB"]))
    core = [step for step, needed in (({"layout": {"to": "NCHW"}}, layout == "NHWC"),
                                      ({"reverse_channels": {}}, color == "BGR")) if needed]
    flip = draw(st.booleans())
    order = draw(st.permutations(core + [None]))  # None: where the normalisation (in its own order) goes
    normalise = draw(st.sampled_from(NORMALISATIONS))
    steps = ([{"cast": {}}] if dtype != "float32" else []) + draw(GEOMETRY)
    steps += [item for step in order for item in (normalise if step is None else [step])]
    decode = [draw(DECODE)] + draw(REFINE) + draw(PLACE)
    output = ([{"flip_average": {}}] + decode if flip else draw(st.one_of(st.just(decode), CLASSIFY)))
    return {"version": 1, "name": "generated",
            "input": {"tensor": {"dtype": dtype, "layout": layout, "color": color},
                      "model": {"layout": "NCHW", "color": "RGB"},
                      "steps": steps + ([{"flip_test": {}}] if flip else [])},
            "output": {"steps": output, "keep_original": draw(st.booleans())}}


@pytest.mark.parametrize("opset", [11, 17])
def test_a_right_patch_of_any_plausible_recipe_passes_verify(opset, tmp_path):
    plain = pose_model(tmp_path / "plain.onnx", opset=opset, dynamic_batch=True)
    outcomes: list[str] = []

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(plausible_recipes())
    def prop(data):
        with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
            try:
                recipe = parse_recipe(yaml.safe_dump(data, sort_keys=False), source="generated.yaml")
                patched = apply(recipe, plain, Path(scratch) / "patched.onnx").output
                report = verify(recipe, plain, patched=patched, random=3, backends=("onnxruntime", "openvino"))
            except GraphsurgeryError as exc:
                assert "\n" not in str(exc)
                outcomes.append("refused")
                return
            assert report, report.failures()
            outcomes.append("passed")

    prop()
    assert outcomes.count("passed") >= 30, outcomes.count("passed")  # the verdict itself was exercised
