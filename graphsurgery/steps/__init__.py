"""All steps, one module per family; importing this package fills the registry."""

from graphsurgery.steps import classify, crop, dark, detect, input, output, resize, simcc, topdown  # noqa: F401  (registration side effects)
