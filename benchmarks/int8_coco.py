"""What int8 costs where AP means something: the synthetic COCO joint detector, f32 IR against int8 IRs, scored by
COCO keypoint AP (pycocotools) on a synthetic set with real keypoints.

    python benchmarks/int8_coco.py --images 24 --json int8_coco.json

`examples/synthetic_coco.py` draws stick figures whose joints have their own colours and builds a one-layer HRNet
stand-in that finds them, so the AP is real (≈ 0.98 at f32) and a wrong joint costs it. The detector is patched
with recipes/hrnet_coco_pose.yaml, converted to an f32 IR and to int8 IRs calibrated on the set's own person crops
(`convert --int8 --calibration DIR --boxes ANNOTATIONS`): NNCF's default quantization, and accuracy-controlled with
`--max-drop` (the tool's metric: joints within one heatmap cell of f32), and with `--max-drop --annotations
ANNOTATIONS` (COCO keypoint AP as the metric, calibrated on eval-coco's crops of the annotated people). Each IR is
scored with `eval-coco --patched IR --backends openvino` against the same ground truth. The speed-up is `convert`'s
own measurement: one layer is no network, so it says little about a real model's; HRNet-W32's is in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphsurgery.api import apply  # noqa: E402
from graphsurgery.coco import STAT_NAMES, evaluate_coco  # noqa: E402
from graphsurgery.irconvert import convert, convert_ir  # noqa: E402
from graphsurgery.machine import machine  # noqa: E402

from examples.synthetic_coco import joint_detector, write_coco_set  # noqa: E402

RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24, help="synthetic COCO images (1–3 people each)")
    parser.add_argument("--max-drop", type=float, default=0.02)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        annotations = write_coco_set(folder / "images", images=args.images, seed=0)
        plain = joint_detector(folder / "detector.onnx", opset=17)
        patched = apply(RECIPE, plain, folder / "detector.patched.onnx").output
        rows = [{"ir": "f32", **_scored(RECIPE, plain, annotations, folder, convert(patched, folder / "f32.xml").xml)}]
        for label, max_drop, ap_on in (("int8 default", None, None),
                                       (f"int8 --max-drop {args.max_drop:g}", args.max_drop, None),
                                       (f"int8 --max-drop {args.max_drop:g} (AP)", args.max_drop, annotations)):
            # the AP metric takes eval-coco's ground-truth boxes from the annotations; --boxes would be detections
            result = convert_ir(patched, folder / f"{len(rows)}.xml", int8=True, calibration=folder / "images",
                                boxes=None if ap_on else annotations, max_drop=max_drop, annotations=ap_on)
            facts = result.int8
            rows.append({"ir": label, **_scored(RECIPE, plain, annotations, folder, result.xml),
                         "speedup": facts.speedup, "within_one_cell": facts.vs_f32["keypoints"]["within_one_cell"],
                         "quantized_activations": facts.quantized_activations, "drop_met": facts.drop_met,
                         "reverted_to_float": list(facts.reverted), "coco_ap": result.to_dict()["coco_ap"],
                         "calibration": facts.calibration})
    print(f"{machine()['cpu']}; {args.images} synthetic COCO images")
    print(f"{'IR':<27} {'AP':>7} {'AP50':>7} {'AR':>7} {'within one cell of f32':>24} {'int8 speed-up':>14} "
          f"{'drop met, reverted':>19}")
    for row in rows:
        within = f"{row['within_one_cell']:.1%}" if "within_one_cell" in row else "—"
        speed = f"{row['speedup']:.2f}×" if "speedup" in row else "—"
        control = f"{row['drop_met']}, {len(row['reverted_to_float'])}" if row.get("drop_met") is not None else "—"
        print(f"{row['ir']:<27} {row['AP']:>7.4f} {row['AP .50']:>7.4f} {row['AR']:>7.4f} {within:>24} {speed:>14} "
              f"{control:>19}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "images": args.images, "rows": rows}, indent=2))
    return 0


def _scored(recipe: Path, plain: Path, annotations: Path, folder: Path, ir: Path) -> dict[str, float]:
    """COCO keypoint AP/AR of the IR on OpenVINO (`eval-coco --patched IR --backends openvino`)."""
    report = evaluate_coco(recipe, plain, annotations, folder / "images", patched=ir, backends=("openvino",))
    patched = report.pipelines[-1]
    return dict(zip(STAT_NAMES, patched.stats))


if __name__ == "__main__":
    sys.exit(main())
