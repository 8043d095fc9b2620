"""Heatmap output steps: heatmap_argmax, quarter_offset, to_image.

Every step runs at every opset in `stepkit.OPSETS` on onnxruntime (1.32 runs opset-28 models, so no fallback
is needed) and is compared with its numpy twin *and* with an independent numpy implementation written here
(vectorised, integer arithmetic, where the twins loop like the authors' code). Keypoints must be EQUAL.
OpenVINO (f32) runs the crafted cases at opsets 9, 11, 13, 17 and 18.

`heatmap_argmax`'s default (exact) method must agree bit for bit on every crafted case, NaN and ±inf included;
its classic ArgMax method is held only to what the ONNX spec defines (no NaN, no ±inf; ties from opset 12 and on
onnxruntime only, since OpenVINO's TopK leaves the order of equal values open).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from graphsurgery.registry import STEPS
from graphsurgery.steps.base import EXACT, StepError
from graphsurgery.steps.output import MAX_POSITIONS, HeatmapArgmax, QuarterOffset
from graphsurgery.steps.to_image import ToImage

from stepkit import OPSETS, chain, op_types

H, W = 64, 48
SOURCE = (np.float32, ("N", "K", H, W))
ARGMAX = (HeatmapArgmax(),)
CLASSIC = (HeatmapArgmax(method="argmax"),)
OV_OPSETS = (9, 11, 13, 17, 18)
REFINE = (HeatmapArgmax(), QuarterOffset())
CROP = (HeatmapArgmax(), QuarterOffset(), ToImage(mode="crop"))
ORIGINAL = (HeatmapArgmax(), QuarterOffset(), ToImage(mode="original"))
CROP_FACTS = (("input_size", (192, 256)),)


# --- independent implementations (not the twins) ---------------------------------------------------------------

def decode(hm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """get_max_preds in integer arithmetic: first maximum, (x, y) = divmod, (0, 0) unless max > 0 (NaN: not)."""
    n, k = hm.shape[:2]
    flat = hm.reshape(n, k, -1)
    idx = flat.argmax(axis=2)           # numpy: first occurrence; a NaN counts as the maximum
    score = flat.max(axis=2)            # NaN if the map holds one
    y, x = np.divmod(idx, hm.shape[3])
    keep = score > 0
    xy = np.stack([np.where(keep, x, 0), np.where(keep, y, 0)], axis=-1).astype(np.float32)
    return xy, score[..., None].astype(np.float32)


def refine(hm: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """The quarter-pixel shift with fancy indexing instead of the authors' loop."""
    n, k, h, w = hm.shape
    if h < 3 or w < 3:
        return xy.copy()
    px, py = xy[..., 0].astype(np.int64), xy[..., 1].astype(np.int64)
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    nn, kk = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
    cx, cy = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)
    with np.errstate(invalid="ignore"):  # inf − inf away from the maximum: not used
        dx = hm[nn, kk, cy, cx + 1] - hm[nn, kk, cy, cx - 1]
        dy = hm[nn, kk, cy + 1, cx] - hm[nn, kk, cy - 1, cx]
    shift = np.stack([np.sign(dx), np.sign(dy)], axis=-1) * np.float32(0.25)
    return xy + np.where(inside[..., None], shift, 0).astype(np.float32)


def authors_transform(xy: np.ndarray, center: np.ndarray, scale: np.ndarray, size=(W, H)) -> np.ndarray:
    """The authors' transform_preds with cv2.getAffineTransform, literally (rotation 0)."""
    cv2 = pytest.importorskip("cv2")
    out = np.zeros(xy.shape, dtype=np.float32)
    for i in range(xy.shape[0]):
        src_w = scale[i].astype(np.float32)[0] * 200.0
        c = center[i].astype(np.float32)
        src = np.float32([c, c + [0, src_w * -0.5], c + [src_w * -0.5, src_w * -0.5]])
        dw, dh = size
        dst = np.float32([[dw * 0.5, dh * 0.5], [dw * 0.5, dh * 0.5 - dw * 0.5], [0, dh * 0.5 - dw * 0.5]])
        trans = cv2.getAffineTransform(dst, src)  # inv=1
        homogeneous = np.concatenate([xy[i].astype(np.float64), np.ones((xy.shape[1], 1))], axis=1)
        out[i] = homogeneous @ trans.T
    return out


