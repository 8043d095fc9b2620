"""The input steps' forward map (`forward_map`, composed by `twins.input_geometry`), checked against what the steps
do to pixels: a bright rectangle drawn in the caller's image lands where the map says, after the input twins."""

from __future__ import annotations

import numpy as np
import pytest

from graphsurgery.model import ModelFacts
from graphsurgery.recipe import parse_recipe
from graphsurgery.twins import input_geometry, preprocess

MODEL_HW = (64, 96)
GEOMETRIES = {
    "stretch": "- resize: {}",
    "letterbox": "- resize: {fit: letterbox, side_rounding: round, pad_value: 114}",
    "letterbox top-left": "- resize: {fit: letterbox, pad_anchor: top_left}",
    "height": "- resize: {fit: height, pad_anchor: center}",
    "crop": "- resize: {fit: crop, crop_fraction: 0.875}",
    "stretch + center_crop": "- resize: {size: [80, 110]}\n    - center_crop: {}",
    "center_crop alone": "- center_crop: {}",
}


def recipe_with(steps: str):
    return parse_recipe(f"""
version: 1
name: geometry
input:
  tensor: {{dtype: uint8, layout: NHWC, color: RGB}}
  model: {{layout: NCHW, color: RGB}}
  steps:
    - cast: {{}}
    - layout: {{to: NCHW}}
    {steps}
""")


FACTS = ModelFacts(input_size=MODEL_HW[::-1], output_producer=None, output_name="output",
                   input_shape=(1, 3, *MODEL_HW))


def bright_edges(profile: np.ndarray) -> tuple[int, int]:
    """First and one-past-last index brighter than half (the rectangle's edges, in whole pixels)."""
    inside = np.nonzero(profile > 127.5)[0]
    return int(inside[0]), int(inside[-1]) + 1


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("image_hw", [(120, 200), (300, 170), (50, 60), (64, 96)])
def test_a_rectangle_lands_where_the_forward_map_says(geometry, image_hw):
    recipe = recipe_with(GEOMETRIES[geometry])
    h, w = image_hw
    x0, y0, x1, y1 = int(0.3 * w), int(0.25 * h), int(0.75 * w), int(0.7 * h)
    image = np.zeros((1, h, w, 3), np.uint8)
    image[0, y0:y1, x0:x1] = 255
    model_input = preprocess(recipe, image, FACTS)[0, 0]  # [H, W] of the model's input
    assert model_input.shape == MODEL_HW
    scale_x, scale_y, offset_x, offset_y, width, height = input_geometry(recipe, FACTS, image.shape)
    assert (width, height) == (w, h)
    want = np.array([x0 * scale_x + offset_x, y0 * scale_y + offset_y, x1 * scale_x + offset_x,
                     y1 * scale_y + offset_y])
    rows, cols = np.nonzero(model_input > 127.5)
    got = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
    inside = (want >= 0) & (want <= np.array([MODEL_HW[1], MODEL_HW[0]] * 2))
    # bilinear sampling blurs an edge over one pixel: the bright run starts within a pixel of the mapped edge
    np.testing.assert_allclose(got[inside], want[inside], atol=1.0)


def test_steps_that_keep_pixels_in_place_map_to_themselves():
    recipe = parse_recipe("""
version: 1
name: identity-geometry
input:
  tensor: {dtype: uint8, layout: NHWC, color: BGR}
  model: {layout: NCHW, color: RGB}
  steps: [{cast: {}}, {layout: {to: NCHW}}, {reverse_channels: {}}, {scale: {divide: 255}}]
""")
    np.testing.assert_array_equal(input_geometry(recipe, FACTS, (1, *MODEL_HW, 3)), [1, 1, 0, 0, 96, 64])
