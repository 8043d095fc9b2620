"""All steps, one module per family; importing this package fills the registry."""

from graphsurgery.steps import classify, crop, dark, detect, input, nms, output, resize, simcc, to_image, topdown  # noqa: F401  (registration side effects)
