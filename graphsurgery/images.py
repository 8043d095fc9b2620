"""Reading images from strangers: clear errors for missing, empty, undecodable or enormous files.

Everything becomes uint8 HWC BGR (as OpenCV and the HRNet authors' loader give it): grayscale is expanded to three
channels, an alpha channel is dropped, 16-bit images are scaled to 8 bits.
"""

from __future__ import annotations

import os
import re
import struct
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from graphsurgery.errors import GraphsurgeryError, SettingError, printable, quoted, say_note
from graphsurgery.safeio import open_regular

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_PIXELS = 100_000_000
MAX_SIDE = 1_000_000  # libpng's default user limit (JPEG stops at 65,535)

#: OpenCV's settings it reads as sizes or switches from the environment (cv::utils::getConfigurationParameter…),
#: most while `import cv2` runs, the others at the first decode or resize: a value its parser refuses ended the
#: process (SIGABRT, "terminate called after throwing an instance of 'std::invalid_argument' what(): stoull": two
#: lines of the C++ runtime above the supervisor's, which blamed the memory limit or the model; round 48)
OPENCV_SIZES = tuple(f"OPENCV_{name}" for name in (
    "IO_MAX_IMAGE_WIDTH", "IO_MAX_IMAGE_HEIGHT", "IO_MAX_IMAGE_PIXELS", "IO_MAX_IMAGE_PARAMS",
    "IMGCODECS_AVIF_MAX_FILE_SIZE", "IMGCODECS_WEBP_MAX_FILE_SIZE", "FOR_THREADS_NUM", "KMEANS_PARALLEL_GRANULARITY",
    "OPENCL_ALIGNMENT_MEM_USE_HOST_PTR", "THREAD_POOL_ACTIVE_WAIT_MAIN", "THREAD_POOL_ACTIVE_WAIT_PAUSE_LIMIT",
    "THREAD_POOL_ACTIVE_WAIT_THREADS_LIMIT", "THREAD_POOL_ACTIVE_WAIT_WORKER", "TRACE_DEPTH_OPENCV",
    "TRACE_MAX_CHILDREN", "TRACE_MAX_CHILDREN_OPENCV"))
OPENCV_SWITCHES = tuple(f"OPENCV_{name}" for name in (
    "BUFFER_AREA_ALWAYS_SAFE", "DUMP_CONFIG", "DUMP_ERRORS", "ENABLE_MEMALIGN", "SKIP_CPU_BASELINE_CHECK",
    "OPENCL_CACHE_CLEANUP", "OPENCL_CACHE_ENABLE", "OPENCL_CACHE_LOCK_ENABLE", "OPENCL_CACHE_WRITE",
    "OPENCL_DISABLE_BUFFER_RECT_OPERATIONS", "OPENCL_ENABLE_MEM_USE_HOST_PTR", "OPENCL_VALIDATE_BINARY_PROGRAMS",
    "TRACE", "TRACE_ITT_ENABLE", "TRACE_ITT_PARENT", "TRACE_ITT_SET_THREAD_NAME", "TRACE_SYNC_OPENCL",
    "VIDEOCAPTURE_DEBUG", "VIDEOIO_DEBUG", "VIDEOWRITER_DEBUG"))
#: what OpenCV's parser takes: ASCII digits (at most 2^64 - 1) and a unit or none; the eight spellings of a switch
_OPENCV_SIZE = re.compile(r"([0-9]+)(|MB|Mb|mb|KB|Kb|kb)")
_OPENCV_SWITCH = ("1", "True", "true", "TRUE", "0", "False", "false", "FALSE")


def opencv():
    """The cv2 module, imported once OpenCV's settings in the environment are ones its parser takes."""
    for variable in OPENCV_SIZES:
        value = os.environ.get(variable)
        size = None if value is None else _OPENCV_SIZE.fullmatch(value)
        if value is not None and (size is None or int(size[1]) >= 2**64):
            raise SettingError(f"{variable}={quoted(printable(value))} is no size OpenCV can read (it ends the "
                               "process as OpenCV loads)", fix=f"set {variable} to a whole number (e.g. 1073741824, "
                               "or with MB or KB after it), or unset it")
    for variable in OPENCV_SWITCHES:
        value = os.environ.get(variable)
        if value is not None and value not in _OPENCV_SWITCH:
            raise SettingError(f"{variable}={quoted(printable(value))} is no switch OpenCV can read (it ends the "
                               "process as OpenCV loads)", fix=f"set {variable} to 1 or 0 (or true or false), or "
                               "unset it")
    import cv2

    return cv2


