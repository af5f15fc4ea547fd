"""The browsing commands and the command line's conventions, driven in subprocesses."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import run_in_terminal, run_modelvault

from modelvault import DatabaseManager

INK = "ab" * 32
BASE = "cd" * 32
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
COLOUR_CODE = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|9[0-7]|38;)")


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A catalog with a present lora (tags, colours, notes) and a checkpoint that is gone."""
    path = tmp_path / "c.sqlite3"
    ink = tmp_path / "loras" / "ink_style.safetensors"
    ink.parent.mkdir()
    ink.write_bytes(b"x" * 2048)
    db = DatabaseManager(path)
    db.init_db()
    db.upsert_model(
        {
            "sha256": INK,
            "path": str(ink),
            "type": "lora",
            "size_bytes": 2048,
            "tags": [{"name": "style", "color": "#3366cc"}, {"name": "favourite", "color": "red"}],
            "meta": {
                "description": "Ink wash style",
                "prompts": {"positive": "ink style", "negative": "blurry"},
                "images": ["/media/ink_preview.png"],
                "previous_paths": ["/old/ink_style.safetensors"],
                "legacy": {"source": "/comfy/data/hikaze_mm.sqlite3", "id": 7},
            },
        }
    )
    db.upsert_model(
        {"sha256": BASE, "path": str(tmp_path / "gone" / "base.safetensors"), "type": "checkpoint"}
    )
    db.dispose()
    return path


def mv(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **env}
    return run_modelvault(*args, cwd=cwd, env=environ)


def json_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_models_lists_a_table_and_filters(catalog: Path) -> None:
    cwd, db = catalog.parent, str(catalog)
    listing = mv("--db", db, "models", cwd=cwd)  # a global option before the command
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split() == ["NAME", "TYPE", "SIZE", "TAGS", "PATH"]
    assert [r.split()[0] for r in rows] == ["base.safetensors", "ink_style.safetensors"]
    assert "2.0 KiB" in rows[1]
    assert "favourite, style" in rows[1]

    def names(*query: str) -> list[str]:
        data = json_of(mv("models", *query, "--json", "--db", db, cwd=cwd))
        return [m["name"] for m in data["models"]]

    assert names("--tag", "style") == ["ink_style.safetensors"]
    assert names("--type", "checkpoint") == ["base.safetensors"]
    assert names("--search", "INK") == ["ink_style.safetensors"]
    assert names("--missing") == ["base.safetensors"]
    assert names("--limit", "1") == ["base.safetensors"]
    assert mv("models", "--search", "nothing", "--db", db, cwd=cwd).stdout == "no models match\n"
    unknown = mv("models", "--tag", "nothing", "--db", db, cwd=cwd)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("modelvault: error: there is no tag 'nothing': the tags are")


