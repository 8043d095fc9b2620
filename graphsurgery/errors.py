"""The one exception type users see.

Every mistake a user can make (a broken recipe, a wrong tensor name, a hostile model file, a missing image) is
raised as a `GraphsurgeryError` whose message is a single line naming the file and the fix; the CLI prints it and
exits with code 2, without a traceback.
"""

from __future__ import annotations

import codecs
import inspect
import json
import math
import re
import sys
import unicodedata
from numbers import Integral, Real
from pathlib import Path

#: Control characters: ANSI and OSC escape sequences could drive the terminal
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Unicode's invisible characters, its format characters and line separators (categories Cf, Zl and Zp as of Unicode
#: 14): bidirectional controls (U+202E in a tensor name shows the rest of the line backwards, "Trojan Source"),
#: zero-width ones (U+200B makes 'sco\u200bres' read as 'scores'), the BOM, the soft hyphen, and U+2028, a line
#: break to Python's `splitlines` (round 93: all but the bidirectional controls were printed raw); and the rest of
#: its default-ignorable code points, drawn as nothing: Hangul fillers (U+3164 makes 'scores\u3164' read as
#: 'scores'), the combining grapheme joiner, Mongolian and other variation selectors (round 93's leftover). U+FE0E
#: and U+FE0F after a symbol stay: they pick an emoji's look ('❤️')
_INVISIBLE = re.compile("[\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u17b4"
                        "\u17b5\u180b-\u180f\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff"
                        "\uffa0\ufff0-\ufffb\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3"
                        "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]")
#: the variation selectors that choose text or emoji presentation
_PRESENTATION = "\ufe0e\ufe0f"


def _escaped(match: re.Match) -> str:
    before = match.string[match.start() - 1] if match.start() else ""
    if match.group() in _PRESENTATION and before and unicodedata.category(before) == "So":
        return match.group()
    code = ord(match.group())
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(value) -> str:
    """Control characters (ANSI/OSC escape sequences in a producer name or a tensor name) made visible as `\\x1b`,
    and invisible ones (bidirectional overrides, zero-width spaces, line separators) as `\\u202e`: a model file
    must not be able to drive the user's terminal, nor make a line read other than it is."""
    text = _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", str(value))
    return _INVISIBLE.sub(_escaped, text)


def printable_json(data, **options) -> str:
    """`data` as JSON for standard output: other letters as they are (a file named 'é.onnx'), the invisible
    characters `printable` escapes as JSON escapes (`\\u202e`), which read back as the same strings (round 93:
    `apply --json` and `convert --json` printed a model's U+202E raw, reordering the terminal's line)."""
    text = json.dumps(data, ensure_ascii=False, **options)
    return _INVISIBLE.sub(lambda match: json.dumps(match.group()).strip('"'), text)


#: ASCII for the typographic characters of graphsurgery's own text, where the terminal's encoding has none
_ASCII_FALLBACK = {"—": "--", "–": "-", "−": "-", "⁻": "-", "…": "...", "→": "->", "↔": "<->", "⇔": "<=>",
                   "≥": ">=", "≤": "<=", "≈": "~", "±": "+/-", "×": "x", "·": ".", "Δ": "delta", "✓": "ok", "✗": "x"}
#: The codec error handler `readable_fallback` is registered under
READABLE = "graphsurgery-readable"


