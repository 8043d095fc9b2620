"""Round 34 of issue 17 (hostile, second pass): the Python API's argument objects, commands writing into one folder
at once (and one killed meanwhile), and data files and images that are valid but odd.

What it found: two eval-coco (or run) placing results in one folder at once each wrote a record listing only its
own files (the earlier runs' still there were listed from the folder as it was before the other placed its files),
so the last record dropped the other's results, and the next run refused them as nobody's; cleaning up after a
killed command followed a hidden symlink to a folder holding a dead process's marker and emptied that folder;
OpenCV turned JPEG and PNG images by their EXIF orientation (the authors' loader reads the stored pixels), so
eval-coco refused a COCO image as a rotated copy of itself; 100,000 boxes of as many images took minutes to count
(quadratic); a detection with a segmentation and no bbox went into pycocotools' C code (a size of -5: an internal
error); a detection's `image_id: true` was image 1; pycocotools' own numpy box (from keypoint detections) was "not
a number"; a str subclass whose __len__ raises, as a path, raised its own exception.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from clikit import invoke, one_line_exit_2
from graphsurgery import safeio
from graphsurgery.errors import GraphsurgeryError

from conftest import RECIPES, ROOT
from examples.synthetic_coco import joint_detector, write_coco_set

CROP = RECIPES / "hrnet_coco_pose.yaml"
PHOTO = ROOT / "examples" / "images" / "astronaut.jpg"


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    folder = tmp_path_factory.mktemp("coco34")
    annotations = write_coco_set(folder / "images", images=2, seed=0)
    return annotations, folder / "images", joint_detector(folder / "detector.onnx", opset=17)


@pytest.fixture
def meanwhile(monkeypatch):
    """`meanwhile(folder, action)`: `action()` runs once, when the command asks for the lock of `folder` to place
    its outputs there: another command placing its own just before."""

    def arrange(folder, action):
        real, done = safeio._lock, []

        def lock(handle, locked):
            if not done and os.path.samefile(locked, folder):
                done.append(None)  # before: the other command asks for the lock too
                done[0] = action()
            return real(handle, locked)

        monkeypatch.setattr(safeio, "_lock", lock)
        return done

    return arrange


# --- concurrent writers: records ----------------------------------------------------------------------------------

@pytest.mark.parametrize("existed", [False, True], ids=["new-folder", "existing-folder"])
def test_eval_coco_record_keeps_the_results_another_run_placed_meanwhile(coco, tmp_path, meanwhile, existed):
    """Two eval-coco into one --results folder at once (one per backend): the later record listed its own files
    and none of the other's, which the next eval-coco then refused as "not the output of an earlier run"."""
    from graphsurgery.coco import evaluate_coco

    annotations, images, plain = coco
    results = tmp_path / "results"
    if existed:
        results.mkdir()

    def other():
        return evaluate_coco(CROP, plain, annotations, images, backends=("openvino",), results_dir=results)

    done = meanwhile(tmp_path, other)  # results are placed under the lock of the folder that holds them
    evaluate_coco(CROP, plain, annotations, images, backends=("onnxruntime",), results_dir=results)
    assert done, "the other command did not run"
    record = json.loads((results / "eval-coco.json").read_text())
    assert sorted(record["earlier_results"]) == ["patched-openvino.json", "unpatched-openvino.json"], record
    # the next run of the other backend may replace its own results
    result = invoke("eval-coco", CROP, plain, "--ann", annotations, "--images", images, "--backends", "openvino",
                    "--results", results)
    assert result.exit_code == 0, result.output


def test_run_record_keeps_the_results_another_run_placed_meanwhile(patched, tmp_path, meanwhile):
    from graphsurgery.pose import run_pose

    first, second = tmp_path / "a.jpg", tmp_path / "b.jpg"
    first.write_bytes(PHOTO.read_bytes())
    second.write_bytes(PHOTO.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    meanwhile(tmp_path, lambda: run_pose(patched, [second], out, backend="onnxruntime"))
    run_pose(patched, [first], out, backend="onnxruntime")
    result = invoke("run", patched, second, "-o", out, "--backend", "onnxruntime")
    assert result.exit_code == 0, result.output


# --- concurrent writers: cleaning up after a killed command ---------------------------------------------------------

def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_cleaning_up_never_follows_a_symlink_to_a_folder(tmp_path, plain):
    """A hidden link in the output folder to a folder holding a marker of a dead process: the folder's files were
    removed through the link (a scratch folder is never a link)."""
    from graphsurgery.api import apply

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / safeio.OWNER).write_text(str(dead_pid()))
    (kept / "precious.txt").write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".link").symlink_to(kept)
    apply(CROP, plain, out / "m.onnx")
    assert (kept / "precious.txt").read_text() == "mine"
    assert (kept / safeio.OWNER).exists() and (out / ".link").is_symlink()


