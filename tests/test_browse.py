"""Browsing the catalog: find_models and find_model, on both backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import statements_run

from modelvault import DatabaseManager, NotFoundError, ValidationError


def _add(db: DatabaseManager, n: int, path: str, type_: str, tags: list[Any]) -> str:
    sha = f"{n:02x}" * 32
    db.upsert_model({"sha256": sha, "path": path, "type": type_, "tags": tags})
    return sha


@pytest.fixture
def shelf(db: DatabaseManager, tmp_path: Path) -> dict[str, str]:
    present = tmp_path / "loras" / "ink_100%_style.safetensors"
    present.parent.mkdir()
    present.write_bytes(b"x")
    return {
        "ink": _add(db, 1, str(present), "lora", ["style", {"name": "fav", "color": "#ff8800"}]),
        "gone": _add(db, 2, str(tmp_path / "loras" / "gone.safetensors"), "lora", ["style"]),
        "base": _add(db, 3, str(tmp_path / "ckpt" / "Base_XL.safetensors"), "checkpoint", []),
    }


def test_find_models_filters_and_pages(db: DatabaseManager, shelf: dict[str, str]) -> None:
    def names(**query: Any) -> list[str]:
        return [m.name for m in db.find_models(**query)]

    assert names() == ["Base_XL.safetensors", "gone.safetensors", "ink_100%_style.safetensors"]
    assert names(tags=["style"]) == ["gone.safetensors", "ink_100%_style.safetensors"]
    assert names(tags=["STYLE", "fav"]) == ["ink_100%_style.safetensors"]
    assert names(model_type="checkpoint") == ["Base_XL.safetensors"]
    assert names(search="base_xl") == ["Base_XL.safetensors"]
    assert names(search="100%") == ["ink_100%_style.safetensors"]
    assert names(search="0_") == []  # % and _ are letters here, not wildcards
    assert names(missing=True) == ["Base_XL.safetensors", "gone.safetensors"]
    assert names(missing=True, offset=1, limit=5) == ["gone.safetensors"]
    assert names(limit=1, offset=1) == ["gone.safetensors"]
    root = Path(db.find_models(tags=["fav"])[0].path).parent.parent
    assert names(under=[root / "loras"]) == ["gone.safetensors", "ink_100%_style.safetensors"]
    assert names(under=[root / "lora"]) == []  # a folder, not a prefix of a name
    assert names(missing=True, under=[root / "ckpt", root / "vae"]) == ["Base_XL.safetensors"]
    (ink,) = db.find_models(tags=["fav"])
    assert {(t.name, t.color) for t in ink.tags} == {("style", None), ("fav", "#ff8800")}


def test_find_models_reads_tags_without_a_query_per_model(db: DatabaseManager) -> None:
    for n in range(1, 31):
        _add(db, n, f"/m/{n}.safetensors", "lora", [f"t{n}", "all"])
    with statements_run(db) as statements:
        models = db.find_models(tags=["all"])
    assert len(models) == 30
    assert all(len(m.tags) == 2 for m in models)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 2, selects  # the models, then all their tags at once


def test_find_model_by_sha_prefix_or_path(db: DatabaseManager, shelf: dict[str, str]) -> None:
    ink = shelf["ink"]
    assert db.find_model(ink).sha256 == ink
    assert db.find_model(ink[:6].upper()).sha256 == ink
    by_path = db.find_model(db.find_model(ink).path)
    assert by_path.sha256 == ink
    with pytest.raises(NotFoundError, match="modelvault models"):
        db.find_model("ffff")
    db.upsert_model({"sha256": "0101" + "ab" * 30, "path": "/m/other.safetensors"})
    with pytest.raises(ValidationError, match="several models"):
        db.find_model("0101")
