"""`dark_refine` and `udp_refine`: mmpose's refine_keypoints_dark (MSRAHeatmap, unbiased=True) and
refine_keypoints_dark_udp (UDPHeatmap) after `heatmap_argmax: {invalid: minus_one}`.

Gaussian heatmaps (σ = 2) with sub-pixel peaks everywhere, borders included, and some maps all < 0: the graph
(ONNX Runtime and OpenVINO f32, opsets 11 and 17) equals the twin (mmpose's code as written) within 1e-3 cells, and
invalid joints stay exactly at −1. Independently of both: on interior peaks both recover the true sub-pixel peak
(away from the edges a blurred Gaussian's log is a paraboloid: one Newton step lands on it), and a flat
neighbourhood (zero Hessian determinant) leaves the keypoint where it was.
"""

from __future__ import annotations

import numpy as np
import pytest

from graphsurgery.steps.base import StepError
from graphsurgery.steps.dark import DarkRefine, UdpRefine
from graphsurgery.steps.output import HeatmapArgmax
from graphsurgery.steps.to_image import ToImage

from stepkit import chain

H, W, K = 64, 48, 17
SOURCE = (np.float32, ("N", K, H, W))
STEPS = (HeatmapArgmax(invalid="minus_one"), DarkRefine())


def gaussian_maps(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[4, K, H, W] Gaussian maps (σ = 2) and their true peaks [4, K, 2] (x, y); every fifth map negated (no
    keypoint), peaks near the borders in the first instance."""
    rng = np.random.default_rng(seed)
    peaks = np.stack([rng.uniform(0, W - 1, (4, K)), rng.uniform(0, H - 1, (4, K))], axis=-1)
    peaks[0, :8] = [[0.3, 5.2], [1.6, 30.1], [W - 1.2, 12.7], [W - 2.4, 40.0], [20.2, 0.4], [10.7, 1.5],
                    [33.3, H - 1.4], [25.5, H - 2.6]]
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    maps = np.exp(-((x - peaks[..., 0, None, None]) ** 2 + (y - peaks[..., 1, None, None]) ** 2) / 8.0)
    maps[:, ::5] = -0.1 - maps[:, ::5]  # all below 0 (a maximum of exactly 0 makes mmpose rescale by 0 / 0)
    return maps.astype(np.float32), peaks


@pytest.mark.parametrize("opset", [11, 17])
def test_graph_equals_mmpose_within_a_thousandth_of_a_cell(opset):
    maps, _ = gaussian_maps()
    run = chain(STEPS, SOURCE, opset, ("keypoints",))
    (twin,) = run.twin({"output": maps})
    invalid = (maps.reshape(4, K, -1).max(axis=2) <= 0)
    assert invalid.sum() == 16 and (twin[invalid] == -1).all()
    for got in (run.ort({"output": maps})[0], run.openvino({"output": maps})[0]):
        assert (got[invalid] == -1).all()
        assert np.abs(got - twin).max() <= 1e-3


def test_dark_recovers_the_true_peak_inside_the_map():
    maps, peaks = gaussian_maps(1)
    (twin,) = chain(STEPS, SOURCE, 17, ("keypoints",)).twin({"output": maps})
    found = maps.reshape(4, K, -1).max(axis=2) > 0
    rounded = np.floor(peaks + 0.5)  # the argmax of a sampled Gaussian is its nearest cell
    interior = found & (rounded[..., 0] > 1) & (rounded[..., 0] < W - 2) & (rounded[..., 1] > 1) & (
        rounded[..., 1] < H - 2)
    # away from the blur's zero padding (its radius is 5 cells) the blurred log is a paraboloid
    deep = interior & (np.minimum(rounded[..., 0], W - 1 - rounded[..., 0]) > 5) & (
        np.minimum(rounded[..., 1], H - 1 - rounded[..., 1]) > 5)
    assert deep.sum() > 30
    error = np.abs(twin - peaks)[deep]
    assert error.max() < 0.05 and np.abs(rounded - peaks)[deep].max() > 0.4  # far better than the argmax
    edge = found & ~interior
    assert edge.any() and np.array_equal(twin[edge], rounded[edge])  # two cells from an edge: not refined


def test_a_flat_neighbourhood_is_left_alone():
    """Constant maps: the blurred log is flat inside, so gradient and Hessian are 0 (determinant 0): no step."""
    maps = np.full((1, K, H, W), 0.5, np.float32)
    keypoints = np.tile(np.array([[20.0, 30.0]], np.float32), (1, K, 1))
    refined = DarkRefine().reference({"keypoints": keypoints, "heatmaps": maps})["keypoints"]
    assert np.array_equal(refined, keypoints)


def test_dark_refuses_small_maps_and_even_kernels():
    with pytest.raises(StepError, match="at least 5×5"):
        chain(STEPS, (np.float32, (1, K, 4, 8)), 17, ("keypoints",))
    with pytest.raises(ValueError, match="odd"):
        DarkRefine(blur_kernel_size=10)


# --- udp_refine ------------------------------------------------------------------------------------------------

UDP = (HeatmapArgmax(invalid="minus_one"), UdpRefine(), ToImage(mode="crop", udp=True))
UDP_FACTS = (("input_size", (192, 256)),)


@pytest.mark.parametrize("opset", [11, 17])
def test_udp_graph_equals_mmpose(opset):
    """Graph and twin (mmpose's code) within 1e-3 cells, invalid joints included: mmpose refines them too, from
    the padded corner and (negative index) the previous joint's map, and so does the graph."""
    maps, _ = gaussian_maps(2)
    run = chain(UDP[:2], SOURCE, opset, ("keypoints",))
    (twin,) = run.twin({"output": maps})
    invalid = maps.reshape(4, K, -1).max(axis=2) <= 0
    assert invalid.sum() == 16 and (twin[invalid] == -1).all()  # flat clipped log around them: no step
    for got in (run.ort({"output": maps})[0], run.openvino({"output": maps})[0]):
        assert (got[invalid] == -1).all() and np.abs(got - twin).max() <= 1e-3
    scaled = chain(UDP, SOURCE, opset, ("keypoints",), UDP_FACTS)
    np.testing.assert_allclose(scaled.ort({"output": maps})[0], twin * np.float32([192 / 47, 256 / 63]), atol=5e-3)


def test_udp_recovers_the_true_peak_and_maps_to_input_pixels():
    maps, peaks = gaussian_maps(3)
    (keypoints,) = chain(UDP[:2], SOURCE, 17, ("keypoints",)).twin({"output": maps})
    found = maps.reshape(4, K, -1).max(axis=2) > 0
    deep = found & (np.minimum(peaks[..., 0], W - 1 - peaks[..., 0]) > 6) & (
        np.minimum(peaks[..., 1], H - 1 - peaks[..., 1]) > 6)
    assert deep.sum() > 30 and np.abs(keypoints - peaks)[deep].max() < 0.05
    (pixels,) = chain(UDP, SOURCE, 17, ("keypoints",), UDP_FACTS).twin({"output": maps})
    np.testing.assert_allclose(pixels[deep], (peaks[deep] * [192 / 47, 256 / 63]), atol=0.25)


def test_udp_invalid_joints_follow_mmpose_where_its_reads_wrap():
    """An invalid first joint reads, through a negative index, the end of the last joint's padded map: give the
    last map a peak at its bottom-right corner and the first joint moves; the graph reads the same cells and moves
    it the same way. From such reads the Hessian is eps·I: the step divides by eps², which mmpose does in float64
    and the graph in float32, so they agree to 0.05 cells here, not to 1e-3."""
    maps = np.full((1, K, H, W), -1.0, np.float32)
    y, x = np.mgrid[0:H, 0:W]
    maps[0, K - 1] = np.exp(-((x - (W - 1)) ** 2 + (y - (H - 1)) ** 2) / 8.0)
    run = chain(UDP[:2], SOURCE, 17, ("keypoints",))
    (twin,) = run.twin({"output": maps})
    assert not np.array_equal(twin[0, 0], [-1, -1]) and np.array_equal(twin[0, 1], [-1, -1])
    for got in (run.ort({"output": maps})[0], run.openvino({"output": maps})[0]):
        assert np.array_equal(got[0, 1:], twin[0, 1:]) and not np.array_equal(got[0, 0], [-1, -1])
        np.testing.assert_allclose(got[0, 0], twin[0, 0], rtol=0, atol=0.05)


def test_udp_scale_goes_with_crop_pixels():
    with pytest.raises(ValueError, match="goes with mode crop"):
        ToImage(mode="original", udp=True)