def readable_fallback(error: UnicodeError) -> tuple[str, int]:
    """Characters a terminal's encoding lacks (Latin-1, ASCII), as ASCII where graphsurgery's own text uses them
    ("—" as "--", "≥" as ">="), else escaped as `\u2014` (backslashreplace). Round 41: under a Latin-1 stderr every
    error line read `\u2014 fix:`. Only printable ASCII comes out: control characters are `printable`'s, before."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start:error.end]
    return "".join(_ASCII_FALLBACK.get(character) or character.encode("ascii", "backslashreplace").decode("ascii")
                   for character in text), error.end


def readable_errors() -> str:
    """The name of the codec error handler for the standard streams (`readable_fallback`), registered."""
    codecs.register_error(READABLE, readable_fallback)
    return READABLE


def say_note(line: str) -> None:
    """A note on standard error (a damaged JPEG decoded, a killed command's folder removed, a long run's length):
    information only, so a standard error that cannot take it drops it and the work goes on. An application
    started without one (`sys.stderr` None: pythonw, a daemon) had the API's `run` of a damaged JPEG end in
    AttributeError, and `run … 2>/dev/full` lost every result, exit 2 without a word (round 87)."""
    if sys.stderr is None:
        return
    try:
        sys.stderr.write(f"{line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # full, or closed
        pass


def listed(names, most: int = 10) -> str:
    """Names for an error line, quoted: the first `most` and how many there are in all (a model with 2,000 outputs
    made a line of 17,000 characters)."""
    names = list(names)
    shown = ", ".join(map(quoted, names[:most]))
    return shown if len(names) <= most else f"{shown}, … ({len(names):,} in all)"


#: What one value from a file (a name, a dim_param, a recipe value) may add to an error line, in characters
QUOTED_MOST = 80
#: A run of characters without a space longer than this, in an error line, is a value that came in unquoted (a
#: dim_param of 5,000 characters made "the tensor has aaaa…" a line of 5,271): `GraphsurgeryError` cuts it
LONGEST_WORD = 200
#: ... unless it is a path (the user typed it and needs it whole) of at most this many characters
LONGEST_PATH = 1024
_LONG_WORD = re.compile(rf"\S{{{LONGEST_WORD + 1},}}")
_OPENING, _CLOSING = "'\"`([{", "'\"`)]}"


def _cut(text: str, most: int = QUOTED_MOST) -> tuple[str, str]:
    """`text`'s first `most` characters (with "…" if cut) and the note saying how long it was ("" if not cut)."""
    return (text, "") if len(text) <= most else (f"{text[:most]}…", f" ({len(text):,} characters)")


def quoted(value, most: int = QUOTED_MOST) -> str:
    """A value from a file for an error line, quoted and cut to `most` characters, saying how long it was:
    `'aaaa…' (5,000 characters)` (a recipe's `version:` of 900,000 characters was echoed whole). The one place
    that bounds what a value from a file adds to a line (`bounded_words` uses it for values not quoted)."""
    if len(str(value)) <= most:
        return repr(value)
    shown, note = _cut(str(value), most)
    return repr(shown) + note


def _a_path(word: str) -> bool:
    """Whether `word` looks like a path (it holds a "/") of at most LONGEST_PATH characters: one the user typed,
    which they need whole to act on. Paths read from data files (a COCO `file_name`) are quoted values instead."""
    return "/" in word and len(word) <= LONGEST_PATH


def bounded_words(text: str) -> str:
    """Each run of more than `LONGEST_WORD` characters without a space in `text` cut as `quoted` cuts a value,
    unless it is a path: every error line goes through it (`GraphsurgeryError`), so a name, dim or
    shape formatted into a message without `quoted` still adds at most a few hundred characters."""

    def cut(match: re.Match) -> str:
        word = match.group()
        if _a_path(word):
            return word
        body = word.lstrip(_OPENING)
        lead = word[:len(word) - len(body)]
        inner = body.rstrip(_CLOSING + ",;:.")
        closing = body[len(inner):]
        rest = closing.lstrip(_CLOSING)
        shown, note = _cut(inner)
        return f"{lead}{shown}{closing[:len(closing) - len(rest)]}{note}{rest}"

    return _LONG_WORD.sub(cut, text)


def node_named(node) -> str:
    """A node for an error line: "Loop node 'body_loop'", or, as names are optional in ONNX and exporters leave many
    empty, "unnamed Loop node (output 'x')" (the line said `node ''`)."""
    if node.name:
        return f"{node.op_type} node {quoted(node.name)}"
    output = next((name for name in node.output if name), None)
    return f"unnamed {node.op_type} node" + (f" (output {quoted(output)})" if output else "")


def whole(value) -> bool:
    """An int, not a bool (True is 1 in Python) nor a float or str: what a count, index, seed or thread count must be
    (2.5, "2" and True went through the Python API)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def real(value) -> bool:
    """A real number, not a bool nor a str ("0.2" was a TypeError from math, True a score of 1)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def finite(value) -> bool:
    """A real number (`real`) that is finite: not NaN or ±inf, nor an int too large for a float (10**400, where
    math.isfinite raised OverflowError: an internal error)."""
    try:
        return real(value) and math.isfinite(value)
    except OverflowError:
        return False


