"""Each sample fed among companions in one batch, where the patched model's batch is dynamic (round 94).

verify fed such a model one sample a call (its samples are of several sizes, or its batch is 1 in `chunks`), so
outputs right at a batch of 1 were all it saw: a top-k whose ReduceMin kept no dim gave indices and scores
[2, 2] for [2, 1] to two images and PASSed. Each call now feeds up to `TOGETHER` samples of one size from its second
row, a companion before them and two after (`_companion`: other values, the same range), and the rows of the samples
are what is compared: an output that does not follow the batch, or whose row of a sample reads another's (row 0's,
the last row's, the batch reversed, a sum over the rows), differs from the twins' (round 95: the sample was first of
two, and a patch reading row 0 PASSed).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from graphsurgery.runners import ModelSignature, Port, Run
from graphsurgery.samples import concat

#: samples of one size fed in one call among the companions, a call of up to 7 rows (a call of four a sample, as
#: round 95 fed them, was four times the patched model's work: verify of hrnet_coco_pose_image on W32, 11.8 → 18.8 s)
TOGETHER = 4


@dataclass(frozen=True)
class BatchRows:
    """Which outputs follow the batch of a patched model whose image input's batch is dynamic."""

    declared: frozenset[str]  # first dim declared under the input's batch's name: must answer a row per sample
    #: first dim dynamic under another name (here) or none (None): told by their rows (`among_companions`)
    unsure: Mapping[str, str | None]
    #: other inputs of a row per sample (a crop's `center` and `scale`), given companions of their own
    with_rows: frozenset[str] = frozenset()
    mirrored: bool = False  # a flip test's: the model's batch is the images, then their mirrors
    #: the plain model's outputs whose rows among others are not their rows alone (`apart_in_plain`); None: unknown
    apart: frozenset[str] | None = None


def batch_rows(proto: onnx.ModelProto, input_name: str, per_sample: Collection[str] = ()) -> BatchRows | None:
    """The outputs' relation to `input_name`'s batch; None where that batch is not dynamic, no output's first dim
    is, or another input's first dim is dynamic and neither declared under the batch's name nor in `per_sample`
    (the recipe's inputs of a row per sample: `center`, `scale`). Other inputs of fixed dims (a temperature [1])
    are fed whole with the companions: they kept a model from them, and round 94's top-1 PASSed beside one (round
    95). An exporter may name the outputs' batch otherwise (Paddle2ONNX: `x_0` in, `save_infer_model/scale_0.tmp_1_0`
    out, RapidOCR's own models): those were fed one sample a call, and round 94's top-1 PASSed on RapidOCR's
    classifier (round 95). Nor can a third-party model's detections (`num_dets` rows of the images together) be
    cut by their declaration: each such output is judged by its rows."""
    def first_dim(value: onnx.ValueInfoProto):
        dims = value.type.tensor_type.shape.dim
        return None if not dims else dims[0].dim_value or dims[0].dim_param or None

    image = next((value for value in proto.graph.input if value.name == input_name), None)
    if image is None or not image.type.tensor_type.shape.dim:
        return None
    return _relation({value.name: first_dim(value) for value in proto.graph.input},
                     {value.name: first_dim(value) for value in proto.graph.output}, input_name, per_sample)


def ir_batch_rows(signature: ModelSignature, input_name: str, per_sample: Collection[str] = ()) -> BatchRows | None:
    """`batch_rows` of an OpenVINO IR given with `--patched`: its partial shapes name no dim, so every output of a
    dynamic first dim is judged by its rows (a top-1 of no kept dim, converted, PASSed as an IR: fed alone), and
    the inputs of a row per sample are `per_sample`'s."""
    image = next((port for port in signature.inputs if port.name == input_name), None)
    if image is None or not image.shape:
        return None

    def first_dim(port: Port) -> int | None:
        return port.shape[0] if port.shape else None

    return _relation({port.name: first_dim(port) for port in signature.inputs},
                     {port.name: first_dim(port) for port in signature.outputs}, input_name, per_sample)


def _relation(inputs: dict[str, int | str | None], outputs: dict[str, int | str | None], input_name: str,
              per_sample: Collection[str]) -> BatchRows | None:
    """The outputs' relation to the batch, from the first dims of the inputs and outputs (a number, a dim's name,
    or None: dynamic and unnamed, or no dims)."""
    batch = inputs[input_name]
    if isinstance(batch, int):
        return None
    with_rows = frozenset(name for name, dim in inputs.items() if name != input_name and not isinstance(dim, int)
                          and (name in per_sample or (batch is not None and dim == batch)))
    if any(name != input_name and name not in with_rows and not isinstance(dim, int) for name, dim in inputs.items()):
        return None  # another input of rows of its own (a whole image's boxes): fed as it is, alone
    if any(isinstance(inputs.get(name), int) for name in per_sample):
        return None  # a `center` of a fixed row ([1, 2] in a --patched model): a sample a call (round 98: four
        # samples' were fed it together, ONNX Runtime's "invalid dimensions", an internal error)
    declared = frozenset(name for name, dim in outputs.items() if batch is not None and dim == batch)
    unsure = {name: dim for name, dim in outputs.items() if not isinstance(dim, int) and name not in declared}
    return BatchRows(declared, unsure, with_rows)  # outputs of a first dim of a number too: judged by their rows