SCOPE = ".graphsurgery-scope"


def this_scope() -> str:
    """The kernel's boot and this process's PID namespace, read here as a scratch folder's marker says them."""
    with open("/proc/sys/kernel/random/boot_id") as boot:
        return f"{boot.read().strip()} pid:{os.stat('/proc/self/ns/pid').st_ino}"


def stale(folder, scope: str | None):
    """A scratch folder left by a dead process, whose marker says where its process ID was read (None: a folder
    from before markers said so)."""
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"half a model")
    if scope is not None:
        (folder / SCOPE).write_text(scope)
    (folder / safeio.OWNER).write_text(str(dead_pid()))
    return folder


def test_a_scratch_folder_of_another_pid_namespace_or_boot_is_left_alone(tmp_path, plain):
    """A folder shared with a container (bind mount) or another machine (NFS): a process ID there names no process
    here, and the live scratch folder of a command running on the other side was removed as a dead one's."""
    from graphsurgery.api import apply

    here = this_scope()
    out = tmp_path / "out"
    out.mkdir()
    theirs = stale(out / ".m.onnx.container", f"{here.split()[0]} pid:1")
    other_boot = stale(out / ".m.onnx.nfs", f"another-boot {here.split()[1]}")
    ours = stale(out / ".m.onnx.killed", here)
    older = stale(out / ".m.onnx.older", None)  # judged by its process ID, as before
    apply(CROP, plain, out / "m.onnx")
    assert (theirs / "model.onnx").exists() and (other_boot / "model.onnx").exists()
    assert not ours.exists() and not older.exists()


def test_a_scratch_folder_says_where_its_process_id_holds_and_no_output_keeps_it(tmp_path, patched):
    from graphsurgery.pose import run_pose

    with safeio.scratch_folder(tmp_path, ".x.", tmp_path / "x") as folder:
        assert (folder / SCOPE).read_text() == this_scope()
        assert safeio.owner(folder) == os.getpid()
    out = tmp_path / "new"
    run_pose(patched, [PHOTO], out, backend="onnxruntime")  # the scratch folder renamed into the output folder
    assert sorted(path.name for path in out.iterdir() if path.name.startswith(".")) == []


# --- images -----------------------------------------------------------------------------------------------------

def oriented(source, target, orientation: int = 6):
    """`source`'s pixels (an image or its file) saved to `target` with an EXIF orientation tag (6: turn 90° to
    show it)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    image = source if isinstance(source, Image.Image) else Image.open(source)
    image.save(target, exif=exif)
    return target


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_an_exif_orientation_is_not_a_rotation_of_the_pixels(tmp_path, suffix):
    """OpenCV's IMREAD_COLOR turns the image by its tag; the HRNet authors' loader reads it with
    IMREAD_IGNORE_ORIENTATION, and the header's size, COCO's annotations and boxes files are of the stored pixels."""
    from graphsurgery.images import read_image

    source, tagged = tmp_path / f"plain{suffix}", tmp_path / f"tagged{suffix}"
    pixels = Image.open(PHOTO).resize((96, 128))
    pixels.save(source)
    oriented(pixels, tagged)  # encoded from the same pixels, the same way
    image = read_image(tagged)
    assert image.shape == (128, 96, 3)
    assert np.array_equal(image, read_image(source))


def test_eval_coco_scores_an_image_with_an_exif_orientation_as_its_pixels(coco, tmp_path):
    """It was refused as "not the annotated image (rotated copies?)": COCO's own images carry such tags."""
    from graphsurgery.coco import evaluate_coco

    annotations, images, plain = coco
    tagged = tmp_path / "images"
    tagged.mkdir()
    for path in images.glob("*.png"):
        oriented(path, tagged / path.name)
    expected = evaluate_coco(CROP, plain, annotations, images, backends=("onnxruntime",))
    report = evaluate_coco(CROP, plain, annotations, tagged, backends=("onnxruntime",))
    assert [p.stats for p in report.pipelines] == [p.stats for p in expected.pipelines]


