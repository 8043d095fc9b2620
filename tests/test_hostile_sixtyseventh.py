"""Round 67: the hostile review of the day's changes (input files spelled as folders, steps' one-line parameter
errors, the SIGKILL line, eval-coco's proof of the people that differ, the append-only $TMPDIR, round 63's and
64's fixes)."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
from click.testing import CliRunner

import graphsurgery.steps  # noqa: F401  (fills STEPS)
from graphsurgery.api import apply
from graphsurgery.cli import cli
from graphsurgery.errors import GraphsurgeryError, RecipeError, StepParameterError
from graphsurgery.recipe import parse_recipe
from graphsurgery.registry import STEPS
from graphsurgery.safeio import temporary_folder
from test_eval_coco import shift_away_from
from test_hostile_fiftyfifth import append_only

from examples.synthetic_coco import joint_detector, write_coco_set
from paritykit import IMAGE_RECIPE

#: a recipe of one step, its parameters in JSON (which is YAML): the recipe's strict reading of them
RECIPE_WITH = """version: 1
name: one-step
{side}:
  steps:
    - {step}: {params}
"""


def test_an_append_only_system_temporary_folder_is_refused_with_tmpdir_unset(tmp_path, monkeypatch):
    """Was (round 67): only $TMPDIR, $TEMP and $TMP were looked at; with them unset, tempfile probed /tmp (then
    /var/tmp, /usr/tmp, the current folder) the same way, and an append-only one kept its 4-byte probe file while
    the command went on in the next without a word."""
    fallback = tmp_path / "next"
    fallback.mkdir()
    with append_only(tmp_path / "system-tmp") as folder:
        for name in ("TMPDIR", "TEMP", "TMP"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setattr(tempfile, "tempdir", None)  # as in a fresh process: not chosen yet
        monkeypatch.setattr(tempfile, "_candidate_tempdir_list", lambda: [str(folder), str(fallback)])
        with pytest.raises(GraphsurgeryError, match=r"append-only \(chattr \+a\)"):
            with temporary_folder("test"):
                pass
        assert not list(folder.iterdir())
        assert not list(fallback.iterdir())


@pytest.mark.parametrize(("name", "params"), [
    ("scale", {"divide": True}),
    ("scale", {"divide": "255"}),
    ("resize", {"size": ["256", 192]}),
    ("resize", {"size": (256.0, 192.0)}),
    ("resize", {"antialias": 1}),
    ("nms", {"per_class": 0}),
    ("softmax", {"skip_if_present": 1}),
])
def test_a_step_built_in_python_refuses_what_its_recipe_refuses(name, params):
    """Was (round 67): a step built in Python was validated in pydantic's lax mode, where its recipe is strict:
    `Scale(divide=True)` built divide=1.0, `Resize(size=["256", 192])` (256, 192), `Resize(antialias=1)` True, all
    of which a recipe refuses (`true`, "256", 1 for a flag), as the one-line refusal (StepParameterError) claims."""
    cls = STEPS[name]
    with pytest.raises(StepParameterError) as caught:
        cls(**params)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"{cls.__name__}(")
    with pytest.raises(RecipeError, match=rf"\.{name}\.{next(iter(params))}"):  # the recipe's own refusal
        parse_recipe(RECIPE_WITH.format(side="input" if cls.side == "input" else "output", step=name,
                                        params=json.dumps(params)))


@pytest.mark.parametrize(("name", "params"), [
    ("resize", {"size": (256, 192)}),
    ("resize", {"size": np.array([256, 192])}),
    ("scale", {"divide": np.float32(255)}),
    ("scale", {"divide": 255}),
    ("normalize", {"mean": (0.5, 0.5, 0.5), "std": [1, 1, 1]}),
    ("nms", {"per_class": np.bool_(True)}),
])
def test_a_step_built_in_python_still_takes_tuples_numpy_values_and_ints_for_floats(name, params):
    """What Python callers pass and a recipe's JSON form holds as well (a list, a number) is still taken."""
    step = STEPS[name](**params)
    assert step == type(step).model_validate_json(json.dumps(params, default=lambda value: value.tolist()),
                                                  strict=True)


def test_parity_does_not_claim_to_have_proven_differing_people_it_could_not_crop(tmp_path, monkeypatch):
    """Was (round 67): the PARITY line said "first the N whose results differ most" with N = min(differing, proven),
    also where those people were not proven at all: a box 1 px wide or less is scored but not proven (`_provable`),
    and the proof took other people in their stead."""
    from graphsurgery import coco
    from graphsurgery.crops import box_to_center_scale

    annotations = write_coco_set(tmp_path / "images", images=3, seed=0)
    plain = joint_detector(tmp_path / "detector.onnx", opset=17)
    _, _, people = coco.annotated_people(annotations, tmp_path / "images")
    right = apply(IMAGE_RECIPE, plain, tmp_path / "right.onnx").output
    near = shift_away_from(right, tmp_path / "near.onnx", box_to_center_scale(people[0].box)[0],
                           (1.5 * coco.DIFFERING, 0.0))  # every person differs but the first, within verify's bounds
    monkeypatch.setattr(coco, "_provable", lambda people, annotations: people[:1])  # the others' boxes too thin
    result = CliRunner().invoke(cli, ["eval-coco", str(IMAGE_RECIPE), str(plain), "--ann", str(annotations),
                                      "--images", str(tmp_path / "images"), "--patched", str(near), "--backends",
                                      "onnxruntime", "--json", str(tmp_path / "coco.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "coco.json").read_text())
    assert data["differing_people"] == len(people) - 1 and data["proven_people"] == 1
    said = " ".join(result.output.split())
    assert "first the" not in said
    assert f"the {len(people) - 1} whose results differ from the unpatched pipeline's (by more than 0.001) are " \
           "not among them" in said