def check_names(**named) -> None:
    """Each named choice of the Python API (a backend, a precision) is a str: a numpy array made `==` an array, and
    the test of it a ValueError ("The truth value of an array … is ambiguous"; round 26)."""
    for name, value in named.items():
        if not isinstance(value, str):
            raise ArgumentError(f"{name} is a name (str), not {type(value).__name__}")


def check_flags(**named) -> None:
    """Each named flag of the Python API is True or False: a str such as "no" is truthy (force="no" replaced an
    output, fp16="no" wrote FP16 weights, upgrade_opset="no" upgraded the opset)."""
    for name, value in named.items():
        if isinstance(value, bool):
            continue
        kind = type(value)
        if kind.__module__ == "numpy":  # np.True_ was "not bool np.True_" (numpy's bool is named bool too)
            raise ArgumentError(f"{name} must be True or False, not numpy.{kind.__name__} {value!r} (give "
                                f"bool({name}))")
        raise ArgumentError(f"{name} must be True or False, not {kind.__name__} {value!r} (a str such as 'no' "
                            f"would count as True)")


def check_callback(name: str, value, arguments: str) -> None:
    """A callback of the Python API (`progress`, `on_image`) is None or a function taking `arguments`: a str
    failed only once the first crop or image had run, and so did a function of other arguments (round 55:
    `progress=lambda done: …` was a TypeError after eval-coco's first crops, `on_image=lambda: …` after run's)."""
    if value is None:
        return
    if not callable(value):
        raise ArgumentError(f"{name} is a function ({arguments}), not {type(value).__name__}")
    try:
        inspect.signature(value).bind(*arguments.split(", "))
    except TypeError:
        raise ArgumentError(f"{name} is a function ({arguments}), not one of the arguments "
                            f"{inspect.signature(value)}") from None
    except ValueError:  # no signature to read (some builtins): judged as it is called
        pass


#: The line breaks and blanks an error line is joined over: ASCII's only. `str.split` took U+2028 and U+00A0 too, and
#: a file named `m\u2028.onnx` was named "m .onnx" (round 93); `printable` shows them escaped instead
_ASCII_BLANKS = " \t\n\r\x0b\x0c"
_ASCII_SPACE = re.compile(f"[{_ASCII_BLANKS}]+")


class GraphsurgeryError(Exception):
    """A user-facing error: one line that names the file (and YAML path or tensor) and says how to fix it."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.path = str(path) if path is not None else None
        self.message, self.fix = message, fix
        # the path is the user's (typed, or the file the command reads): whole; message and fix bounded
        parts = [f"{self.path}: {bounded_words(message)}" if self.path else bounded_words(message)]
        if fix:
            parts.append(f"fix: {bounded_words(fix)}")
        super().__init__(" — ".join(" ".join(_ASCII_SPACE.split(p.strip(_ASCII_BLANKS))) for p in parts))


    def about(self, path: str | Path) -> GraphsurgeryError:
        """The same error naming `path` instead (the user's model rather than a scratch copy made from it)."""
        return type(self)(self.message, path=path, fix=self.fix)


class RecipeError(GraphsurgeryError):
    """The recipe file is not valid YAML, or does not follow the recipe schema."""


class StepParameterError(RecipeError, ValueError):
    """A step built in Python (`Resize(size=(0, 0))`) with a parameter its recipe form refuses: one line, as in a
    recipe, and a ValueError, as pydantic's ValidationError (which it replaces) is."""


class ModelError(GraphsurgeryError):
    """The model file cannot be read safely, or does not fit the recipe."""


class SettingError(GraphsurgeryError):
    """A variable of the environment the command cannot run with (an OpenCV setting OpenCV's parser refuses): it
    names the variable, and no file is the user's to fix; a command naming its model on pathless refusals (verify's
    `_naming`) keeps it as it is (round 48: "pose.onnx (patched by r.yaml): OPENCV_TRACE='yes' is no switch …")."""

    def about(self, path: str | Path) -> GraphsurgeryError:
        return self


class ArgumentError(GraphsurgeryError, TypeError):
    """A Python API argument of the wrong type (a bytes path, "no" for a flag): a refusal like every other, in one
    line, and a TypeError too, as Python's own wrong-type errors are."""
