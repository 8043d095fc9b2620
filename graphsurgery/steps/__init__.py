"""All steps, one module per family; importing this package fills the registry."""

from graphsurgery.steps import classify, input, output, resize, topdown  # noqa: F401  (registration side effects)
