"""The demo writes only into a folder of its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modelvault.errors import DemoFolderError
from modelvault.migration.demo import (
    build_demo,
    check_demo_folder,
    claim_demo_folder,
    demo_writes,
)
from modelvault.migration.demo_folder import MARKER_HEADING, MARKER_NAME


def test_the_demo_claims_a_new_or_empty_folder_and_its_own_again(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert claim_demo_folder(empty) == empty
    assert (empty / MARKER_NAME).is_file()
    messages: list[str] = []
    legacy = build_demo(tmp_path / "new" / "demo", file_mb=0.01, progress=messages.append)
    assert legacy.is_file()
    assert messages[0] == "writing model file 1/10: checkpoints/dreamshaper_8.safetensors"
    assert len(messages) == 10
    assert build_demo(tmp_path / "new" / "demo", file_mb=0.01) == legacy  # a previous demo


def test_a_folder_of_the_users_is_refused_untouched(tmp_path: Path) -> None:
    mine = tmp_path / "models" / "checkpoints" / "dreamshaper_8.safetensors"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my model")
    with pytest.raises(DemoFolderError, match="is not empty and holds no modelvault demo"):
        build_demo(tmp_path, file_mb=0.01)
    assert mine.read_bytes() == b"my model"
    assert not (tmp_path / MARKER_NAME).exists()
    with pytest.raises(DemoFolderError, match="is not a folder"):
        claim_demo_folder(mine)


def _marker_lists(folder: Path) -> list[str]:
    lines = (folder / MARKER_NAME).read_text(encoding="utf-8").splitlines()
    assert lines[0] == MARKER_HEADING
    return lines[1:]


def test_the_marker_lists_every_file_the_demo_made(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    build_demo(folder, file_mb=0.01)
    made = {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != MARKER_NAME
    }
    listed = set(_marker_lists(folder))
    assert made <= listed
    assert listed - made == {  # written, then gone: the file deleted since, the partial catalog
        "models/loras/old_portrait.safetensors",
        "legacy/hikaze_mm.sqlite3.partial",
    }
    assert set(demo_writes()) == listed


def test_a_marker_copied_into_a_folder_of_the_users_protects_nothing(tmp_path: Path) -> None:
    mine = tmp_path / "models" / "checkpoints" / "dreamshaper_8.safetensors"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my model")
    (tmp_path / MARKER_NAME).write_text(MARKER_HEADING + "\n")  # lists nothing
    with pytest.raises(DemoFolderError, match="is not a file the demo made"):
        build_demo(tmp_path, file_mb=0.01)
    assert mine.read_bytes() == b"my model"
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        [MARKER_NAME, "models", "checkpoints", "dreamshaper_8.safetensors"]
    )


def test_links_planted_in_a_demo_folder_are_never_written_through(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    build_demo(folder, file_mb=0.01)
    (folder / "legacy" / "hikaze_mm.sqlite3").unlink()  # the next run writes every file again
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"my model")
    target = folder / "models" / "loras" / "ink_style.safetensors"
    target.unlink()
    target.symlink_to(mine)  # listed in the marker, but now a link to a file of the user's
    with pytest.raises(DemoFolderError, match=r"ink_style\.safetensors is not a file the demo"):
        build_demo(folder, file_mb=0.01)
    target.unlink()
    shutil.rmtree(folder / "models" / "vae")
    (folder / "models" / "vae").symlink_to(tmp_path)  # a folder that leads elsewhere
    with pytest.raises(DemoFolderError, match=r"vae is not a folder the demo made"):
        build_demo(folder, file_mb=0.01)
    assert mine.read_bytes() == b"my model"


def test_an_interrupted_demo_is_finished_and_a_strange_marker_refused(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    build_demo(folder, file_mb=0.01)
    (folder / "legacy" / "hikaze_mm.sqlite3").unlink()  # stopped before the catalog was made
    assert build_demo(folder, file_mb=0.01).is_file()  # its own files are replaced
    earlier = tmp_path / "earlier"
    build_demo(earlier, file_mb=0.01)
    (earlier / MARKER_NAME).write_text(  # an earlier version's marker: it listed nothing
        "modelvault demo: every file in this folder was made by it.\n"
    )
    assert build_demo(earlier, file_mb=0.01).is_file()  # finished: used as it is
    strange = tmp_path / "strange"
    strange.mkdir()
    (strange / MARKER_NAME).write_bytes(b"\xff\xfe not ours")
    with pytest.raises(DemoFolderError, match="was not written by the modelvault demo"):
        check_demo_folder(strange)
    with pytest.raises(DemoFolderError, match="cannot make the demo folder"):
        check_demo_folder(tmp_path / "demo" / MARKER_NAME / "below")
