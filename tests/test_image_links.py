"""An image path that is a symbolic link leading nowhere is named as such, not as a missing file."""

from __future__ import annotations

import pytest

from graphsurgery.errors import GraphsurgeryError
from graphsurgery.images import read_image


@pytest.mark.parametrize("kind", ["loop", "dangling"])
def test_a_link_that_leads_nowhere_is_named_a_link(tmp_path, kind):
    """A loop of links (or a link whose target was removed) was 'no such image file — check the path', of a file
    that `ls` lists right there (convert --calibration, run, eval-coco all read images through read_image)."""
    link = tmp_path / "a.jpg"
    if kind == "loop":
        (tmp_path / "b.jpg").symlink_to(link)
        link.symlink_to(tmp_path / "b.jpg")
    else:
        link.symlink_to(tmp_path / "removed.jpg")
    with pytest.raises(GraphsurgeryError, match="symbolic link that leads nowhere") as caught:
        read_image(link)
    assert "no such image file" not in str(caught.value)


def test_a_missing_image_is_still_missing(tmp_path):
    with pytest.raises(GraphsurgeryError, match="no such image file"):
        read_image(tmp_path / "absent.jpg")
