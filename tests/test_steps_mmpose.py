"""mmpose's decoding conventions (issue: pose decoders beyond HRNet): `heatmap_argmax: {invalid: minus_one}` is
mmpose 1.x's `get_heatmap_maximum`, `quarter_offset: {gating: mmpose}` its `refine_keypoints`.

The graph (ONNX Runtime and OpenVINO f32, opsets 11 and 17, and 9 for ONNX Runtime) and the numpy twins (written as
mmpose writes them) are compared with expectations computed here a third way: plain per-joint loops over the rules
as mmpose's code behaves, on the crafted heatmaps of test_steps_output (ties, borders, flat maps, NaN, ±inf).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from graphsurgery.steps.base import StepError
from graphsurgery.steps.output import HeatmapArgmax, QuarterOffset
from test_steps_output import CRAFTED, SOURCE, cases

from stepkit import chain

DECODE = (HeatmapArgmax(invalid="minus_one"),)
REFINE = (HeatmapArgmax(invalid="minus_one"), QuarterOffset(gating="mmpose"))
OPSETS = (9, 11, 17)
OV_OPSETS = (11, 17)


def maximum(hm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per map: the first NaN if any (numpy's argmax), else the first maximum; (−1, −1) where the maximum is
    <= 0 (NaN is not <= 0)."""
    n, k, h, w = hm.shape
    xy = np.zeros((n, k, 2), np.float32)
    score = np.zeros((n, k, 1), np.float32)
    for i in range(n):
        for j in range(k):
            values = hm[i, j].ravel().tolist()
            nans = [p for p, v in enumerate(values) if v != v]
            best = nans[0] if nans else max(range(len(values)), key=lambda p: (values[p], -p))
            peak = values[best]
            score[i, j, 0] = peak
            xy[i, j] = (-1, -1) if peak <= 0 else (best % w, best // w)
    return xy, score


@functools.cache
def case_maximum(name: str) -> tuple[np.ndarray, np.ndarray]:
    """`maximum` of a crafted case, once per case (its plain loops were 2 % of the suite's CPU, once per opset);
    read-only, as shared."""
    found = maximum(cases()[name])
    for array in found:
        array.flags.writeable = False
    return found


def quarter(hm: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Each axis on its own gate: x where 1 < x < W−1 and 0 < y < H, y where 1 < y < H−1 and 0 < x < W."""
    n, k, h, w = hm.shape
    out = xy.copy()
    for i in range(n):
        for j in range(k):
            x, y = int(xy[i, j, 0]), int(xy[i, j, 1])
            step = []
            for gate, later, earlier in ((1 < x < w - 1 and 0 < y < h, (y, x + 1), (y, x - 1)),
                                         (1 < y < h - 1 and 0 < x < w, (y + 1, x), (y - 1, x))):
                if not gate:
                    step.append(0.0)
                    continue
                with np.errstate(invalid="ignore"):
                    step.append(float(np.sign(hm[i, j][later] - hm[i, j][earlier])) * 0.25)
            out[i, j] += np.array(step, np.float32)
    return out


def test_the_crafted_maps_tell_the_conventions_apart():
    """minus_one and the mmpose gates change answers on these maps (else the tests below prove nothing)."""
    hm = cases()["border_maxima"]
    xy, _ = maximum(cases()["all_negative"])
    assert (xy == -1).all()
    xy, _ = maximum(hm)
    mm = quarter(hm, xy)
    moved_alone = ((mm - xy) != 0).sum(axis=-1) == 1  # one axis moved, the other gated
    assert moved_alone.sum() > 10
    assert ((xy[..., 1] == 0) & (mm[..., 0] == xy[..., 0])).any()  # y = 0: x is not refined (0 < y)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", CRAFTED)
def test_minus_one_equals_get_heatmap_maximum(opset, name):
    hm = cases()[name]
    run = chain(DECODE, SOURCE, opset, ("keypoints", "scores"))
    want_xy, want_score = case_maximum(name)
    for keypoints, scores in [run.ort({"output": hm}), run.twin({"output": hm})] + (
            [run.openvino({"output": hm})] if opset in OV_OPSETS else []):
        assert np.array_equal(keypoints, want_xy), name
        assert np.array_equal(scores, want_score, equal_nan=True), name


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", [n for n in CRAFTED if n != "onehot"])
def test_mmpose_gating_equals_refine_keypoints(opset, name):
    hm = cases()[name]
    run = chain(REFINE, SOURCE, opset, ("keypoints",))
    want = quarter(hm, case_maximum(name)[0])
    with np.errstate(invalid="ignore"):
        twin = run.twin({"output": hm})[0]
    for got in [run.ort({"output": hm})[0], twin] + ([run.openvino({"output": hm})[0]] if opset in OV_OPSETS
                                                     else []):
        assert np.array_equal(got, want, equal_nan=True), name


def test_classic_argmax_marks_invalid_joints_minus_one():
    hm = cases()["mixed_found"]
    keypoints, _ = chain((HeatmapArgmax(method="argmax", invalid="minus_one"),), SOURCE, 17,
                         ("keypoints", "scores")).ort({"output": hm})
    assert np.array_equal(keypoints, case_maximum("mixed_found")[0])


def test_mmpose_gating_refuses_tiny_maps():
    with pytest.raises(StepError, match="at least 3×3"):
        chain((HeatmapArgmax(), QuarterOffset(gating="mmpose")), (np.float32, (1, 17, 2, 8)), 17, ("keypoints",))
