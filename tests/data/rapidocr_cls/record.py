"""Record RapidOCR's own answers (rapidocr-onnxruntime 1.4.4, its TextClassifier) on text-line-shaped crops of the
public-domain photos in examples/images, as `verify --reference` files: one .npz per crop size, the caller's crops
under the patched model's input name (`x`) and the package's probabilities, label and score.

Run once, with the package importable (it needs pyclipper and shapely besides the project's dependencies):

    pip install --target /tmp/deps pyclipper shapely six
    PYTHONPATH=/tmp/deps python tests/data/rapidocr_cls/record.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import rapidocr_onnxruntime
from rapidocr_onnxruntime.ch_ppocr_cls.text_cls import TextClassifier
from rapidocr_onnxruntime.utils import read_yaml

HERE = Path(__file__).resolve().parent
IMAGES = HERE.parents[2] / "examples" / "images"
#: (H, W) of the crops: 30×100 resamples to a width of 160 (the package's float ceil of 48 · (100 / 30) is 160.0 in
#: float64, as exact arithmetic gives); 40×300 is capped at 192 either way; 48×150 is exact in floats too
SIZES = ((30, 100), (40, 300), (48, 150))


def main() -> None:
    package = Path(rapidocr_onnxruntime.__file__).parent
    config = read_yaml(str(package / "config.yaml"))["Cls"]
    config["model_path"] = str(package / config["model_path"])
    classifier = TextClassifier(config)
    photos = [cv2.imread(str(IMAGES / name)) for name in ("astronaut.jpg", "cameraman.jpg")]
    for h, w in SIZES:
        crops = np.stack([photo[top:top + h, left:left + w] for photo in photos for top, left in ((40, 30), (200, 60))])
        # the package's own path: its resize_norm_img per crop, its ONNX Runtime session on the batch, its
        # ClsPostProcess (argmax, then the probability of that label)
        batch = np.concatenate([classifier.resize_norm_img(crop)[None] for crop in crops]).astype(np.float32)
        probabilities = classifier.infer(batch)[0]
        labels = probabilities.argmax(axis=1)
        scores = probabilities[np.arange(len(labels)), labels]
        np.savez(HERE / f"crops_{h}x{w}.npz", x=crops, probabilities=probabilities.astype(np.float32),
                 label=labels.astype(np.int64)[:, None], score=scores.astype(np.float32)[:, None])
        print(f"{h}×{w}: labels {labels.tolist()}, scores {np.round(scores, 4).tolist()}")


if __name__ == "__main__":
    main()
