"""The progress line: every field at every width, never backwards, plain lines off a terminal."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass, replace
from enum import Enum

import pytest
from rich.cells import cell_len
from rich.console import Console

from modelvault.cli.progress import Frame, ProgressView, bar_cells, plain, render, shorten_name

GiB = 1 << 30
FRAME = Frame(
    fraction=0.45,
    files_done=3,
    files_total=8,
    bytes_done=int(1.5 * GiB),
    bytes_total=int(3.5 * GiB),
    rate=85.3 * (1 << 20),
    eta=754,
    current="/home/me/ComfyUI/models/checkpoints/dreamshaper_8.safetensors",
)


@pytest.mark.parametrize("width", [40, 80, 120])
def test_every_field_fits_at_every_width(width: int) -> None:
    line = render(FRAME, width).plain
    assert cell_len(line) <= width - 1
    assert "45%" in line
    assert "3/8 files" in line
    assert "1.5" in line  # bytes: "1.5 GiB/3.5 GiB", or "1.5/3.5G" at 40
    assert "3.5" in line
    assert "85" in line  # rate: "85.3 MiB/s", or "85M/s" at 40
    assert "/s" in line
    assert "ETA 12:34" in line
    if width >= 80:
        assert "━" in line  # the bar, in the room the numbers leave
    if width >= 120:
        assert "dreamshaper_8.safetensors" in line


def test_the_bar_shrinks_before_any_number_is_cut() -> None:
    wide, narrow = render(FRAME, 120).plain, render(FRAME, 60).plain
    assert wide.count("━") + wide.count("─") >= narrow.count("━") + narrow.count("─")
    assert render(FRAME, 20).plain.startswith("45%")  # too narrow even so: cut, no wrap
    assert cell_len(render(FRAME, 20).plain) == 19


class _State(Enum):
    PROCESSING = "processing"
    DONE = "done"


@dataclass
class _Status:
    state: _State
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    rate_bytes_per_second: float = 1.0
    eta_seconds: float | None = 1.0
    fraction: float | None = None
    current_file: str | None = None
    files_unsized: int = 0
    waiting: str | None = None


def test_never_drawn_backwards_and_the_end_is_always_shown() -> None:
    clock = iter(range(0, 1000, 10)).__next__  # 10 s between calls: every line due
    stream = io.StringIO()
    view = ProgressView(Console(file=stream, width=100), clock=clock, interval=5)
    assert not view.live_mode  # not a terminal: plain lines
    view.hashing(_Status(_State.PROCESSING, 4, 8, 450, 1000, fraction=0.45))
    view.hashing(_Status(_State.PROCESSING, 3, 8, 430, 1000, fraction=0.43))  # after a release
    assert view.last_frame is not None
    assert (view.last_frame.files_done, view.last_frame.bytes_done) == (4, 450)
    assert view.last_frame.fraction == pytest.approx(0.45)
    view.hashing(_Status(_State.DONE, 8, 8, 900, 900, fraction=1.0), final=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("progress: 45%  4/8 files")
    assert lines[2].startswith("progress: 100%  8/8 files")


def test_plain_lines_are_spaced_and_quiet_draws_nothing() -> None:
    now = [0.0]
    stream = io.StringIO()
    view = ProgressView(Console(file=stream), clock=lambda: now[0], interval=5)
    status = _Status(_State.PROCESSING, 1, 8, 10, 100)
    for step in range(20):  # 0.5 s apart: 10 s in all
        now[0] = step * 0.5
        view.hashing(replace(status, files_done=1 + step // 4))
    assert len(stream.getvalue().splitlines()) == 1  # at 5 s (none at the start)
    silent = io.StringIO()
    quiet = ProgressView(Console(file=silent), quiet=True)
    quiet.hashing(_Status(_State.DONE, 8, 8, 1, 1), final=True)
    assert silent.getvalue() == ""


def test_a_scan_shows_how_many_files_it_looked_at() -> None:
    now = [0.0]
    stream = io.StringIO()
    view = ProgressView(Console(file=stream, width=100), clock=lambda: now[0], interval=5)
    for step, seen in enumerate((500, 1000, 1500)):
        now[0] = step * 6.0
        view.scanning(seen)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "progress: scanning model folders: 1,000 files looked at",
        "progress: scanning model folders: 1,500 files looked at",
    ]


def test_the_library_never_imports_rich(tmp_path: object) -> None:
    script = (
        "import sys, tempfile, os\n"
        "import modelvault\n"
        "from modelvault.migration import manager, worker, importer, demo\n"
        "from modelvault import DatabaseManager\n"
        "d = tempfile.mkdtemp()\n"
        "db = DatabaseManager(os.path.join(d, 'c.sqlite3'))\n"
        "db.init_db()\n"
        "legacy = demo.build_demo(os.path.join(d, 'demo'), file_mb=0.01)\n"
        "m = manager.MigrationManager.for_database(db)\n"
        "m.start_full_migration(legacy)\n"
        "m.wait()\n"
        "assert m.status().state.value == 'done', m.status()\n"
        "print(sorted(n for n in sys.modules if n == 'rich' or n.startswith('rich.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_nothing_reads_as_done_while_a_file_remains() -> None:
    almost = replace(FRAME, fraction=0.996, eta=0.3)
    line = render(almost, 120).plain
    assert " 99%  3/8 files" in line  # rounded down: 100% only when it is all done
    assert "ETA 0:01" in line  # rounded up: 0:00 only when nothing is left
    done = render(replace(FRAME, fraction=1.0, eta=0.0), 120).plain
    assert " 100%  3/8 files" in done
    assert "ETA 0:00" in done


@pytest.mark.parametrize("width", [40, 80, 120])
def test_unknown_sizes_and_a_retry_wait_are_said(width: int) -> None:
    frame = replace(FRAME, sizes_known=False, eta=None, note="waiting 30 s to retry 2 files")
    line = render(frame, width).plain
    assert "3.5+" in line  # at least that much: some sizes are not known yet
    if width >= 80:
        assert "waiting 30 s to retry 2 files" in line
    assert "waiting 30 s to retry 2 files" in plain(frame)


def test_the_view_shows_the_managers_fraction_and_its_wait() -> None:
    stream = io.StringIO()
    clock = iter(range(0, 1000, 10)).__next__
    view = ProgressView(Console(file=stream, width=200), clock=clock, interval=5)
    unsized = _Status(
        _State.PROCESSING, 1, 4, 2048, 2048, fraction=0.25, files_unsized=3, eta_seconds=None
    )
    view.hashing(unsized)  # every byte known so far is read, yet 3 files of 4 remain
    view.hashing(replace(unsized, waiting="waiting 8 s to retry 1 file"))
    first, second = stream.getvalue().splitlines()
    assert first.startswith("progress: 25%  1/4 files  2.0 KiB/2.0+ KiB")
    assert "ETA --:--" in first
    assert second.endswith("waiting 8 s to retry 1 file")


def test_a_long_name_keeps_its_start_and_its_distinctive_end() -> None:
    assert shorten_name("juggernautXL_v9.safetensors", 22) == "juggern…v9.safetensors"
    assert shorten_name("juggernautXL_v9.safetensors", 40) == "juggernautXL_v9.safetensors"
    assert shorten_name("dreamshaper_8.safetensors", 20) == "dreams…8.safetensors"
    wide = shorten_name("模型_日本語の名前_v2.safetensors", 20)
    assert cell_len(wide) <= 20
    assert wide.startswith("模型")
    assert wide.endswith("v2.safetensors")
    assert cell_len(shorten_name("a_very_long_name_without_an_extension", 12)) <= 12
    line = render(replace(FRAME, current="/m/juggernautXL_v9.safetensors"), 80).plain
    assert line.endswith("  jugge…v9.safetensors"), line  # not "…safetensors"
    assert cell_len(line) <= 79


@pytest.mark.parametrize("width", [60, 80, 120, 200])
def test_the_bar_keeps_its_width_from_frame_to_frame(width: int) -> None:
    frames = [
        FRAME,
        replace(FRAME, fraction=0.01, rate=3.0, eta=None, current=None),
        replace(FRAME, fraction=0.99, rate=1.5 * GiB, eta=5, current="/m/a.pt"),
        replace(FRAME, current="/m/" + "long_name_" * 12 + ".safetensors", note="paused"),
    ]
    bars = {
        render(frame, width).plain.split(" ")[0].count("━")
        + render(frame, width).plain.split(" ")[0].count("─")
        for frame in frames
    }
    assert bars == {bar_cells(width)}


def test_an_interrupted_line_is_erased_once_and_never_drawn_again() -> None:
    stream = io.StringIO()
    view = ProgressView(Console(file=stream, force_terminal=True, width=80))
    assert view.live_mode
    status = _Status(_State.PROCESSING, 1, 8, 10, 100, fraction=0.1, current_file="/m/a.pt")
    view.hashing(status)
    view.close(erase=True)
    drawn = stream.getvalue()
    assert drawn.endswith("\x1b[2K")  # the line wiped: the summary takes its place
    view.hashing(status)  # a late status from a subscriber thread
    view.close()
    assert stream.getvalue() == drawn
