"""Identification in the catalog: the worker notes what each file's header says as it
hashes it, ``identify`` does it for models catalogued before, a base the user set is
kept, and Civitai's hashes find models. Real safetensors files (sparse where big),
real catalogs on both backends."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from support.model_files import SD15_CHECKPOINT, lora_file, write_raw_safetensors, write_safetensors

from modelvault import DatabaseManager, Settings
from modelvault.cli import main
from modelvault.errors import ConfigError
from modelvault.hashing import hash_file_digest
from modelvault.identify.catalog import HeaderTap, found_in_file
from modelvault.identify.refresh import identify_models, models_to_identify
from modelvault.migration.worker import process_pending

FAST = Settings(retry_backoff_seconds=0, lease_seconds=30, max_attempts=3)
CHUNK = 64 * 1024  # small chunks, so a file of a few hundred KiB goes through the relay


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stage(db: DatabaseManager, path: Path, **fields: Any) -> None:
    db.add_pending_import({"path": str(path), **fields})


def catalogued(db: DatabaseManager, path: Path, settings: Settings = FAST) -> Any:
    """The model of ``path`` once the worker has hashed it."""
    process_pending(db, settings=settings, workers=1)
    model = db.get_model_by_path(str(path))
    assert model is not None, f"{path} was not catalogued"
    return model


# -- the worker ---------------------------------------------------------------------------


def test_the_worker_notes_a_loras_base_kind_and_training(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path = lora_file(tmp_path / "loras")
    stage(db, path, type="lora")

    model = catalogued(db, path)

    ident = model.meta["identify"]
    assert (model.base, ident["kind"], ident["source"]) == ("SDXL 1.0", "lora", "tensors")
    assert ident["trigger_words"][:2] == ["inkwash", "brush"]
    assert (ident["resolution"], ident["title"]) == ("1024x1024", "ink_style")
    assert ident["training"]["ss_output_name"] == "ink_style"
    assert "wrong_folder" not in ident
    assert "autov3" not in model.meta  # not asked for (MODELVAULT_HASHES)


def test_the_worker_notes_a_big_checkpoint_read_in_many_chunks(
    db: DatabaseManager, tmp_path: Path
) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    path = write_safetensors(folder / "sd15.safetensors", SD15_CHECKPOINT)  # a sparse hole
    assert os.path.getsize(path) > 10 * CHUNK
    stage(db, path, type="checkpoint")

    model = catalogued(db, path, Settings(hash_chunk_bytes=CHUNK, retry_backoff_seconds=0))

    assert model.sha256 == sha256_of(path)  # the hash is what it always was
    assert (model.base, model.meta["identify"]["kind"]) == ("SD 1.5", "checkpoint")


def test_a_hostile_file_gets_a_problem_and_keeps_its_hash(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path = write_raw_safetensors(tmp_path / "evil.safetensors", b'{"a":', size=4096)
    with open(path, "r+b") as f:  # a header length far beyond the file
        f.write((10**12).to_bytes(8, "little"))
    stage(db, path, type="lora")

    model = catalogued(db, path)

    assert model.sha256 == sha256_of(path)
    assert model.base is None
    assert model.meta["identify"]["problem"]


def test_a_lora_in_the_checkpoints_folder_is_reported_not_moved(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path = lora_file(tmp_path / "checkpoints")
    stage(db, path, type="checkpoint")

    model = catalogued(db, path)

    assert model.type == "checkpoint"  # not silently changed
    assert "is a lora but is catalogued as checkpoint" in model.meta["identify"]["wrong_folder"]


def test_a_staged_base_is_kept(db: DatabaseManager, tmp_path: Path) -> None:
    path = lora_file(tmp_path / "loras")
    stage(db, path, type="lora", base="My SDXL")  # e.g. from a legacy catalog

    model = catalogued(db, path)

    assert model.base == "My SDXL"
    assert model.meta["identify"]["base"] == "SDXL 1.0"


def test_a_base_the_user_set_survives_hashing_again_and_identify(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path = lora_file(tmp_path / "loras")
    stage(db, path, type="lora")
    sha = catalogued(db, path).sha256
    db.update_model(sha, base="Pony")

    stage(db, path, type="lora", base=None)  # hashed again (a scan saw it change)
    again = catalogued(db, path)
    identify_models(db, models_to_identify(db))

    model = db.get_model(sha)
    assert model is not None
    assert (again.base, model.base) == ("Pony", "Pony")
    assert model.meta["identify"]["base_set_by"] == "user"
    assert model.meta["identify"]["base"] == "SDXL 1.0"  # what the header says, still noted

    db.update_model(sha, base="")  # cleared: identification fills it again
    identify_models(db, [sha])
    refilled = db.get_model(sha)
    assert refilled is not None
    assert refilled.base == "SDXL 1.0"


# -- hashes -------------------------------------------------------------------------------


def test_a_model_is_found_by_its_autov2_in_any_case(db: DatabaseManager, tmp_path: Path) -> None:
    path = lora_file(tmp_path / "loras")
    stage(db, path, type="lora")
    sha = catalogued(db, path).sha256

    for key in (sha[:10].upper(), sha[:10].lower(), sha[:10].upper().lower().capitalize()):
        assert db.find_model(key).sha256 == sha


def test_autov3_is_computed_in_the_same_read_when_asked(
    db: DatabaseManager, tmp_path: Path
) -> None:
    path = lora_file(tmp_path / "loras")
    data = path.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    expected = hashlib.sha256(data[header_end:]).hexdigest()
    stage(db, path, type="lora")
    settings = Settings(hashes=("sha256", "autov3"), retry_backoff_seconds=0)

    model = catalogued(db, path, settings)

    assert model.meta["autov3"] == expected
    assert db.find_model(expected[:12].upper()).sha256 == model.sha256  # as A1111 writes it


def test_the_hashes_setting_is_read_and_checked() -> None:
    assert Settings.from_env({"MODELVAULT_HASHES": "SHA256, autov3"}).hashes == (
        "sha256",
        "autov3",
    )
    assert Settings.from_env({}).hashes == ("sha256",)
    for bad in ("autov3", "sha256,md5"):
        with pytest.raises(ConfigError, match="MODELVAULT_HASHES"):
            Settings.from_env({"MODELVAULT_HASHES": bad})


def test_the_tap_sees_every_byte_in_order(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(10 * CHUNK + 123))
    seen = bytearray()

    class Copy:
        def begin(self, size: int) -> None:
            assert size == os.path.getsize(path)

        def take(self, chunk: memoryview) -> None:
            seen.extend(chunk)

    digest = hash_file_digest(path, chunk_size=CHUNK, tap=Copy())

    assert bytes(seen) == path.read_bytes()
    assert digest.sha256 == sha256_of(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x01\x02\x03",  # too short to be a model file
        bytes(range(200, 256)) * 40,  # no model format
        b"\x80\x02" + bytes(100),  # a pickle
        b"\x80\x02" + bytes(6) + b"{" + bytes(100),  # a pickle that looks like safetensors
    ],
    ids=["empty", "short", "unknown", "pickle", "pickle-like-safetensors"],
)
def test_a_file_settled_by_its_first_bytes_is_noted_as_the_parser_notes_it(
    tmp_path: Path, content: bytes
) -> None:
    """The tap answers such a file from the first chunk without a parser: what it
    notes is what the parser notes, fed one byte at a time, and what ``identify``
    notes from the file."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    whole, by_byte = HeaderTap(), HeaderTap()
    whole.begin(len(content))
    whole.take(memoryview(content))
    by_byte.begin(len(content))
    for i in range(len(content)):
        by_byte.take(memoryview(content)[i : i + 1])

    assert whole.found(path.name) == by_byte.found(path.name) == found_in_file(str(path))
    assert whole.found(path.name)["identify"]["format"] in {"empty", "unknown", "pickle"}


