"""Hostile round 53: states and combinations rather than single bad values.

A umask that takes the owner's own permissions, an IR run on ONNX Runtime, reports into a read-only file system,
two outputs naming one file through a bind mount, and a ground-truth box 1 px wide in eval-coco's proof per keypoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from clikit import invoke, one_line_exit_2
from graphsurgery.api import apply
from graphsurgery.coco import evaluate_coco

from examples.synthetic_coco import joint_detector, write_coco_set
from modelkit import pose_model

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "hrnet_coco_pose.yaml"
NOBODY = 65534


@contextmanager
def _mounted(*args: str):
    """`mount ARGS... TARGET` as root, unmounted after; the test is skipped where it cannot mount."""
    target = args[-1]
    if os.geteuid() != 0 or subprocess.run(["mount", *args], capture_output=True).returncode != 0:
        pytest.skip("needs root and mount")
    try:
        yield Path(target)
    finally:
        subprocess.run(["umount", target], capture_output=True)


def test_a_umask_taking_the_owners_permissions_is_one_line_and_leaves_no_scratch_folder():
    """Was (round 53): as a user other than root under `umask 0177` (or 0477, 0777), mkdtemp's scratch folder came out
    drw------- (d-wx------, d---------): apply said "cannot create files in the output folder (Permission denied)" of
    a writable folder, or "the patched model fails the ONNX checker … a graphsurgery bug", and left the scratch
    folder, which no later command could list or remove, in the output folder (verify: in $TMPDIR); `convert --ovms`
    said "cannot create the folder pose/1 (Permission denied)"."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root (to run the case as another user) and setpriv")
    folder = Path(tempfile.mkdtemp(prefix="gs-umask-"))
    try:
        folder.chmod(0o777)
        model = pose_model(folder / "pose.onnx")
        shutil.copy(RECIPE, folder / "recipe.yaml")
        for path in (model, folder / "recipe.yaml"):
            path.chmod(0o644)
        script = ("import os; os.umask(0o177)\n"
                  "from graphsurgery.api import apply\n"
                  "from graphsurgery.errors import GraphsurgeryError\n"
                  "from graphsurgery.irconvert import convert_ir\n"
                  "try:\n    apply('recipe.yaml', 'pose.onnx', 'out.onnx')\n    print('written')\n"
                  "except GraphsurgeryError as exc:\n    print(exc)\n"
                  "try:\n    convert_ir('pose.onnx', 'pose/1/model.xml', make_parents=True)\n    print('written')\n"
                  "except GraphsurgeryError as exc:\n    print(exc)\n")
        done = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                               sys.executable, "-c", script], cwd=folder, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(folder),
                                   "TMPDIR": str(folder)}, timeout=120)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stdout.count("umask 0177") == 2 and "umask 022" in done.stdout, done.stdout
        assert sorted(p.name for p in folder.iterdir()) == ["pose.onnx", "recipe.yaml"]
    finally:
        subprocess.run(["rm", "-rf", str(folder)])


@pytest.fixture(scope="module")
def patched_ir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ir")
    patched = apply(RECIPE, pose_model(folder / "pose.onnx"), folder / "pose.patched.onnx").output
    result = invoke("convert", patched, "-o", folder / "pose.patched.xml")
    assert result.exit_code == 0, result.output
    return folder / "pose.patched.xml"


def test_run_of_an_ir_on_onnxruntime_says_so(patched_ir, tmp_path):
    """Was (round 53): `run m.xml --backend onnxruntime` said "onnxruntime cannot load the model: … Protobuf parsing
    failed — fix: check the model with `graphsurgery inspect`", which only says the file is an OpenVINO IR."""
    image = ROOT / "examples" / "images" / "astronaut.jpg"
    result = invoke("run", patched_ir, image, "-o", tmp_path / "out", "--backend", "onnxruntime")
    one_line_exit_2(result, "pose.patched.xml", "onnxruntime cannot run an OpenVINO IR", "--backend openvino")
    assert not (tmp_path / "out").exists()


