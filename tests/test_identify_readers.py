"""``identify`` on many models reads their headers in worker processes: the same result
as in threads, a stop between batches, and a worker that dies ends the run with one
sentence, never a hang. Real files, real processes, real catalogs on both backends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.model_files import SD15_CHECKPOINT, lora_file, write_safetensors

from modelvault import DatabaseManager
from modelvault.errors import IdentifyError
from modelvault.hashing import HashControl
from modelvault.identify import readers
from modelvault.identify.readers import Readers
from modelvault.identify.refresh import BATCH, identify_models, models_to_identify


def many(db: DatabaseManager, tmp_path: Path, count: int) -> list[str]:
    """``count`` models catalogued before identification: LoRAs and SD 1.5 checkpoints."""
    lora = lora_file(tmp_path / "src")
    ckpt = write_safetensors(tmp_path / "src" / "sd15.safetensors", SD15_CHECKPOINT)
    folder = tmp_path / "models"
    folder.mkdir()
    for i in range(count):
        path = folder / f"m{i:04d}.safetensors"
        os.link(ckpt if i % 3 == 0 else lora, path)
        db.upsert_model({"sha256": f"{i:064x}", "path": str(path), "type": "lora"})
    return models_to_identify(db)


def test_worker_processes_find_what_threads_find(db: DatabaseManager, tmp_path: Path) -> None:
    shas = many(db, tmp_path, 150)

    in_processes = identify_models(db, shas, processes=2)
    by_process = {sha: db.get_model(sha) for sha in shas}
    in_threads = identify_models(db, shas, processes=0)

    assert in_processes == in_threads
    assert in_processes.identified == 150
    assert in_processes.with_base == 150
    for sha in shas:
        model, before = db.get_model(sha), by_process[sha]
        assert model is not None
        assert before is not None
        assert (model.base, model.meta) == (before.base, before.meta)
    assert {m.base for m in by_process.values() if m is not None} == {"SD 1.5", "SDXL 1.0"}


def test_many_files_are_read_in_processes_on_more_than_one_core() -> None:
    cores = os.cpu_count() or 1
    with Readers.for_files(readers.PROCESSES_FROM, threads=4, processes=None) as pool:
        assert pool.processes == (cores if cores > 1 else 0)
    with Readers.for_files(readers.PROCESSES_FROM - 1, threads=4, processes=None) as pool:
        assert pool.processes == 0


def test_a_stop_is_honoured_between_batches(db: DatabaseManager, tmp_path: Path) -> None:
    shas = many(db, tmp_path, BATCH + 10)
    control = HashControl()
    seen: list[str] = []

    def on_file(path: str, outcome: str) -> None:
        seen.append(path)
        control.stop()

    report = identify_models(db, shas, control=control, on_file=on_file, processes=2)

    assert report.stopped
    assert 0 < len(seen) < len(shas)
    assert report.identified == len(seen)


def test_a_worker_process_that_dies_ends_the_run_with_one_sentence(tmp_path: Path) -> None:
    lora = lora_file(tmp_path)
    with Readers(processes=2, threads=1) as pool:
        assert pool.results(pool.start([str(lora)]))[0]["identify"]["base"] == "SDXL 1.0"
        dying = pool._pool.submit(os._exit, 3)  # a worker killed mid-task, as by the OOM killer
        with pytest.raises(IdentifyError, match=r"ended unexpectedly.*run the command again"):
            pool.results([dying])


def test_a_file_that_cannot_be_read_is_named_not_fatal(tmp_path: Path) -> None:
    lora = lora_file(tmp_path)
    gone = tmp_path / "gone.safetensors"
    with Readers(processes=2, threads=1) as pool:
        found = pool.results(pool.start([str(gone), str(lora)]))
    assert isinstance(found[0], str)
    assert "No such file" in found[0]
    assert not isinstance(found[1], str)