def test_a_failure_inside_identification_is_a_problem_not_an_exception() -> None:
    tap = HeaderTap(autov3=True)
    tap.begin(-1)  # a size no reader takes
    tap.take(memoryview(b"x"))
    assert "Identifying the file failed" in tap.found("x.safetensors")["identify"]["problem"]


# -- the commands -------------------------------------------------------------------------


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str], url: str) -> None:
        self.capsys, self.url = capsys, url

    def __call__(self, *args: str) -> tuple[int, str, str]:
        code = main([*args, "--db", self.url])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def older(db: DatabaseManager, tmp_path: Path) -> dict[str, str]:
    """Models catalogued before identification: a LoRA, a checkpoint with a base the
    user set, and one whose file is gone."""
    lora = lora_file(tmp_path / "loras")
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    ckpt = write_safetensors(ckpt_dir / "sd15.safetensors", SD15_CHECKPOINT)
    shas = {"lora": sha256_of(lora), "ckpt": sha256_of(ckpt), "gone": "e" * 64}
    db.upsert_model({"sha256": shas["lora"], "path": str(lora), "type": "lora"})
    db.upsert_model({"sha256": shas["ckpt"], "path": str(ckpt), "type": "checkpoint"})
    db.update_model(shas["ckpt"], base="My base")
    db.upsert_model({"sha256": shas["gone"], "path": str(tmp_path / "gone.safetensors")})
    return shas


