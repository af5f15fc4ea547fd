"""The installed package, not the checkout, must be able to migrate a catalog."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_install_outside_the_repository_migrates_to_v3(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    program = (
        "import sys, modelvault\n"
        "from modelvault import DatabaseManager\n"
        "assert 'site-packages' in modelvault.__file__, modelvault.__file__\n"
        "db = DatabaseManager(sys.argv[1])\n"
        "print(db.init_db(), db.current_revision())\n"
    )
    run = subprocess.run(
        [str(python), "-c", program, str(tmp_path / "catalog.sqlite3")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["v3", "v3"]
    version = subprocess.run(
        [str(env_dir / "bin" / "modelvault"), "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert version.stdout.startswith("modelvault "), version.stdout + version.stderr
