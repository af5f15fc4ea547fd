"""Where the scan's folders come from (arguments, ComfyUI, settings), and the scan
run by the MigrationManager and by the `modelvault scan` command."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from support import run_modelvault as modelvault
from support import wait_for

from modelvault import ConfigError, DatabaseManager, ScanError, Settings
from modelvault.migration.manager import MigrationManager, MigrationState
from modelvault.scan import (
    ScanRoot,
    comfyui_roots,
    parse_extra_model_paths,
    resolve_roots,
)

# The shape of ComfyUI's extra_model_paths.yaml.example.
EXAMPLE = """\
#Rename this to extra_model_paths.yaml and ComfyUI will load it


#config for a1111 ui
#all you have to do is change the base_path to where yours is installed
a111:
    base_path: {a111}

    checkpoints: models/Stable-diffusion
    configs: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS
    upscale_models: |
                  models/ESRGAN
                  models/RealESRGAN
    embeddings: embeddings
    hypernetworks: models/hypernetworks
    controlnet: models/ControlNet

#config for comfyui
comfyui:
     base_path: "{shared}"
     # You can use is_default to mark that these folders should be listed first
     #is_default: true
     checkpoints: models/checkpoints/   # trailing comment
     clip: models/clip/
     custom_nodes: custom_nodes/
