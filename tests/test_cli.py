"""The real `modelvault` command, driven in subprocesses as a user would."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support import HEAD_REVISION, legacy_with_files, run_modelvault, wait_for

from modelvault import DatabaseManager

modelvault = run_modelvault


def report_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stderr == "", result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.slow
def test_demo_runs_a_full_migration_and_again_changes_nothing(tmp_path: Path) -> None:
    first = modelvault("demo", "demo", "--file-mb", "1", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    report = report_of(first)
    assert report["import"]["rows_read"] == 10
    assert report["import"]["imported"] == 2  # the two rows with a usable legacy hash
    assert report["staging"]["missing"] == 1
    assert report["staging"]["duplicate"] == 1
    assert report["staging"]["pending"] == report["staging"]["failed"] == 0
    assert report["catalog"]["models"] == 8
    assert report["exit_code"] == 0
    db = DatabaseManager(tmp_path / "demo" / "catalog.sqlite3")
    assert db.get_tag("favourite").color == "#ff8800"  # type: ignore[union-attr]
    assert db.get_tag("style").color == "#3366cc"  # type: ignore[union-attr]
    assert db.get_tag("portrait").color == "#008080"  # type: ignore[union-attr]
    (missing,) = db.get_pending_imports("missing")
    assert missing.meta["description"] == "deleted since; its notes must survive"
    assert {t["name"] for t in missing.tags} == {"lora", "portrait"}
    (duplicate,) = db.get_pending_imports("duplicate")
    original = db.get_model(duplicate.sha256 or "")
    assert original is not None
    assert {"to-review", "style", "favourite"} <= {t.name for t in original.tags}

    again = modelvault("demo", "demo", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    rerun = report_of(again)
    assert rerun["import"]["already_present"] == 10
    assert (rerun["catalog"], rerun["staging"]) == (report["catalog"], report["staging"])


@pytest.mark.slow
def test_text_output_and_the_inspection_commands(tmp_path: Path) -> None:
    legacy, _ = legacy_with_files(tmp_path / "legacy", 6, hashed=2, missing=1)
    db = str(tmp_path / "c.sqlite3")
    migrate = modelvault("migrate", str(legacy), "--db", db, "--workers", "2", cwd=tmp_path)
    assert migrate.returncode == 0, migrate.stderr
    assert "legacy import: 6 rows read:\n  2 models catalogued," in migrate.stdout
    assert "3 imported, 1 missing" in migrate.stdout
    status = report_of(modelvault("status", "--db", db, "--json", cwd=tmp_path))
    assert status["catalog"]["models"] == 5
    assert status["staging"]["missing"] == 1
    tags = modelvault("tags", "--db", db, cwd=tmp_path)
    assert "#ff0000" in tags.stdout
    assert "odd" in tags.stdout
    pending = modelvault("pending", "--db", db, "--status", "missing", cwd=tmp_path)
    assert "model_0006.safetensors" in pending.stdout
    # The file comes back: retry puts the row in the queue, the worker finishes it.
    (tmp_path / "legacy" / "models" / "loras" / "model_0006.safetensors").write_bytes(b"back")
    retry = report_of(modelvault("retry", "--db", db, "--json", cwd=tmp_path))
    assert retry["requeued"] == 1
    worker = report_of(modelvault("worker", "--db", db, "--json", cwd=tmp_path))
    assert worker["worker"]["imported"] == 1
    assert worker["staging"]["missing"] == 0
    init = modelvault("init", "--db", db, cwd=tmp_path)
    assert f"schema {HEAD_REVISION}" in init.stdout


def _count(db: Path, sql: str) -> int:
    # Read-only: a plain connect would create the file, which the command then
    # rightly refuses as an empty file that is not a catalog.
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    except sqlite3.OperationalError:  # not created yet
        return 0
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:  # no tables yet
        return 0
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.posix_only("sends SIGINT to a child process (Windows has CTRL_C_EVENT)")
def test_ctrl_c_stops_cleanly_and_the_same_command_continues(tmp_path: Path) -> None:
    files = 40
    legacy, _ = legacy_with_files(tmp_path / "legacy", files, size=96 << 20, sparse=True)
    db = tmp_path / "c.sqlite3"
    command = [
        sys.executable,
        "-m",
        "modelvault",
        "migrate",
        str(legacy),
        "--db",
        str(db),
        "--workers",
        "1",
        "--json",
    ]
    child = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for(
        lambda: child.poll() is not None or _count(db, "SELECT count(*) FROM models") >= 1,
        "the first file to be hashed",
        timeout=120,
    )
    assert child.poll() is None, child.communicate()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted" in err
    assert "Traceback" not in err
    assert json.loads(out)["exit_code"] == 130
    done = _count(db, "SELECT count(*) FROM models")
    assert done >= 1
    assert done < files, "every file was hashed before the interrupt arrived"
    assert _count(db, "SELECT count(*) FROM pending_import WHERE status = 'claimed'") == 0

    again = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["import"]["already_present"] == files
    assert report["worker"]["imported"] == files - done
    assert report["catalog"]["models"] == files
    assert _count(db, "SELECT count(*) FROM pending_import") == 0


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    legacy, _ = legacy_with_files(tmp_path / "legacy", 2)
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("just some notes\n" * 100)
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER)")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    db = str(tmp_path / "new" / "c.sqlite3")
    return {
        "missing legacy": (["migrate", str(tmp_path / "nope.sqlite3"), "--db", db], "nope.sqlite3"),
        "not sqlite": (["migrate", str(not_sqlite), "--db", db], "notes.txt"),
        "other tables": (["import", str(other), "--db", db], "other.sqlite3"),
        "a folder": (["migrate", str(tmp_path), "--db", db], str(tmp_path)),
        "unwritable catalog": (
            ["migrate", str(legacy), "--db", str(blocker / "c.sqlite3")],
            "a-file is not a folder",
        ),
        "no such folder": (
            ["migrate", str(legacy), "--db", str(tmp_path / "new" / "dir" / "x.db")],
            "new/dir does not exist",
        ),
        "foreign catalog": (["status", "--db", str(other)], "is not a modelvault catalog"),
        "foreign catalog written": (
            ["import", str(legacy), "--db", str(other)],
            "is not a modelvault catalog",
        ),
        "legacy as catalog": (
            ["pending", "--db", str(legacy)],
            f"{legacy} is a legacy catalog: migrate it with `modelvault migrate {legacy}`",
        ),
        "bad port": (
            ["status", "--db", "postgresql://user:SECRET@127.0.0.1:notaport/x"],
            "'postgresql://user:***@127.0.0.1:notaport/x' is not a database URL",
        ),
        "space in scheme": (
            ["tags", "--db", "postgres ql://user:SECRET@host/x"],
            "is not a database URL",
        ),
        "no scheme": (
            ["migrate", str(legacy), "--db", "user:SECRET@host/x"],
            "looks like a database URL without its scheme",
        ),
        "bad url": (["status", "--db", "nosuchdb://host/x"], "no database driver"),
        "bad workers": (["migrate", str(legacy), "--db", db, "--workers", "0"], "--workers"),
        "bad policy": (["worker", "--db", db, "--conflict", "smash"], "--conflict"),
        "bad status": (["pending", "--db", db, "--status", "lost"], "--status"),
        "no legacy": (["migrate", "--db", db], "LEGACY"),
        "unknown command": (["frobnicate"], "frobnicate"),
        "no command": ([], "no command given"),
        "no such catalog": (["status", "--db", db], "there is no catalog at"),
        "unwritable demo": (["demo", str(blocker / "demo")], "cannot make the demo folder"),
    }


CASES = [
    "missing legacy",
    "not sqlite",
    "other tables",
    "a folder",
    "unwritable catalog",
    "no such folder",
    "foreign catalog",
    "foreign catalog written",
    "legacy as catalog",
    "bad port",
    "space in scheme",
    "no scheme",
    "bad url",
    "bad workers",
    "bad policy",
    "bad status",
    "no legacy",
    "unknown command",
    "no command",
    "no such catalog",
    "unwritable demo",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path: Path, case: str) -> None:
    args, expected = _bad_inputs(tmp_path)[case]
    before = _fingerprint(tmp_path)
    result = modelvault(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("modelvault: error: ")
    assert expected in lines[0]
    assert result.stdout == ""
    assert not (tmp_path / "new").exists()  # no catalog was created
    assert not list(tmp_path.glob("**/catalog.sqlite3"))
    assert os.path.exists(tmp_path / "legacy" / "hikaze_mm.sqlite3")
    assert "SECRET" not in result.stderr
    assert _fingerprint(tmp_path) == before  # not a byte of any file changed, none added


def _fingerprint(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def test_a_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite3"
    DatabaseManager(db).init_db()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: `| head`
    try:
        result = subprocess.run(
            [sys.executable, "-m", "modelvault", "status", "--db", str(db), "--json"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 1


def test_demo_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    (comfy / "models" / "loras").mkdir(parents=True)
    (comfy / "models" / "checkpoints" / "dreamshaper_8.safetensors").write_bytes(b"mine" * 100)
    (comfy / "models" / "loras" / "old_portrait.safetensors").write_bytes(b"keep me")
    before = _fingerprint(tmp_path)
    result = modelvault("demo", str(comfy), "--file-mb", "0.01", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"modelvault: error: {comfy} is not empty and holds no modelvault demo: give a new "
        "or empty folder for the demo (it never writes into a folder of yours)."
    )
    assert _fingerprint(tmp_path) == before


def test_import_lists_five_warnings_and_every_one_with_verbose(tmp_path: Path) -> None:
    from modelvault.migration.sample import LegacyModel, write_legacy_catalog

    rows = [LegacyModel(i, f"/gone/m{i}.safetensors", hash_hex=f"junk{i}") for i in range(1, 8)]
    legacy = write_legacy_catalog(tmp_path / "hikaze_mm.sqlite3", rows=rows)
    catalog = str(tmp_path / "catalog.sqlite3")
    short = run_modelvault("import", str(legacy), "--db", catalog, cwd=tmp_path)
    assert short.returncode == 0, short.stderr
    assert "  7 warnings:" in short.stdout
    assert short.stdout.count("is not a SHA-256") == 5
    assert "... and 2 more (all of them: -v)" in short.stdout
    every = run_modelvault("import", str(legacy), "--db", catalog, "-v", cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    assert every.stdout.count("is not a SHA-256") == 7
    assert "more (all of them" not in every.stdout


@pytest.mark.parametrize("command", ["import", "migrate"])
def test_the_legacy_file_is_opened_and_checked_once(tmp_path: Path, command: str) -> None:
    """The check before anything is written is the opening the import reads from: a
    big legacy file is integrity-checked (and, in WAL mode, copied) once, not twice."""
    from modelvault.migration.sample import LegacyModel, write_legacy_catalog

    legacy = write_legacy_catalog(
        tmp_path / "hikaze_mm.sqlite3", rows=[LegacyModel(1, "/gone/a.safetensors")]
    )
    catalog = str(tmp_path / "catalog.sqlite3")
    result = run_modelvault(command, str(legacy), "--db", catalog, "-vv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(f"opened legacy catalog {legacy}") == 1, result.stderr


def test_verbose_leaves_the_library_logger_as_it_found_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``main`` may run inside an app's process: -v's handler and level go with the command."""
    import logging

    from modelvault.cli import main

    logger = logging.getLogger("modelvault")
    handlers, level = list(logger.handlers), logger.level
    assert main(["-vv", "init", "--db", str(tmp_path / "c.sqlite3")]) == 0
    assert (logger.handlers, logger.level) == (handlers, level)
    capsys.readouterr()
