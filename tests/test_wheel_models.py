"""A trained model from a PyPI wheel, checked against its package's own answers.

RapidOCR's text-line orientation classifier (rapidocr-onnxruntime 1.4.4, pinned in requirements-models.txt and
installed without its code's dependencies): a Paddle export with a `-1` batch, free H × W and a Softmax → Identity
ending. `recipes/rapidocr_cls.yaml` puts the package's preprocessing in the graph (height 48, width rounded up and
capped at 192, right padding, /255, −0.5, /0.5, BGR). The references in tests/data/rapidocr_cls were recorded from
the package itself (its TextClassifier.resize_norm_img, its ONNX Runtime session, its ClsPostProcess) with
tests/data/rapidocr_cls/record.py, on crops of the public-domain photos in examples/images.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from graphsurgery.api import apply
from graphsurgery.verification import verify

from modelkit import wheel_model

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "rapidocr_cls.yaml"
REFERENCES = ROOT / "tests" / "data" / "rapidocr_cls"


@pytest.fixture(scope="module")
def classifier() -> Path:
    """The model file inside the installed wheel (the package itself is not imported: its code needs more)."""
    return wheel_model("ch_ppocr_mobile_v2.0_cls_infer.onnx")


@pytest.fixture(scope="module")
def patched(classifier, tmp_path_factory) -> Path:
    return apply(RECIPE, classifier, tmp_path_factory.mktemp("rapidocr") / "cls.onnx").output


def test_the_patched_classifier_equals_its_twins_on_both_backends(classifier, patched):
    report = verify(RECIPE, classifier, patched=patched, random=4)
    assert report, report.failures()
    assert {r.output for pair in report.pairs for r in pair.results} == {"probabilities", "label", "score"}
    assert len(report.sizes) == 4  # whole images of several sizes: the resize is in the graph


def test_it_equals_the_package_where_nothing_is_resampled(classifier, patched):
    """48-pixel-high crops are not resampled: the package's answers are met to float precision, labels exactly."""
    report = verify(RECIPE, classifier, patched=patched, reference=REFERENCES / "crops_48x150.npz")
    assert report, report.failures()


def test_a_recipe_that_pads_differently_from_the_package_is_caught(classifier, tmp_path):
    """The package pads with zeros after normalising (grey, 127.5, before it); a recipe padding black differs."""
    wrong = tmp_path / "black.yaml"
    wrong.write_text(RECIPE.read_text().replace("pad_value: 127.5", "pad_value: 0"))
    patched = apply(wrong, classifier, tmp_path / "black.onnx").output
    report = verify(wrong, classifier, patched=patched, reference=REFERENCES / "crops_48x150.npz",
                    backends=["onnxruntime"])
    assert not report and any("probabilities" in line for line in report.failures())


def test_resampled_crops_are_within_what_opencv_fixed_point_costs(classifier, patched):
    """Crops that are resized: the package's cv2.resize on uint8 uses 11-bit fixed-point weights, so about 10 % of
    its pixel values land one level from the exact bilinear (measured), which moves the probabilities by < 0.01;
    the labels stay."""
    tolerant = verify(RECIPE, classifier, patched=patched, reference=REFERENCES / "crops_40x300.npz",
                      tolerances={"probabilities": (0.01, 0.0), "score": (0.01, 0.0)})
    assert tolerant, tolerant.failures()
    strict = verify(RECIPE, classifier, patched=patched, reference=REFERENCES / "crops_40x300.npz",
                    backends=["onnxruntime"])
    assert not strict and all("label" not in line for line in strict.failures())
