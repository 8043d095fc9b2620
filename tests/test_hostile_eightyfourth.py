"""Round 84: round 83's leftovers, and signals across commands. A recording of grey crops proves nothing about the
colour order; a person box wholly outside its image is refused where it is matched to the image; a heatmap whose
peak is infinite is drawn; a signal that ends `convert --ovms` unwound by nothing leaves no empty version folder.

`verify --reference` of recorded crops whose three channels are equal PASSed a recipe whose colour order is not
the user's pipeline's (the same answers whatever the order), as `verify --images` of grey pictures did before
round 83. `run --boxes` took a box at x = y = -5000 (within the coordinates a boxes file may give) and wrote a
person found in a crop of padding alone. `draw.heatmap_montage` divided by an infinite peak: a RuntimeWarning,
and the hottest joint drawn black. SIGHUP (or SIGQUIT, ...) during `convert --ovms` left an empty NAME/1/ in the
repository: the worker ends by it where it is, and only its scratch folders were removed for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from clikit import invoke, one_line_exit_2
from graphsurgery.draw import heatmap_montage
from graphsurgery.images import read_image
from test_reference import users_pipeline

from modelkit import bgr_crops

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"


def _grey(crops: np.ndarray) -> np.ndarray:
    """`crops` with their first channel in all three, as OpenCV reads a grey picture."""
    return np.repeat(crops[..., :1], 3, axis=-1)


@pytest.mark.parametrize("colour, swap, verdict", [
    (False, False, 1),  # was: PASS, the recording skips BGR→RGB and the recipe swaps
    (False, True, 1),  # a right recording of grey crops proves nothing either
    (True, False, 1),  # a colour crop among them: the wrong order FAILs on it
    (True, True, 0),
])
def test_a_recording_of_grey_crops_proves_nothing_about_the_colour_order(plain, tmp_path, colour, swap, verdict):
    crops = _grey(bgr_crops(2, seed=5))
    if colour:
        crops = np.concatenate([crops, bgr_crops(1, seed=6)])
    reference = tmp_path / "reference.npz"
    np.savez(reference, input=crops, **users_pipeline(plain, crops, swap_colours=swap))
    result = invoke("verify", RECIPE, plain, "--reference", reference, "--backends", "onnxruntime")
    said = " ".join(result.output.split())
    assert result.exit_code == verdict, result.output
    assert ("all 2 samples fed are grey" in said and "record colour images too" in said) == (not colour), said


def _boxes(tmp_path: Path, *boxes) -> Path:
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({PHOTO.name: [list(box) for box in boxes]}))
    return path


def _outside(width: int, height: int) -> list:
    """Boxes that share no pixel with a width × height image: left, above, right of and below it."""
    return [(-5000, -5000, 100, 150), (-100, 10, 100, 150), (10, -150, 100, 150), (width, 10, 100, 150),
            (10, height, 100, 150)]


@pytest.mark.parametrize("which", range(5))
def test_run_refuses_a_box_wholly_outside_its_image(patched, tmp_path, which):
    """Was: exit 0, a person written for the crop of padding."""
    height, width = read_image(PHOTO).shape[:2]
    boxes = _boxes(tmp_path, (10, 10, 100, 150), _outside(width, height)[which])
    result = invoke("run", patched, PHOTO, "--boxes", boxes, "-o", tmp_path / "out", "--backend", "onnxruntime")
    one_line_exit_2(result, str(boxes), "box 2 of 2", repr(PHOTO.name), "wholly outside", f"{width} × {height}",
                    "fix or drop that box")
    assert not (tmp_path / "out").exists()


def test_a_box_sharing_a_sliver_of_its_image_is_taken(patched, tmp_path):
    """Partly outside is a person at the edge: taken, by run and by verify --images."""
    height, width = read_image(PHOTO).shape[:2]
    boxes = _boxes(tmp_path, (-99.5, -149.5, 100, 150), (width - 0.5, height - 0.5, 100, 150))
    result = invoke("run", patched, PHOTO, "--boxes", boxes, "-o", tmp_path / "out", "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "out" / "keypoints.json").read_text())) == 2


def test_verify_refuses_a_box_wholly_outside_its_image(plain, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / PHOTO.name).write_bytes(PHOTO.read_bytes())
    boxes = _boxes(tmp_path, (-5000, -5000, 100, 150))
    result = invoke("verify", RECIPE, plain, "--images", folder, "--boxes", boxes, "--backends", "onnxruntime")
    one_line_exit_2(result, str(boxes), "box 1 of 1", "wholly outside")


def test_a_heatmap_whose_peak_is_infinite_is_drawn_at_the_top_of_the_scale():
    """Was: a RuntimeWarning (inf / inf) and the joint's tiles black. +inf is drawn as the highest finite peak is
    (the scale's top), the other joints on the same scale as without it."""
    crop = np.random.default_rng(0).integers(0, 256, (64, 48, 3), np.uint8)
    maps = np.random.default_rng(1).random((17, 16, 12)).astype(np.float32)
    infinite, topped = maps.copy(), maps.copy()
    infinite[3, 4, 5] = np.inf
    topped[3, 4, 5] = np.delete(maps.ravel(), np.ravel_multi_index((3, 4, 5), maps.shape)).max()  # the finite peak
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drawn = heatmap_montage([crop], [infinite])
    np.testing.assert_array_equal(drawn, heatmap_montage([crop], [topped]))


#: `graphsurgery ARGS` whose worker sends itself a signal as it writes its first file under the folder `argv[2]`
#: (the scratch folder's owner marker, where the signals are held until the parent knows the folder): the signal
#: ends the worker mid-write, every time; nothing heavy is imported before the fork (`supervisor._light`)
SIGNALLED_WHILE_WRITING = """
import builtins, io, os, signal, sys
number, under = getattr(signal, sys.argv[1]), sys.argv[2]
signal.signal(number, signal.SIG_DFL)  # as from a terminal: a shell's background job inherits SIGQUIT ignored
real = builtins.open
def opened(file, mode="r", *args, **kwargs):
    if any(c in str(mode) for c in "wax+") and os.fspath(file).startswith(under):
        os.kill(os.getpid(), number)
    return real(file, mode, *args, **kwargs)
builtins.open = io.open = opened
from graphsurgery.launch import main
sys.argv = ["graphsurgery", *sys.argv[3:]]
main()
"""


@pytest.mark.parametrize("signal_name, code", [("SIGHUP", 129), ("SIGQUIT", 131)])
def test_a_signal_that_ends_convert_ovms_leaves_no_empty_version_folder(patched, tmp_path, signal_name, code):
    """Was: the repository kept an empty NAME/1/ (Ctrl-C and SIGTERM unwound and removed it; SIGHUP, passed on to
    the worker, ended it where it was), which OpenVINO Model Server takes for a version without a model."""
    repository = tmp_path / "repo"
    repository.mkdir()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run([sys.executable, "-c", SIGNALLED_WHILE_WRITING, signal_name, str(repository), "convert",
                           str(patched), "--ovms", str(repository), "--name", "pose"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == code, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and f"ended by {signal_name}" in lines[0] and "Traceback" not in done.stderr, lines
    assert list(repository.iterdir()) == [] and list(scratch.iterdir()) == []


#: `graphsurgery ARGS` whose worker sends itself SIGHUP right after it places its first file under `argv[1]` (the
#: hard link `safeio.place` makes; signals are held while it places, so the worker ends with the output in place)
SIGNALLED_AFTER_PLACING = """
import os, signal, sys
under = sys.argv[1]
signal.signal(signal.SIGHUP, signal.SIG_DFL)
real = os.link
def linked(source, target, *args, **kwargs):
    real(source, target, *args, **kwargs)
    if os.fspath(target).startswith(under):
        os.kill(os.getpid(), signal.SIGHUP)
os.link = linked
from graphsurgery.launch import main
sys.argv = ["graphsurgery", *sys.argv[2:]]
main()
"""


def test_a_signal_after_a_file_is_placed_keeps_its_version_folder(patched, tmp_path):
    """The parent removes the folders made for an output only while they are empty: one holding a placed file is
    the user's to see, not a scratch folder (a removal of the whole tree would lose what was placed)."""
    repository = tmp_path / "repo"
    repository.mkdir()
    done = subprocess.run([sys.executable, "-c", SIGNALLED_AFTER_PLACING, str(repository), "convert", str(patched),
                           "--ovms", str(repository), "--name", "pose"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 129, done.stderr
    placed = sorted(path.name for path in (repository / "pose" / "1").iterdir())
    assert placed == ["model.bin", "model.xml"], placed
