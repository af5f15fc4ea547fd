"""A catalog with something of everything in it, for the export, backup and verify tests."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from modelvault import DatabaseManager

# Runs the command with the size of any file it writes limited (a full disk, unprivileged):
# past the limit a write fails with EFBIG instead of the process being killed.
LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = int(sys.argv[1])
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
from modelvault.cli import main
code = main(sys.argv[2:])
# The command is over: what the interpreter writes at exit (a coverage data file) may be big.
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
sys.exit(code)
"""


def sha_of(seed: int) -> str:
    return hashlib.sha256(str(seed).encode()).hexdigest()


def fill_catalog(db: DatabaseManager, models: int = 6, *, folder: str = "/models") -> None:
    """Models with tags, colours, notes, meta and a preview; queued rows of several
    states; a deleted model and a forgotten row in the deleted log."""
    db.ensure_tag("style", "#ff8800")
    db.ensure_tag("unused", "#008080")
    for n in range(models):
        db.upsert_model(
            {
                "sha256": sha_of(n),
                "path": f"{folder}/m{n:03d}.safetensors",
                "name": f"Model {n} – ünï 模型",
                "type": "lora" if n % 2 else "checkpoint",
                "base": "SDXL" if n % 3 == 0 else None,
                "size_bytes": 1000 + n,
                "mtime_ns": 1_700_000_000_000_000_000 + n,
                "meta": {
                    "description": f"note {n}\nsecond line",
                    "previews": [{"sha256": "ab" * 32, "file": "ab" * 32 + ".png", "source": None}],
                    "nested": {"z": [1, 2.5, None, True], "a": "x"},
                },
                "tags": ["style", {"name": f"t{n % 3}", "color": None}],
            }
        )
    for n, status in enumerate(("pending", "missing", "failed", "conflict")):
        db.add_pending_import(
            {
                "path": f"{folder}/queued{n}.ckpt",
                "name": f"queued{n}.ckpt",
                "status": status,
                "tags": [{"name": "style", "color": "#ff8800"}],
                "meta": {"description": f"queued note {n}"},
                "legacy_id": 10 + n,
                "source": "legacy",
                "sha256": sha_of(100 + n) if status == "conflict" else None,
            }
        )
    db.delete_model(sha_of(models - 1))
    pending = [r.id for r in db.get_pending_imports(["failed"])]
    db.forget_pending(pending)


def run_limited(limit: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``modelvault ARGS`` in a subprocess that cannot write a file past ``limit`` bytes."""
    return subprocess.run(
        [sys.executable, "-c", LIMITED, str(limit), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
