"""The package and its test suite on a system without POSIX (Windows): the package
imports without the POSIX-only modules, the suite collects, the tests that need
POSIX skip saying why, and no test can reach the developer's real catalog."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import libpq_files
from support.posix_absent import PRELUDE

from modelvault import DatabaseManager
from modelvault.config import default_data_dir

TESTS = Path(__file__).resolve().parent


def python_without_posix(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter from which the POSIX-only parts were taken."""
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + code, *args],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        # Hypothesis's third-party plugins (trio's, which selenium brings) would call
        # the POSIX functions taken away here; on Windows they have their own.
        env={**os.environ, "MODELVAULT_TEST_NOT_POSIX": "1", "HYPOTHESIS_NO_PLUGINS": "1"},
    )


def test_every_module_of_the_package_imports_without_posix() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import modelvault\n"
        "names = [m.name for m in pkgutil.walk_packages(modelvault.__path__, 'modelvault.')\n"
        "         if not m.name.endswith('__main__')]  # that one runs the command\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names), 'fcntl' in sys.modules and sys.modules['fcntl'] is not None)\n"
    )
    result = python_without_posix(code)
    assert result.returncode == 0, result.stderr
    count, fcntl_loaded = result.stdout.split()
    assert int(count) >= 30  # every module, the command line's included
    assert fcntl_loaded == "False"


@pytest.mark.slow
def test_the_suite_collects_and_posix_only_tests_skip_saying_why() -> None:
    code = (
        "import sys, pytest\n"
        "sys.exit(pytest.main(['-q', '-rs', '-p', 'no:cacheprovider', '-m', 'posix_only',\n"
        "                      sys.argv[1]]))\n"
    )
    result = python_without_posix(code, str(TESTS))
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "error" not in out.lower().split("short test summary")[0], out
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert skipped, out
    assert all("POSIX only: " in line for line in skipped), skipped
    assert any("POSIX only: a FIFO" in line for line in skipped), skipped
    assert " passed" not in out  # not one of them ran


def test_each_test_has_home_and_data_folders_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HOME", "USERPROFILE", "APPDATA", "LOCALAPPDATA", "XDG_DATA_HOME"):
        assert Path(os.environ[name]).is_relative_to(tmp_path), name
    assert Path.home().is_relative_to(tmp_path)
    for platform in ("linux", "darwin", "win32"):
        with monkeypatch.context() as patched:  # undo() would undo the isolation too
            patched.setattr(sys, "platform", platform)
            assert default_data_dir().is_relative_to(tmp_path), platform
    default = DatabaseManager(read_only=True)  # the catalog a command uses without --db
    assert default.url.database is not None
    assert Path(default.url.database).is_relative_to(tmp_path)
    default.dispose()


def test_the_developers_postgresql_password_file_is_still_found(tmp_path: Path) -> None:
    home = tmp_path / "developer"
    home.mkdir()
    assert libpq_files({"HOME": str(home)}) == {}
    (home / ".pgpass").write_text("127.0.0.1:5432:*:postgres:secret\n")
    if os.name == "nt":
        pytest.skip("libpq looks in %APPDATA%\\postgresql on Windows")
    assert libpq_files({"HOME": str(home)}) == {"PGPASSFILE": str(home / ".pgpass")}
    assert libpq_files({"HOME": str(home), "PGPASSFILE": "/elsewhere"}) == {}