# --- crafted heatmaps -------------------------------------------------------------------------------------------

def _every_position(rng: np.random.Generator) -> np.ndarray:
    """One map per position (H·W maps, K = 1): a peak there over neighbours drawn from {0, .5, 1} (many ties)."""
    maps = rng.integers(0, 3, size=(H * W, H * W)).astype(np.float32) / 2
    maps[np.arange(H * W), np.arange(H * W)] = 2.0
    return maps.reshape(H * W, 1, H, W)


@functools.cache
def cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20240611)
    c: dict[str, np.ndarray] = {}
    c["random"] = rng.standard_normal((3, 17, H, W)).astype(np.float32)
    c["onehot"] = np.eye(H * W, dtype=np.float32).reshape(H * W, 1, H, W)
    c["every_position"] = _every_position(rng)

    two = rng.standard_normal((8, 17, H * W)).astype(np.float32)
    for n in range(8):
        for k in range(17):
            i, j = rng.choice(H * W, size=2, replace=False)
            if k % 3 == 1:
                j = min(i + 1, H * W - 1)      # horizontally adjacent (or wrapping to the next row)
            elif k % 3 == 2:
                j = (i + W) % (H * W)          # vertically adjacent
            two[n, k, [i, j]] = 5.0
    c["two_way_ties"] = two.reshape(8, 17, H, W)

    many = rng.integers(0, 3, size=(4, 17, H, W)).astype(np.float32)   # ~1000 positions share the maximum
    many[0, :5] = 0.75                                                 # whole map one value
    many[1, :5] = np.round(rng.standard_normal((5, H, W)), 0)          # plateaus of integers
    c["many_way_ties"] = many
    c["all_negative"] = -rng.uniform(0.01, 2.0, size=(2, 17, H, W)).astype(np.float32)
    c["all_zero"] = np.zeros((2, 17, H, W), dtype=np.float32)
    mixed = rng.standard_normal((2, 17, H, W)).astype(np.float32)
    mixed[:, ::2] = -np.abs(mixed[:, ::2])                             # every other joint not found
    mixed[:, 1::4] = 0.0
    c["mixed_found"] = mixed

    ring = [(y, x) for y in range(H) for x in range(W) if min(x, y, W - 1 - x, H - 1 - y) <= 1]
    border = rng.integers(-4, 1, size=(len(ring), 1, H, W)).astype(np.float32) / 4   # ties among neighbours
    for i, (y, x) in enumerate(ring):
        border[i, 0, y, x] = 3.0
    c["border_maxima"] = border                                        # every position of the two outer rings

    nan = rng.standard_normal((2, 6, H, W)).astype(np.float32)
    nan[0, 0, 5, 5] = np.nan                                           # before the maximum
    nan[0, 1, H - 1, W - 1] = np.nan                                   # at the last position
    nan[0, 2, 0, 0] = np.nan                                           # at the first position
    nan[0, 3] = np.nan                                                 # all NaN
    nan[0, 4, 7, 9], nan[0, 4, 10, 10] = np.nan, np.inf                # NaN and +inf
    nan[0, 5] = -np.abs(nan[0, 5])
    nan[0, 5, 30, 30] = np.nan                                         # NaN in an all-negative map
    c["nan"] = nan
    inf = rng.standard_normal((1, 4, H, W)).astype(np.float32)
    inf[0, 0, 20, 20] = np.inf
    inf[0, 1, 20, 20] = inf[0, 1, 20, 21] = np.inf                     # two +inf: the first wins
    inf[0, 2] = -np.inf                                                # nothing found
    inf[0, 3, 33, 11] = np.float32(3e38)
    c["inf"] = inf
    tiny = np.zeros((1, 3, H, W), dtype=np.float32)                    # subnormal values (no flush to zero)
    tiny[0, 0, 10, 10] = 1e-40                                         # found: the score is > 0
    tiny[0, 1, 10, 10], tiny[0, 1, 10, 11] = 1e-30, 1e-40              # right neighbour − left one is subnormal
    tiny[0, 2, 10, 10], tiny[0, 2, 11, 10] = 1.0, -1e-40
    c["subnormal"] = tiny
    c["extremes"] = _extremes()
    return c


