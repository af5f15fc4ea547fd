"""The folders a scan takes from ComfyUI, read the way ComfyUI reads them
(``utils/extra_config.py``, ``folder_paths.py``, ``main.py``), and the type each
gives its files: ComfyUI's own example file verbatim, valid YAML of every
shape ComfyUI reads, the A1111 layout, ComfyUI Desktop's config."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from modelvault import DatabaseManager, ScanError
from modelvault.cli import main
from modelvault.db.models import PendingImport
from modelvault.scan import ScanRoot, comfyui_roots, parse_extra_model_paths, resolve_roots
from modelvault.scan import scan_roots as scan

EXAMPLE = Path(__file__).parent / "data" / "extra_model_paths.yaml.example"


def write(path: Path, data: bytes = b"weights") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def staged_types(db: DatabaseManager) -> dict[str, str]:
    with db.session_scope() as s:
        return {row.path: row.type for row in s.query(PendingImport)}


def a1111_install(webui: Path) -> dict[str, str]:
    """A web UI with some of the folders the example lists (most installs lack a few:
    here RealESRGAN, SwinIR, hypernetworks and ControlNet); the type each file should get."""
    files = {
        "models/Stable-diffusion/sd15.safetensors": "checkpoint",
        "models/Stable-diffusion/SDXL/xl.safetensors": "checkpoint",
        "models/VAE/vae.pt": "vae",
        "models/Lora/style.safetensors": "lora",
        "models/Lora/character/face.safetensors": "lora",
        "models/LyCORIS/locon.safetensors": "lora",
        "models/ESRGAN/4x.pth": "upscale",
        "embeddings/bad-hands.pt": "embedding",
    }
    for name in files:
        write(webui / name)
    return {str(webui / name): kind for name, kind in files.items()}


def test_comfyuis_example_file_with_an_a1111_install_beside_it(
    db: DatabaseManager, tmp_path: Path
) -> None:
    comfy, webui = tmp_path / "ComfyUI", tmp_path / "stable-diffusion-webui"
    write(comfy / "models" / "checkpoints" / "own.safetensors")
    text = EXAMPLE.read_text().replace("path/to/stable-diffusion-webui/", f"{webui}/")
    (comfy / "extra_model_paths.yaml").write_text(text)
    expected = a1111_install(webui)
    expected[str(comfy / "models" / "checkpoints" / "own.safetensors")] = "checkpoint"
    report = scan(db, comfyui_roots(comfy))
    assert staged_types(db) == expected
    not_there = sorted(note.split(":")[0] for note in report.skipped)
    assert not_there == sorted(
        str(webui / "models" / name)
        for name in ("RealESRGAN", "SwinIR", "hypernetworks", "ControlNet")
    )
    assert all(f"{comfy / 'extra_model_paths.yaml'} line " in note for note in report.skipped)
    assert "(section a111, key upscale_models)" in report.skipped[0] + report.skipped[1]


def test_the_example_file_as_it_ships_resolves_like_comfyui(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "extra_model_paths.yaml")
    base = tmp_path / "path/to/stable-diffusion-webui"  # relative: to the file's folder
    roots = parse_extra_model_paths(tmp_path / "extra_model_paths.yaml")
    assert [(r.path, r.type) for r in roots] == [
        (str(base / "models/Stable-diffusion"), "checkpoint"),
        (str(base / "models/VAE"), "vae"),
        (str(base / "models/Lora"), "lora"),
        (str(base / "models/LyCORIS"), "lora"),
        (str(base / "models/ESRGAN"), "upscale"),
        (str(base / "models/RealESRGAN"), "upscale"),
        (str(base / "models/SwinIR"), "upscale"),
        (str(base / "embeddings"), "embedding"),
        (str(base / "models/hypernetworks"), "hypernetwork"),
        (str(base / "models/ControlNet"), "controlnet"),
    ]
    assert roots[2].origin == (
        f"{tmp_path / 'extra_model_paths.yaml'} line 12 (section a111, key loras)"
    )


@pytest.mark.parametrize(
    "text",
    [
        "\ufeffmine:\n  base_path: {base}\n  loras: l\n",  # Windows Notepad's BOM
        "---\nmine:\n  base_path: {base}\n  loras: l\n",
        "mine:\n  base_path: {base}\n  loras: |-\n    l\n",
        "mine:\r\n  base_path: {base}\r\n  loras: 'l'\r\n",
        "mine:\n  base_path: {base}\n  loras: x\nmine:\n  base_path: {base}\n  loras: l\n",
        "mine: {{base_path: {base}, loras: l}}\n",
    ],
    ids=["bom", "document-start", "block-strip", "crlf-quoted", "section-twice", "flow"],
)
def test_valid_yaml_that_comfyui_reads(tmp_path: Path, text: str) -> None:
    file = tmp_path / "extra_model_paths.yaml"
    file.write_bytes(text.format(base=tmp_path / "disk").encode())
    assert parse_extra_model_paths(file) == [ScanRoot(str(tmp_path / "disk" / "l"), "lora")]


def test_a_block_keeps_what_yaml_keeps(tmp_path: Path) -> None:
    file = tmp_path / "extra_model_paths.yaml"
    file.write_text("mine:\n  base_path: /d\n  loras: |\n    a # not a comment\n    b\n\n")
    assert [r.path for r in parse_extra_model_paths(file)] == ["/d/a # not a comment", "/d/b"]


def test_variables_and_home_are_expanded_in_base_path_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELS_DISK", str(tmp_path / "disk"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    file = tmp_path / "extra_model_paths.yaml"
    file.write_text(
        "a:\n  base_path: $MODELS_DISK/sd\n  loras: ~/l\n"
        "b:\n  base_path: ${MODELS_DISK}\n  vae: $MODELS_DISK\n"
        "c:\n  base_path: ~/comfy\n  checkpoints: c\n"
    )
    assert [r.path for r in parse_extra_model_paths(file)] == [
        str(tmp_path / "disk" / "sd" / "~" / "l"),  # ComfyUI expands nothing in folders
        str(tmp_path / "disk" / "$MODELS_DISK"),
        str(tmp_path / "home" / "comfy" / "c"),
    ]


def test_relative_folders_without_base_path_are_the_files_and_kinds_are_comfyuis(
    tmp_path: Path,
) -> None:
    file = tmp_path / "conf" / "extra.yaml"
    file.parent.mkdir()
    file.write_text(
        "s:\n  is_default: true\n  unet: u\n  clip: c\n  latent_upscale_models: lu\n"
        "  upscale_models: up\n  custom_nodes: nodes\n  configs: cfg\n  ipadapter: /abs/ip\n"
        "empty:\n"
    )
    assert [(r.path, r.type) for r in parse_extra_model_paths(file)] == [
        (str(tmp_path / "conf" / "u"), "diffusion_model"),
        (str(tmp_path / "conf" / "c"), "text_encoder"),
        (str(tmp_path / "conf" / "lu"), "latent_upscale"),
        (str(tmp_path / "conf" / "up"), "upscale"),
        ("/abs/ip", "ipadapter"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("- models\n- more\n", 1, "is not a mapping of sections"),
        ("comfyui:\n    loras - models/loras\n", 2, "section 'comfyui' is not a mapping"),
        ("comfyui: models\n", 1, "section 'comfyui' is not a mapping"),
        ("c:\n  loras:\n    - a\n    - b\n", 3, "key 'loras' of 'c' is not a folder kind"),
        ("c:\n  base_path: 12\n  loras: a\n", 2, "base_path of 'c' is not a folder"),
        ("c:\n  vae:\n", 2, "key 'vae' of 'c'"),
        ("comfyui:\n\tloras: x\n", 2, "cannot be read as YAML: found character '\\\\t'"),
        ("c:\n  loras: [a\n", 3, "cannot be read as YAML"),
    ],
)
def test_yaml_comfyui_cannot_read_is_one_sentence_with_the_line(
    tmp_path: Path, text: str, line: int, what: str
) -> None:
    file = tmp_path / "extra_model_paths.yaml"
    file.write_text(text)
    with pytest.raises(ScanError, match=rf"^{file} line {line} {what}.*scan again\.$") as caught:
        parse_extra_model_paths(file)
    assert "\n" not in str(caught.value)


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "extra_model_paths.yaml"
    file.write_bytes(b"c:\n  loras: caf\xe9\n")
    with pytest.raises(ScanError, match=r"is not UTF-8 text \(byte 16\): save it as UTF-8"):
        parse_extra_model_paths(file)


def test_an_empty_file_lists_nothing(tmp_path: Path) -> None:
    file = tmp_path / "extra_model_paths.yaml"
    file.write_text("# all commented out\n")
    assert parse_extra_model_paths(file) == []


def test_desktops_config_and_comfyuis_output_folders(db: DatabaseManager, tmp_path: Path) -> None:
    """ComfyUI Desktop: download_model_base lists the folder of all model folders,
    before the other keys; it must not type every checkpoint as itself."""
    base = tmp_path / "Documents" / "ComfyUI"
    config = tmp_path / "extra_models_config.yaml"
    config.write_text(
        "comfyui_desktop:\n"
        "  download_model_base: models\n"
        "  is_default: true\n"
        f"  base_path: {base}\n"
        "  checkpoints: models/checkpoints/\n"
        "  loras: models/loras/\n"
        "  custom_nodes: custom_nodes/\n"
    )
    ckpt = write(base / "models" / "checkpoints" / "a.safetensors")
    lora = write(base / "models" / "loras" / "b.safetensors")
    ipadapter = write(base / "models" / "ipadapter" / "c.bin")
    write(base / "custom_nodes" / "node" / "weights.pt")
    comfy = tmp_path / "ComfyUI"
    saved = write(comfy / "output" / "checkpoints" / "merged.safetensors")
    write(comfy / "output" / "image_00001.png")
    write(comfy / "models" / "unet" / "flux.gguf")
    write(comfy / "models" / "clip" / "t5.pt2")
    roots = resolve_roots(comfyui=comfy, extra_configs=[config])
    scan(db, roots)
    assert staged_types(db) == {
        str(ckpt): "checkpoint",
        str(lora): "lora",
        str(ipadapter): "ipadapter",
        str(saved): "checkpoint",
        str(comfy / "models" / "unet" / "flux.gguf"): "diffusion_model",
        str(comfy / "models" / "clip" / "t5.pt2"): "text_encoder",
    }


def test_a_yaml_folder_inside_models_gives_its_kind(db: DatabaseManager, tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    xl = write(comfy / "models" / "SDXL" / "xl.safetensors")
    other = write(comfy / "models" / "mystuff" / "thing.safetensors")
    (comfy / "extra_model_paths.yaml").write_text(
        f"mine:\n  base_path: {comfy}\n  checkpoints: models/SDXL\n"
    )
    report = scan(db, comfyui_roots(comfy))
    assert staged_types(db) == {str(xl): "checkpoint", str(other): "mystuff"}
    assert (report.skipped, report.files_seen) == ([], 2)
    again = scan(db, list(reversed(comfyui_roots(comfy))))
    assert (again.already_staged, again.missing, again.skipped) == (2, 0, [])


def test_a1111_folders_given_as_they_are(db: DatabaseManager, tmp_path: Path) -> None:
    webui = tmp_path / "stable-diffusion-webui"
    expected = a1111_install(webui)
    loose = write(webui / "models" / "loose.safetensors")
    scan(db, [webui])  # models/ passes on: each folder under it names its kind
    assert staged_types(db) == {**expected, str(loose): "other"}


def test_a_root_named_after_a_kind_types_its_subfolders(
    db: DatabaseManager, tmp_path: Path
) -> None:
    lora = tmp_path / "webui" / "models" / "Lora"
    files = [write(lora / "a.safetensors"), write(lora / "character" / "b.safetensors")]
    scan(db, [lora])
    assert staged_types(db) == {str(f): "lora" for f in files}


def test_scan_type_forces_one(db: DatabaseManager, tmp_path: Path) -> None:
    files = [write(tmp_path / "m" / "checkpoints" / "a.ckpt"), write(tmp_path / "m" / "x.pt")]
    scan(db, resolve_roots([tmp_path / "m"], model_type="LoRAs"))
    assert staged_types(db) == {str(f): "lora" for f in files}


def test_the_command_reads_extra_model_paths_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(f"x:\n  loras: {tmp_path / 'l'}\n  vae: {tmp_path / 'nowhere'}\n")
    b.write_text(f"y:\n  checkpoints: {tmp_path / 'c'}\n")
    lora, ckpt = write(tmp_path / "l" / "a.safetensors"), write(tmp_path / "c" / "b.ckpt")
    catalog = tmp_path / "catalog.sqlite3"
    args = ["scan", "--db", str(catalog), "--extra-model-paths-config", str(a)]
    assert main([*args, "--extra-model-paths-config", str(b)]) == 0
    out = capsys.readouterr().out
    assert "2 staged (2 new" in out
    assert f"not scanned: {tmp_path / 'nowhere'}: does not exist (listed in {a} line 3" in out
    types = staged_types(DatabaseManager(catalog))
    assert types == {str(lora): "lora", str(ckpt): "checkpoint"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("c:\n  loras: [a\n", "line 3 cannot be read as YAML"),
        (None, "does not exist: give the path of a file like ComfyUI's"),
    ],
)
def test_a_bad_config_is_exit_2_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, message: str
) -> None:
    config = tmp_path / "extra.yaml"
    if text is not None:
        config.write_text(text)
    catalog = tmp_path / "catalog.sqlite3"
    code = main(["scan", "--db", str(catalog), "--extra-model-paths-config", str(config)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1
    assert not catalog.exists()


def test_the_default_output_folder_is_left_out_when_absent(tmp_path: Path) -> None:
    comfy = tmp_path / "ComfyUI"
    (comfy / "models").mkdir(parents=True)
    (comfy / "output" / "loras").mkdir(parents=True)
    roots = comfyui_roots(comfy)
    assert roots == [
        ScanRoot(str(comfy / "models")),
        ScanRoot(str(comfy / "output" / "loras"), "lora"),
    ]
    assert os.path.isabs(roots[0].path)
