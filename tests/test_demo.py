"""The demo writes only into a folder of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelvault.errors import DemoFolderError
from modelvault.migration.demo import build_demo, claim_demo_folder
from modelvault.migration.demo_folder import MARKER_NAME


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
