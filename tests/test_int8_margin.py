"""Why int8 moves the joints: how far the f32 heatmap peaks stand above the rest of their maps, against how much
int8 moves the maps' values (`quantize.peak_margins`, `quantize.price`, `irconvert.too_flat`).

The margin of a map is its maximum minus the maximum over the cells more than one cell (Euclidean) from its argmax:
checked here against a plain loop over hand-made and random maps. When int8's mean heatmap error exceeds the
median margin, `convert` says the maps are too flat for int8 (in the accuracy control's line when it is not met,
else in a note).
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from graphsurgery.irconvert import Int8Facts, convert_ir, too_flat
from graphsurgery.quantize import AccuracyControl, Calibration, margin_statistics, peak_margins, price

FLAT = ("the f32 peaks stand a median 0.059 above the rest of their maps, int8 moves the values of heatmaps by 0.124 "
        "on average: these maps are too flat for int8 (untrained weights?) unless most layers stay float")


def margins_by_loop(maps: np.ndarray) -> list[float]:
    """The margin of every finite [H, W] map with a cell farther than one cell from its peak, one map at a time."""
    found = []
    for heatmap in maps.reshape(-1, *maps.shape[-2:]):
        if not np.isfinite(heatmap).all():
            continue
        row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
        rows, cols = np.indices(heatmap.shape)
        outside = np.sqrt((rows - row) ** 2 + (cols - col) ** 2) > 1
        if outside.any():
            found.append(float(heatmap.max() - heatmap[outside].max()))
    return found


def one_map(cells: dict[tuple[int, int], float], shape=(8, 6)) -> np.ndarray:
    heatmap = np.zeros(shape)
    for cell, value in cells.items():
        heatmap[cell] = value
    return heatmap[None, None]


@pytest.mark.parametrize("cells, margin", [
    ({(3, 2): 1.0}, 1.0),  # a sharp peak stands its full height above the rest
    ({(1, 1): 1.0, (6, 4): 1.0}, 0.0),  # two equal peaks far apart: none stands out
    ({(3, 2): 1.0, (3, 3): 0.9, (6, 5): 0.2}, 0.8),  # the neighbour cell (1 away) is the peak's own
    ({(3, 2): 1.0, (4, 2): 0.9, (2, 2): 0.95}, 1.0),  # above and below too
    ({(3, 2): 1.0, (4, 3): 0.9}, 0.1),  # a diagonal cell is √2 away: outside
])
def test_the_margin_of_hand_made_maps(cells, margin):
    heatmap = one_map(cells)
    assert peak_margins(heatmap) == pytest.approx([margin])
    assert margins_by_loop(heatmap) == pytest.approx([margin])


def test_the_margin_matches_a_loop_on_random_maps_across_chunks():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 5, 7, 4)).astype(np.float32)
    maps[0, 1, 2, 2] = np.nan  # skipped, as is an infinite map
    maps[2, 3, 0, 0] = np.inf
    found = peak_margins(maps, chunk=4)
    assert len(found) == 13 and np.all(found >= 0)
    np.testing.assert_allclose(found, margins_by_loop(maps), rtol=1e-12)
    statistics = margin_statistics(found)
    assert statistics == pytest.approx({"peak_margin_median": np.median(margins_by_loop(maps)),
                                        "peak_margin_p5": np.percentile(margins_by_loop(maps), 5)})


@pytest.mark.parametrize("maps", [np.ones((2, 17, 1, 1)), np.zeros((2, 0, 64, 48)), np.zeros((0, 17, 64, 48)),
                                  np.full((1, 2, 4, 3), np.nan), np.array([[[[0.0, 1.0, 0.0]]]])])
def test_maps_without_a_margin_give_no_statistics(maps):
    """1×1 maps (or a 1×3 one peaked in the middle) have no cell outside the peak's; no maps, or only NaN ones,
    have no margin at all: the keys are left out, not NaN."""
    assert peak_margins(maps).size == 0 and margin_statistics(peak_margins(maps)) == {}


class Port:
    def __init__(self, name: str):
        self.name = name

    def get_any_name(self) -> str:
        return self.name


class Answers:
    """A compiled model's stand-in: its answers to calibration sample i, output by output."""

    def __init__(self, outputs: dict[str, list[np.ndarray]]):
        self.outputs = [Port(name) for name in outputs]
        self.answers = outputs

    def __call__(self, feed):
        return {port: self.answers[port.name][feed["i"]] for port in self.outputs}


