"""How far a geometry step is from the library call it imitates, for verify's informational table: `resize` against
`cv2.resize` with the closest flag, or PIL's `Image.resize` for the modes that imitate PIL (lanczos, antialias).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from graphsurgery.images import opencv
from graphsurgery.steps.base import TensorSpec

if TYPE_CHECKING:
    from graphsurgery.steps.resize import Resize


def opencv_equivalent(step: Resize, image_hw: tuple[int, int]) -> str:
    """The `cv2.resize` interpolation flag closest to the step's settings for an image of this size."""
    resized = step.resized_hw(*image_hw)
    shrinks = resized[0] < image_hw[0] or resized[1] < image_hw[1]
    if step.interpolation == "area" or (step.antialias and shrinks):
        return "INTER_AREA"
    if step.interpolation == "lanczos":
        return "INTER_LANCZOS4"
    if step.interpolation == "nearest":
        centred = step.coordinate_transformation_mode in ("half_pixel", "pytorch_half_pixel")
        return "INTER_NEAREST_EXACT" if centred else "INTER_NEAREST"
    return "INTER_LINEAR" if step.interpolation == "linear" else "INTER_CUBIC"


def resize_vs_opencv(step: Resize, image: np.ndarray) -> dict:
    """How far the step's resize is from `cv2.resize` with the closest settings, on one H×W×C (or H×W) image.

    The step's side is its numpy twin (which matches the graph within 1e-5) on the image as float32; OpenCV's
    side is `cv2.resize` on the image in its own dtype (uint8 results are rounded, as an OpenCV pipeline gets
    them), then the same crop or letterbox, so only the resampling differs. Differences are in the image's units.
    The step must know its target size (a bound step, or `size` given).
    """
    cv2 = opencv()

    if image.ndim not in (2, 3):
        raise ValueError(f"one image, H×W×C or H×W, not an array of shape {image.shape}")
    flag = opencv_equivalent(step, image.shape[:2])
    resized_hw = step.resized_hw(*image.shape[:2])
    theirs = cv2.resize(image, (resized_hw[1], resized_hw[0]), interpolation=getattr(cv2, flag))
    theirs = step.place(theirs.reshape(*resized_hw, -1).astype(np.float64), resized_hw, (0, 1))
    hwc = image.reshape(*image.shape[:2], -1)
    ours = step.reference(hwc[None].astype(np.float32), TensorSpec("float32", "NHWC", "RGB", (1, *hwc.shape)))[0]
    difference = np.abs(ours.astype(np.float64) - theirs)
    return {
        "library_call": f"cv2.resize(image, ({resized_hw[1]}, {resized_hw[0]}), interpolation=cv2.{flag})",
        "equivalent": flag,
        "image_dtype": str(image.dtype),
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
    }


def pil_equivalent(step: Resize) -> str | None:
    """The PIL filter the step imitates (`Image.resize`'s resample): lanczos and the antialiased modes; None for
    the modes that imitate OpenCV or ONNX Resize."""
    if step.interpolation == "lanczos":
        return "LANCZOS"
    if step.antialias:
        return "BILINEAR" if step.interpolation == "linear" else "BICUBIC"
    return None


def resize_vs_pil(step: Resize, image: np.ndarray) -> dict:
    """How far the step's resize is from PIL's `Image.resize` with the filter it imitates, on one uint8 H×W×C (or
    H×W) image, each channel resized as an 8-bit band (as PIL does an RGB image), then the same crop or letterbox."""
    from PIL import Image

    filter_name = pil_equivalent(step)
    if image.ndim not in (2, 3) or image.dtype != np.uint8 or filter_name is None:
        raise ValueError("one uint8 image, H×W×C or H×W, and a step with a PIL filter (lanczos, antialias)")
    resized_hw = step.resized_hw(*image.shape[:2])
    hwc = image.reshape(*image.shape[:2], -1)
    resample = getattr(Image.Resampling, filter_name)
    theirs = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(hwc[..., c])).resize(resized_hw[::-1], resample))
                       for c in range(hwc.shape[2])], axis=-1)
    theirs = step.place(theirs.astype(np.float64), resized_hw, (0, 1))
    ours = step.reference(hwc[None].astype(np.float32), TensorSpec("float32", "NHWC", "RGB", (1, *hwc.shape)))[0]
    difference = np.abs(ours.astype(np.float64) - theirs)
    return {
        "library_call": f"PIL.Image.fromarray(image).resize(({resized_hw[1]}, {resized_hw[0]}), "
                        f"Image.Resampling.{filter_name})",
        "equivalent": f"PIL {filter_name}",
        "image_dtype": str(image.dtype),
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
    }
