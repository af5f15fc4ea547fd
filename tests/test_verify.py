"""verify: real files read again; a file rewritten in place with its stamp put back
(what a scan cannot see), one gone, one out of reach; read-only unless --update,
which stages the changed file as a scan does; a stop ends it cleanly; a writer
curating at the same time on both backends."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from support import rewrite_hiding, write_file

from modelvault import DatabaseManager
from modelvault.cli import main
from modelvault.hashing import HashControl
from modelvault.verify import Verdict, verify_models


def catalogue(db: DatabaseManager, folder: Path, count: int = 4, size: int = 5000) -> list[Path]:
    paths = []
    for n in range(count):
        path = folder / f"m{n}.safetensors"
        sha = write_file(path, size, n)
        db.upsert_model({"sha256": sha, "path": str(path), "type": "lora", "size_bytes": size})
        paths.append(path)
    return paths


def test_changed_gone_and_intact_files(db: DatabaseManager, tmp_path: Path) -> None:
    paths = catalogue(db, tmp_path / "models")
    rewrite_hiding(paths[0], b"\x00" * 5000)  # same size, mtime put back: bit rot's look
    paths[1].unlink()
    statements = db.staging_counts()
    report = verify_models(db)
    assert report.checked == report.models == 4
    assert report.counts == {"ok": 2, "changed": 1, "gone": 1, "unreachable": 0, "failed": 0}
    changed = next(p for p in report.problems if p.verdict is Verdict.CHANGED)
    assert changed.path == str(paths[0])
    assert changed.found_sha256 is not None
    assert db.staging_counts() == statements  # read-only: nothing staged
    assert not report.clean


def test_update_stages_the_changed_file_as_a_scan_does(db: DatabaseManager, tmp_path: Path) -> None:
    paths = catalogue(db, tmp_path / "models")
    rewrite_hiding(paths[2], b"\x01" * 5000)
    report = verify_models(db, under=[tmp_path / "models"], update=True)
    assert report.staged == 1
    rows = db.get_pending_imports(["pending"])
    assert [(r.path, r.source) for r in rows] == [(str(paths[2]), "scan")]
    again = verify_models(db, update=True)  # queued already: not staged twice
    assert again.staged == 0
    assert len(db.get_pending_imports()) == 1


@pytest.mark.posix_only("a folder made unreadable with chmod")
def test_a_file_out_of_reach_is_not_called_gone(db: DatabaseManager, tmp_path: Path) -> None:
    from support import running_as_root, unreadable

    if running_as_root():
        pytest.skip("root reads any folder: the permission cannot be taken away")
    paths = catalogue(db, tmp_path / "shut", count=1)
    with unreadable(tmp_path / "shut"):
        report = verify_models(db)
    assert report.counts["unreachable"] == 1
    assert report.counts["gone"] == 0
    assert report.problems[0].path == str(paths[0])


def test_a_stop_ends_it_after_the_file_being_read(db: DatabaseManager, tmp_path: Path) -> None:
    catalogue(db, tmp_path / "models", count=3, size=6 * 1024 * 1024)
    control = HashControl()
    seen: list[int] = []

    def progress(state: object) -> None:
        seen.append(1)
        control.stop()  # as Ctrl-C does, from the first chunk on

    report = verify_models(db, control=control, progress=progress, chunk_size=1 << 20)
    assert report.stopped
    assert report.checked == 0
    assert report.bytes_read == 0
    assert seen


def test_a_writer_curating_meanwhile_loses_nothing(db: DatabaseManager, tmp_path: Path) -> None:
    paths = catalogue(db, tmp_path / "models", count=6)
    models = db.find_models(limit=None)
    done = threading.Event()

    def curate() -> None:
        for n, model in enumerate(models * 3):
            db.add_tags(model.sha256, [f"t{n}"])
        done.set()

    writer = threading.Thread(target=curate)
    writer.start()
    report = verify_models(db, update=True)
    writer.join()
    assert done.is_set()
    assert report.counts["ok"] == len(paths)
    assert report.staged == 0
    assert sum(len(m.tags) for m in db.find_models(limit=None)) == 18


def test_the_command(
    db: DatabaseManager, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = catalogue(db, tmp_path / "models", count=2)
    assert main(["verify", "--all", "--db", db_url]) == 0
    paths[0].unlink()
    assert main(["verify", paths[1].name, str(paths[0]), "--db", db_url, "--json"]) == 1
    out = capsys.readouterr().out
    assert '"gone": 1' in out
    assert main(["verify", "--db", db_url]) == 2  # nothing said: refused
    assert "MODEL..., --under DIR or --all" in capsys.readouterr().err
    assert main(["verify", "nope.safetensors", "--db", db_url]) == 2
