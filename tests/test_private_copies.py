"""The private copies of legacy files: each folder named for the process that made
it, removed by a later run once that process is provably gone, never before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelvault.legacy.private_copies import PREFIX, Maker, maker_of, new_folder, sweep
from modelvault.legacy.reader import open_legacy
from modelvault.migration.sample import LegacyModel, write_legacy_catalog
from modelvault.queue import owner

MAKE_A_COPY = (
    "import sys\n"
    "from modelvault.legacy.private_copies import new_folder\n"
    "folder = new_folder(sys.argv[1])\n"
    "(folder / 'hikaze_mm.sqlite3').write_bytes(b'a copy')\n"
    "print(folder, flush=True)\n"
    "sys.stdin.read()\n"  # runs until its stdin closes
)


class Run:
    """Another process that made a copy and holds it until ``end()``."""

    def __init__(self, tmp: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MAKE_A_COPY, str(tmp)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.folder = Path(self.proc.stdout.readline().strip())
        assert self.folder.is_dir()

    def end(self) -> None:
        self.proc.communicate("", timeout=60)


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


def test_a_folder_is_named_for_its_process(tmp: Path) -> None:
    folder = new_folder(tmp)
    assert folder.parent == tmp
    assert folder.name.startswith(PREFIX)
    maker = maker_of(folder.name)
    assert maker is not None
    assert (maker.pid, maker.token) == (os.getpid(), owner.start_token(os.getpid()))
    assert maker.host  # this host, in letters, digits, '.' and '-'
    assert maker_of("modelvault-legacy-abc123") is None  # an older run's: not judged
    assert maker_of(f"{PREFIX}host_12__k3x9") == Maker("host", 12, "")  # a system without tokens
    assert maker_of(f"{PREFIX}host_x_1.2_abc") is None
    assert maker_of("something-else") is None


def test_only_copies_of_processes_provably_gone_are_removed(tmp: Path) -> None:
    mine = new_folder(tmp)  # this process: it runs
    running = Run(tmp)
    ended = Run(tmp)
    ended.end()
    maker = maker_of(ended.folder.name)
    assert maker is not None
    # The same process as named from elsewhere: never judged here.
    elsewhere = {
        "another host": f"{PREFIX}another-host_{maker.pid}_{maker.token}_x",
        "another boot": f"{PREFIX}{maker.host}_{maker.pid}_fedcba987654.1.{maker.token[-3:]}_x",
    }
    for name in elsewhere.values():
        (tmp / name).mkdir()
    a_file = tmp / f"{PREFIX}{maker.host}_{maker.pid}_{maker.token}_file"
    a_file.write_text("not a folder")

    assert sweep(tmp) == [ended.folder]
    assert not ended.folder.exists()
    assert mine.is_dir()
    assert (running.folder / "hikaze_mm.sqlite3").exists()
    assert all((tmp / name).is_dir() for name in elsewhere.values())
    assert a_file.read_text() == "not a folder"

    running.end()  # now it is gone too
    assert sweep(tmp) == [running.folder]
    assert sweep(tmp) == []
    assert mine.is_dir()


@pytest.mark.posix_only("a symbolic link (on Windows, a privilege)")
def test_a_link_named_as_a_copy_is_not_followed(tmp: Path, tmp_path: Path) -> None:
    ended = Run(tmp)
    ended.end()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    link = tmp / (ended.folder.name + "-link")
    link.symlink_to(precious, target_is_directory=True)
    assert sweep(tmp) == [ended.folder]
    assert (precious / "keep.txt").read_text() == "mine"
    assert link.is_symlink()


def test_opening_a_legacy_file_sweeps_and_its_own_copy_goes_when_it_closes(
    tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    ended = Run(tmp)
    ended.end()
    rows = [LegacyModel(1, "/gone/a.safetensors", "loras", hash_hex="ab" * 32)]
    legacy = write_legacy_catalog(tmp_path / "hikaze_mm.sqlite3", rows=rows, wal=True)
    with open_legacy(legacy) as catalog:
        assert not ended.folder.exists()
        assert catalog.copy is not None
        assert catalog.copy.parent == tmp
        assert maker_of(catalog.copy.name) == maker_of(new_folder(tmp_path).name)
        assert catalog.count_models() == 1
        copy = catalog.copy
    assert not copy.exists()
    assert list(tmp.iterdir()) == []
