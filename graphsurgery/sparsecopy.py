"""Copying byte ranges between files without reading them into Python and without filling holes: how `save_model`
streams a model's external data (which may be over 2 GB, and sparse) into the output's data file.
"""

from __future__ import annotations

import errno
import os

COPY_CHUNK = 64 << 20


def copy_range(src: int, sink: int, src_offset: int, sink_offset: int, length: int) -> None:
    """Copy `length` bytes between two file descriptors at the given offsets, in bounded chunks.

    Holes in a sparse source (found with SEEK_DATA/SEEK_HOLE where the file system supports them) are skipped,
    leaving holes in the sink: copying a sparse 2 GB tensor costs neither time nor disk. Data is copied inside
    the kernel (copy_file_range) where possible, through a bounded buffer otherwise.
    """
    end = src_offset + length
    position = src_offset
    while position < end:
        data, hole = _next_data(src, position, end)
        while data < hole:
            copied = _copy_chunk(src, sink, data, sink_offset + data - src_offset, min(COPY_CHUNK, hole - data))
            if not copied:
                raise OSError(f"external data ended early (at byte {data})")
            data += copied
        position = hole


def _copy_chunk(src: int, sink: int, src_offset: int, sink_offset: int, count: int) -> int:
    try:
        return os.copy_file_range(src, sink, count, src_offset, sink_offset)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    chunk = os.pread(src, count, src_offset)
    view, written = memoryview(chunk), 0
    while written < len(chunk):
        written += os.pwrite(sink, view[written:], sink_offset + written)
    return len(chunk)


def _next_data(fd: int, position: int, end: int) -> tuple[int, int]:
    """The next [data, hole) extent at or after `position`, clipped to `end`; all data where holes are unknown."""
    try:
        data = os.lseek(fd, position, os.SEEK_DATA)
    except AttributeError:  # no SEEK_DATA on this platform
        return position, end
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # only a hole is left
            return end, end
        return position, end
    if data >= end:
        return end, end
    return data, min(os.lseek(fd, data, os.SEEK_HOLE), end)
