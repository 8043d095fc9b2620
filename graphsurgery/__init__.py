"""graphsurgery: splice pre- and post-processing into ONNX models from a declarative recipe."""

__version__ = "0.1.0"


def verify(recipe, plain_model, **options):
    """Prove the patched model gives the unpatched pipeline's answers: `graphsurgery.verification.verify`.

    Imported on first call, so `import graphsurgery` stays light.
    """
    from graphsurgery.verification import verify as _verify

    return _verify(recipe, plain_model, **options)
