"""How far a geometry step is from the library call it imitates, for verify's informational table: `resize` against
`cv2.resize` with the closest flag, or PIL's `Image.resize` for the modes that imitate PIL (lanczos, antialias).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from graphsurgery.errors import ArgumentError, GraphsurgeryError
from graphsurgery.images import opencv
from graphsurgery.steps.base import StepError, TensorSpec

if TYPE_CHECKING:
    from graphsurgery.steps.resize import Resize

#: the dtypes `cv2.resize` takes in every interpolation (int8, int32 and float16 failed its assertion `func != 0`)
OPENCV_DTYPES = ("uint8", "uint16", "int16", "float32", "float64")


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

    resized_hw = _checked(step, image, OPENCV_DTYPES)
    flag = opencv_equivalent(step, image.shape[:2])
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

    resized_hw = _checked(step, image, ("uint8",))
    filter_name = pil_equivalent(step)
    if filter_name is None:
        raise GraphsurgeryError(f"the step imitates no PIL filter (interpolation {step.interpolation!r}, antialias "
                                f"{step.antialias})", fix="give a step with `interpolation: lanczos` or `antialias: "
                                "true`, or compare with resize_vs_opencv")
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


def _checked(step: Resize, image: np.ndarray, dtypes: Sequence[str]) -> tuple[int, int]:
    """The step's resized (height, width) for `image`, after checking what the README's calls are given: a step that
    is no Resize, an image that is no array, empty, of more than 4 channels or of a dtype the library does not take
    ended deep inside (AttributeError: 'NoneType' object has no attribute 'ndim', OpenCV's "(-215:Assertion failed)
    !ssize.empty()"; round 60)."""
    from graphsurgery.steps.resize import Resize

    if not isinstance(step, Resize):
        raise ArgumentError(f"step must be a graphsurgery.steps.resize.Resize, not {type(step).__name__}")
    if not isinstance(image, np.ndarray):
        raise ArgumentError(f"image must be a numpy array, H×W×C or H×W, not {type(image).__name__}")
    channels = image.shape[2] if image.ndim == 3 else 1
    if image.ndim not in (2, 3) or 0 in image.shape or channels > 4 or str(image.dtype) not in dtypes:
        raise GraphsurgeryError(f"one image, H×W×C (C up to 4) or H×W, of {' or '.join(dtypes)}, not an array of "
                                f"shape {image.shape} and dtype {image.dtype}", fix="give one image as cv2.imread "
                                "reads it (or as float32)")
    try:
        return step.resized_hw(*image.shape[:2])
    except StepError as exc:  # a step made without `size`, not bound to a model
        raise GraphsurgeryError(str(exc), fix=exc.fix or "give the step its `size`") from None