def test_a_png_longer_than_libpng_decodes_says_so(patched, tmp_path):
    """1 × 1,000,001 px (within the 100 million pixels): "not a readable JPEG or PNG — convert it to JPEG or PNG",
    of a PNG. 1 × 1,000,000 runs."""
    Image.new("L", (1, 1_000_001), 128).save(tmp_path / "thin.png")
    result = invoke("run", patched, tmp_path / "thin.png", "-o", tmp_path / "out", "--backend", "onnxruntime")
    one_line_exit_2(result, "thin.png", "1×1000001", "1,000,000 px a side", "crop or downscale")
    assert not (tmp_path / "out").exists()


# --- data files -------------------------------------------------------------------------------------------------

def test_a_hundred_thousand_boxes_of_as_many_images_are_counted_in_seconds(tmp_path):
    """The bound on boxes summed every image's boxes for each box: 5 × 10^9 additions, minutes."""
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps({f"img{i}.jpg": [[0, 0, 10, 10]] for i in range(100_000)}))
    code = f"from graphsurgery.boxes import load_boxes; assert len(load_boxes({str(path)!r})) == 100_000"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.mark.parametrize("name", ["loop/x.png", "x.png"])
def test_a_file_name_through_a_symlink_loop_is_one_line(coco, tmp_path, name):
    """pathlib's resolve() raised RuntimeError on the loop: an internal error (exit 3)."""
    annotations, images, plain = coco
    folder = tmp_path / "images"
    folder.mkdir()
    for path in images.glob("*.png"):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "loop").symlink_to("loop")
    (folder / "x.png").symlink_to("y.png")
    (folder / "y.png").symlink_to("x.png")
    data = json.loads(annotations.read_text())
    data["images"][0]["file_name"] = name
    looped = tmp_path / "looped.json"
    looped.write_text(json.dumps(data))
    result = invoke("eval-coco", CROP, plain, "--ann", looped, "--images", folder, "--backends", "onnxruntime")
    one_line_exit_2(result, "symbolic link loop", "looped.json")


@pytest.mark.parametrize("value", [10**400, 0], ids=["huge", "zero"])
def test_annotation_ids_cocoeval_cannot_match_are_refused_before_the_work(coco, tmp_path, value):
    """COCOeval keeps matched annotation ids in float arrays, 0 meaning no match: an id of 10^400 was an
    OverflowError (internal error) after every pipeline had run; a person of id 0 was never matched (AP 0.98 became
    0.84 on both sides, in silence). Negative ids and any image id still work."""
    annotations, images, plain = coco
    data = json.loads(annotations.read_text())
    data["annotations"][0]["id"] = value
    path = tmp_path / "ids.json"
    path.write_text(json.dumps(data))
    result = invoke("eval-coco", CROP, plain, "--ann", path, "--images", images, "--backends", "onnxruntime")
    one_line_exit_2(result, f"annotation id {str(value)[:20]}", "from 1")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_keypoints_at_nan_score_nothing_and_stay_json(coco, value):
    """A NaN keypoint (DARK or UDP dividing by a flat heatmap's zero curvature, on both pipelines alike) made
    COCOeval's OKS NaN, which it matches at every threshold: AP 1.0 for a model that answers nothing, and the
    results files (keypoints.json, --results) held NaN, which is not JSON."""
    from graphsurgery.coco import annotated_people, keypoint_stats
    from graphsurgery.cocoformat import keypoint_result

    annotations, images, _ = coco
    gt, image_ids, people = annotated_people(annotations, images)
    results = [keypoint_result(person.image_id, np.full((17, 2), value), np.ones(17)) for person in people]
    json.dumps(results, allow_nan=False)
    assert keypoint_stats(gt, results, image_ids)[0] < 0.5


@pytest.mark.parametrize("which", ["annotations", "detections"])
def test_a_key_given_twice_in_a_coco_file_is_refused(coco, tmp_path, which):
    """JSON keeps the last: two `annotations` lists (a careless merge) scored 1 of the 5 people in silence, and a
    detection's second `bbox` replaced its first (boxes files refused this already)."""
    annotations, images, plain = coco
    data = json.loads(annotations.read_text())
    args = ["--ann", annotations]
    if which == "annotations":
        path = tmp_path / "merged.json"
        path.write_text(json.dumps(data)[:-1] + ', "annotations": ' + json.dumps(data["annotations"][:1]) + "}")
        args = ["--ann", path]
    else:
        path = tmp_path / "det.json"
        path.write_text('[{"image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 40], "score": 0.9, '
                        '"bbox": [10, 20, 30, 40]}]')
        args += ["--boxes", path]
    result = invoke("eval-coco", CROP, plain, *args, "--images", images, "--backends", "onnxruntime")
    one_line_exit_2(result, path.name, "appears twice in one object", "merge the two")


