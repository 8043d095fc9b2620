"""The names graphsurgery gives the nodes it adds to a graph: splice scopes them, and the readers of a patched
graph (what nms reads, the flip test's halves, int8's to_image and its ignored scope, error triage) find them by the
same names. Kept apart from emit.py so that those readers need not load onnx-graphsurgeon."""

#: The first part of every node and tensor name graphsurgery adds (a model's own names do not start with it).
SPLICED = "graphsurgery"
#: The scopes of a recipe's two sides: splice names a step's nodes `<scope>/<step name>/…`.
INPUT_SCOPE, OUTPUT_SCOPE = f"{SPLICED}/pre", f"{SPLICED}/post"


def step_nodes(side: str, step_name: str) -> str:
    """The prefix of the node names splice gives a recipe step (`graphsurgery/post/nms/`): how the readers of a
    patched graph find a step's nodes (what nms reads, the flip test's halves, int8's to_image)."""
    return f"{INPUT_SCOPE if side == 'input' else OUTPUT_SCOPE}/{step_name}/"