def list_images(paths: list[Path]) -> list[Path]:
    """Expand folders (their JPEG/PNG files, sorted: a folder inside named `x.jpg` is no image of theirs, and was
    taken for one, then refused as "the folder holds no images" of the whole command; round 93); keep files as
    given. None at all is refused (the Python API's `run(model, [], out)` wrote empty results)."""
    if not paths:
        raise GraphsurgeryError("no images given", fix="give image files or a folder of images")
    found: list[Path] = []
    for path in paths:
        path = Path(path)
        if _judged(path, Path.is_dir):
            inside = sorted(p for p in path.iterdir()
                            if p.suffix.lower() in IMAGE_SUFFIXES and not _judged(p, Path.is_dir))
            if not inside:
                raise GraphsurgeryError(
                    "the folder holds no .jpg/.jpeg/.png images", path=path, fix="point to a folder of images"
                )
            found += inside
        else:
            found.append(path)
    return found


def _judged(path: Path, question):
    """`question(path)` (is_dir, stat, …), a permission refused on the way one line: an image in a folder that may
    be listed but not entered (`chmod 600 DIR`, run as a user) was an internal error (PermissionError from pathlib,
    which answers False only for a missing file; round 26)."""
    try:
        return question(path)
    except OSError as exc:
        raise GraphsurgeryError(f"cannot read the image ({exc.strerror or exc})", path=path,
                                fix="check the permissions of the image and its folders") from None


