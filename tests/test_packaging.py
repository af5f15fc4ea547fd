"""The installed package, not the checkout, must be able to migrate a catalog."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from support import DEVELOPER_HOME, HEAD_REVISION

REPO = Path(__file__).resolve().parent.parent


def run(
    command: list[str], env: dict[str, str], **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, env=env, **kwargs)


@pytest.mark.slow
def test_wheel_install_outside_the_repository_migrates_to_v4(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    scripts = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    # Nothing may lead the fresh environment back to the checkout.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    install = run(
        [
            str(scripts / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(REPO),
        ],
        {**env, **DEVELOPER_HOME},  # pip's own settings: where to install from
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
    migrated = run(
        [str(scripts / "python"), "-c", program, str(tmp_path / "catalog.sqlite3")],
        env,
        cwd=tmp_path,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.split() == [HEAD_REVISION, HEAD_REVISION]
    version = run([str(scripts / "modelvault"), "--version"], env, timeout=60)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("modelvault "), version.stdout + version.stderr