def detections_file(tmp_path, detections) -> str:
    path = tmp_path / "det.json"
    path.write_text(json.dumps(detections))
    return str(path)


@pytest.mark.parametrize("detection", [
    {"segmentation": {"size": [-5, 10], "counts": "abc"}},  # pycocotools: OverflowError, an internal error
    {"segmentation": {"size": [10, 10], "counts": "\x7f\x7f"}},  # boxes made up from a garbage mask
    {"bbox": [10, 10, 100, 200], "image_id": True},  # image 1
    {"bbox": [10, 10, 100, 200], "image_id": 1.0},
], ids=["negative-mask-size", "garbage-mask", "image-id-true", "image-id-float"])
def test_detections_are_boxes_of_whole_image_ids(coco, tmp_path, detection):
    annotations, images, plain = coco
    boxes = detections_file(tmp_path, [{"image_id": 1, "category_id": 1, "score": 0.9, **detection}])
    result = invoke("eval-coco", CROP, plain, "--ann", annotations, "--images", images, "--backends", "onnxruntime",
                    "--boxes", boxes)
    one_line_exit_2(result, "not COCO detection results")


def test_keypoint_detections_give_pycocotools_own_boxes(coco, tmp_path):
    """Detections as keypoints (no bbox): pycocotools makes the box of np.int64 values, refused as "10 in a bbox"."""
    from graphsurgery.coco import annotated_people

    annotations, images, _ = coco
    boxes = detections_file(tmp_path, [{"image_id": 1, "category_id": 1, "score": 0.9,
                                        "keypoints": [10, 10, 2] * 8 + [60, 130, 2] * 9}])
    (person,) = annotated_people(annotations, images, boxes)[2]
    assert person.box == (10.0, 10.0, 50.0, 120.0)


# --- the Python API ---------------------------------------------------------------------------------------------

class Unmeasurable(str):
    """A path whose length, equality and hash raise: the caller's own object, read once as a plain str."""

    def __len__(self):
        raise RuntimeError("len")

    def __eq__(self, other):
        raise RuntimeError("eq")

    def __hash__(self):
        raise RuntimeError("hash")


def test_a_str_subclass_path_is_read_as_plain_text(plain, tmp_path):
    from graphsurgery.api import apply, inspect_model

    assert inspect_model(Unmeasurable(plain)).nodes > 0
    assert apply(CROP, Unmeasurable(plain), Unmeasurable(tmp_path / "m.onnx")).output == tmp_path / "m.onnx"
    with pytest.raises(GraphsurgeryError, match="no such model file"):
        inspect_model(Unmeasurable(tmp_path / "missing.onnx"))


def test_the_parents_line_names_verifys_patched_model_as_the_user_knows_it(tmp_path):
    """A patched model too slow to compile was "OpenVINO was compiling /tmp/graphsurgery-verify-…/patched.onnx for
    more than 30 s": a file the user never gave, gone when the line is read. The activity the parent prints names
    the model and recipe instead, as verify's errors do (`safeio.scratch_named`)."""
    from graphsurgery import supervisor

    scratch = tmp_path / "graphsurgery-verify-x1"
    with safeio.scratch_named(scratch, "model.onnx (patched by pose.yaml)"):
        line = supervisor.shown(f"OpenVINO was compiling {scratch / 'patched.onnx'}")
    assert line == "OpenVINO was compiling model.onnx (patched by pose.yaml)"
    assert supervisor.shown(f"OpenVINO was compiling {scratch / 'patched.onnx'}").endswith("patched.onnx")


def test_a_model_whose_one_sample_is_too_large_to_make_is_refused_before_making_it(tmp_path):
    """A static input of 3 × 100,000 × 100,000 was allowed one random sample (the count's bound is at least 1):
    30 billion values made at once, then out of memory (under `ulimit -v`) or the kernel's OOM killer."""
    import onnx
    from onnx import TensorProto, helper

    from graphsurgery.verification import verify

    dims = [1, 3, 100_000, 100_000]
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "giant.onnx")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nname: r\ninput:\n  tensor: {dtype: uint8}\n  steps:\n    - cast: {}\n")
    with pytest.raises(GraphsurgeryError, match="one sample of the model's input 'x'.*30,000,000,000 values"):
        verify(recipe, tmp_path / "giant.onnx", random=1, backends=("onnxruntime",))
