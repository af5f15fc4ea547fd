"""The command line at the edges: special files, loops, odd URLs, a stdout that
fails, names that would act on the terminal, a narrow console encoding. Each ends
in one sentence and an exit code, never a hang or a traceback."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from support import legacy_with_files, run_modelvault

from modelvault import DatabaseManager
from modelvault.cli.demo import _removal
from modelvault.cli.escaping import printable
from modelvault.cli.output import shell_command
from modelvault.cli.progress import Frame, plain, render
from modelvault.config import mask_password, shown_url

SHA = "ab" * 32


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_sentence(result: subprocess.CompletedProcess[str], code: int, expected: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("modelvault: error: "), lines[0]
    assert expected in lines[0], lines[0]


# -- hangs and tracebacks ------------------------------------------------------------

COMMANDS = {
    "status": ["status"],
    "pending": ["pending"],
    "tags": ["tags"],
    "models": ["models"],
    "show": ["show", "x.safetensors"],
    "retry": ["retry"],
    "init": ["init"],
    "worker": ["worker"],
    "scan": ["scan", "ROOT"],
    "import": ["import", "LEGACY"],
    "demo": ["demo", "DEMO"],
}


@pytest.fixture
def bad_targets(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """--db values that once hung or gave a traceback, with what the sentence says."""
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    return {
        "fifo": (str(tmp_path / "pipe"), "is a FIFO (named pipe), not a catalog file"),
        "loop": (str(tmp_path / "loop"), "is a symbolic link loop"),
        "too long": (str(tmp_path / ("c" * (name_max + 1))), "name longer than the file system"),
        "user in url": ("sqlite://user:pw@/x.db", "'sqlite://user:***@/x.db' is not a SQLite URL"),
        "host in url": ("sqlite://host/x.db", "'sqlite://host/x.db' is not a SQLite URL"),
    }


# A FIFO hung every command: each is tried. The other targets failed before the
# catalog was opened; the commands that look, write, scan and make the demo.
CASES = [(command, "fifo") for command in COMMANDS] + [
    (command, target)
    for target in ("loop", "too long", "user in url", "host in url")
    for command in ("status", "init", "worker", "scan", "demo")
]


@pytest.mark.parametrize(("command", "target"), CASES)
def test_a_bad_catalog_is_one_sentence_and_nothing_is_written(
    tmp_path: Path, bad_targets: dict[str, tuple[str, str]], command: str, target: str
) -> None:
    legacy, _ = legacy_with_files(tmp_path / "legacy", 1)
    words = [
        {"ROOT": str(tmp_path / "legacy"), "LEGACY": str(legacy), "DEMO": "demo"}.get(w, w)
        for w in COMMANDS[command]
    ]
    before = _files(tmp_path)
    db, expected = bad_targets[target]
    result = run_modelvault(*words, "--db", db, cwd=tmp_path, timeout=60)  # a hang fails here
    _one_sentence(result, 2, expected)
    assert ":pw@" not in result.stderr
    assert _files(tmp_path) == before  # no demo folder, no catalog, nothing beside


@pytest.mark.parametrize("command", ["import", "migrate"])
def test_a_legacy_path_that_loops_is_one_sentence(tmp_path: Path, command: str) -> None:
    loop = tmp_path / "hikaze_mm.sqlite3"
    loop.symlink_to(loop)
    result = run_modelvault(command, str(loop), "--db", "c.sqlite3", cwd=tmp_path, timeout=60)
    _one_sentence(result, 2, f"the legacy catalog {loop} is a symbolic link loop")
    assert not (tmp_path / "c.sqlite3").exists()


@pytest.mark.parametrize(
    ("args", "check_json"),
    [(["info"], False), (["info", "--json"], True), (["tags", "--json"], True)],
)
def test_a_stdout_that_fails_is_one_sentence_and_exit_1(
    tmp_path: Path, args: list[str], check_json: bool
) -> None:
    db = DatabaseManager(tmp_path / "c.sqlite3")
    db.init_db()
    db.dispose()
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "modelvault", *args, "--db", str(tmp_path / "c.sqlite3")],
            cwd=tmp_path,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines == [
        "modelvault: error: cannot write the output (No space left on device): check where "
        "stdout goes (a full disk?)"
    ], result.stderr
    assert check_json or args == ["info"]


def test_a_note_holding_half_an_emoji_is_shown(tmp_path: Path) -> None:
    # A surrogate without its pair: an emoji cut in half by JavaScript, kept by
    # the legacy app as the JSON escape "\ud83d". PostgreSQL's JSON refuses one,
    # so only a SQLite catalog can hold it.
    path = tmp_path / "c.sqlite3"
    db = DatabaseManager(path)
    db.init_db()
    db.upsert_model(
        {"sha256": SHA, "path": "/m/half.safetensors", "meta": {"description": "cut \ud83d here"}}
    )
    db.dispose()
    result = run_modelvault("show", SHA[:8], "--db", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cut \\ud83d here" in result.stdout
    shown = json.loads(
        run_modelvault("show", SHA[:8], "--json", "--db", str(path), cwd=tmp_path).stdout
    )
    assert shown["model"]["meta"]["description"] == "cut \ud83d here"


def test_an_empty_file_becomes_a_catalog_only_by_init_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    for args in (["status"], ["worker"], ["scan", str(tmp_path)], ["retry"]):
        result = run_modelvault(*args, "--db", str(empty), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "make it" in result.stderr, result.stderr
    # Named by a setting only, not on the command line: init refuses it too.
    env = {**os.environ, "MODELVAULT_DB_PATH": str(empty)}
    _one_sentence(
        run_modelvault("init", cwd=tmp_path, env=env),
        2,
        f"{empty} is an empty file, not a catalog: make it one with `modelvault init --db {empty}`",
    )
    assert empty.stat().st_size == 0
    made = run_modelvault("init", "--db", str(empty), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert run_modelvault("status", "--db", str(empty), cwd=tmp_path).returncode == 0


# -- passwords ---------------------------------------------------------------------

SECRET_URLS = [
    "postgresql://me:SECRET@127.0.0.1:1/db",
    "postgresql://me@127.0.0.1:1/db?password=SECRET",
    "postgresql://me@127.0.0.1:1/db?sslpassword=SECRET&connect_timeout=5",
    "postgresql://me@127.0.0.1:1/db?password=SECRET&password=SECRET2",
    "postgresql://me@127.0.0.1:1/db?dbname=host%3D127.0.0.1+password%3DSECRET",
    "postgresql://me@127.0.0.1:1/db?dbname=postgresql%3A%2F%2Fme%3ASECRET%40127.0.0.1%2Fdb",
    "postgresql://me@127.0.0.1:1/host=127.0.0.1 password=SECRET",
    "postgresql://me@127.0.0.1:1/host=127.0.0.1 password='SE CRET'",
]


@pytest.mark.parametrize("url", SECRET_URLS)
def test_a_password_is_masked_in_every_form_psycopg_takes(url: str) -> None:
    shown = shown_url(make_url(url))
    assert "SECRET" not in shown
    assert "CRET" not in shown
    assert "***" in shown
    assert "127.0.0.1:1" in shown  # the rest stays, to tell which server it is
    assert "SECRET" not in mask_password(url)  # the text form, for a URL that does not parse


@pytest.mark.parametrize("url", [SECRET_URLS[1], SECRET_URLS[4]])
def test_info_and_errors_never_show_a_password(tmp_path: Path, url: str) -> None:
    for args in (["info"], ["info", "--json"]):
        result = run_modelvault(*args, "--db", url, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert "SECRET" not in result.stdout
        assert "***" in result.stdout
    env = {**os.environ, "MODELVAULT_DB_URL": url}
    assert "SECRET" not in run_modelvault("info", cwd=tmp_path, env=env).stdout
    status = run_modelvault("status", "--db", url, cwd=tmp_path, timeout=60)  # nothing listens
    _one_sentence(status, 2, "the catalog at postgresql://me@127.0.0.1:1/")
    assert "SECRET" not in status.stderr


# -- names that would act on the terminal -------------------------------------------

ESCAPE = "\x1b[31m"
SHOWN = "\\x1b[31m"


def test_names_tags_and_notes_are_shown_escaped(
    db: DatabaseManager, db_url: str, tmp_path: Path
) -> None:
    db.upsert_model(
        {
            "sha256": SHA,
            "path": f"/m/{ESCAPE}red\u202eevil.safetensors",
            "name": f"{ESCAPE}red\nmodel",
            "tags": [{"name": f"t{ESCAPE}ag", "color": "#ff0000"}],
            "meta": {"description": f"note {ESCAPE}\x07\x08", "prompts": {"positive": ESCAPE}},
        }
    )
    db.add_pending_import(
        {"path": f"/m/queued{ESCAPE}\r.safetensors", "last_error": f"boom{ESCAPE}"}
    )
    outputs = {
        args[0]: run_modelvault(*args, "--db", db_url, cwd=tmp_path)
        for args in (["models"], ["tags"], ["show", SHA[:8]], ["pending"])
    }
    for command, result in outputs.items():
        assert result.returncode == 0, (command, result.stderr)
        assert "\x1b" not in result.stdout, command
        assert "\r" not in result.stdout, command
        assert "\u202e" not in result.stdout, command
        assert SHOWN in result.stdout, (command, result.stdout)
    assert "\\x1b[31mred\\nmodel" in outputs["models"].stdout
    assert "\\u202eevil" in outputs["models"].stdout
    assert f"note {SHOWN}\\x07\\x08" in outputs["show"].stdout
    assert f"queued{SHOWN}\\r.safetensors" in outputs["pending"].stdout
    as_json = json.loads(
        run_modelvault("show", SHA[:8], "--json", "--db", db_url, cwd=tmp_path).stdout
    )
    assert as_json["model"]["name"] == f"{ESCAPE}red\nmodel"  # JSON keeps the data as it is


def test_an_error_naming_a_file_shows_it_escaped(tmp_path: Path) -> None:
    result = run_modelvault("status", "--db", f"c{ESCAPE}.sqlite3", cwd=tmp_path)
    _one_sentence(result, 2, f"there is no catalog at {tmp_path}/c{SHOWN}.sqlite3")
    assert "\x1b" not in result.stderr


def test_the_file_being_hashed_is_shown_escaped() -> None:
    frame = Frame(0.5, 1, 2, 10, 20, 1.0, 10.0, current=f"/m/{ESCAPE}x\n.safetensors")
    assert render(frame, 120).plain.endswith(f"{SHOWN}x\\n.safetensors")
    assert plain(frame).endswith(f"/m/{SHOWN}x\\n.safetensors")


def test_printable_escapes_only_what_acts_on_a_terminal() -> None:
    assert printable("ComfyUI/モデル/é ö 😀 a\\b") == "ComfyUI/モデル/é ö 😀 a\\b"
    assert printable("\x00\x1b\x7f\x9b\t\n\r") == "\\x00\\x1b\\x7f\\x9b\\t\\n\\r"
    assert printable("\u202a\u202e\u2066\u2069\u2028\u2029") == (
        "\\u202a\\u202e\\u2066\\u2069\\u2028\\u2029"
    )
    assert printable("\ud83d\ude00") == "\\ud83d\\ude00"  # lone halves, not a pair
    assert printable("👨\u200d👩\u200d👧") == "👨\u200d👩\u200d👧"  # a joined emoji stays whole


# -- a narrow console encoding ------------------------------------------------------


def test_a_cp1252_stdout_gets_backslash_escapes_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    db = DatabaseManager(path)
    db.init_db()
    db.upsert_model({"sha256": SHA, "path": "/m/模型_😀_café.safetensors", "tags": ["スタイル"]})
    db.dispose()
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}  # Windows' piped stdout
    for args in (["models"], ["show", SHA[:8]], ["tags"], ["status", "--db", "模型.sqlite3"]):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "modelvault",
                *args,
                *(["--db", str(path)] if args[0] != "status" else []),
            ],
            cwd=tmp_path,
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
        out, err = result.stdout.decode("cp1252"), result.stderr.decode("cp1252")
        assert "Traceback" not in err, err
        if args[0] == "status":
            assert result.returncode == 2
            assert "\\u6a21\\u578b.sqlite3" in err
            continue
        assert result.returncode == 0, err
        assert "\\u6a21\\u578b" in out or "\\u30b9" in out, out
    models = subprocess.run(
        [sys.executable, "-m", "modelvault", "models", "--db", str(path)],
        cwd=tmp_path,
        capture_output=True,
        env=env,
        check=True,
    ).stdout.decode("cp1252")
    assert "/m/\\u6a21\\u578b_\\U0001f600_café.safetensors" in models  # é is in cp1252


# -- the demo ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["foreign", "no folder", "fifo", "url", "empty"])
def test_demo_with_a_bad_catalog_creates_nothing(tmp_path: Path, bad: str) -> None:
    foreign = tmp_path / "photos.sqlite3"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.close()
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "empty.sqlite3").touch()
    db = {
        "foreign": str(foreign),
        "no folder": str(tmp_path / "nowhere" / "c.sqlite3"),
        "fifo": str(tmp_path / "pipe"),
        "url": "sqlite://host/c.sqlite3",
        "empty": str(tmp_path / "empty.sqlite3"),
    }[bad]
    before = _files(tmp_path)
    result = run_modelvault("demo", "demo", "--db", db, cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert _files(tmp_path) == before  # not even the demo folder or its marker


@pytest.mark.slow
def test_the_demo_prints_commands_that_work_in_the_users_shell(tmp_path: Path) -> None:
    folder = tmp_path / "my demo's models"
    result = run_modelvault("demo", str(folder), "--file-mb", "0.05", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    catalog = folder / "catalog.sqlite3"
    lines = result.stderr.splitlines()
    start = lines.index("demo: look at what it made with")
    commands = [line.strip() for line in lines[start + 1 : start + 5]]
    assert commands[0] == f"modelvault models --db {shell_command([str(catalog)])}"
    assert lines[start + 5] == f"remove it all with: rm -r {shell_command([str(folder)])}"
    shell_env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    for command in commands:  # typed into a POSIX shell, each one works
        done = subprocess.run(
            ["sh", "-c", command],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=shell_env,
            check=False,
        )
        assert done.returncode == 0, (command, done.stderr)
    assert (
        "dreamshaper_8"
        in subprocess.run(
            ["sh", "-c", commands[1]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=shell_env,
            check=False,
        ).stdout
    )


@pytest.mark.parametrize(
    ("words", "line"),
    [
        (
            ["modelvault", "models", "--db", r"C:\demo\catalog.sqlite3"],
            r"modelvault models --db C:\demo\catalog.sqlite3",
        ),
        (
            ["modelvault", "--db", r"C:\Users\Jo Doe\my demo\catalog.sqlite3"],
            r'modelvault --db "C:\Users\Jo Doe\my demo\catalog.sqlite3"',
        ),
        (["show", "it's (1).safetensors"], 'show "it\'s (1).safetensors"'),
        (["rmdir", "/s", "/q", "C:\\demo dir\\"], 'rmdir /s /q "C:\\demo dir\\\\"'),
        (["--db", r"C:\cost$5\c.sqlite3"], r"--db 'C:\cost$5\c.sqlite3'"),
        (["--db", r"\\nas\share\c.sqlite3"], r"--db \\nas\share\c.sqlite3"),
        (["--db", ""], '--db ""'),
    ],
)
def test_windows_commands_work_in_cmd_and_powershell(words: list[str], line: str) -> None:
    assert shell_command(words, platform="win32") == line


def test_posix_commands_use_single_quotes() -> None:
    assert shell_command(["rm", "-r", "/tmp/my demo's"], platform="linux") == (
        "rm -r '/tmp/my demo'\"'\"'s'"
    )
    assert _removal(Path("/tmp/d"), platform="darwin") == "remove it all with: rm -r /tmp/d"
    assert _removal(Path("/x/my demo"), platform="win32") == (
        'remove it all with: rmdir /s /q "/x/my demo" (cmd.exe), or '
        'Remove-Item -Recurse "/x/my demo" (PowerShell)'
    )
