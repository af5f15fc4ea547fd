"""Which folders a scan walks, and the type of the files in each.

The folders come from the command line (or ``MODELVAULT_MODEL_ROOTS``), or
from a ComfyUI folder the way ComfyUI itself finds them: its ``models/``, the
model folders under its ``output/`` (where its save nodes write), and the
``extra_model_paths.yaml`` beside its ``main.py`` plus any file given as
ComfyUI's ``--extra-model-paths-config`` (ComfyUI Desktop keeps its folders in
one). Those files are read as ComfyUI reads them (``utils/extra_config.py``):
PyYAML's ``safe_load``, ``~`` and variables expanded in ``base_path`` only, a
relative ``base_path`` or folder taken from the file's own folder, every other
key a folder kind whose text value lists one folder a line.

A folder given on the command line must exist. A folder a file or ComfyUI
lists is only a place where models may be: one that does not exist is skipped
with a warning saying where it was listed, and the scan goes on.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from modelvault.config import Settings
from modelvault.errors import ScanError
from modelvault.normalize import model_type_for_folder

__all__ = [
    "EXTRA_MODEL_PATHS",
    "ScanRoot",
    "comfyui_roots",
    "parse_extra_model_paths",
    "resolve_roots",
]

# The file ComfyUI reads beside its main.py (current ComfyUI reads no other name;
# more files come with --extra-model-paths-config).
EXTRA_MODEL_PATHS = "extra_model_paths.yaml"
# Keys of a section that are not folder kinds (ComfyUI pops them first).
SECTION_SETTINGS = ("base_path", "is_default")
# Folder kinds whose folders hold no model files: node code and model configs.
NOT_MODEL_KINDS = frozenset({"custom_nodes", "configs"})
# ComfyUI Desktop's key for the folder that holds all of its model folders
# (models/checkpoints, models/loras, ...): scanned like ComfyUI's own models/.
MODELS_FOLDER_KINDS = frozenset({"download_model_base"})
# ComfyUI's old names of two kinds (folder_paths.map_legacy).
LEGACY_KINDS = {"unet": "diffusion_models", "clip": "text_encoders"}
# Where ComfyUI's save nodes write models; ComfyUI loads them from there too.
OUTPUT_MODEL_KINDS = ("checkpoints", "clip", "vae", "diffusion_models", "loras")


@dataclass(frozen=True)
class ScanRoot:
    """A folder to scan.

    ``type`` is the type of every file under it; None takes each file's type
    from the folders below the root (ComfyUI's ``models/``: ``loras/x`` is a
    ``lora``), or from the root's own name when ComfyUI or the A1111 web UI
    knows it (``.../models/Lora``). ``origin`` says where a listed folder was
    listed; a root without one was asked for by name and must exist.
    """

    path: str
    type: str | None = None
    origin: str | None = field(default=None, compare=False)


def resolve_roots(
    paths: Sequence[str | os.PathLike[str]] = (),
    *,
    comfyui: str | os.PathLike[str] | None = None,
    extra_configs: Sequence[str | os.PathLike[str]] = (),
    settings: Settings | None = None,
    model_type: str | None = None,
) -> list[ScanRoot]:
    """The folders to scan: ``paths``; a ComfyUI folder's (``comfyui``) and those
    ``extra_configs`` list (files in the form of ``extra_model_paths.yaml``);
    else ``settings.model_roots`` (``MODELVAULT_MODEL_ROOTS``).

    ``model_type`` forces one type on every file found. ``ScanError`` if a
    folder given by name is not a folder, or a file cannot be read.
    """
    roots = [ScanRoot(os.path.abspath(os.path.expanduser(os.fspath(p)))) for p in paths]
    if comfyui is not None:
        roots += comfyui_roots(comfyui)
    for config in extra_configs:
        roots += parse_extra_model_paths(_config_file(config))
    if not roots and not extra_configs:
        settings = settings or Settings.from_env()
        roots = [ScanRoot(p) for p in settings.model_roots]
    if not roots and not extra_configs:
        raise ScanError(
            "no folders to scan: give them as arguments, with --comfyui DIR, "
            "or in MODELVAULT_MODEL_ROOTS."
        )
    if model_type is not None:
        forced = model_type_for_folder(model_type)
        roots = [replace(root, type=forced) for root in roots]
    return checked_roots(roots)


def checked_roots(roots: Iterable[ScanRoot | str | os.PathLike[str]]) -> list[ScanRoot]:
    """``roots`` as ``ScanRoot``s; ``ScanError`` if one asked for by name is not a folder."""
    chosen = [r if isinstance(r, ScanRoot) else ScanRoot(os.fspath(r)) for r in roots]
    for root in chosen:
        if root.origin is None:
            problem = folder_problem(root.path)
            if problem:
                raise ScanError(
                    f"the model folder {root.path} {problem}: check the path and scan again."
                )
    return chosen


def folder_problem(path: str) -> str | None:
    """Why ``path`` cannot be scanned (``does not exist``, ...), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be looked at ({exc.strerror or exc})"
    return None if stat.S_ISDIR(st.st_mode) else "is not a folder"


