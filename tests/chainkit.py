"""The patched detector and top-down pose model that `chain` joins (conftest's `chain_patched` makes them once)."""

from __future__ import annotations

from pathlib import Path

from graphsurgery.api import apply

ROOT = Path(__file__).resolve().parent.parent


def chain_models(folder: Path) -> dict[str, Path]:
    """The zoo's tiny YOLOv8 patched with the detector recipe and a small pose model patched with the top-down
    recipe (opset 17), and the plain pose model, in `folder`."""
    from modelkit import pose_model, zoo_model

    detector = zoo_model(folder / "detector.onnx", "yolov8-tiny", opset=17)
    pose = pose_model(folder / "pose.onnx", opset=17)
    return {"detector": apply(ROOT / "recipes" / "yolov8_detector.yaml", detector, folder / "detector.patched.onnx"
                              ).output,
            "pose": apply(ROOT / "recipes" / "hrnet_coco_topdown.yaml", pose, folder / "pose.patched.onnx").output,
            "plain_pose": pose}
