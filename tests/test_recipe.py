"""Recipe loading: valid recipes become frozen objects; every mistake is one line naming file, line and path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from graphsurgery.errors import RecipeError
from graphsurgery.recipe import load_recipe, parse_recipe, recipe_json_schema

RECIPES = Path(__file__).parent.parent / "recipes"

MINIMAL_INPUT = """\
version: 1
name: t
input:
  tensor: {dtype: uint8, layout: NHWC, color: BGR}
  steps:
    - cast: {}
    - layout: {to: NCHW}
    - reverse_channels: {}
    - scale: {divide: 255}
    - normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
"""


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    recipe = load_recipe(path)
    assert recipe.sha256 and len(recipe.sha256) == 64
    assert recipe.source == str(path)


def test_recipe_is_frozen():
    recipe = parse_recipe(MINIMAL_INPUT)
    with pytest.raises(ValidationError):
        recipe.name = "other"
    with pytest.raises(ValidationError):
        recipe.input.steps[4].mean = (0, 0, 0)
    assert [s.step_name for s in recipe.input.steps] == ["cast", "layout", "reverse_channels", "scale", "normalize"]


def _error(text: str) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, source="r.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("r.yaml: ")
    return message


def test_unknown_step_suggests_closest():
    message = _error(MINIMAL_INPUT.replace("normalize:", "normalise:"))
    assert "line 10" in message and "input.steps[4]" in message and "'normalize'" in message


def test_step_on_wrong_side_says_where_it_belongs():
    message = _error(MINIMAL_INPUT.replace("- cast: {}", "- topk: {}"))
    assert "output step" in message and "output.steps" in message


def test_parameter_error_has_line_and_path():
    message = _error(MINIMAL_INPUT.replace("std: [0.229, 0.224, 0.225]", "std: [0.229, 0.224]"))
    assert "line 10" in message and "input.steps[4].normalize" in message and "3 values but std has 2" in message


def test_zero_std_is_refused():
    assert "zero" in _error(MINIMAL_INPUT.replace("0.224,", "0.0,"))


def test_wrong_type_names_the_field():
    message = _error(MINIMAL_INPUT.replace("divide: 255", "divide: lots"))
    assert "input.steps[3].scale.divide" in message and "line 9" in message


def test_unknown_top_level_key_lists_allowed():
    message = _error(MINIMAL_INPUT + "outptu: {}\n")
    assert "unknown key 'outptu'" in message and "'output'" in message and "line 11" in message


def test_invalid_layout():
    message = _error(MINIMAL_INPUT.replace("layout: NHWC", "layout: HWC"))
    assert "input.tensor.layout" in message and "line 4" in message


def test_unsupported_version():
    assert "version" in _error(MINIMAL_INPUT.replace("version: 1", "version: 2"))


def test_yaml_syntax_error_has_line_and_column():
    message = _error("version: 1\nname: [unclosed\n")
    assert "line" in message and "column" in message


def test_python_tags_are_refused():
    message = _error("version: 1\nname: !!python/object/apply:os.system ['echo hacked']\n")
    assert "tag not allowed" in message


def test_alias_bomb_is_bounded():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    assert "aliases" in _error(bomb)


@pytest.mark.parametrize("text, needle", [("", "empty"), ("- a\n- b\n", "mapping"), ("version: 1\nname: t\n", "needs")])
def test_degenerate_documents(text, needle):
    assert needle in _error(text)


def test_not_utf8():
    with pytest.raises(RecipeError, match="UTF-8"):
        parse_recipe(b"version: 1\nname: \xff\xfe\n", source="r.yaml")


def test_duplicate_keys_are_refused():
    assert "duplicate key" in _error("version: 1\nname: a\nname: b\n")


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


def test_schema_lists_every_step_with_parameters():
    schema = recipe_json_schema()
    json.dumps(schema)
    input_variants = schema["$defs"]["InputStep"]["oneOf"]
    names = {next(iter(v["properties"])) for v in input_variants}
    assert {"cast", "layout", "reverse_channels", "scale", "normalize"} <= names
    normalize = next(v for v in input_variants if "normalize" in v["properties"])["properties"]["normalize"]
    assert set(normalize["required"]) == {"mean", "std"}


def test_version_true_is_not_version_one():
    assert "the number 1, not true" in _error(MINIMAL_INPUT.replace("version: 1", "version: true"))


def test_a_parameter_given_to_a_step_without_parameters_says_so():
    with pytest.raises(RecipeError) as info:
        parse_recipe("version: 1\nname: x\ninput:\n  steps:\n    - reverse_channels: {axis: 1}\n")
    assert "unknown key 'axis'" in str(info.value) and "takes no parameters" in info.value.fix
    assert "allowed keys" not in info.value.fix


def test_a_recipe_object_changed_after_validation_is_validated_again(tiny_pose_models, tmp_path):
    """model_copy(update=…), model_construct and the mutable `names` dict made recipes apply wrote into models: a
    std of 0, a version 7, an output name with escape sequences, steps that are numbers (round 34)."""
    from graphsurgery.api import apply
    from graphsurgery.errors import GraphsurgeryError
    from graphsurgery.recipe import Recipe

    recipe = load_recipe(RECIPES / "hrnet_coco_pose.yaml")
    steps = list(recipe.input.steps)
    steps[-1] = steps[-1].model_copy(update={"std": (0.0, 0.0, 0.0)})
    no_std = recipe.model_copy(update={"input": recipe.input.model_copy(update={"steps": tuple(steps)})})
    renamed = load_recipe(RECIPES / "hrnet_coco_pose.yaml")
    renamed.output.names["keypoints"] = "kp\x1b]0;title\x07"
    numbers = recipe.model_copy(update={"input": recipe.input.model_copy(update={"steps": (1, 2)})})
    for changed, says in ((no_std, "std must not contain zero"), (renamed, "output.names.keypoints"),
                          (Recipe.model_construct(**{**dict(recipe), "version": 7}), "version"),
                          (numbers, "not int 1")):
        with pytest.raises(GraphsurgeryError, match="no longer valid|a recipe step is") as caught:
            apply(changed, tiny_pose_models[(17, False)], tmp_path / "out.onnx")
        assert says in str(caught.value) and not (tmp_path / "out.onnx").exists()
    kept = apply(recipe, tiny_pose_models[(17, False)], tmp_path / "kept.onnx")  # an untouched one still applies
    assert kept.output.exists()


def test_an_integer_too_long_to_read_is_refused_at_its_line():
    """An integer of 5,000 digits (past Python's 4,300-digit bound on int(str)) was refused without a line."""
    text = (RECIPES / "hrnet_coco_pose.yaml").read_text()
    line = next(number for number, content in enumerate(text.splitlines(), 1) if "std:" in content)
    with pytest.raises(RecipeError, match=f"line {line}: a value of 5,000 characters cannot be read as a number"):
        parse_recipe(text.replace("0.225]", "9" * 5000 + "]"), "big.yaml")


@pytest.mark.parametrize("written", ["'true'", "'yes'", "1", "'false'"])
def test_keep_original_is_a_yaml_boolean_not_a_word_or_number(written):
    """Round 44's leftover: the sections' own fields were validated laxly ("yes" and 1 were true), step parameters
    strictly; a recipe is strict throughout."""
    text = "version: 1\nname: x\noutput:\n  keep_original: KEEP\n  steps:\n    - heatmap_argmax: {}\n"
    assert "keep_original" in _error(text.replace("KEEP", written))
    assert parse_recipe(text.replace("KEEP", "false")).output.keep_original is False


def test_version_one_point_zero_is_not_version_one():
    assert "the number 1, not 1.0" in _error(MINIMAL_INPUT.replace("version: 1", "version: 1.0"))


@pytest.mark.parametrize("dim, needle", [("'256'", "a dim name is not a number"), ("256.0", "valid integer")])
def test_a_fixed_dim_is_an_integer_without_quotes(dim, needle):
    """A quoted "256" was a dynamic dim named 256 in the patched input, a 256.0 taken as 256."""
    text = MINIMAL_INPUT.replace("color: BGR}", f"color: BGR, shape: [1, {dim}, 192, 3]}}")
    assert needle in _error(text)
    assert parse_recipe(text.replace(dim, "256")).input.tensor.shape == (1, 256, 192, 3)
