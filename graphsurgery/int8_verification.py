"""`verify --precision int8`: the int8 IR of the patched model, and the report that judges it.

An int8 network answers differently from the f32 one by design, so f32 parity cannot be its verdict. What the
patch must guarantee is that the spliced decode stays exact on whatever the int8 network outputs: the deciding
comparison is the int8 model's decoded outputs against the numpy twins' decode of its own network output, and its
agreement with the f32 pipeline is measured, not judged. Imported by `verify` only when int8 is asked for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from graphsurgery.api import apply
from graphsurgery.compare import HeatmapGrid, missing_output
from graphsurgery.errors import GraphsurgeryError, printable
from graphsurgery.irconvert import CONVERTED_KEY, PROVENANCE_KEY
from graphsurgery.model import ModelFacts, provenance_entries
from graphsurgery.modelio import LoadedModel, load_model, network_sha256
from graphsurgery.quantize import (
    VERIFY_CALIBRATION,
    NoStaticSize,
    calibration_set,
    convert_int8,
    ir_info,
    is_int8,
    sound_joints,
    within_one_cell,
)
from graphsurgery.recipe import Recipe
from graphsurgery.safeio import temporary_folder
from graphsurgery.samples import Samples, chunks
from graphsurgery.stability import Wobbles
from graphsurgery.steps.base import Comparison
from graphsurgery.twins import decoded_output, output_extras, unpatched_outputs
from graphsurgery.verification import PairReport, compare, concat


def int8_backends(backends: list[str], patched: str | Path | None, recipe: Recipe, plain: LoadedModel,
                  upgrade_opset: bool = False) -> list[str]:
    if "openvino" not in backends:
        raise GraphsurgeryError("int8 is an OpenVINO IR", fix="verify it on openvino (--backends openvino)")
    if patched is not None:
        if not is_int8(Path(patched)):
            raise GraphsurgeryError("--precision int8 verifies an int8 IR and this is not one", path=patched,
                                    fix="make it with `graphsurgery convert PATCHED.onnx --int8 --calibration DIR`, "
                                        "or give no --patched (verify then quantizes on random samples)")
        check_origin(Path(patched), recipe, plain)
        check_converted_from(Path(patched), recipe, plain, upgrade_opset)
    return ["openvino"]


def _again(recipe: Recipe, plain: LoadedModel) -> str:
    """The fix for an int8 IR verify cannot trace to PLAIN and RECIPE: make it again from them."""
    return (f"patch and convert PLAIN again (`graphsurgery apply {printable(recipe.source)} {printable(plain.path)}"
            f" -o P.onnx`, then `graphsurgery convert P.onnx --int8 …`), or give no --patched (verify then "
            "quantizes)")


def check_origin(patched: Path, recipe: Recipe, plain: LoadedModel) -> None:
    """Refuse an int8 IR that was not patched from PLAIN with RECIPE. Its verdict checks the decode on its own
    network output only, and its agreement with f32 is measured, not judged: an int8 IR of another network, or
    of this one patched with other input steps (another std), PASSed. `apply` records the plain model's SHA-256
    and the recipe in the patched model's provenance, and `convert` carries it into the IR's rt_info."""
    again = _again(recipe, plain)
    recorded = ir_info(patched, PROVENANCE_KEY)[0]
    entries = provenance_entries(recorded) if recorded is not None else []
    if not entries:
        raise GraphsurgeryError("this int8 IR records no provenance (it was not converted by `graphsurgery convert "
                                "--int8` from a model `graphsurgery apply` patched), so nothing ties it to PLAIN and "
                                "RECIPE: only its decode could be checked", path=patched, fix=again)
    last = entries[-1]
    if not recipe.made(last):
        raise GraphsurgeryError(f"this int8 IR was patched with recipe {printable(str(last.get('recipe')))!r}, not "
                                f"with {printable(recipe.source)}", path=patched,
                                fix=f"give the recipe it was patched with, or {again}")
    if "model_sha256" not in last:
        raise GraphsurgeryError("this int8 IR records no SHA-256 of the model it was patched from (an IR patched "
                                "before graphsurgery recorded it)", path=patched, fix=again)
    if last["model_sha256"] != network_sha256(plain):
        raise GraphsurgeryError(f"this int8 IR was patched from another model than {printable(plain.path)} (the "
                                "network's SHA-256 differs)", path=patched,
                                fix=f"give the plain model it was patched from, or {again}")


def check_converted_from(patched: Path, recipe: Recipe, plain: LoadedModel, upgrade_opset: bool) -> None:
    """Refuse an int8 IR converted from another model than the one `apply` makes of PLAIN with RECIPE. Its input
    steps cannot be compared in the IR (OpenVINO folds them: `reverse_channels` went into the first convolution's
    weights), and its own decode does not see them: an IR converted from a patched model whose network input was
    negated after apply PASSed, with 0.0 % of its keypoints within one cell of f32's (round 51), its provenance
    intact. `convert` records the SHA-256 of the network it converted; apply is deterministic, so the recipe applied
    to PLAIN here must give that network again."""
    recorded = ir_info(patched, CONVERTED_KEY)[0]
    if recorded is None:
        raise GraphsurgeryError("this int8 IR records no SHA-256 of the patched model it was converted from "
                                "(converted before graphsurgery recorded it)", path=patched,
                                fix=_again(recipe, plain))
    with temporary_folder("int8-origin") as tmp:
        made = network_sha256(load_model(apply(recipe, plain.path, Path(tmp) / "patched.onnx",
                                               upgrade_opset=upgrade_opset).output))
    if recorded != made:
        raise GraphsurgeryError(f"this int8 IR was converted from another patched model than the one `apply` makes "
                                f"of {printable(plain.path)} with {printable(recipe.source)} (changed after apply, "
                                "or patched by another graphsurgery version or with --upgrade-opset), so its "
                                "input steps are not the recipe's", path=patched,
                                fix=f"{_again(recipe, plain)}; add --upgrade-opset if the model was patched with it")


def keeping_outputs(recipe: Recipe) -> Recipe:
    """`recipe` keeping the model's outputs (keep_original), for the patched model verify quantizes itself: the int8
    model's own decode is checked on its own network output, and a recipe that drops it (SimCC's, DARK's, UDP's, the
    top-down graph's) left nothing to check: each such `verify --precision int8` FAILed, "keeps no network output"."""
    if recipe.output is None or recipe.output.keep_original:
        return recipe
    return recipe.model_copy(update={"output": recipe.output.model_copy(update={"keep_original": True})})


