"""HRNet-W32 pose estimator: model, checkpoint loader and plain ONNX export."""
