"""Record RapidOCR's own answers (rapidocr-onnxruntime 1.4.4, its TextRecognizer with the PP-OCRv4 recogniser) on
rendered text lines, as `verify --reference` files: one .npz per crop size, the caller's crops under the patched
model's input name (`x`) and the package's per-timestep probabilities, label and score.

Run once, with the package importable (its code needs pyclipper and shapely besides the project's dependencies;
--no-deps keeps a second numpy out of the way):

    pip install --no-deps --target /tmp/deps pyclipper shapely six
    PYTHONPATH=/tmp/deps python tests/data/rapidocr_rec/record.py            # writes the .npz files
    PYTHONPATH=/tmp/deps python tests/data/rapidocr_rec/record.py --measure  # the numbers in the recipe's header

The package is called as an application calls it, one crop at a time (`recognizer([crop])`): its own
resize_norm_img, batching and CTCLabelDecode; a wrapper around its ONNX Runtime session keeps what the session
answered (the [N, T, 6625] probabilities; label and score are their argmax and max per timestep, as CTCLabelDecode
takes them). The decoded text is printed, so a reader sees the model really reads the crops. The lines are drawn
with cv2.putText (dark ink on tinted paper, seeded noise): deterministic, and kept in the .npz files anyway.

Files (probabilities are 1 MB per crop in float32, so few crops):
- crops_48x240.npz: height 48, nothing resampled; probabilities in float32 (compared to float precision);
- crops_35x160.npz, crops_62x300.npz: resampled up (to 48×220: 219.4 rounded up) and down (to 48×233: 232.3
  rounded up) by the package's uint8 cv2.resize; probabilities rounded to float16 (at most 2.5e-4 off, far below
  the tolerance these are compared at);
- crops_48x400.npz: wider than 20:3, which the package widens (width 400, 50 timesteps) and the recipe cannot
  (it caps at 320, 40 timesteps); label and score only.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import rapidocr_onnxruntime
import rapidocr_onnxruntime.ch_ppocr_rec.text_recognize as text_recognize
from rapidocr_onnxruntime.ch_ppocr_rec.text_recognize import TextRecognizer
from rapidocr_onnxruntime.utils import read_yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
RECIPE = ROOT / "recipes" / "rapidocr_rec.yaml"
TEXTS = ("graphsurgery 2026", "TOTAL 19.99", "ONNX Runtime", "text line 42", "quick brown fox", "Hello, world!",
         "abc123xyz", "PaddleOCR v4", "OpenVINO", "mutation sweep", "RECEIPT", "PP-OCRv4 rec")
LONG = ("the quick brown fox jumps over", "RECEIPT TOTAL 19.99 EUR", "graphsurgery splices ONNX", "text line 42 of 100")
#: file name → (H, W, texts, dtype of the recorded probabilities or None)
RECORDINGS = {
    "crops_48x240.npz": (48, 240, TEXTS[:2], np.float32),
    "crops_35x160.npz": (35, 160, TEXTS[2:5], np.float16),
    "crops_62x300.npz": (62, 300, TEXTS[5:8], np.float16),
    "crops_48x400.npz": (48, 400, LONG[:2], None),
}
#: sizes measured (--measure) besides 48×240: two recorded, two more; none scales to a whole width at height 48
RESAMPLED = ((35, 160), (62, 300), (28, 150), (44, 130))


def text_line(text: str, height: int, width: int, seed: int) -> np.ndarray:
    """A BGR text line: dark ink on tinted paper with a little noise, the text about half the height."""
    rng = np.random.default_rng(seed)
    paper = np.array([205, 228, 242][:: 1 if seed % 2 else -1], np.uint8)  # cream or pale blue (BGR)
    image = np.broadcast_to(paper, (height, width, 3)) + rng.integers(0, 6, (height, width, 3), dtype=np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = cv2.getFontScaleFromHeight(font, height // 2, 2)
    (text_width, text_height), _ = cv2.getTextSize(text, font, scale, 2)
    if text_width > width - 8:
        scale *= (width - 8) / text_width
        (text_width, text_height), _ = cv2.getTextSize(text, font, scale, 2)
    ink = (110, 40, 20) if seed % 2 else (30, 30, 120)  # dark blue or dark red (BGR)
    cv2.putText(image, text, (4, (height + text_height) // 2), font, scale, ink, 2, cv2.LINE_AA)
    return image


class Tap:
    """The package's ONNX Runtime session, keeping what it was fed and what it answered."""

    def __init__(self, session):
        self.session, self.fed, self.answered = session, [], []

    def __call__(self, batch):
        outputs = self.session(batch)
        self.fed.append(batch.copy())
        self.answered.append(outputs[0].copy())
        return outputs

    def __getattr__(self, name):
        return getattr(self.session, name)


def recognizer() -> tuple[TextRecognizer, Tap]:
    package = Path(rapidocr_onnxruntime.__file__).parent
    config = read_yaml(str(package / "config.yaml"))["Rec"]
    config["model_path"] = str(package / config["model_path"])
    package_recognizer = TextRecognizer(config)
    tap = package_recognizer.session = Tap(package_recognizer.session)
    return package_recognizer, tap


def read(package_recognizer: TextRecognizer, tap: Tap, crop: np.ndarray) -> tuple[str, np.ndarray]:
    """The package on one crop, as an application calls it: its text and the session's probabilities [T, C]."""
    (text, _), = package_recognizer([crop])[0]
    return text, tap.answered[-1][0]