def test_identify_missing_base_fills_the_models_catalogued_before(
    db: DatabaseManager, older: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(capsys, db.url.render_as_string(hide_password=False))

    code, out, err = cli("identify", "--missing-base")

    assert code == 0, err
    assert "identified 1 model" in out
    assert "could not read" in out
    assert "gone.safetensors" in out
    lora, ckpt = db.get_model(older["lora"]), db.get_model(older["ckpt"])
    assert lora is not None
    assert ckpt is not None
    assert (lora.base, lora.meta["identify"]["kind"]) == ("SDXL 1.0", "lora")
    assert "identify" in ckpt.meta
    assert "kind" not in ckpt.meta["identify"]

    code, out, err = cli("identify", "--all")
    ckpt = db.get_model(older["ckpt"])
    assert code == 0, err
    assert ckpt is not None
    assert (ckpt.base, ckpt.meta["identify"]["base"]) == ("My base", "SD 1.5")


def test_models_filter_by_base_and_bases_lists_them(
    db: DatabaseManager, older: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(capsys, db.url.render_as_string(hide_password=False))
    assert cli("identify", "--all")[0] == 0

    code, out, _ = cli("models", "--base", "sdxl 1.0", "--json")
    assert code == 0
    assert [m["sha256"] for m in json.loads(out)["models"]] == [older["lora"]]

    code, out, err = cli("models", "--base", "Nonsense")
    assert code == 2
    assert "no model has the base 'Nonsense'" in err
    assert "Flux.1 D" in err

    code, out, _ = cli("bases", "--json")
    assert {b["base"]: b["models"] for b in json.loads(out)["bases"]} == {
        "SDXL 1.0": 1,
        "My base": 1,
    }


def test_show_prints_what_the_header_says(
    db: DatabaseManager, older: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(capsys, db.url.render_as_string(hide_password=False))
    assert cli("identify", "--all")[0] == 0

    code, out, err = cli("show", older["lora"][:10].upper())

    assert code == 0, err
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert "SDXL 1.0" in lines["base"]
    assert "lora (safetensors)" in lines["kind"]
    assert "SDXL 1.0 (from its tensors)" in lines["base found"]
    assert "inkwash, brush" in lines["trigger words"]
    assert "1024x1024" in lines["resolution"]
    assert "ink_style" in lines["title"]
    assert older["lora"][:10].upper() in lines["AutoV2"]


def test_the_base_command_sets_a_base_identification_keeps(
    db: DatabaseManager, older: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    cli = Cli(capsys, db.url.render_as_string(hide_password=False))

    code, out, err = cli("base", older["lora"][:12], "pony")
    assert code == 0, err
    assert "base - -> Pony" in out  # spelt as the vocabulary spells it
    assert cli("identify", older["lora"][:12])[0] == 0

    model = db.get_model(older["lora"])
    assert model is not None
    assert model.base == "Pony"


def test_scan_hash_verbose_names_a_file_in_the_wrong_folder(
    db: DatabaseManager, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "models"
    lora_file(root)
    cli = Cli(capsys, db.url.render_as_string(hide_password=False))

    code, _, err = cli("scan", str(root), "--type", "checkpoint", "--hash", "-v")

    assert code == 0, err
    wrong = [line for line in err.splitlines() if line.startswith("wrong folder: ")]
    assert len(wrong) == 1, err
    assert "ink_style.safetensors: The file is a lora but is catalogued as checkpoint" in wrong[0]