def _extremes() -> np.ndarray:
    """Maps at the edges of float32: OpenVINO's −3.4e38 for a ReduceMax over −inf, sums that overflow, and values
    that a shortcut scaling them by 1/2 would tie."""
    f32 = np.float32
    lowest, smallest = -np.finfo(f32).max, f32(2.0**-149)
    m = np.zeros((1, 11, H, W), f32)
    m[0, 0] = -np.inf
    m[0, 0, 40, 3] = lowest                     # −3.4e38 after all −inf rows (OpenVINO's all −inf ReduceMax)
    m[0, 1] = np.inf                            # all +inf: found at (0, 0)
    m[0, 2] = -np.inf
    m[0, 2, H - 1, 7] = np.inf                  # only infinities (in the last row: quarter_offset leaves it)
    m[0, 3] = lowest                            # all −3.4e38
    m[0, 4, 50, 5] = smallest                   # the smallest subnormal after zeros: found
    m[0, 5, 0, 0], m[0, 5, 1, 0] = 3 * smallest, 4 * smallest              # equal once halved
    m[0, 6] = -1.0
    m[0, 6, 0, 0], m[0, 6, 1, 0] = -5 * smallest, -4 * smallest            # equal once halved, negative
    m[0, 7] = -0.0
    m[0, 7, 20, 20] = 0.0                       # signed zeros: not found
    m[0, 8] = -np.inf
    m[0, 8, H - 1, W - 1] = lowest              # −3.4e38 at the last position
    m[0, 9] = np.finfo(f32).max
    m[0, 9, 10, 10] = np.inf                    # sums overflow
    m[0, 10] = -np.inf
    m[0, 10, 5, 5] = np.nan                     # NaN among −inf
    return m


CRAFTED = [name for name in ("random", "onehot", "every_position", "two_way_ties", "many_way_ties", "all_negative",
                             "all_zero", "mixed_found", "border_maxima", "nan", "inf", "subnormal", "extremes")]


@functools.cache
def expected(name: str) -> dict[str, np.ndarray]:
    hm = cases()[name]
    xy, score = decode(hm)
    return {"keypoints": xy, "scores": score, "refined": refine(hm, xy)}


def test_crafted_cases_discriminate():
    """The crafted cases really contain what they claim: ties where last ≠ first, the strict border, NaN."""
    c = cases()
    for name in ("two_way_ties", "many_way_ties"):
        flat = c[name].reshape(*c[name].shape[:2], -1)
        last = flat.shape[2] - 1 - flat[..., ::-1].argmax(axis=2)
        assert (last != flat.argmax(axis=2)).mean() > 0.9, name
    xy = expected("border_maxima")["keypoints"]
    assert {1, W - 2} <= set(xy[..., 0].ravel().tolist()) and {1, H - 2} <= set(xy[..., 1].ravel().tolist())
    shifts = expected("every_position")["refined"] - expected("every_position")["keypoints"]
    assert {-0.25, 0.0, 0.25} <= set(shifts.ravel().tolist())
    assert (shifts != 0).sum() > 1000
    assert np.isnan(expected("nan")["scores"]).sum() == 6


# --- heatmap_argmax ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", CRAFTED)
def test_argmax_onnxruntime(opset, name):
    hm = cases()[name]
    run = chain(ARGMAX, SOURCE, opset, ("keypoints", "scores"))
    keypoints, scores = run.ort({"output": hm})
    twin_keypoints, twin_scores = run.twin({"output": hm})
    want = expected(name)
    assert keypoints.dtype == np.float32 and keypoints.shape == hm.shape[:2] + (2,)
    assert scores.dtype == np.float32 and scores.shape == hm.shape[:2] + (1,)
    assert np.array_equal(keypoints, want["keypoints"])
    assert np.array_equal(twin_keypoints, want["keypoints"])
    assert np.array_equal(scores, want["scores"], equal_nan=True)
    assert np.array_equal(twin_scores, want["scores"], equal_nan=True)


@pytest.mark.parametrize("opset", OV_OPSETS)
@pytest.mark.parametrize("name", CRAFTED)
def test_argmax_openvino(opset, name):
    hm = cases()[name]
    keypoints, scores = chain(ARGMAX, SOURCE, opset, ("keypoints", "scores")).openvino({"output": hm})
    want = expected(name)
    assert np.array_equal(keypoints, want["keypoints"])
    assert np.array_equal(scores, want["scores"], equal_nan=True)


