"""A second trained model from the pinned wheel, checked against its package's own answers.

RapidOCR's PP-OCRv4 text-line recogniser (rapidocr-onnxruntime 1.4.4, pinned in requirements-models.txt and
installed without its code's dependencies; ch_PP-OCRv4_rec_infer.onnx: a Paddle export with a `-1` batch, a free
width and a Softmax ending, [N, T, 6625] probabilities for CTC). `recipes/rapidocr_rec.yaml` puts the package's
preprocessing of one crop in the graph (height 48, width rounded up and capped at 320, grey right padding, /255,
−0.5, /0.5, BGR) and takes the top-1 label and score per timestep, what the package's CTCLabelDecode reads. The
references in tests/data/rapidocr_rec were recorded from the package itself (its TextRecognizer called on one crop
at a time, the probabilities its ONNX Runtime session answered) with tests/data/rapidocr_rec/record.py, on text
lines drawn with cv2.putText, which it reads ('graphsurgery 2026', 'TOTAL 19.99', …).

Where the package and the recipe part, measured (`record.py --measure` prints it, 12 lines per size):
- crops that are resampled: the package's cv2.resize on uint8 uses 11-bit fixed-point weights (12 % of its values
  one level from the exact bilinear here), which moves the probabilities by up to 0.29 (48 crops of four sizes)
  and, at near ties only, the label of a timestep (4 of 1,920, the package's own two labels within 0.07), so a
  read text can differ ('TOTAL 19.99' → 'TOTAL 19.9', 1 of 48). With cv2.resize on float32 the package is within
  2e-5 of the recipe.
- crops wider than 20:3: the package widens its input to the crop (48×400: 50 timesteps; in a batch, every crop to
  the widest) where the recipe caps the width at 320 (40 timesteps) and squeezes the text (13 of 16 such lines
  read differently). No step can widen per image; a copy of the recipe with `size: [48, 400]` is the package's
  path for such a crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from graphsurgery.api import apply
from graphsurgery.verification import verify

from modelkit import wheel_model

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "rapidocr_rec.yaml"
REFERENCES = ROOT / "tests" / "data" / "rapidocr_rec"
#: probabilities and scores of resampled crops: measured at most 0.29 over 48 crops of four sizes, 0.16 on the six
#: recorded here
RESAMPLED = 0.3
#: a label differs only where the package's own probabilities of the two labels are this close: measured at most
#: 0.067 (4 of 1,920 timesteps of those 48 crops; none of the 240 recorded here)
NEAR_TIE = 0.1


@pytest.fixture(scope="module")
def recogniser() -> Path:
    """The model file inside the installed wheel (the package itself is not imported: its code needs more)."""
    return wheel_model("ch_PP-OCRv4_rec_infer.onnx")


@pytest.fixture(scope="module")
def patched(recogniser, tmp_path_factory) -> Path:
    return apply(RECIPE, recogniser, tmp_path_factory.mktemp("rapidocr") / "rec.onnx").output


def recorded(name: str) -> dict[str, np.ndarray]:
    with np.load(REFERENCES / name) as data:
        return {key: data[key] for key in data.files}


def test_the_patched_recogniser_equals_its_twins_on_both_backends(recogniser, patched):
    report = verify(RECIPE, recogniser, patched=patched, random=3)
    assert report, report.failures()
    assert {r.output for pair in report.pairs for r in pair.results} == {"probabilities", "label", "score"}
    assert len(report.sizes) == 3  # whole images of several sizes: the resize is in the graph


def test_it_equals_the_package_where_nothing_is_resampled(recogniser, patched):
    """48-pixel-high crops up to 320 wide are not resampled: the package's per-timestep probabilities and scores
    are met to float precision on both backends, its labels exactly — and they are text, not 40 blanks."""
    labels = recorded("crops_48x240.npz")["label"]
    assert labels.shape == (2, 40, 1) and (labels > 0).sum() >= 20
    report = verify(RECIPE, recogniser, patched=patched, reference=REFERENCES / "crops_48x240.npz")
    assert report, report.failures()
    assert {r.output for pair in report.pairs for r in pair.results} == {"probabilities", "label", "score"}


@pytest.mark.parametrize("mistakes, reference, tolerance", [
    # the package pads zeros after normalising: grey before it, not black
    ({"pad_value: 127.5": "pad_value: 0"}, "crops_48x240.npz", None),
    # most models want RGB; the package feeds cv2's BGR as it is
    ({"color: BGR}\n  steps:": "color: RGB}\n  steps:",
      "- layout: {to: NCHW}": "- layout: {to: NCHW}\n    - reverse_channels: {}"}, "crops_48x240.npz", None),
    # the resize step's default rounds the width down; the package rounds it up (35×160: 220 wide, not 219), which
    # only a resampled crop shows, and more than the resampling tolerance
    ({"side_rounding: ceil": "side_rounding: floor"}, "crops_35x160.npz", RESAMPLED),
], ids=["black padding", "RGB", "width rounded down"])
def test_a_recipe_that_preprocesses_differently_from_the_package_is_caught(recogniser, tmp_path, mistakes, reference,
                                                                           tolerance):
    text = RECIPE.read_text()
    for right, wrong in mistakes.items():
        assert text.count(right) == 1
        text = text.replace(right, wrong)
    recipe = tmp_path / "wrong.yaml"
    recipe.write_text(text)
    patched = apply(recipe, recogniser, tmp_path / "wrong.onnx").output
    tolerances = {"probabilities": (tolerance, 0.0), "score": (tolerance, 0.0)} if tolerance else None
    report = verify(recipe, recogniser, patched=patched, reference=REFERENCES / reference, backends=["onnxruntime"],
                    tolerances=tolerances)
    assert not report and any("probabilities" in line for line in report.failures())


@pytest.mark.parametrize("name", ["crops_35x160.npz", "crops_62x300.npz"])
def test_resampled_crops_are_within_what_opencv_fixed_point_costs(recogniser, patched, name):
    """Crops scaled up (35 → 48) and down (62 → 48): probabilities and scores within RESAMPLED of the package's (on
    both backends); a label may differ only at a near tie (the package's own probabilities of the two labels within
    NEAR_TIE), at a few timesteps. The difference is real: not float rounding."""
    reference = recorded(name)
    tolerant = verify(RECIPE, recogniser, patched=patched, reference=REFERENCES / name,
                      tolerances={"probabilities": (RESAMPLED, 0.0), "score": (RESAMPLED, 0.0)})
    verdicts = {(pair.name, r.output): bool(r) for pair in tolerant.pairs for r in pair.results}
    assert all(ok for (_, output), ok in verdicts.items() if output != "label"), tolerant.failures()

    session = onnxruntime.InferenceSession(str(patched), providers=["CPUExecutionProvider"])
    probabilities, labels, _ = session.run(None, {"x": reference["x"]})
    expected = reference["probabilities"].astype(np.float32)  # recorded in float16: 2.5e-4 at most
    assert np.abs(probabilities - expected).max() > 0.01  # resampled: cv2's fixed point shows
    differ = np.argwhere(labels != reference["label"])
    assert len(differ) <= 2, differ
    for n, t, _ in differ:
        ours, theirs = labels[n, t, 0], reference["label"][n, t, 0]
        assert expected[n, t, theirs] - expected[n, t, ours] < NEAR_TIE, (n, t)
    ours_on_onnxruntime = [ok for (pair, output), ok in verdicts.items()
                           if output == "label" and pair.startswith("onnxruntime: your pipeline")]
    assert ours_on_onnxruntime == [len(differ) == 0]  # verify sees the same (it counts every mismatch as real)


def test_crops_wider_than_the_recipe_caps_are_the_packages_only_with_a_widened_copy(recogniser, patched, tmp_path):
    """The package reads a 48×400 crop 400 wide (50 timesteps); the recipe caps it at 320 (40), which verify
    reports as a shape mismatch; the same recipe with `size: [48, 400]` meets the package's labels exactly and
    its scores to float precision."""
    reference = REFERENCES / "crops_48x400.npz"
    capped = verify(RECIPE, recogniser, patched=patched, reference=reference, backends=["onnxruntime"])
    assert not capped and all("differs from the reference [2, 50, 1]" in line for line in capped.failures())
    widened = tmp_path / "rec400.yaml"
    widened.write_text(RECIPE.read_text().replace("size: [48, 320]", "size: [48, 400]"))
    report = verify(widened, recogniser, reference=reference, backends=["onnxruntime"])
    assert report, report.failures()