def build_int8(patched_onnx: Path, seed: int) -> Path:
    """The int8 IR of the patched model, calibrated on `VERIFY_CALIBRATION` random caller samples drawn with
    another seed than the compared ones."""
    try:
        calibration = calibration_set(patched_onnx, random=VERIFY_CALIBRATION, seed=seed + 1)
    except NoStaticSize as exc:  # its fix named `--input-shape`, an option of convert's that verify has not
        raise GraphsurgeryError(exc.message, path=exc.path, fix=f"apply the recipe, convert the patched model with "
                                f"`graphsurgery convert --int8 --input-shape {exc.input_name}=1,H,W,3` (the size it "
                                "will be fed), then verify that IR: --precision int8 --patched IR.xml") from None
    out = patched_onnx.with_suffix(".int8.xml")
    convert_int8(patched_onnx, out, calibration)
    return out


def own_decode(recipe: Recipe, facts: ModelFacts, answers: list[dict[str, np.ndarray]], samples: Samples,
               batch: int) -> tuple[dict, dict, np.ndarray, list] | None:
    """From the int8 model's answers, batch after batch (`verification._run_patched`): the numpy twins' decode of its
    own network output (which it keeps as an output), that output as the decoding steps read it, and per batch that
    output with the extra inputs the twins got (what the rounding's wobble is measured on); None when it keeps
    none."""
    if not all(name in answers[0] for name in (facts.targets or (facts.output_name,))):
        return None
    decodes, parts = [], []
    for outputs, (x, extras) in zip(answers, chunks(samples, batch)):
        decodes.append(unpatched_outputs(recipe, facts, outputs, extras, x.shape))
        parts.append((decoded_output(recipe, outputs[facts.output_name], facts, extras),
                      output_extras(recipe, facts, extras, x.shape, outputs)))
    return concat(answers), concat(decodes), np.concatenate([raw for raw, _ in parts]), parts


def int8_pairs(f32_pair: PairReport, own_decode, patched: dict[str, np.ndarray], unpatched: dict[str, np.ndarray],
               raw: np.ndarray, wanted: dict[str, Comparison], grids: dict[str, HeatmapGrid], tie: Comparison,
               recipe: Recipe, facts: ModelFacts) -> tuple[list[PairReport], str]:
    """The int8 report: against the f32 unpatched pipeline, informational; the int8 model's decoded outputs against
    the numpy decode of its own network output, deciding. And the agreement line: keypoints within one heatmap
    cell of f32's (Euclidean in cells, as `convert` counts them)."""
    f32_pair.informational, f32_pair.reduced_precision = True, "int8"
    f32_pair.name = "openvino int8: unpatched f32 → patched int8"
    if own_decode is None:
        results = [missing_output(name, c, "the int8 model keeps no network output (keep_original: false), so its "
                                           "decode cannot be checked") for name, c in wanted.items()]
    else:
        answers, expected, own_raw, parts = own_decode  # near ties: judged on its own network output, and the
        # refinements' rounding allowed as in f32's pairs: the graph's decode reads the int8 maps with other float
        # roundings than the kept output (its quantized values tie often), and a right DARK or quarter-offset
        # patch FAILed, 0.04 px and 0.25 cells apart (round 92)
        positions = {name: c.kind for name, c in wanted.items() if c.kind in ("coordinates", "indices")}
        results = compare(answers, expected, own_raw, wanted, grids, tie,
                          Wobbles(recipe, facts, {"int8": parts}, positions, tie).of("int8", False))
    own = PairReport("openvino int8: own network output → numpy decode", "numpy twins on the int8 model's output",
                     "patched int8 model", results)
    shares = []
    for name, c in wanted.items():
        if c.kind == "coordinates" and name in patched and name in grids:
            sound = sound_joints(unpatched[name], unpatched.get("scores"))  # joints f32 found on finite maps
            both = sound & np.isfinite(patched[name]).all(axis=-1)
            if not both.any():  # "100.0 % within one cell" of the (0, 0) NaN maps decode to; nanmean's warning
                shares.append(f"{name}: no finite f32 joint to measure agreement on")
                continue
            cells = np.abs(np.asarray(patched[name], np.float64) - unpatched[name]) / np.maximum(
                np.abs(grids[name].scale), 1e-12)
            shares.append(f"{name}: {100 * np.mean(within_one_cell(cells[sound], 0.0, 1.0)):.1f} % within "
                          f"one {'SimCC bin' if c.per_axis else 'heatmap cell'} of f32's, mean distance "
                          f"{np.mean(np.linalg.norm(patched[name][both] - unpatched[name][both], axis=-1)):.3g}"
                          + (f" ({np.mean(~sound):.1%} of f32's joints not finite, left out)" if not sound.all()
                             else ""))
    note = "int8 against f32: " + ("; ".join(shares) if shares else "no keypoint output to measure agreement on")
    return [f32_pair, own], note