def test_price_reports_the_f32_peak_margin_of_heatmaps_beside_keypoints():
    rng = np.random.default_rng(1)
    heatmaps = [rng.normal(size=(1, 3, 8, 6)) for _ in range(2)]
    keypoints = [rng.uniform(0, 20, size=(1, 3, 2)) for _ in range(2)]
    f32 = Answers({"keypoints": keypoints, "heatmaps": heatmaps, "tiny": [np.ones((1, 3, 1, 1))] * 2})
    int8 = Answers({"keypoints": [k + 1 for k in keypoints], "heatmaps": [h + 0.5 for h in heatmaps],
                    "tiny": [np.ones((1, 3, 1, 1))] * 2})
    report = price([f32, int8], Calibration([{"i": 0}, {"i": 1}], "2 samples"))
    margins = margins_by_loop(np.concatenate(heatmaps))  # of the f32 maps
    assert report["heatmaps"] == pytest.approx({"mean_abs_diff": 0.5, "peak_margin_median": np.median(margins),
                                                "peak_margin_p5": np.percentile(margins, 5)})
    assert report["tiny"] == {"mean_abs_diff": 0.0}  # 1×1 maps: no margin
    assert report["keypoints"]["within_one_cell"] == 1.0  # √2 crop pixels apart: within 4
    alone = price([Answers({"heatmaps": heatmaps}), Answers({"heatmaps": heatmaps})],
                  Calibration([{"i": 0}, {"i": 1}], "2 samples"))
    assert alone == {"heatmaps": {"mean_abs_diff": 0.0}}  # no keypoints: not a pose model's heatmaps


def facts(margin: float | None, *, control=None, met=None, ap=None) -> Int8Facts:
    heatmaps = {"mean_abs_diff": 0.124, **({} if margin is None else {"peak_margin_median": margin,
                                                                       "peak_margin_p5": 0.005})}
    return Int8Facts({"keypoints": {"within_one_cell": 0.455}, "heatmaps": heatmaps}, 3.1, 318, "30 random crops",
                     control, met, ("conv1", "conv2", "conv3"), ap)


def test_accuracy_control_not_met_says_the_maps_are_too_flat():
    summary = facts(0.059, control=AccuracyControl(0.05), met=False).control_summary()
    assert summary == ("accuracy control: NOT met, 45.5% (at least 95.0% of the joints within one cell of f32 asked): "
                       "NNCF tried every layer; 3 layers went back to float (conv1, conv2, conv3); the IR is written "
                       f"as it stands; {FLAT}")
    assert "\n" not in summary


@pytest.mark.parametrize("case", [
    dict(margin=0.2, control=AccuracyControl(0.05), met=False),  # the peaks stand out more than int8 moves the maps
    dict(margin=None, control=AccuracyControl(0.05), met=False),  # not measured (1×1 maps, no heatmaps output)
    dict(margin=0.059, control=AccuracyControl(0.6), met=True),  # met: nothing to explain
    dict(margin=0.059, control=AccuracyControl(0.05, metric=SimpleNamespace(description="2 images")), met=False,
         ap=(0.7, 0.5)),  # COCO AP was the metric, not the joints' cells
])
def test_no_flat_maps_sentence_otherwise(case):
    assert "too flat" not in facts(case.pop("margin"), **case).control_summary()


def test_too_flat_and_the_json_carry_the_numbers():
    assert too_flat(facts(0.059).vs_f32) == FLAT
    assert too_flat(facts(0.124).vs_f32) is None and too_flat(facts(None).vs_f32) is None
    assert too_flat({"heatmaps": {"mean_abs_diff": math.nan, "peak_margin_median": 0.1}}) is None
    dumped = json.loads(json.dumps(facts(0.059).to_dict()))
    assert dumped["int8_vs_f32"]["heatmaps"] == {"mean_abs_diff": 0.124, "peak_margin_median": 0.059,
                                                 "peak_margin_p5": 0.005}


def test_int8_without_control_notes_flat_maps_where_it_reports_agreement(patched, tmp_path):
    """The tiny random pose model: its heatmaps get a margin, and the note says they are too flat exactly when the
    median margin is below int8's mean heatmap error."""
    result = convert_ir(patched, tmp_path / "int8.xml", int8=True, calibration_random=4)
    heatmaps = result.int8.vs_f32["heatmaps"]
    assert 0 <= heatmaps["peak_margin_p5"] <= heatmaps["peak_margin_median"] < math.inf
    flat = [note for note in result.notes if "too flat for int8" in note]
    assert flat == ([f"int8 vs f32: {too_flat(result.int8.vs_f32)}"]
                    if heatmaps["peak_margin_median"] < heatmaps["mean_abs_diff"] else [])
    assert result.to_dict()["int8_vs_f32"]["heatmaps"] == heatmaps


@pytest.mark.parametrize("options", [{"fp16": "no"}, {"fp16": 1}, {"fp16": None}, {"int8": "yes"}])
def test_fp16_and_int8_are_bools(tmp_path, options):
    """`fp16="no"` was truthy and wrote FP16 weights: a TypeError that says what to pass, before anything runs."""
    import graphsurgery

    name = next(iter(options))
    with pytest.raises(TypeError, match=rf"^{name} must be True or False, not .* \(a str such as 'no' would count "
                                        r"as True\)$"):
        graphsurgery.convert(tmp_path / "absent.onnx", tmp_path / "out.xml", **options)
    assert not list(tmp_path.iterdir())
