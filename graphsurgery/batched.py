"""Each sample fed first of a batch of two, where the patched model's batch is dynamic (round 94).

verify fed such a model one sample a call (its samples are of several sizes, or its batch is 1 in `chunks`), so
outputs right at a batch of 1 were all it saw: a top-k whose ReduceMin kept no dim gave indices and scores
[2, 2] for [2, 1] to two images and PASSed. Each call now feeds the sample and a companion of its size (the sample
reversed along every axis but the batch: other values, the same range), and the rows of the sample are what is
compared: an output that does not follow the batch, or whose first row reads the second, differs from the twins'.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import onnx


def batch_outputs(proto: onnx.ModelProto, input_name: str) -> set[str] | None:
    """The outputs whose first dim the model declares as `input_name`'s named batch; None where an output's first
    dim is dynamic under another name or none (a third-party model's detections, `num_dets` rows of the images
    together): its rows cannot be told apart, and each sample is fed alone, as before."""
    def first_dim(value: onnx.ValueInfoProto):
        dims = value.type.tensor_type.shape.dim
        return None if not dims else dims[0].dim_value or dims[0].dim_param or None

    batch = next((first_dim(value) for value in proto.graph.input if value.name == input_name), None)
    if not isinstance(batch, str):
        return None
    firsts = {value.name: first_dim(value) for value in proto.graph.output}
    if any(not isinstance(dim, int) and dim != batch for dim in firsts.values()):
        return None
    return {name for name, dim in firsts.items() if dim == batch}


def first_of_two(run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], feeds: dict[str, np.ndarray],
                 input_name: str, per_batch: Collection[str]) -> dict[str, np.ndarray]:
    """`run`'s answers to `feeds`, computed in one call with a companion sample after them, the companion's rows
    left out of the `per_batch` outputs (those that follow the batch)."""
    x = feeds[input_name]
    answers = run({**feeds, input_name: np.concatenate([x, np.flip(x, axis=tuple(range(1, x.ndim)))])})
    return {name: value[:len(x)] if name in per_batch else value for name, value in answers.items()}
