"""graphsurgery: splice pre- and post-processing into ONNX models from a declarative recipe.

The Python API behind every command (the CLI is a thin shell over these). Each is imported on first call, so
`import graphsurgery` stays light and needs no runtime until one is used.
"""

__version__ = "0.1.0"


def apply(recipe, model, out=None, **options):
    """Splice a recipe into a model and write it (`graphsurgery.api.apply`); returns an ApplyResult."""
    from graphsurgery.api import apply as _apply

    return _apply(recipe, model, out, **options)


def inspect(model):
    """Signature, opset, node counts and provenance of a model (`graphsurgery.api.inspect_model`); returns a
    ModelInfo."""
    from graphsurgery.api import inspect_model

    return inspect_model(model)


def convert(model, out_xml, **options):
    """OpenVINO IR of an ONNX model, FP32, FP16 or, with `int8=True` and calibration samples, int8
    (`graphsurgery.irconvert.convert_ir`); returns a ConvertResult."""
    from graphsurgery.irconvert import convert_ir

    return convert_ir(model, out_xml, **options)


def run(model, images, outdir, **options):
    """Top-down pose on images with a patched model (`graphsurgery.pose.run_pose`); returns a RunSummary."""
    from graphsurgery.pose import run_pose

    return run_pose(model, images, outdir, **options)


def chain(detector, pose, out, **options):
    """One model from a patched detector and a patched top-down pose model (`graphsurgery.chaining.chain`): image in,
    every person's box, score and keypoints out; returns a ChainResult."""
    from graphsurgery.chaining import chain as _chain

    return _chain(detector, pose, out, **options)


def verify(recipe, plain_model, **options):
    """Prove the patched model gives the unpatched pipeline's answers (`graphsurgery.verification.verify`);
    returns a VerifyReport, whose `bool()` is the verdict."""
    from graphsurgery.verification import verify as _verify

    return _verify(recipe, plain_model, **options)


def eval_coco(recipe, plain_model, annotations, images, **options):
    """COCO keypoint AP of the unpatched and patched pipelines side by side (`graphsurgery.coco.evaluate_coco`)."""
    from graphsurgery.coco import evaluate_coco

    return evaluate_coco(recipe, plain_model, annotations, images, **options)


def bench(recipe, model, settings=None):
    """Patched against plain, interleaved on every runtime (`graphsurgery.benchmark.run_bench`); returns a
    BenchResult, whose `to_dict()` is `bench --json`."""
    from graphsurgery.benchmark import Settings, run_bench

    # None alone means the defaults: {} or "" (falsy) ran with them in silence, a numpy array was a ValueError
    return run_bench(recipe, model, Settings() if settings is None else settings)