"""


def write_example(folder: Path) -> Path:
    file = folder / "extra_model_paths.yaml"
    file.write_text(EXAMPLE.format(a111=folder / "webui", shared=folder / "shared"))
    return file


def test_the_comfyui_example_file_is_read(tmp_path: Path) -> None:
    roots = parse_extra_model_paths(write_example(tmp_path))
    webui, shared = tmp_path / "webui", tmp_path / "shared"
    assert roots == [
        ScanRoot(str(webui / "models/Stable-diffusion"), "checkpoint"),
        ScanRoot(str(webui / "models/VAE"), "vae"),
        ScanRoot(str(webui / "models/Lora"), "lora"),
        ScanRoot(str(webui / "models/LyCORIS"), "lora"),
        ScanRoot(str(webui / "models/ESRGAN"), "upscale"),
        ScanRoot(str(webui / "models/RealESRGAN"), "upscale"),
        ScanRoot(str(webui / "embeddings"), "embedding"),
        ScanRoot(str(webui / "models/hypernetworks"), "hypernetwork"),
        ScanRoot(str(webui / "models/ControlNet"), "controlnet"),
        ScanRoot(str(shared / "models/checkpoints"), "checkpoint"),
        ScanRoot(str(shared / "models/clip"), "text_encoder"),
    ]


def test_a_relative_base_path_is_relative_to_the_file(tmp_path: Path) -> None:
    file = tmp_path / "extra_model_paths.yaml"
    file.write_text("mine:\n  base_path: ../disk\n  loras: l\n")
    assert parse_extra_model_paths(file) == [
        ScanRoot(os.path.normpath(tmp_path / "../disk/l"), "lora")
    ]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("comfyui:\n    loras - models/loras\n", 2),
        ("    loras: models/loras\n", 1),
        ("comfyui: models\n", 1),
        ("comfyui:\n\tloras: x\n", 2),
    ],
)
def test_a_file_outside_the_format_is_refused_with_its_line(
    tmp_path: Path, text: str, line: int
) -> None:
    file = tmp_path / "extra_model_paths.yaml"
    file.write_text(text)
    with pytest.raises(ScanError, match=rf"extra_model_paths.yaml line {line} "):
        parse_extra_model_paths(file)


def test_a_comfyui_folder_gives_models_and_its_extra_paths(tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    (comfy / "models").mkdir(parents=True)
    (comfy / "extra_model_paths.yaml").write_text("more:\n  base_path: /srv\n  vae: v\n")
    assert comfyui_roots(comfy) == [
        ScanRoot(str(comfy / "models")),
        ScanRoot("/srv/v", "vae"),
    ]
    with pytest.raises(ScanError, match="is not a ComfyUI folder: it has no models/ folder"):
        comfyui_roots(tmp_path)


def test_model_roots_come_from_the_environment(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    settings = Settings.from_env({"MODELVAULT_MODEL_ROOTS": f"{a}{os.pathsep} {b} "})
    assert settings.model_roots == (str(a), str(b))
    assert resolve_roots(settings=settings) == [ScanRoot(str(a)), ScanRoot(str(b))]
    with pytest.raises(ConfigError, match=r"MODELVAULT_MODEL_ROOTS=.*an empty folder"):
        Settings.from_env({"MODELVAULT_MODEL_ROOTS": f"{a}{os.pathsep}{os.pathsep}{b}"})
    with pytest.raises(ConfigError, match="model_roots"):
        Settings(model_roots=("",))
    with pytest.raises(ScanError, match="no folders to scan"):
        resolve_roots(settings=Settings())
    with pytest.raises(ScanError, match=r"\bb2 does not exist"):
        resolve_roots(settings=Settings(model_roots=(str(a), str(tmp_path / "b2"))))


def model_tree(root: Path, count: int = 3) -> None:
    for i in range(count):
        path = root / "loras" / f"m{i}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"model {i}".encode())


def test_the_manager_scans_then_hashes(db: DatabaseManager, tmp_path: Path) -> None:
    model_tree(tmp_path / "models")
    manager = MigrationManager(db)
    seen: list[MigrationState] = []
    manager.subscribe(lambda s: seen.append(s.state))
    assert manager.start_scan([tmp_path / "models"], workers=2) is True
    assert manager.wait(120)
    status = manager.status()
    assert status.state is MigrationState.DONE
    assert status.scan_report is not None
    assert status.scan_report["staged_new"] == 3
    assert status.files_scanned == 3
    assert status.worker_report is not None
    assert status.worker_report["imported"] == 3
    assert seen[0] is MigrationState.SCANNING
    assert MigrationState.PROCESSING in seen
    json.dumps(status.to_dict())
    with pytest.raises(ScanError, match="does not exist"):
        manager.start_scan([tmp_path / "nowhere"])


def test_a_paused_scan_holds_and_a_stopped_one_leaves_its_rows_staged(
    db: DatabaseManager, tmp_path: Path
) -> None:
    model_tree(tmp_path / "models")
    manager = MigrationManager(db)
    manager.pause_processing()
    assert manager.start_scan([tmp_path / "models"]) is True
    # The scan's batch is committed, then it holds before going on.
    wait_for(lambda: db.staging_counts()["pending"] == 3, "the scan to stage its files")
    assert not manager.wait(0.3)
    held = manager.status()
    assert (held.state, held.stage) == (MigrationState.PAUSED, "scanning")
    manager.stop()
    assert manager.wait(60)
    assert manager.status().state is MigrationState.STOPPED
    assert db.count_models() == 0
    manager.resume_processing()
    assert manager.start_processing(workers=1) is True
    assert manager.wait(120)
    assert db.count_models() == 3


def test_the_scan_command(tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    model_tree(comfy / "models")
    elsewhere = tmp_path / "webui"
    (elsewhere / "models" / "Lora").mkdir(parents=True)
    (elsewhere / "models" / "Lora" / "x.safetensors").write_bytes(b"x")
    (comfy / "extra_model_paths.yaml").write_text(
        textwrap.dedent(f"""\
            a111:
                base_path: {elsewhere}
                loras: |
                    models/Lora
            """)
    )
    catalog = str(tmp_path / "catalog.sqlite3")
    staged = modelvault("scan", "--comfyui", str(comfy), "--db", catalog, "--json", cwd=tmp_path)
    assert staged.returncode == 0, staged.stderr
    assert json.loads(staged.stdout)["scan"]["staged_new"] == 4
    hashed = modelvault("scan", "--comfyui", str(comfy), "--db", catalog, "--hash", cwd=tmp_path)
    assert hashed.returncode == 0, hashed.stderr
    assert "0 unchanged, 0 staged" in hashed.stdout
    assert "4 waiting already" in hashed.stdout
    assert "hashing: 4 files" in hashed.stdout
    x = DatabaseManager(catalog).get_model_by_path(str(elsewhere / "models/Lora/x.safetensors"))
    assert x is not None
    assert x.type == "lora"
    again = modelvault("scan", "--comfyui", str(comfy), "--db", catalog, cwd=tmp_path)
    assert "4 unchanged, 0 staged" in again.stdout


def test_the_scan_command_refuses_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.sqlite3"
    result = modelvault("scan", str(tmp_path / "nowhere"), "--db", str(catalog), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        f"modelvault: error: the model folder {tmp_path / 'nowhere'} does not exist: "
        "check the path and scan again.\n"
    )
    assert not catalog.exists()
