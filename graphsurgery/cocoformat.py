"""COCO person keypoints: the joint names, the skeleton, and one keypoint result as `run` and `eval-coco` write it.

A result's score is the HRNet authors' rescoring (`lib/core/function.py`, `validate`): the mean of the joint
scores above `IN_VIS_THRE`, times the box's score (1 for ground-truth boxes, or boxes that carry no score). A NaN
joint score (a heatmap holding NaN) is written as 0, an infinite one as the largest float, and a joint at a NaN or
infinite place as 0, 0 with score 0: COCOeval matches a NaN keypoint perfectly (its OKS is NaN, and NaN < threshold
is false), and JSON holds no NaN nor Infinity.
"""

from __future__ import annotations

import numpy as np

PERSON = 1  # COCO's person category id
KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)
#: The person category's `skeleton` of person_keypoints_val2017.json, 0-based (the file numbers joints from 1).
SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9), (8, 10),
    (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)
IN_VIS_THRE = 0.2  # the authors' TEST.IN_VIS_THRE: joints scoring above it count in the person's score


def _finite_scores(joint_scores: np.ndarray) -> np.ndarray:
    """Joint scores as finite float64: NaN as 0, ±inf as the largest float of that sign."""
    return np.nan_to_num(np.asarray(joint_scores, np.float64).reshape(-1), nan=0.0)


def person_score(joint_scores: np.ndarray, box_score: float = 1.0) -> float:
    """The authors' rescoring: mean joint score above IN_VIS_THRE (0 if none), times the box score; kept finite, as
    JSON holds no Infinity (an infinite joint score's mean, or a huge box score times a mean above 1, overflowed:
    `run` and `eval-coco` wrote `"score": Infinity`, round 83)."""
    scores = _finite_scores(joint_scores)
    visible = scores[scores > IN_VIS_THRE]
    mean = float(np.sum(visible / visible.size)) if visible.size else 0.0  # divided first: the sum cannot overflow
    return float(np.nan_to_num(mean * box_score))


def keypoint_result(image_id: int, keypoints: np.ndarray, joint_scores: np.ndarray, box_score: float = 1.0,
                    **extra) -> dict:
    """One COCO keypoint result: [x, y, score] per joint (image pixels) and the person's score; `extra` fields
    (file name, box) are added as given."""
    scores = _finite_scores(joint_scores)
    keypoints = np.array(keypoints, np.float64)
    lost = ~np.isfinite(keypoints).all(axis=1)  # a joint at NaN (a refinement dividing by a flat heatmap's zero
    keypoints[lost], scores[lost] = 0.0, 0.0  # curvature): COCOeval matched it perfectly (AP 1.0 for NaN answers),
    triples = np.concatenate([keypoints, scores[:, None]], axis=1)  # and JSON holds no NaN
    return {"image_id": image_id, "category_id": PERSON, "keypoints": [float(v) for v in triples.reshape(-1)],
            "score": person_score(scores, box_score), **extra}