def read_image(path: Path) -> np.ndarray:
    """Decode an image file into uint8 HWC BGR."""
    cv2 = opencv()
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if _judged(path, Path.is_dir):
        raise GraphsurgeryError("is a directory, not an image file", path=path, fix="give the path of a JPEG or PNG")
    if not path.exists() and path.is_symlink():  # a loop or a removed target was "no such image file", of a
        # file that is listed right there
        raise GraphsurgeryError("is a symbolic link that leads nowhere (a loop, or its target is gone)", path=path,
                                fix="point the link at an image, or remove it")
    if not path.exists():
        raise GraphsurgeryError("no such image file", path=path, fix="check the path")
    if not path.is_file():  # /dev/zero, a FIFO: "no such image file" sent the user looking for a missing file
        raise GraphsurgeryError("is not a regular file (a FIFO, a device or a socket)", path=path,
                                fix="give the path of a JPEG or PNG file")
    if path.stat().st_size == 0:
        raise GraphsurgeryError("the image file is empty", path=path, fix="copy the image again")
    try:
        stream = open_regular(path, "an image")
    except OSError as exc:
        raise GraphsurgeryError(f"cannot read the image ({exc.strerror or exc})", path=path,
                                fix="check its permissions") from None
    with stream:
        try:
            with warnings.catch_warnings():  # the size is judged below, against our own limit, and OpenCV decodes:
                warnings.simplefilter("ignore")  # Pillow's word on metadata it reads here ("Corrupt EXIF data", two
                # lines naming its own source file on a run that succeeded; round 60) is not the command's
                with Image.open(stream) as header:
                    width, height = header.size
                    kind = header.format
        except Image.DecompressionBombError:  # PIL's own limit, far above ours: the header claims billions of pixels
            raise GraphsurgeryError(
                f"image claims more than {MAX_PIXELS:,} pixels", path=path, fix="downscale it first"
            ) from None
        except ValueError as exc:  # Pillow's bounds on PNG metadata, or a damaged header
            if "MAX_TEXT" not in str(exc):
                raise GraphsurgeryError("not a readable JPEG or PNG image", path=path,
                                        fix="convert it to JPEG or PNG") from None
            # a text or ICC profile chunk decompressing past 1 MB (64 MB in all) is refused as a decompression bomb;
            # the line said only "not readable — convert it", though the pixels may be sound
            raise GraphsurgeryError("the PNG's metadata (compressed text or an ICC profile) decompresses to more "
                                    "than Pillow reads (1 MB a chunk, 64 MB in all): refused as a decompression "
                                    "bomb", path=path, fix="save the image again without its metadata (e.g. "
                                    "`magick in.png -strip out.png`)") from None
        except (UnidentifiedImageError, OSError):
            raise GraphsurgeryError(
                "not a readable JPEG or PNG image", path=path, fix="convert it to JPEG or PNG"
            ) from None
        if kind not in ("JPEG", "PNG"):  # what the name says is not what the bytes are: GIF, TIFF, BMP, WebP, PPM, …
            raise GraphsurgeryError(f"a {kind} image, not JPEG or PNG (whatever its name says)", path=path,
                                    fix="convert it to JPEG or PNG")
        if kind == "PNG":
            _check_png_chunks(stream, path, width, height)
        if kind == "JPEG":
            _check_jpeg_scans(stream, path)
        if width * height > MAX_PIXELS:
            raise GraphsurgeryError(f"image is {width}×{height}, more than {MAX_PIXELS:,} pixels", path=path,
                                    fix="downscale it first")
        if max(width, height) > MAX_SIDE:  # libpng's own bound: a 1 × 100,000,000 PNG was "not a readable PNG"
            raise GraphsurgeryError(f"image is {width}×{height}, more than {MAX_SIDE:,} px a side, which libpng "
                                    "does not decode", path=path, fix="crop or downscale it first")
        # libjpeg's "Premature end of JPEG file", libpng's complaints: not ours to print, but said in our words
        with _native_stderr_kept() as said:
            try:
                # the stored pixels, as the authors' loader reads them: the header's size, and the frame COCO
                # annotations and boxes files give. OpenCV turned an image by its EXIF orientation (JPEG and PNG),
                # and eval-coco refused a COCO image as a "rotated copy" of itself (a square one was scored turned)
                image = cv2.imread(_opencv_path(path, stream), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
            except cv2.error as exc:  # OPENCV_IO_MAX_IMAGE_PIXELS (or _WIDTH, _HEIGHT) set below the image's size
                limit = re.search(r"CV_IO_MAX_IMAGE_\w+", str(exc))  # in the environment: an internal error
                if limit is None:
                    raise
                variable = f"OPEN{limit.group()}"
                raise GraphsurgeryError(f"image is {width}×{height}, more than {variable}="
                                        f"{printable(os.environ.get(variable, '')[:20])} lets OpenCV decode",
                                        path=path, fix=f"unset {variable} (or raise it)") from None
    if image is None:
        raise GraphsurgeryError("not a readable JPEG or PNG image (decoding failed)", path=path,
                                fix="convert it to JPEG or PNG")
    _note_damage(path, said)
    return image


def _check_png_chunks(stream, path: Path, width: int, height: int) -> None:
    """Refuse a PNG chunk, up to the first IDAT, that declares more bytes than the file holds and than the image's
    pixels could fill uncompressed (8 bytes a pixel, 16-bit RGBA): OpenCV allocates each of them whole before it
    reads it, and a 141-byte PNG of 200 × 300 pixels declaring a 2 GB IDAT took 2.2 GB (round 57). A file merely cut
    short declares no more than it once held, and is left to OpenCV. Pillow has read those chunks already, so the
    walk costs what its header read did."""
    size = os.fstat(stream.fileno()).st_size
    most = height * (1 + 8 * width) + (1 << 20)  # zlib stores incompressible data with 5 bytes a 16 KB block
    position = 8  # past the signature
    while position + 8 <= size:
        stream.seek(position)
        head = stream.read(8)
        if len(head) < 8:  # cut short since it was measured: OpenCV's to refuse
            break
        length, kind = struct.unpack(">I4s", head)
        if position + 12 + length > size and length > most:
            raise GraphsurgeryError(f"the PNG's {printable(kind.decode('latin-1'))} chunk declares {length:,} bytes, "
                                    f"past the end of the {size:,}-byte file and more than its {width}×{height} "
                                    "pixels could fill (damaged, or a memory bomb)", path=path,
                                    fix="copy the image again, or convert it to JPEG or PNG")
        if kind == b"IDAT":
            break
        position += 12 + length
    stream.seek(0)


#: Scans a JPEG may hold: libjpeg decodes each over the whole image (a progressive JPEG has about 10)
MAX_JPEG_SCANS = 1000


def _check_jpeg_scans(stream, path: Path) -> None:
    """Refuse a JPEG of more than MAX_JPEG_SCANS scans (start-of-scan markers, which entropy-coded data cannot
    hold: its 0xFF bytes are stuffed): libjpeg decodes each over the whole image and warns of nothing, and a 2.9 MB
    progressive JPEG of 4000 × 4000 grey repeating one scan 200,000 times held `run` in OpenCV for a minute, not a
    step the time limit bounds (at 100 million pixels, hours; round 57)."""
    scans, tail = 0, b""
    stream.seek(0)
    while chunk := stream.read(1 << 24):
        scans += (tail + chunk[:1]).count(b"\xff\xda") + chunk.count(b"\xff\xda")
        tail = chunk[-1:]
        if scans > MAX_JPEG_SCANS:
            raise GraphsurgeryError(f"the JPEG holds more than {MAX_JPEG_SCANS:,} scans, each decoded over the whole "
                                    "image (a progressive JPEG has about 10): decoding would take minutes or hours",
                                    path=path, fix="save the image again (baseline JPEG, or PNG)")
    stream.seek(0)


#: libjpeg's words for a JPEG it decoded only in part (its missing or damaged part grey)
_JPEG_DAMAGE = re.compile(r"Premature end of JPEG file|Corrupt JPEG data[^\n]*")
#: the images already said to be damaged (eval-coco decodes each image once per pipeline)
_noted_damaged: set[str] = set()


def _note_damage(path: Path, said: list[str]) -> None:
    """One note on stderr, once per image, when libjpeg decoded the image only in part: a truncated or damaged JPEG
    decodes with the rest grey (as `cv2.imread` does for the authors' loader, so both pipelines agree), and the poses
    found in it were reported without a word (libjpeg's own warning was kept off stderr). Once per file, by any
    name: eval-coco's proof per keypoint reads its images again through links of its own."""
    damage = _JPEG_DAMAGE.search("".join(said))
    try:  # the file, also where the proof's link is a hard link or a copy's name (no symbolic links in $TMPDIR)
        status = os.stat(path)
        key = f"{status.st_dev}:{status.st_ino}"
    except OSError:
        key = os.path.realpath(path)
    if damage is None or key in _noted_damaged:
        return
    _noted_damaged.add(key)
    say_note(f"note: {printable(path)}: the JPEG is damaged or cut short (libjpeg: {damage.group()}); it was "
             "decoded with the missing part grey, as OpenCV does — copy the image again if that is not what it "
             "should be")


def _opencv_path(path: Path, stream) -> str:
    """A name of the open file that OpenCV can take: /proc/self/fd/N, the file whose header was judged (by its
    name, an image replaced after the check was decoded unchecked: any size, any format). Where there is no /proc,
    the path, if it is UTF-8: imread crashed the process (SIGSEGV) on a path that is not (Python holds its bytes
    as lone surrogates). (imdecode of the bytes is no stand-in: it refuses a truncated JPEG that imread decodes.)"""
    through = f"/proc/self/fd/{stream.fileno()}"
    if os.path.exists(through):
        return through
    try:
        str(path).encode("utf-8")
        return str(path)
    except UnicodeEncodeError:
        raise GraphsurgeryError("the image's path is not UTF-8 text, which OpenCV cannot take", path=path,
                                fix="rename the file (or folder) to UTF-8") from None


@contextmanager
def _native_stderr_kept() -> Iterator[list[str]]:
    """File descriptor 2 pointed at an anonymous memory file for a native call, whose text is appended to the list
    yielded once the call is over: libjpeg and libpng print their warnings there (a truncated JPEG decodes with its
    missing part grey, `_note_damage` says so in one line; a PNG that fails is refused in one line). A pipe could
    fill up and block the decoder; a memory file cannot. Where there is none (not Linux), /dev/null: silence."""
    said: list[str] = []
    try:
        if sys.stderr is not None:  # None: started with it closed (`2>&-`: AttributeError, an internal error)
            sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no standard error to protect (closed, or not a file descriptor)
        yield said
        return
    kept = _memory_file()
    try:
        os.dup2(kept, 2)
        yield said
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        try:
            os.lseek(kept, 0, os.SEEK_SET)
            said.append(os.read(kept, 4096).decode("utf-8", "replace"))
        except OSError:  # /dev/null
            pass
        os.close(kept)


def _memory_file() -> int:
    try:
        return os.memfd_create("graphsurgery-decoder-stderr")
    except (AttributeError, OSError):
        return os.open(os.devnull, os.O_WRONLY)