#: crafted cases whose answer the ONNX spec fixes for ArgMax/ReduceMax: no NaN, no ±inf, no tie at the maximum
#: of a map that is found (all_zero and mixed_found tie only in maps whose keypoint is (0, 0) anyway)
SPEC_DEFINED = ["random", "onehot", "every_position", "all_negative", "all_zero", "mixed_found", "border_maxima"]
TIED = ["two_way_ties", "many_way_ties"]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", SPEC_DEFINED + TIED)
def test_classic_argmax_onnxruntime(opset, name):
    if name in TIED and opset < 12:
        pytest.skip("ArgMax's tie rule (first index) is in the spec from opset 12")
    hm = cases()[name]
    keypoints, scores = chain(CLASSIC, SOURCE, opset, ("keypoints", "scores")).ort({"output": hm})
    assert np.array_equal(keypoints, expected(name)["keypoints"])
    assert np.array_equal(scores, expected(name)["scores"])


@pytest.mark.parametrize("opset", [9, 17])
@pytest.mark.parametrize("name", SPEC_DEFINED)
def test_classic_argmax_openvino(opset, name):
    hm = cases()[name]
    keypoints, scores = chain(CLASSIC, SOURCE, opset, ("keypoints", "scores")).openvino({"output": hm})
    assert np.array_equal(keypoints, expected(name)["keypoints"])
    assert np.array_equal(scores, expected(name)["scores"])


def test_argmax_emitted_nodes():
    """No ArgMax or TopK in the exact decode; its cost on onnxruntime is in the nodes that read all the maps (each
    reduction over them is a parallel section, a Where over them ≈ 80 µs): pin exactly which those are."""
    common = {"Add", "Cast", "Concat", "Div", "Floor", "Greater", "Mul", "ReduceMax", "Reshape"}
    for opset in OPSETS:
        model = chain(ARGMAX, SOURCE, opset, ("keypoints", "scores")).model
        ops = op_types(model)
        classic = set(op_types(chain(CLASSIC, SOURCE, opset, ("keypoints", "scores")).model))
        assert not {"ArgMax", "TopK"} & set(ops), opset
        flat = next(n.output[0] for n in model.graph.node if n.op_type == "Reshape" and n.input[0] == "output")
        reading = sorted(n.op_type for n in model.graph.node if {"output", flat} & set(n.input))
        gather = ["GatherElements"] if opset >= 11 else ["Where"]  # opset 9–10: a one-hot select of the row
        assert reading == sorted(["Reshape", "ReduceMax", "Greater", "IsNaN", *gather]), opset
        assert classic == common | {"ArgMax"} | ({"Sub"} if opset < 10 else {"Mod"}), opset  # opset 9: no Mod


def test_classic_and_exact_share_the_twin():
    """Both methods decode the same way where the runtimes are defined; the twin does not depend on the method."""
    hm = cases()["random"]
    assert all(np.array_equal(a, b) for a, b in zip(chain(ARGMAX, SOURCE, 13, ("keypoints", "scores")).twin(
        {"output": hm}), chain(CLASSIC, SOURCE, 13, ("keypoints", "scores")).twin({"output": hm})))


def test_argmax_float16_heatmaps():
    hm = cases()["two_way_ties"].astype(np.float16)
    run = chain(ARGMAX, (np.float16, ("N", "K", H, W)), 13, ("keypoints", "scores"))
    keypoints, scores = run.ort({"output": hm})
    want_xy, want_score = decode(hm.astype(np.float32))
    assert scores.dtype == np.float32
    assert np.array_equal(keypoints, want_xy) and np.array_equal(scores, want_score)


def test_odd_sizes():
    """Non-pose sizes, including W = 1 and H = 1 (no interior: quarter_offset changes nothing)."""
    rng = np.random.default_rng(3)
    for h, w in [(1, 7), (5, 1), (3, 3), (4, 4), (17, 13)]:
        hm = rng.integers(-2, 3, size=(3, 4, h, w)).astype(np.float32)
        for opset in (9, 13):
            run = chain(REFINE, (np.float32, ("N", "K", h, w)), opset, ("keypoints",))
            want = refine(hm, decode(hm)[0])
            assert np.array_equal(run.ort({"output": hm})[0], want), (h, w, opset)
            assert np.array_equal(run.twin({"output": hm})[0], want), (h, w, opset)


