"""The curating commands, run as ``modelvault ...`` in this process (and in a
subprocess where a terminal or the other backend is the point).

Bad input is one sentence on stderr, exit code 2, and the catalog unchanged;
the commands that delete say what they will do, take --dry-run, need --yes
when not on a terminal, and ask on one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from support import run_in_terminal, run_modelvault

from modelvault import DatabaseManager
from modelvault.cli import main
from modelvault.cli.parser import build_parser, command_names

INK, BASE, ALPHA, LOST = "aa" * 32, "bb" * 32, "cc" * 32, "dd" * 32


class Run:
    """``modelvault --db CATALOG ...`` in this process: exit code, stdout, stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str], catalog: Path) -> None:
        self.capsys, self.catalog = capsys, catalog

    def __call__(self, *args: str) -> tuple[int, str, str]:
        code = main([*args, "--db", str(self.catalog)])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err

    def ok(self, *args: str) -> str:
        code, out, err = self(*args)
        assert code == 0, err
        return out

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def refused(self, expected: str, *args: str) -> None:
        """Exit 2 with one sentence naming ``expected``, and nothing changed."""
        before = self.state()
        code, out, err = self(*args)
        assert code == 2, (out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("modelvault: error: "), err
        assert expected in lines[0], err
        assert self.state() == before

    def state(self) -> dict[str, Any]:
        db = DatabaseManager(self.catalog)
        try:
            return {
                "models": [m.to_dict() for m in db.find_models()],
                "tags": db.list_tags(),
                "queue": [r.to_dict() for r in db.get_pending_imports()],
                "deleted": db.deleted_records(),
            }
        finally:
            db.dispose()


@pytest.fixture
def mv(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Run:
    """A catalog: a present lora (tags, note), two checkpoints, queued rows."""
    ink = tmp_path / "models" / "loras" / "ink_style.safetensors"
    ink.parent.mkdir(parents=True)
    ink.write_bytes(b"ink")
    db = DatabaseManager(tmp_path / "c.sqlite3")
    db.init_db()
    db.upsert_model(
        {
            "sha256": INK,
            "path": str(ink),
            "type": "lora",
            "size_bytes": 3,
            "tags": [{"name": "style", "color": "#3366cc"}],
            "meta": {"description": "ink wash"},
        }
    )
    db.upsert_model(
        {"sha256": BASE, "path": "/m/Base.safetensors", "type": "checkpoint", "size_bytes": 30}
    )
    db.upsert_model(
        {"sha256": ALPHA, "path": "/m/alpha.safetensors", "type": "checkpoint", "size_bytes": 10}
    )
    db.add_pending_import(
        {
            "path": "/q/old_portrait.safetensors",
            "status": "missing",
            "tags": [{"name": "portrait", "color": "#ff8800"}],
            "meta": {"description": "my best"},
        }
    )
    db.add_pending_import({"path": "/q/ink copy.safetensors", "status": "duplicate", "sha256": INK})
    db.dispose()
    return Run(capsys, tmp_path / "c.sqlite3")


def model(run: Run, key: str) -> dict[str, Any]:
    data: dict[str, Any] = run.json("show", key)["model"]
    return data


def test_tag_and_untag(mv: Run) -> None:
    out = mv.ok("tag", "ink_style.safetensors", "Fav", "style", "--color", "red")
    assert "ink_style.safetensors: tagged fav" in out
    assert "carried already: style" in out
    assert "the tag 'style' keeps its colour #3366cc: change it with " in out
    assert "modelvault tags color style '#ff0000'" in out  # quoted for the shell
    tags = {t["name"]: t["color"] for t in model(mv, INK[:8])["tags"]}
    assert tags == {"fav": "#ff0000", "style": "#3366cc"}
    assert "no new tag" in mv.ok("tag", INK[:8], "fav")
    mv.refused("is not a colour", "tag", INK[:8], "x", "--color", "nope")
    mv.refused("no model in the catalog has the SHA-256, path or name 'nope'", "tag", "nope", "x")
    mv.refused("there is no tag 'gone': the tags are fav, style", "untag", INK[:8], "fav", "gone")
    out = mv.ok("untag", INK[:8], "FAV")
    assert "untagged fav" in out
    assert [t["name"] for t in model(mv, INK[:8])["tags"]] == ["style"]
    assert "did not carry: fav" in mv.ok("untag", INK[:8], "fav")


def test_note_and_edit(mv: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert mv.ok("note", INK[:8]) == "ink wash\n"
    assert mv.ok("note", INK[:8], "best at 0.7") == "ink_style.safetensors: note saved\n"
    assert model(mv, INK[:8])["meta"]["description"] == "best at 0.7"
    editor = tmp_path / "editor.py"  # an editor that appends a line to the file it is given
    editor.write_text(
        "import sys\n"
        "with open(sys.argv[1], 'a', encoding='utf-8') as f:\n"
        "    f.write('more \\u00e9\\n')\n"
    )
    monkeypatch.setenv("EDITOR", f'"{sys.executable}" "{editor}"')
    monkeypatch.delenv("VISUAL", raising=False)
    assert "note saved" in mv.ok("note", INK[:8], "--edit")
    assert model(mv, INK[:8])["meta"]["description"] == "best at 0.7\nmore \u00e9"
    monkeypatch.setenv("EDITOR", f'"{sys.executable}" -c "import sys; sys.exit(3)"')
    mv.refused("exited with code 3: the note was left as it was", "note", INK[:8], "--edit")
    assert "note removed" in mv.ok("note", INK[:8], "--clear")
    assert "description" not in model(mv, INK[:8])["meta"]
    assert mv.ok("note", INK[:8]) == "(no note)\n"
    mv.refused("one of them", "note", INK[:8], "text", "--clear")
    before = model(mv, BASE[:8])["updated_at"]
    out = mv.ok("edit", BASE[:8], "--name", "Base XL", "--type", "Checkpoint", "--base", "SDXL")
    assert out == "Base XL: name Base.safetensors -> Base XL\nBase XL: base - -> SDXL\n"
    after = model(mv, BASE[:8])
    assert (after["name"], after["type"], after["base"]) == ("Base XL", "checkpoint", "SDXL")
    assert after["updated_at"] > before
    mv.refused("nothing to change", "edit", BASE[:8])
    mv.refused("not a model type", "edit", BASE[:8], "--type", "x" * 70)


def test_rm_says_what_it_does_and_needs_yes(mv: Run) -> None:
    mv.refused("rm removes catalog entries: confirm with --yes", "rm", "Base.safetensors")
    before = mv.state()
    out = mv.ok("rm", "Base.safetensors", ALPHA[:6], "--dry-run")
    assert out.startswith("would remove 2 catalog entries (the files stay where they are")
    assert "/m/Base.safetensors" in out
    assert "/m/alpha.safetensors" in out
    assert "dry run: nothing was changed" in out
    assert mv.state() == before
    mv.refused(
        "no model in the catalog has the SHA-256, path or name 'nope'",
        "rm",
        "Base.safetensors",
        "nope",
        "--yes",
    )
    code, out, err = mv("rm", "ink_style.safetensors", "--yes")
    assert code == 0, err
    assert out == "removed 1 catalog entry; the files were not touched\n"
    assert "removing 1 catalog entry" in err  # the plan, on stderr
    assert "1 other file holds its content, queued (rows 2): they stay queued" in err
    assert (Path(mv.catalog).parent / "models" / "loras" / "ink_style.safetensors").exists()
    assert [m["name"] for m in mv.json("models")["models"]] == [
        "alpha.safetensors",
        "Base.safetensors",
    ]
    (entry,) = mv.json("deleted")["deleted"]
    assert (entry["kind"], entry["sha256"], entry["meta"]) == (
        "model",
        INK,
        {"description": "ink wash"},
    )
    assert entry["tags"][0]["color"] == "#3366cc"
    assert "ink_style.safetensors" in mv.ok("deleted")
    assert mv.json("rm", BASE[:8], "--yes")["deleted"][0]["sha256"] == BASE


def test_tags_rename_colour_and_delete(mv: Run) -> None:
    mv.ok("tag", BASE[:8], "wip")
    assert mv.ok("tags", "rename", "wip", "Draft") == "'wip' renamed to 'draft' (1 model)\n"
    mv.refused(
        "the tag 'style' exists already: merge 'draft' into it", "tags", "rename", "draft", "style"
    )
    mv.refused(
        "tags rename --merge deletes a tag: confirm with --yes",
        "tags",
        "rename",
        "draft",
        "style",
        "--merge",
    )
    out = mv.ok("tags", "rename", "draft", "style", "--merge", "--dry-run")
    assert "would merge the tag 'draft' (1 model) into 'style' (1 model)" in out
    assert "merged into 'style' (1 model)" in mv.ok(
        "tags", "rename", "draft", "style", "--merge", "--yes"
    )
    assert [t["name"] for t in mv.json("tags")["tags"]] == ["style"]
    assert mv.ok("tags", "color", "style", "rgb(255 136 0)") == "'style': colour #ff8800\n"
    assert mv.ok("tags", "color", "style", "none") == "'style': no colour\n"
    mv.refused("is not a colour", "tags", "color", "style", "blurple")
    mv.refused("there is no tag 'nope'", "tags", "delete", "style", "nope", "--yes")
    assert "would delete 1 tag" in mv.ok("tags", "delete", "style", "--dry-run")
    assert mv.ok("tags", "delete", "style", "--yes", "-q") == "deleted 1 tag\n"
    assert mv.json("tags")["tags"] == []
    assert model(mv, INK[:8])["tags"] == []


def test_pending_forget(mv: Run) -> None:
    rows = {r["path"]: r["id"] for r in mv.json("pending")["rows"]}
    out = mv.ok("pending")
    assert out.splitlines()[0].split() == ["ID", "STATUS", "TRIES", "PATH", "LAST", "ERROR"]
    mv.refused("give the rows to forget", "pending", "forget", "--yes")
    mv.refused("no staging row has the id 99", "pending", "forget", "99", "--yes")
    mv.refused(
        "no queued row has the path '/q/none.safetensors'",
        "pending",
        "forget",
        "/q/none.safetensors",
        "--yes",
    )
    mv.refused("invalid choice: 'claimed'", "pending", "forget", "--status", "claimed", "--yes")
    mv.refused("pending forget deletes queued rows: confirm with --yes", "pending", "forget", "1")
    out = mv.ok("pending", "forget", "--status", "missing", "--dry-run")
    assert "would forget 1 queued row" in out
    assert "/q/old_portrait.safetensors" in out
    assert mv.ok("pending", "forget", "/q/ink copy.safetensors", "--yes") == "forgot 1 queued row\n"
    forgotten = mv.json("pending", "forget", str(rows["/q/old_portrait.safetensors"]), "--yes")
    assert [r["path"] for r in forgotten["forgotten"]] == ["/q/old_portrait.safetensors"]
    assert mv.json("pending")["rows"] == []
    deleted = mv.json("deleted")["deleted"]
    assert [(d["kind"], d["path"]) for d in deleted] == [
        ("queued", "/q/old_portrait.safetensors"),
        ("queued", "/q/ink copy.safetensors"),
    ]
    assert deleted[0]["meta"] == {"description": "my best"}


def test_show_copies_queued_rows_and_dupes(mv: Run) -> None:
    out = mv.ok("show", INK[:8])
    assert "tags          style #3366cc" in out  # the colour as text: no colour here
    assert "other copies  /q/ink copy.safetensors (duplicate, queued row 2)" in out
    shown = model(mv, INK[:8])
    assert shown["copies"] == [{"id": 2, "path": "/q/ink copy.safetensors", "status": "duplicate"}]
    queued = mv.ok("show", "old_portrait.safetensors")
    assert "no model in the catalog is 'old_portrait.safetensors', but 1 queued row is:" in queued
    for expected in (
        "status       missing (0 tries)",
        "tags         portrait #ff8800",
        "description  my best",
    ):
        assert expected in queued, queued
    data = mv.json("show", "/q/old_portrait.safetensors")
    assert data["model"] is None
    assert data["queued"][0]["meta"] == {"description": "my best"}
    mv.refused("no model in the catalog has the SHA-256, path or name 'nothing'", "show", "nothing")
    dupes = mv.ok("dupes")
    assert dupes.splitlines()[:3] == [
        "aaaaaaaaaaaa  2 copies (model ink_style.safetensors):",
        f"  model          {model(mv, INK[:8])['path']}",
        "  duplicate  #2  /q/ink copy.safetensors",
    ]
    (content,) = mv.json("dupes")["contents"]
    assert content["model"]["sha256"] == INK
    assert content["copies"] == [
        {"id": 2, "path": "/q/ink copy.safetensors", "status": "duplicate"}
    ]


def test_models_listing_pages_sorts_and_forms(mv: Run, tmp_path: Path) -> None:
    def names(*query: str) -> list[str]:
        return [m["name"] for m in mv.json("models", *query)["models"]]

    assert names() == ["alpha.safetensors", "Base.safetensors", "ink_style.safetensors"]
    assert names("--sort", "size") == [
        "Base.safetensors",
        "alpha.safetensors",
        "ink_style.safetensors",
    ]
    assert names("--sort", "type") == [
        "alpha.safetensors",
        "Base.safetensors",
        "ink_style.safetensors",
    ]
    assert names("--sort", "path") == ["Base.safetensors", "alpha.safetensors", names()[2]]
    assert names("--untagged") == ["alpha.safetensors", "Base.safetensors"]
    assert names("--under", str(tmp_path / "models")) == ["ink_style.safetensors"]
    assert names("--type", "LORA") == ["ink_style.safetensors"]
    page = mv.json("models", "--limit", "2")
    assert (page["total"], page["truncated"], page["offset"], page["limit"]) == (3, True, 0, 2)
    last = mv.json("models", "--limit", "2", "--offset", "2")
    assert (last["total"], last["truncated"], len(last["models"])) == (3, False, 1)
    whole = mv.json("models", "--all")
    assert (whole["total"], whole["truncated"], whole["limit"]) == (3, False, None)
    table = mv.ok("models", "--limit", "1", "--offset", "1")
    assert table.splitlines()[-1] == "(models 2-2 of 3; see more with --offset 2, or --all)"
    assert (
        mv.ok("models", "--offset", "5")
        == "no models past the first 3: --offset 5 is beyond the end\n"
    )
    rows = list(csv.DictReader(io.StringIO(mv.ok("models", "--format", "csv", "--all"))))
    assert rows[2]["tags"] == "style"
    assert rows[2]["sha256"] == INK
    assert rows[1]["size_bytes"] == "30"
    code, out, err = mv("models", "--format", "paths", "--limit", "1")
    assert (code, out) == (0, "/m/alpha.safetensors\n")
    assert err == "modelvault: models 1-1 of 3; see more with --offset 1, or --all\n"
    mv.refused(
        "no model has the type 'loras' ('loras' is ComfyUI's folder of the type 'lora'): "
        "the types in use are checkpoint (2), lora (1)",
        "models",
        "--type",
        "loras",
    )
    mv.refused("there is no tag 'nope': the tags are style", "models", "--tag", "nope")
    mv.refused("give --all or --limit N, not both", "models", "--all", "--limit", "3")
    mv.refused("ask for two forms", "models", "--json", "--format", "csv")
    mv.refused("invalid choice: 'colour'", "models", "--sort", "colour")
    assert mv.json("types")["types"] == [
        {"type": "checkpoint", "models": 2},
        {"type": "lora", "models": 1},
    ]


def test_control_characters_are_escaped_in_tables_and_kept_in_csv(mv: Run) -> None:
    db = DatabaseManager(mv.catalog)
    db.upsert_model({"sha256": LOST, "path": "/m/two\nlines.safetensors", "name": "two\nlines"})
    db.dispose()
    table = mv.ok("models", "--all")
    assert "two\\nlines" in table
    assert len(table.splitlines()) == 5  # the header and four models: no line broken
    assert (
        mv.ok("models", "--format", "paths", "--search", "lines") == "/m/two\\nlines.safetensors\n"
    )
    (row,) = csv.DictReader(io.StringIO(mv.ok("models", "--format", "csv", "--search", "lines")))
    assert row["name"] == "two\nlines"  # the data as it is, quoted


def test_every_command_has_an_example_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    names = [[n] for n in command_names(parser)]
    names += [["tags", a] for a in ("rename", "color", "delete")] + [["pending", "forget"]]
    for words in names:
        with pytest.raises(SystemExit):
            main([*words, "--help"])
        out = capsys.readouterr().out
        assert "examples:\n  modelvault " + words[0] in out, words


def test_curating_on_both_backends(db: DatabaseManager, db_url: str, tmp_path: Path) -> None:
    db.upsert_model({"sha256": INK, "path": "/m/ink.safetensors", "tags": ["style"]})
    env = {**os.environ}

    def mv(*args: str) -> str:
        result = run_modelvault(*args, "--db", db_url, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    mv("tag", INK[:8], "fav")
    mv("note", INK[:8], "on both")
    mv("tags", "rename", "style", "look")
    shown = json.loads(mv("show", INK[:8], "--json"))["model"]
    assert [t["name"] for t in shown["tags"]] == ["fav", "look"]
    assert shown["meta"]["description"] == "on both"
    mv("rm", INK[:8], "--yes")
    assert db.get_model(INK) is None
    assert [d.kind for d in db.deleted_records()] == ["model"]


@pytest.mark.posix_only("answers a question on a pseudo-terminal (pty)")
@pytest.mark.parametrize(("answer", "deleted"), [("y", True), ("no", False), ("", False)])
def test_rm_asks_on_a_terminal(mv: Run, answer: str, deleted: bool) -> None:
    args = ["rm", "Base.safetensors", "--db", str(mv.catalog)]
    code, output = run_in_terminal(args, mv.catalog.parent, 100, answer=answer, TERM="dumb")
    assert "removing 1 catalog entry" in output
    assert "Remove 1 entry? [y/N]" in output
    db = DatabaseManager(mv.catalog)
    assert (db.get_model(BASE) is None) is deleted
    db.dispose()
    assert code == (0 if deleted else 1), output
    assert ("nothing was changed" in output) is not deleted