def record() -> None:
    package_recognizer, tap = recognizer()
    for name, (height, width, texts, dtype) in RECORDINGS.items():
        crops = np.stack([text_line(text, height, width, TEXTS.index(text) if text in TEXTS else index)
                          for index, text in enumerate(texts)])
        read_back = [read(package_recognizer, tap, crop) for crop in crops]
        probabilities = np.stack([p for _, p in read_back])
        arrays = {"x": crops, "label": probabilities.argmax(axis=2)[..., None].astype(np.int64),
                  "score": probabilities.max(axis=2)[..., None].astype(np.float32)}
        if dtype is not None:
            arrays["probabilities"] = probabilities.astype(dtype)
        np.savez_compressed(HERE / name, **arrays)
        print(f"{name}: package input {list(tap.fed[-1].shape)}, reads {[text for text, _ in read_back]}")


def measure() -> None:
    """What the recipe's header says, measured: the patched model (built here from recipes/rapidocr_rec.yaml) on
    ONNX Runtime against the package, on 12 rendered lines per size."""
    import onnxruntime

    from graphsurgery.api import apply

    package_recognizer, tap = recognizer()
    characters = package_recognizer.postprocess_op.character

    def decode(labels: np.ndarray) -> str:  # CTC: repeats merged, blanks (0) dropped
        kept = [label for index, label in enumerate(labels) if label and (index == 0 or label != labels[index - 1])]
        return "".join(characters[label] for label in kept)

    plain = Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        def session(width: int):
            recipe = Path(tmp) / f"rec{width}.yaml"
            recipe.write_text(RECIPE.read_text().replace("size: [48, 320]", f"size: [48, {width}]"))
            patched = apply(recipe, plain, Path(tmp) / f"rec{width}.onnx").output
            return onnxruntime.InferenceSession(str(patched), providers=["CPUExecutionProvider"])

        shipped = session(320)
        for height, width in ((48, 240), *RESAMPLED):
            worst = worst_score = 0.0
            flips, margins, texts, timesteps = 0, [], [], 0
            for seed, text in enumerate(TEXTS):
                crop = text_line(text, height, width, seed)
                read_text, expected = read(package_recognizer, tap, crop)
                probabilities, labels, scores = (a[0] for a in shipped.run(None, {"x": crop[None]}))
                worst = max(worst, float(np.abs(probabilities - expected).max()))
                worst_score = max(worst_score, float(np.abs(scores[:, 0] - expected.max(axis=1)).max()))
                wanted, got = expected.argmax(axis=1), labels[:, 0]
                timesteps += len(wanted)
                for step in np.nonzero(wanted != got)[0]:
                    flips += 1
                    margins.append(float(expected[step, wanted[step]] - expected[step, got[step]]))
                if decode(got) != read_text:
                    texts.append(f"{read_text!r} → {decode(got)!r}")
            print(f"{height}×{width} → 48×{int(np.ceil(48 * width / height))}: |Δ probability| ≤ {worst:.3g}, "
                  f"|Δ score| ≤ {worst_score:.3g}; {flips} of {timesteps} timesteps labelled differently"
                  + (f" (the package's own margin between the two labels ≤ {max(margins):.3f})" if margins else "")
                  + f"; {len(texts)} of {len(TEXTS)} texts read differently {texts or ''}")

        # the same with the package's cv2.resize made exact (float32): what is left is float rounding
        exact = [0.0]

        class FloatResize:
            def __getattr__(self, name):
                return getattr(cv2, name)

            def resize(self, image, size):
                return cv2.resize(image.astype(np.float32), size)

        text_recognize.cv2 = FloatResize()
        for height, width in RESAMPLED:
            for seed, text in enumerate(TEXTS):
                crop = text_line(text, height, width, seed)
                _, expected = read(package_recognizer, tap, crop)
                exact.append(float(np.abs(shipped.run(None, {"x": crop[None]})[0][0] - expected).max()))
        text_recognize.cv2 = cv2
        print(f"the package with cv2.resize on float32 instead of uint8: |Δ probability| ≤ {max(exact):.3g}")
        shares = []
        for height, width in RESAMPLED:
            for seed, text in enumerate(TEXTS):
                crop = text_line(text, height, width, seed)
                size = (int(np.ceil(48 * width / height)), 48)
                exact_values = cv2.resize(crop.astype(np.float32), size)
                shares.append(np.mean(np.abs(cv2.resize(crop, size) - exact_values) > 0.5))
        print(f"cv2.resize on uint8: {100 * np.mean(shares):.1f} % of the resampled values one level from the exact "
              "bilinear")

        # wider than 20:3: the package widens the input to the crop's width, the shipped recipe squeezes it to 320
        for height, width in ((48, 330), (48, 400), (32, 300), (40, 400)):
            widened = session(int(48 * width / height))
            for seed, text in enumerate(LONG):
                crop = text_line(text, height, width, seed)
                read_text, expected = read(package_recognizer, tap, crop)
                squeezed = decode(shipped.run(None, {"x": crop[None]})[1][0, :, 0])
                probabilities, labels, _ = (a[0] for a in widened.run(None, {"x": crop[None]}))
                print(f"{height}×{width}: package {tap.fed[-1].shape[3]} wide, {expected.shape[0]} timesteps, reads "
                      f"{read_text!r}; the recipe at 320 reads {squeezed!r}; at size [48, {tap.fed[-1].shape[3]}] "
                      f"|Δ probability| ≤ {np.abs(probabilities - expected).max():.3g}, reads {decode(labels[:, 0])!r}")


if __name__ == "__main__":
    measure() if sys.argv[1:] == ["--measure"] else record()
