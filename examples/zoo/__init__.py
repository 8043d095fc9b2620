"""Architectures exported elsewhere than HRNet (a ResNet-style classifier, a SimpleBaseline pose net), with seeded
stand-in weights: plain ONNX models to show that the same recipes patch them."""
