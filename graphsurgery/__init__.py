"""graphsurgery: splice pre- and post-processing into ONNX models from a declarative recipe."""

__version__ = "0.1.0"
