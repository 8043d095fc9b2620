"""Reading a recipe's YAML safely, remembering the line of every value so that errors can point at it.

Safe loading only (no tags), YAML 1.2 floats (`1e-3` is a number), and bounds on what a small text can expand to:
aliases (a "billion laughs" document) and nesting depth.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from graphsurgery.errors import RecipeError

MAX_EXPANDED_NODES = 100_000
MAX_DEPTH = 50
#: Tags the safe loader constructs but a recipe never holds: bytes, sets and ordered pairs would slip through as
#: names or lists (`name: !!binary aGk=` is the name "hi").
REFUSED_TAGS = {f"tag:yaml.org,2002:{kind}" for kind in ("binary", "set", "omap", "pairs")}

YamlPath = tuple[str | int, ...]
STR, MERGE = "tag:yaml.org,2002:str", "tag:yaml.org,2002:merge"  # a merge key `<<: *defaults` is no value to build


class _RecipeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """The safe loader, also reading `1e-3` and `1.0e5` as numbers (YAML 1.2; PyYAML's YAML 1.1 makes them strings).

    libyaml's parser when present: ten times faster on a 1 MB recipe, and it bounds nesting (1,000 levels) itself.
    """


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """An integer, or a line-numbered error for one past Python's bound on int(str) (4,300 digits): the recipe's
    error said which value but not where (round 33)."""
    try:
        return yaml.SafeLoader.construct_yaml_int(loader, node)
    except ValueError:
        raise _Unreadable(node.start_mark.line + 1, len(node.value)) from None


class _Unreadable(ValueError):
    def __init__(self, line: int, digits: int):
        super().__init__(f"line {line}: a value of {digits:,} characters cannot be read as a number")
        self.line = line


_RecipeLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def read_yaml(text: str, source: str) -> tuple[Any, dict[YamlPath, int]]:
    """Safe-load YAML, recording the line of every YAML path and bounding the expanded size and depth."""
    loader = None
    try:
        loader = _RecipeLoader(text)
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: dict[YamlPath, int] = {}
        _walk(node, (), lines, [0], source, loader.construct_object)
        return loader.construct_document(node), lines
    except yaml.constructor.ConstructorError as exc:
        where = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
        if "unhashable" in (exc.problem or ""):
            raise RecipeError(f"{where}a key is a list or mapping", path=source,
                              fix="keys are plain names (`key: value`)") from None
        if "merging" in (exc.problem or ""):
            raise RecipeError(f"{where}a merge key (<<) is given a {exc.problem.split(' found ')[-1]}", path=source,
                              fix="merge a mapping or a list of mappings (`<<: *defaults`)") from None
        raise RecipeError(f"{where}YAML tag not allowed ({exc.problem})", path=source,
                          fix="remove the `!!` tag: recipes hold plain values only") from None
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" in (exc.problem or ""):  # libyaml's own bound
            raise _too_deep(source) from None
        mark = exc.problem_mark
        raise RecipeError(f"line {mark.line + 1}, column {mark.column + 1}: YAML syntax error: {exc.problem}",
                          path=source, fix="correct the YAML at that position") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, text.find(chr(exc.character))) + 1  # positions count bytes in libyaml
        raise RecipeError(f"line {line}: character U+{exc.character:04X} is not allowed in YAML", path=source,
                          fix="remove the control character (was the file saved as text?)") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"YAML error: {' '.join(str(exc).split())}", path=source, fix="correct the YAML") from None
    except _Unreadable as exc:  # an integer of more than 4,300 digits (Python's bound on int(str))
        raise RecipeError(str(exc), path=source, fix="write numbers of sensible size") from None
    except ValueError as exc:
        raise RecipeError(f"a value cannot be read as a number ({' '.join(str(exc).split())[:120]})", path=source,
                          fix="write numbers of sensible size") from None
    except RecursionError:  # the parser recurses once per level: far deeper documents overflow before _walk
        raise _too_deep(source) from None
    finally:
        if loader is not None:
            loader.dispose()


def _walk(node: yaml.Node, path: YamlPath, lines: dict[YamlPath, int], count: list[int], source: str,
          construct) -> None:
    count[0] += 1
    if count[0] > MAX_EXPANDED_NODES:
        raise RecipeError(f"the recipe expands to more than {MAX_EXPANDED_NODES} values (aliases?)", path=source,
                          fix="write the recipe without YAML anchors and aliases")
    if len(path) > MAX_DEPTH:
        raise _too_deep(source)
    lines.setdefault(path, node.start_mark.line + 1)
    if node.tag in REFUSED_TAGS:
        raise RecipeError(f"line {node.start_mark.line + 1}: {dotted(path)}: YAML tag !!{node.tag.rsplit(':', 1)[1]} "
                          "not allowed", path=source, fix="remove the `!!` tag: recipes hold plain values only")
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key)
            if name in seen:
                raise RecipeError(
                    f"line {key.start_mark.line + 1}: {dotted(path + (name,))}: duplicate key",
                    path=source,
                    fix="keep one of the two",
                )
            seen.add(name)
            if isinstance(key, yaml.ScalarNode) and key.tag not in (STR, MERGE):  # pydantic names `1:` 1 and
                constructed = construct(key)  # `null:` "None" in its errors: their line, not the mapping's (1)
                for form in (constructed, str(constructed)):
                    lines.setdefault(path + (form,), key.start_mark.line + 1)
            _walk(value, path + (name,), lines, count, source, construct)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), lines, count, source, construct)


def _too_deep(source: str) -> RecipeError:
    return RecipeError(f"the recipe nests deeper than {MAX_DEPTH} levels", path=source,
                       fix="a recipe is a few levels deep; check the brackets")


def dotted(path: YamlPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def line_of(path: YamlPath, lines: dict[YamlPath, int]) -> int:
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path, 1)