def among_companions(run: Run, feeds: dict[str, np.ndarray],
                     input_name: str, rows: BatchRows, unfollowed: dict[str, str]) -> dict[str, np.ndarray]:
    """`run`'s answers to `feeds`, computed in one call with a companion before the samples and two after (or none
    after, where the model fails on those), the companions' rows left out of the outputs that follow the batch.
    Round 95: with the sample first, a patch written for a batch of one that reads row 0 (`x[0]`, a Gather or Slice
    of row 0, a CumSum) read the sample's own and PASSed; with it last, one reading the last row would, and in the
    middle of three, the batch reversed.
    A declared output of other rows than the call's is kept whole and named in `unfollowed` with why
    (`fail_unfollowed`): cut, a Gather of row 0 ([1, 1] for two samples) was one sample's [1, 1] and PASSed. An
    unsure output follows where it answers the sample alone a row per sample and the call a row per sample of it,
    or where its first dim's name is one that does so (`_sample_rows`: several rows per sample too); else, as an
    output of a first dim of a number, its answer to the sample alone is compared."""
    x = feeds[input_name]
    count = len(x)
    companions = {input_name: _companion(x[:1]), **{name: _row_companion(feeds[name][:1]) for name in rows.with_rows}}
    answers = None
    for places in (4, 2):
        try:
            answers = run({**feeds, **{name: np.concatenate([value, feeds[name], *[value] * (places - 2)])
                                       for name, value in companions.items()}})
            break
        except Exception:  # noqa: BLE001 — a wrong patch may fail only past two (a top-1's reduction of no kept
            # dim broadcast against the 2 classes): the pair shows its answers. A model that runs no batch at all is
            # refused (its outputs declared to follow one), or fed alone where none is declared to: an exporter's
            # batch-1 model with a named input batch (its outputs' unnamed) was refused, or an internal error
            if places == 2 and rows.declared and count > 1:  # a model that runs up to four rows (round 98:
                # refused, where round 95's four a sample ran): a sample a call
                return concat([among_companions(run, _sample(feeds, input_name, rows, index), input_name, rows,
                                                unfollowed) for index in range(count)])
            if places == 2 and rows.declared:
                raise
    if answers is None:
        return _alone(run, feeds, input_name, rows, count)
    apart = rows.apart or frozenset()
    alone = _alone(run, feeds, input_name, rows, count) if set(answers) - (rows.declared - apart) else {}
    called = count + places - 1  # the companion, the samples, the other companions
    # a name one unsure output shows to be the batch's (a row per sample, alone and in the call) is the batch's for
    # every output declared under it (ONNX: one name, one size): RapidOCR's label, cut to row 0, beside its
    # probabilities of a row per sample, PASSed
    batch_names = {rows.unsure[name] for name in rows.unsure if rows.unsure[name] is not None and name in answers
                   and _rows_of(answers[name]) == called and _rows_of(alone[name]) == count}
    declared = rows.declared | {name for name, dim in rows.unsure.items() if dim in batch_names}
    kept = {}
    for name, value in answers.items():
        if name in apart:  # the plain model's own rows among others are no sample's: nothing the patch did
            kept[name] = alone[name]
            continue
        if name in declared and _rows_of(value) != called:
            unfollowed.setdefault(name, f"{_answered(value, called)} (the samples from the second), though its "
                                        f"first dim is declared the input's batch (or that of other outputs of a "
                                        f"row per sample)")
        if name in declared:
            kept[name] = value if name in unfollowed else value[1:1 + count]
        else:  # unsure, or of a first dim of a number: a batch-1 export's [1, …] that follows the batch anyway, or a
            # NonZero's [4, K] of the whole call (compared whole, it failed a right patch: the twin's is the sample's)
            by_itself = _rows_of(alone[name])
            cut = _sample_rows(value, count, called, by_itself, rows.mirrored)
            if cut is None and rows.apart is not None and value.ndim and by_itself == count * _rows_of(value):
                # as many rows for the call as for one sample, and no plain output that answers so: a read or a
                # reduction over the batch (round 98: a Slice of row 0 declared [1, 1], or undeclared in an IR,
                # was compared as answered to each sample alone, and PASSed)
                unfollowed.setdefault(name, f"{_answered(value, called)}, as many as for one sample alone: it "
                                            f"follows no batch, though the image input's is dynamic")
                kept[name] = value
                continue
            kept[name] = alone[name] if cut is None else cut
    return kept