def test_reports_into_a_read_only_file_system_are_refused_before_the_work(tmp_path):
    """Was (round 53): `bench --json` and `--chart`, `verify --json` and `eval-coco --json` into a read-only file
    system ran the whole timing or comparison (bench printed it all), then said "cannot write the file"."""
    plain = pose_model(tmp_path / "pose.onnx")
    (tmp_path / "ro").mkdir()
    with _mounted("-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(tmp_path / "ro")) as ro:
        for option, name in (("--json", "b.json"), ("--chart", "b.png")):
            result = invoke("bench", RECIPE, plain, "--iterations", 1, "--warmup", 0, option, ro / name)
            one_line_exit_2(result, name, "not writable", "read-only file system")
            assert "bf16" not in result.output  # refused before the timing
        result = invoke("verify", RECIPE, plain, "--random", 1, "--json", ro / "v.json")
        one_line_exit_2(result, "v.json", "not writable")


def test_two_outputs_naming_one_new_file_through_a_bind_mount_are_refused(tmp_path):
    """Was (round 53): `bench --json d/b.png --chart bind/b.png`, where bind is d mounted again, wrote the report over
    the chart (exit 0, the chart lost): a file not written yet was judged by its resolved path alone, and the two
    spellings resolve apart. Its folder's entry (the folder's device and inode, and the name) now names it."""
    plain = pose_model(tmp_path / "pose.onnx")
    (tmp_path / "d").mkdir()
    (tmp_path / "bind").mkdir()
    with _mounted("--bind", str(tmp_path / "d"), str(tmp_path / "bind")) as bind:
        result = invoke("bench", RECIPE, plain, "--iterations", 1, "--warmup", 0, "--json", tmp_path / "d" / "b.png",
                        "--chart", bind / "b.png")
        one_line_exit_2(result, "--chart and --json name the same file")
        assert not list((tmp_path / "d").iterdir())


def test_eval_coco_proves_the_people_verify_can_crop_and_scores_a_box_1_px_wide(tmp_path):
    """Was (round 53): a ground-truth box 1 px wide (COCO has such annotations) is 0 px wide once clipped the
    authors' way (x2 = x1 + w - 1); eval-coco crops it (the crop pads it to the model's aspect) and scored all four
    pipelines, then its proof per keypoint (round 52) handed verify that box and the evaluation ended in exit 2:
    "box [55.87, 25.37, 0.0, 141.47] for '0.png' is not [x, y, w, h] … fix: fix that box", a scratch file's name."""
    annotations = write_coco_set(tmp_path / "images", images=2, seed=0)
    data = json.loads(annotations.read_text())
    data["annotations"][0]["bbox"][2] = 1.0
    thin = tmp_path / "thin.json"
    thin.write_text(json.dumps(data))
    plain = joint_detector(tmp_path / "detector.onnx")
    report = evaluate_coco(RECIPE, plain, thin, tmp_path / "images", backends=("onnxruntime",))
    assert report and report.per_keypoint, report.per_keypoint.failures() if report.per_keypoint else report
    assert report.proven == report.people - 1


def test_a_report_over_an_immutable_file_is_refused_before_the_timing(tmp_path):
    """Was (round 53): `bench --json r.json` over a file made immutable or append-only (`chattr +i`, `+a`, which
    refuse root too) ran and printed the whole timing, then said "cannot write the file (Operation not permitted)"."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr")
    plain = pose_model(tmp_path / "pose.onnx")
    report = tmp_path / "r.json"
    report.write_text("{}")
    if subprocess.run(["chattr", "+a", str(report)], capture_output=True).returncode != 0:
        pytest.skip("the file system keeps no append-only flag")
    try:
        result = invoke("bench", RECIPE, plain, "--iterations", 1, "--warmup", 0, "--json", report)
        one_line_exit_2(result, "r.json", "append-only file", "chattr -i -a")
        assert "bf16" not in result.output
    finally:
        subprocess.run(["chattr", "-a", str(report)], capture_output=True)


def test_eval_coco_proves_its_people_where_tmpdir_takes_no_symbolic_links(tmp_path, monkeypatch):
    """Was (round 53): with $TMPDIR on a file system without symbolic links (FAT, exFAT, some network shares; here
    every symlink refused), eval-coco ran its four pipelines and then ended in "…/proven/0.png: Operation not
    permitted — fix: check the permissions …", a scratch file: the proof per keypoint links its images there. It
    takes a hard link (or a copy) then."""
    annotations = write_coco_set(tmp_path / "images", images=1, seed=0)
    plain = joint_detector(tmp_path / "detector.onnx")

    def refused(self, target, target_is_directory=False):
        raise OSError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "symlink_to", refused)
    report = evaluate_coco(RECIPE, plain, annotations, tmp_path / "images", backends=("onnxruntime",))
    assert report and report.per_keypoint and report.proven == report.people


def test_eval_coco_whose_images_can_be_neither_linked_nor_copied_is_one_line(tmp_path, monkeypatch):
    """The proof's last fallback: no symbolic link, no hard link and no room for a copy in $TMPDIR is one line
    naming the temporary folder and the fix (`coco._link`), not an OSError."""
    from graphsurgery import coco
    from graphsurgery.errors import GraphsurgeryError

    annotations = write_coco_set(tmp_path / "images", images=1, seed=0)
    plain = joint_detector(tmp_path / "detector.onnx")
    patched = apply(RECIPE, plain, tmp_path / "patched.onnx").output  # before os.link is refused: apply places so

    def refused(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "symlink_to", refused)
    monkeypatch.setattr(coco.os, "link", refused)
    monkeypatch.setattr(coco.shutil, "copyfile", refused)
    with pytest.raises(GraphsurgeryError, match="cannot link or copy the image .*No space left on device") as caught:
        evaluate_coco(RECIPE, plain, annotations, tmp_path / "images", patched=patched, backends=("onnxruntime",))
    assert "TMPDIR" in caught.value.fix


def test_eval_coco_where_no_box_can_be_proven_is_refused_before_the_pipelines(tmp_path):
    """Every ground-truth box 1 px wide: none is a box verify crops, so the proof per keypoint would have nobody;
    one line naming the annotations, before any pipeline runs (`coco._provable`)."""
    from graphsurgery.errors import GraphsurgeryError

    annotations = write_coco_set(tmp_path / "images", images=1, seed=0)
    data = json.loads(annotations.read_text())
    for annotation in data["annotations"]:
        annotation["bbox"][2] = 1.0
    thin = tmp_path / "thin.json"
    thin.write_text(json.dumps(data))
    plain = joint_detector(tmp_path / "detector.onnx")
    with pytest.raises(GraphsurgeryError, match="no person box the proof per keypoint can crop") as caught:
        evaluate_coco(RECIPE, plain, thin, tmp_path / "images", backends=("onnxruntime",))
    assert caught.value.path == str(thin)


def test_a_replacement_that_fails_halfway_puts_the_earlier_outputs_back(tmp_path):
    """Was (round 53): `apply --force` over an earlier output whose model was made immutable (`chattr +i`) replaced
    its data file, failed on the model, and rolled back by deleting the new data file: the earlier model was left
    without its data ("external data file … is missing"), under a line saying "nothing was written". `run -o`
    into a folder where one earlier result was immutable deleted the earlier results it had replaced, and kept the
    new ones placed under new names beside the rest of the old set. Replaced files are now put back."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr")
    import onnx

    model = tmp_path / "m.onnx"
    onnx.save(onnx.load(str(pose_model(tmp_path / "pose.onnx"))), str(model), save_as_external_data=True,
              location="m.onnx.data", size_threshold=0)
    out = tmp_path / "out.onnx"
    apply(RECIPE, model, out)
    data = (tmp_path / "out.onnx.data").read_bytes()
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("the file system keeps no immutable flag")
    try:
        result = invoke("apply", ROOT / "recipes" / "hrnet_coco_topdown.yaml", model, "-o", out, "--force")
        one_line_exit_2(result, "out.onnx")
        assert (tmp_path / "out.onnx.data").read_bytes() == data
    finally:
        subprocess.run(["chattr", "-i", str(out)], capture_output=True)
    assert invoke("inspect", out).exit_code == 0

    patched = apply(RECIPE, pose_model(tmp_path / "run.onnx"), tmp_path / "run.patched.onnx").output
    images = ROOT / "examples" / "images"
    results = tmp_path / "results"
    assert invoke("run", patched, images / "astronaut.jpg", "-o", results).exit_code == 0
    before = {path.name: path.read_bytes() for path in results.iterdir()}
    subprocess.run(["chattr", "+i", str(results / "astronaut_pose.jpg")], check=True)
    try:
        result = invoke("run", patched, images, "-o", results)
        one_line_exit_2(result, "astronaut_pose.jpg", "immutable", "no result was moved")
        assert {path.name: path.read_bytes() for path in results.iterdir()} == before
    finally:
        subprocess.run(["chattr", "-i", str(results / "astronaut_pose.jpg")], capture_output=True)