def test_show_finds_a_model_by_prefix_path_or_name(catalog: Path) -> None:
    cwd, db = catalog.parent, str(catalog)
    shown = mv("show", INK[:8], "--db", db, cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    for expected in (
        f"sha256          {INK}",
        "tags            favourite #ff0000, style #3366cc",  # colour as text: no terminal
        "description     Ink wash style",
        "prompts         positive: ink style",
        "                negative: blurry",
        "image URLs      /media/ink_preview.png",
        "previous paths  /old/ink_style.safetensors",
        "came from       legacy catalog /comfy/data/hikaze_mm.sqlite3, row 7",
        "size            2.0 KiB (2,048 bytes)",
    ):
        assert expected in text, text
    gone = mv("show", "base.safetensors", "--db", db, cwd=cwd)
    assert "(the file is gone)" in gone.stdout
    by_path = json_of(
        mv("show", str(cwd / "loras" / "ink_style.safetensors"), "--json", "--db", db, cwd=cwd)
    )
    assert by_path["model"]["sha256"] == INK
    assert by_path["model"]["file_exists"] is True
    unknown = mv("show", "ffff", "--db", db, cwd=cwd)
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("modelvault: error: no model in the catalog has")


def test_info_says_what_is_used_and_where_it_comes_from(tmp_path: Path) -> None:
    data = json_of(
        mv(
            "info",
            "--json",
            "--db",
            "postgresql://me:SECRET@db.example/catalog",
            cwd=tmp_path,
            MODELVAULT_WORKERS="3",
            MODELVAULT_IMAGES_DIR=str(tmp_path / "previews"),
        )
    )
    assert data["catalog"] == "postgresql://me:***@db.example/catalog"
    assert "SECRET" not in json.dumps(data)
    assert data["images_dir"] == str(tmp_path / "previews")
    assert data["data_dir"] == str(tmp_path / "xdg-data" / "modelvault")
    sources = {s["name"]: (s["value"], s["source"]) for s in data["settings"]}
    assert sources["workers"] == (3, "env MODELVAULT_WORKERS")  # JSON types
    assert sources["db_url"][1] == "argument"
    assert sources["lease_seconds"] == (120.0, "default")
    assert sources["images_dir"][0] == str(tmp_path / "previews")
    assert sources["model_roots"] == ([], "default")
    text = mv("info", "--db", str(tmp_path / "c.sqlite3"), cwd=tmp_path)
    assert f"image folder {tmp_path / 'images'}" in text.stdout
    plain = {line.split()[0]: line.split()[1:] for line in text.stdout.splitlines() if line}
    assert plain["images_dir"] == ["-", "default"]  # not Python's None
    assert plain["model_roots"] == ["-", "default"]  # not ()
    roots = mv("info", cwd=tmp_path, MODELVAULT_MODEL_ROOTS=os.pathsep.join(["/a", "/b"])).stdout
    assert re.search(r"^model_roots +/a, /b +env MODELVAULT_MODEL_ROOTS$", roots, re.MULTILINE)
    assert "(not created yet)" in text.stdout
    assert not (tmp_path / "c.sqlite3").exists()  # info only looks


def test_conventions_help_quiet_verbose(tmp_path: Path) -> None:
    top = mv("--help", cwd=tmp_path).stdout
    assert "only place that prints" not in top
    for name in ("models", "show", "info", "demo"):
        assert name in top
    assert "DIR/catalog.sqlite3" in mv("demo", "--help", cwd=tmp_path).stdout
    db = str(tmp_path / "c.sqlite3")
    verbose = mv("-v", "init", "--db", db, cwd=tmp_path)
    assert "migrating catalog" in verbose.stderr
    assert mv("status", "--db", db, "-q", cwd=tmp_path).stdout.startswith("catalog sqlite")
    retried = mv("retry", "--db", db, cwd=tmp_path)
    assert retried.stdout.startswith("0 rows put back in the queue")


@pytest.mark.posix_only("runs the command on a pseudo-terminal (pty)")
def test_tag_colours_on_a_colour_terminal_only(catalog: Path) -> None:
    args = ["tags", "--db", str(catalog)]
    code, coloured = run_in_terminal(args, catalog.parent, 80, TERM="xterm-256color")
    assert code == 0, coloured
    assert COLOUR_CODE.search(coloured)
    assert "●" in coloured
    code, no_color = run_in_terminal(args, catalog.parent, 80, NO_COLOR="1")
    assert code == 0, no_color
    assert "●" not in no_color
    assert not COLOUR_CODE.search(no_color)  # bold headers may stay: they are not colour
    code, dumb = run_in_terminal(args, catalog.parent, 80, TERM="dumb")
    assert code == 0, dumb
    assert "\x1b[" not in dumb
    assert "#3366cc" in dumb


@pytest.mark.slow
@pytest.mark.posix_only("runs the command on a pseudo-terminal (pty)")
def test_the_demo_in_an_80_column_terminal(tmp_path: Path) -> None:
    args = ["demo", "demo", "--file-mb", "4", "--workers", "1"]
    code, output = run_in_terminal(args, tmp_path, 80, TERM="xterm-256color")
    assert code == 0, output
    frames = [ANSI.sub("", part) for part in re.split(r"[\r\n]+", output)]
    bars = [f for f in frames if "files" in f and "ETA" in f]
    assert bars, output
    assert all(len(bar) < 80 for bar in bars), max(bars, key=len)  # no redraw wraps
    last = bars[-1]
    assert "100%" in last
    assert "8/8 files" in last
    assert "hashing: 8 files" in output  # the summary counts what the bar counted
    percents = [int(m.group(1)) for f in bars if (m := re.search(r"(\d+)%", f))]
    assert percents == sorted(percents)  # never drawn backwards
    assert "writing model file 1/10" in output
    assert "modelvault models --db" in output


def test_looking_commands_work_on_both_backends(
    db: DatabaseManager, db_url: str, tmp_path: Path
) -> None:
    db.upsert_model({"sha256": INK, "path": "/m/ink.safetensors", "tags": ["style"]})
    status = json_of(mv("status", "--json", "--db", db_url, cwd=tmp_path))
    assert status["catalog"]["models"] == 1
    models = json_of(mv("models", "--tag", "style", "--json", "--db", db_url, cwd=tmp_path))
    assert [m["sha256"] for m in models["models"]] == [INK]
    shown = json_of(mv("show", INK[:6], "--json", "--db", db_url, cwd=tmp_path))
    assert shown["model"]["path"] == "/m/ink.safetensors"