def apart_in_plain(run: Run, image: Port,
                   other: Mapping[str, np.ndarray], with_rows: Collection[str], seed: int) -> frozenset[str] | None:
    """The plain model's outputs (`run` runs it) whose answers to two random images together are not their answers
    to each alone, row after row: a NonZero's or a detector's batch index, a reduction over the batch. Kept by a
    patch, their rows among companions are no sample's (round 98: a kept NonZero's [2·N, 2] of a batch index, cut a
    sample's two rows, FAILed a right patch); they are compared as answered to each sample alone. None where the
    image's dims past the batch are not all known, or the plain model runs no pair."""
    if not image.shape or any(dim is None for dim in image.shape[1:]):
        return None
    rng = np.random.default_rng(seed)
    kind = np.dtype(image.dtype)
    pair = (rng.integers(0, 256, (2, *image.shape[1:])) if kind.kind in "iub"
            else rng.standard_normal((2, *image.shape[1:]))).astype(kind)
    own = {name: value for name, value in other.items() if name in with_rows}
    try:
        together = run({**other, **{name: np.repeat(value, 2, axis=0) for name, value in own.items()},
                        image.name: pair})
        alone = concat([run({**other, image.name: pair[index:index + 1]}) for index in range(2)])
    except Exception:  # noqa: BLE001 — a model of batch 1 under a named batch (fed alone anyway)
        return None

    def same(a: np.ndarray, b: np.ndarray) -> bool:
        return a.shape == b.shape and np.allclose(a, b, rtol=1e-3, atol=1e-5, equal_nan=True)

    return frozenset(name for name, value in together.items() if value.ndim and not same(value, alone[name]))


def _rows_of(value: np.ndarray) -> int:
    """An answer's rows: its first dim, none for a scalar."""
    return len(value) if value.ndim else 0


def _answered(value: np.ndarray, called: int) -> str:
    """How many rows an output answered to a call of `called`, as its failure says."""
    return f"{_rows_of(value)} row{'s' * (_rows_of(value) != 1)} for the {called} rows of one call"


def _alone(run: Run, feeds: dict[str, np.ndarray],
           input_name: str, rows: BatchRows, count: int) -> dict[str, np.ndarray]:
    """`run`'s answers to each sample alone, joined, as the unpatched pipeline answers them (one a call): a NonZero
    over the call, or a batch-1 export, answers the samples together otherwise."""
    return concat([run(_sample(feeds, input_name, rows, index)) for index in range(count)])


def _sample(feeds: dict[str, np.ndarray], input_name: str, rows: BatchRows, index: int) -> dict[str, np.ndarray]:
    """`feeds` of the sample `index` alone: its rows of the image and of the inputs of a row per sample."""
    return {**feeds, **{name: feeds[name][index:index + 1] for name in (input_name, *rows.with_rows)}}


def _sample_rows(value: np.ndarray, count: int, called: int, alone: int, mirrored: bool) -> np.ndarray | None:
    """The samples' rows of an unsure output that answered `alone` rows to the samples alone and a multiple of its
    model's batch in the call, the same multiple of rows per row of the batch (a Reshape to [-1, 1]: each row's
    together), sample after sample as they answer alone; None where its rows follow no batch. `mirrored`: after a
    flip test the model's batch is the images, then their mirrors, so its kept maps hold each sample's rows in each
    half (they were fed alone, and a patch reading row 0 of the maps PASSed); the outputs after flip_average, a
    row per image, are tried next."""
    rows = _rows_of(value)
    for halves in (2, 1) if mirrored else (1,):
        per = rows // (halves * called)
        if per and rows == per * halves * called and alone == per * halves * count:
            return np.concatenate([value[(half * called + 1 + index) * per:(half * called + 2 + index) * per]
                                   for index in range(count) for half in range(halves)])
    return None


def _companion(x: np.ndarray) -> np.ndarray:
    """`x` reversed along every axis but the batch, and its values mirrored within their range (hi + lo - v): other
    values of the same range, and the sample's mean brightness reversed (a classifier's global pooling answers a
    mirror image alone much as the sample)."""
    flipped = np.flip(x, axis=tuple(range(1, x.ndim)))
    if not x.size:
        return flipped
    return (x.max().astype(np.float64) + x.min() - flipped).astype(x.dtype)  # within [lo, hi]: no wrap, no overflow


def _row_companion(rows: np.ndarray) -> np.ndarray:
    """Other values for an input of a row per sample: floats moved by half their size and a quarter of the
    largest (a crop's centre and scale stay positive, and differ from the sample's even where equal or zero; the
    mirror of `_companion` kept a centre's two coordinates as they were), integers and booleans the other end of
    their range (flags and indices stay valid; no arithmetic, so none wraps)."""
    if not rows.size:
        return rows
    if rows.dtype.kind == "f":
        wide = rows.astype(np.float64)
        return (wide * 1.5 + max(float(np.abs(wide).max()), 1.0) / 4).astype(rows.dtype)
    return np.where(rows == rows.max(), rows.min(), rows.max()).astype(rows.dtype)


def fail_unfollowed(results: list, unfollowed: dict[str, str]) -> list:
    """`results` (`compare.OutputResult`s), those of the outputs that did not follow the batch failed so."""
    for result in results:
        if result.output in unfollowed:
            result.problem = unfollowed[result.output]
    return results