def comfyui_roots(folder: str | os.PathLike[str]) -> list[ScanRoot]:
    """The model folders of the ComfyUI installed in ``folder``: ``models/`` (type
    from each subfolder's name), those of its ``output/`` that exist, and those
    its ``extra_model_paths.yaml`` lists, if it has one."""
    base = Path(folder).expanduser().absolute()
    models = base / "models"
    if not models.is_dir():
        raise ScanError(
            f"{base} is not a ComfyUI folder: it has no models/ folder; give the folder "
            "that holds ComfyUI's main.py."
        )
    roots = [ScanRoot(str(models))]
    extra = base / EXTRA_MODEL_PATHS
    if extra.is_file():
        roots += parse_extra_model_paths(extra)
    for kind in OUTPUT_MODEL_KINDS:
        output = base / "output" / kind
        if output.is_dir():  # made by ComfyUI when a save node first writes there
            roots.append(ScanRoot(str(output), _type_of_kind(kind), "ComfyUI's output folder"))
    return roots


def _config_file(path: str | os.PathLike[str]) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        what = "does not exist"
        if os.path.lexists(file):
            what = "is a folder" if file.is_dir() else "is not a regular file"
        raise ScanError(
            f"the model paths file {file} {what}: give the path of a file like "
            f"ComfyUI's {EXTRA_MODEL_PATHS}."
        )
    return file


# -- extra_model_paths.yaml ----------------------------------------------------


def parse_extra_model_paths(path: str | os.PathLike[str]) -> list[ScanRoot]:
    """The model folders a ComfyUI ``extra_model_paths.yaml`` lists.

    ``ScanError`` (naming the file and the line) for a file ComfyUI could not
    read either: not YAML, or not a mapping of sections each holding
    ``key: text`` pairs. An empty file lists nothing.
    """
    file = Path(path)
    document = _load_yaml(file)
    if document is None:
        return []
    node, data = document
    if not isinstance(data, dict):
        raise _shape_error(file, node, "is not a mapping of sections ('name:' lines)")
    roots: list[ScanRoot] = []
    for name, section in data.items():
        section_node = _value_node(node, name)
        if section is None:
            continue  # an empty section: ComfyUI skips it too
        if not isinstance(section, dict):
            raise _shape_error(file, section_node, f"section {name!r} is not a mapping of keys")
        roots += _section_roots(file, str(name), section, section_node)
    return roots


def _load_yaml(file: Path) -> tuple[yaml.Node, Any] | None:
    """The file's YAML node tree (for line numbers) and its value, as ``safe_load``
    builds it (a key given twice keeps its last value)."""
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ScanError(f"cannot read {file}: {exc.strerror or exc}; fix or remove it.") from exc
    except UnicodeDecodeError as exc:
        raise ScanError(
            f"{file} is not UTF-8 text (byte {exc.start + 1}): save it as UTF-8 and scan again."
        ) from exc
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        return node, loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ScanError(
            f"{file}{line} cannot be read as YAML: {exc.problem or exc.context}; "
            "fix the file and scan again."
        ) from exc
    except yaml.YAMLError as exc:
        raise ScanError(
            f"{file} cannot be read as YAML: {exc}; fix the file and scan again."
        ) from exc
    finally:
        loader.dispose()


def _section_roots(
    file: Path, name: str, section: dict[Any, Any], node: yaml.Node | None
) -> list[ScanRoot]:
    yaml_dir = os.path.dirname(os.path.abspath(file))
    base = section.get("base_path")
    if "base_path" in section:
        if not isinstance(base, str):
            raise _shape_error(
                file, _value_node(node, "base_path"), f"base_path of {name!r} is not a folder"
            )
        base = os.path.expandvars(os.path.expanduser(base))
        if not os.path.isabs(base):
            base = os.path.abspath(os.path.join(yaml_dir, base))
    roots: list[ScanRoot] = []
    for key, value in section.items():
        if key in SECTION_SETTINGS:
            continue
        value_node = _value_node(node, key)
        if not isinstance(key, str) or not isinstance(value, str):
            raise _shape_error(
                file,
                value_node,
                f"key {key!r} of {name!r} is not a folder kind with text (one folder a line)",
            )
        if key in NOT_MODEL_KINDS:
            continue
        kind = _type_of_kind(key)
        where = f"{file}{_line(value_node)} (section {name}, key {key})"
        for folder in value.split("\n"):
            if folder:
                roots.append(ScanRoot(_folder_path(folder, base, yaml_dir), kind, where))
    return roots


def _folder_path(folder: str, base: str | None, yaml_dir: str) -> str:
    """A listed folder's path, as ComfyUI builds it (nothing expanded, nothing stripped)."""
    if base:
        full = os.path.join(base, folder)
    elif not os.path.isabs(folder):
        full = os.path.abspath(os.path.join(yaml_dir, folder))
    else:
        full = folder
    return os.path.normpath(full)


def _type_of_kind(kind: str) -> str | None:
    """The type of the files in a folder of this kind; None where the folder holds
    a folder per kind (ComfyUI Desktop's ``download_model_base``)."""
    if kind in MODELS_FOLDER_KINDS:
        return None
    return model_type_for_folder(LEGACY_KINDS.get(kind, kind))


def _value_node(mapping: yaml.Node | None, key: object) -> yaml.Node | None:
    """The node of ``key``'s value in a mapping node (the last one, as ``safe_load``
    keeps), for its line number."""
    found = None
    if isinstance(mapping, yaml.MappingNode):
        for key_node, value_node in mapping.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(key):
                found = value_node
    return found


def _line(node: yaml.Node | None) -> str:
    return "" if node is None else f" line {node.start_mark.line + 1}"


def _shape_error(file: Path, node: yaml.Node | None, what: str) -> ScanError:
    return ScanError(
        f"{file}{_line(node)} {what}: ComfyUI reads sections of 'kind: folder' lines "
        f"(see its {EXTRA_MODEL_PATHS}.example); fix the file and scan again."
    )
