"""Example models exported to plain ONNX for graphsurgery recipes."""