def test_argmax_refuses():
    step = HeatmapArgmax()
    with pytest.raises(StepError, match="not a 4-D heatmap") as info:
        step.reference({"output": np.zeros((2, 1000), np.float32)})
    assert "output.target" in info.value.fix
    side = 2048
    assert side * side >= MAX_POSITIONS
    with pytest.raises(StepError, match="2\\^22") as info:
        step.reference({"output": np.zeros((1, 1, side, side), np.float32)})
    assert info.value.fix
    with pytest.raises(StepError, match="not static"):
        chain(ARGMAX, (np.float32, ("N", 17, "H", "W")), 17, ("keypoints",))
    with pytest.raises(StepError, match="not a 4-D heatmap"):
        chain(ARGMAX, (np.float32, ("N", 17, 3072)), 17, ("keypoints",))


# --- quarter_offset ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("name", [n for n in CRAFTED if n != "onehot"])
def test_quarter_offset_onnxruntime(opset, name):
    hm = cases()[name]
    run = chain(REFINE, SOURCE, opset, ("keypoints", "scores"))
    (keypoints, _), (twin, _) = run.ort({"output": hm}), run.twin({"output": hm})
    assert np.array_equal(keypoints, expected(name)["refined"])
    assert np.array_equal(twin, expected(name)["refined"])


@pytest.mark.parametrize("opset", OV_OPSETS)
@pytest.mark.parametrize("name", ["every_position", "two_way_ties", "many_way_ties", "border_maxima", "nan",
                                  "inf", "subnormal", "random"])
def test_quarter_offset_openvino(opset, name):
    hm = cases()[name]
    (keypoints,) = chain(REFINE, SOURCE, opset, ("keypoints",)).openvino({"output": hm})
    assert np.array_equal(keypoints, expected(name)["refined"])


def test_quarter_offset_minus_inf_on_both_sides():
    """−inf − −inf is NaN: the authors' code then gives x = NaN; both runtimes do the same."""
    hm = np.zeros((1, 1, H, W), np.float32)
    hm[0, 0, 10, 10] = 5.0
    hm[0, 0, 10, 9] = hm[0, 0, 10, 11] = -np.inf
    for opset in (9, 17):
        run = chain(REFINE, SOURCE, opset, ("keypoints",))
        with np.errstate(invalid="ignore"):
            twin = run.twin({"output": hm})[0]
        for got in (run.ort({"output": hm})[0], run.openvino({"output": hm})[0], twin):
            assert np.array_equal(got, [[[np.nan, 10.0]]], equal_nan=True)


def test_quarter_offset_nodes_per_opset():
    def quarter_offset_ops(opset):
        model = chain(REFINE, SOURCE, opset, ("keypoints",)).model
        return [n.op_type for n in model.graph.node if n.name.startswith("graphsurgery/post/quarter_offset/")]

    at9, at11 = quarter_offset_ops(9), quarter_offset_ops(11)
    assert "GatherElements" not in at9 and at9.count("Equal") == 2      # the two neighbour reads
    assert at11.count("GatherElements") == 2 and "Equal" not in at11


def test_quarter_offset_needs_argmax():
    with pytest.raises(StepError, match="needs") as info:
        QuarterOffset().reference({"output": np.zeros((1, 17, H, W), np.float32)})
    assert "heatmap_argmax" in info.value.fix


# --- to_image ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("opset", OPSETS)
def test_to_image_crop(opset):
    hm = cases()["every_position"]
    run = chain(CROP, SOURCE, opset, ("keypoints",), CROP_FACTS)
    (keypoints,), (twin,) = run.ort({"output": hm}), run.twin({"output": hm})
    want = expected("every_position")["refined"] * np.float32(4.0)   # 192/48 = 256/64 = 4
    assert np.array_equal(keypoints, want) and np.array_equal(twin, want)


def test_to_image_crop_non_integer_ratio():
    """Ratios rounded to float32 once, then one multiplication: exact against numpy, also for 200/48."""
    hm = cases()["every_position"]
    steps = (HeatmapArgmax(), QuarterOffset(), ToImage(mode="crop", input_size=(200, 250)))
    run = chain(steps, SOURCE, 13, ("keypoints",))
    (keypoints,) = run.ort({"output": hm})
    ratio = np.array([200 / W, 250 / H], dtype=np.float32)
    assert np.array_equal(keypoints, expected("every_position")["refined"] * ratio)
    assert np.array_equal(run.twin({"output": hm})[0], keypoints)
    assert np.array_equal(run.openvino({"output": hm})[0], keypoints)


def test_to_image_crop_needs_size():
    with pytest.raises(StepError, match="input size") as info:
        chain(CROP, SOURCE, 13, ("keypoints",))
    assert "input_size" in info.value.fix


def _boxes(n: int, rng: np.random.Generator, far: float) -> tuple[np.ndarray, np.ndarray]:
    center = rng.uniform(0, far, size=(n, 2)).astype(np.float32)
    scale = rng.uniform(0.05, far / 200, size=(n, 2)).astype(np.float32)
    return center, scale


@pytest.mark.parametrize("opset", OPSETS)
def test_to_image_original(opset):
    rng = np.random.default_rng(opset)
    hm = cases()["random"]
    run = chain(ORIGINAL, SOURCE, opset, ("keypoints",))
    for far in (500, 4000, 16000):
        center, scale = _boxes(hm.shape[0], rng, far)
        feeds = {"output": hm, "center": center, "scale": scale}
        (keypoints,), (twin,) = run.ort(feeds), run.twin(feeds)
        want = authors_transform(refine(hm, decode(hm)[0]), center, scale)
        atol = ToImage(mode="original").writes()["keypoints"].atol
        np.testing.assert_allclose(keypoints, want, rtol=0, atol=atol)
        # the graph: one float32 ulp of the magnitude involved (float32 arithmetic vs float64 rounded to float32);
        # the twin (float64 too, rounded once): at most one ulp of the result's own magnitude
        ulp = np.spacing(np.float32(max(np.abs(want).max(), np.abs(center).max())))
        assert np.abs(keypoints - want).max() <= ulp, far
        assert np.abs(twin - want).max() <= np.spacing(np.float32(np.abs(want).max())), far


def test_to_image_original_openvino_and_scale_y_unused():
    rng = np.random.default_rng(7)
    hm = cases()["two_way_ties"]
    center, scale = _boxes(hm.shape[0], rng, 2000)
    run = chain(ORIGINAL, SOURCE, 17, ("keypoints",))
    (keypoints,) = run.openvino({"output": hm, "center": center, "scale": scale})
    want = authors_transform(refine(hm, decode(hm)[0]), center, scale)
    np.testing.assert_allclose(keypoints, want, rtol=0, atol=ToImage(mode="original").writes()["keypoints"].atol)
    other = scale.copy()
    other[:, 1] *= 3
    (again,) = run.ort({"output": hm, "center": center, "scale": other})
    assert np.array_equal(again, run.ort({"output": hm, "center": center, "scale": scale})[0])


def test_to_image_extra_inputs():
    assert ToImage(mode="crop").extra_inputs("N") == ()
    extras = ToImage(mode="original").extra_inputs("N")
    assert [(e.name, e.dtype, e.shape) for e in extras] == [("center", np.float32, ("N", 2)),
                                                            ("scale", np.float32, ("N", 2))]
    assert ToImage(mode="original").reads == ("keypoints", "heatmaps", "center", "scale")


# --- the contract -----------------------------------------------------------------------------------------------

def test_registered_with_docs_and_comparisons():
    for name, cls in [("heatmap_argmax", HeatmapArgmax), ("quarter_offset", QuarterOffset), ("to_image", ToImage)]:
        assert STEPS[name] is cls
        doc = cls.__doc__.strip().splitlines()
        assert doc[0] and not doc[1] and len(doc) > 3, name
    assert HeatmapArgmax().writes()["keypoints"] == EXACT
    assert HeatmapArgmax().writes()["scores"].kind == "float"
    assert QuarterOffset().writes() == {"keypoints": EXACT}
    assert ToImage(mode="crop").writes() == {"keypoints": EXACT}
    assert "heatmaps" not in HeatmapArgmax().writes()  # an alias for later steps, never a graph output
