"""Path identity keys (modelvault.pathkey): Windows paths as Windows compares them,
POSIX paths as they are. Pure functions: Windows inputs, run on any system."""

from __future__ import annotations

import os

import pytest

from modelvault.pathkey import (
    POSIX,
    WINDOWS,
    absolute,
    flavour_of,
    key_prefix,
    path_key,
    path_rules,
    renamed_below,
    reserved_device,
    windows_key,
)

ONE_FILE = [
    r"C:\ComfyUI\models\checkpoints\b.ckpt",
    r"c:\ComfyUI\models\checkpoints\b.ckpt",  # the drive letter's case
    "C:/ComfyUI/models/checkpoints/b.ckpt",  # ComfyUI's extra paths keep the user's "/"
    r"C:\ComfyUI/models\checkpoints/b.ckpt",  # mixed separators
    r"C:\COMFYUI\MODELS\CHECKPOINTS\B.CKPT",  # NTFS ignores case
    r"C:\\ComfyUI\\models\.\checkpoints\\b.ckpt",  # repeated separators, "."
    r"C:\ComfyUI\models\loras\..\checkpoints\b.ckpt",  # ".."
    r"\\?\C:\ComfyUI\models\checkpoints\b.ckpt",  # a long-path prefix
    r"\\.\C:\ComfyUI\models\checkpoints\b.ckpt",  # a device-namespace prefix
    r"C:\ComfyUI\models\checkpoints\b.ckpt.",  # Win32 drops trailing dots...
    "C:\\ComfyUI\\models\\checkpoints\\b.ckpt . ",  # ...and spaces of the last name
    r"C:\ComfyUI.\models\checkpoints\b.ckpt",  # and one trailing dot of any name
]


@pytest.mark.parametrize("spelling", ONE_FILE)
def test_spellings_of_one_windows_file_have_one_key(spelling: str) -> None:
    assert path_key(spelling) == r"C:\COMFYUI\MODELS\CHECKPOINTS\B.CKPT"


def test_other_files_have_other_keys() -> None:
    keys = {
        path_key(p)
        for p in (
            r"C:\ComfyUI\models\checkpoints\b.ckpt",
            r"D:\ComfyUI\models\checkpoints\b.ckpt",  # another drive
            r"C:\ComfyUI\models\checkpoints\b.ckpt2",
            r"C:\ComfyUI\models\checkpoint\b.ckpt",
            r"C:\ComfyUI\models\checkpoints\b..ckpt",
            r"\\?\C:\ComfyUI\models\checkpoints\b.ckpt.",  # taken literally: a name "b.ckpt."
            r"C:\ComfyUI\models\checkpoints ok\b.ckpt",
        )
    }
    assert len(keys) == 7


def test_unc_shares_and_their_long_path_form() -> None:
    share = path_key(r"\\nas\share\models\a.safetensors")
    assert share == r"\\NAS\SHARE\MODELS\A.SAFETENSORS"
    assert path_key(r"\\NAS\Share\models\A.safetensors") == share
    assert path_key(r"\\?\UNC\nas\share\models\a.safetensors") == share
    assert path_key(r"\\?\unc\nas\share/models/a.safetensors") == share
    assert path_key(r"\\nas\share") == path_key("\\\\nas\\share\\") == "\\\\NAS\\SHARE\\"
    assert path_key(r"\\nas\other\models\a.safetensors") != share


def test_a_mapped_drive_is_the_share_it_leads_to() -> None:
    # ComfyUI builds its folders with os.path.realpath, which turns Z:\ into the share.
    mapped = {"Z:": r"\\nas\share", "y": r"\\nas\share\sub\\"}
    share = windows_key(r"\\nas\share\models\a.ckpt")
    assert windows_key(r"z:\models\a.ckpt", mapped.get) == share  # looked up as "Z:"
    with path_rules(drives=mapped):
        assert path_key(r"z:\Models\a.ckpt") == share
        assert path_key(r"Y:\models\a.ckpt") == windows_key(r"\\nas\share\sub\models\a.ckpt")
        assert path_key(r"C:\models\a.ckpt") == r"C:\MODELS\A.CKPT"  # not mapped
    assert path_key(r"Z:\models\a.ckpt") == r"Z:\MODELS\A.CKPT"  # no mapping known here


def test_case_folds_as_ntfs_does() -> None:
    assert path_key("C:\\Модели\\Ёж.ckpt") == path_key("c:\\модели\\ёж.CKPT")
    assert path_key("C:\\Ärger\\é") == path_key("C:\\ärger\\É")
    # NTFS maps each UTF-16 unit to its simple upper case: "ß" stays (no "SS"), the
    # Kelvin sign is its own letter, characters beyond the BMP are not folded.
    assert path_key("C:\\straße") != path_key("C:\\STRASSE")
    assert path_key("C:\\straße") == "C:\\STRAßE"
    assert path_key("C:\\\u212a") != path_key("C:\\k")
    assert path_key("C:\\\U00010428") != path_key("C:\\\U00010400")  # Deseret: not folded


def test_posix_paths_are_their_own_keys() -> None:
    for path in ("/home/u/Models/A.safetensors", "/a//b/./c", "//nas/share", "models/a.ckpt"):
        assert path_key(path) == path
    assert path_key("/home/u/a") != path_key("/home/u/A")  # case-sensitive
    assert flavour_of("/home/u/a") is POSIX
    assert flavour_of(r"C:\a") is WINDOWS
    assert flavour_of(r"\\nas\share") is WINDOWS


def test_rules_can_be_forced_for_tests_and_are_restored() -> None:
    with path_rules(WINDOWS):
        assert path_key("/tmp/Models/a.ckpt") == r"\TMP\MODELS\A.CKPT"
        assert path_key("/tmp/models/A.CKPT") == path_key("/tmp/Models/a.ckpt")
        with path_rules(POSIX):
            assert path_key(r"C:\Models") == r"C:\Models"
        assert flavour_of("/x") is WINDOWS
    assert path_key("/tmp/Models/a.ckpt") == "/tmp/Models/a.ckpt"


def test_key_prefix_is_what_every_key_below_starts_with() -> None:
    for folder, file in (
        (r"C:\ComfyUI\models", r"c:/comfyui/MODELS/loras/x.safetensors"),
        ("C:\\", r"C:\x.ckpt"),
        (r"\\nas\share", r"\\NAS\share\x.ckpt"),
        (r"C:\odd name. ", r"C:\odd name. \x.ckpt"),  # a folder's trailing dot and space stay
        ("/home/u/models/", "/home/u/models/loras/x.ckpt"),
        ("/", "/x.ckpt"),
    ):
        assert path_key(file).startswith(key_prefix(folder)), (folder, file)
    assert not path_key(r"C:\ComfyUI\models2\x").startswith(key_prefix(r"C:\ComfyUI\models"))
    assert key_prefix(r"C:\ComfyUI\models") == "C:\\COMFYUI\\MODELS\\"


def test_odd_windows_paths_key_without_error() -> None:
    for path in (
        "C:",
        "C:x",  # drive-relative
        r"\\server",
        r"\\?\Volume{0b1c}\models\a.ckpt",
        r"\\?\GLOBALROOT\Device\x",
        r"C:\..\..\a",
        r"C:\a\...",
        "C:\\\udcff.ckpt",  # a name that is not UTF-8, as the file system gave it
    ):
        assert isinstance(path_key(path), str)
    assert path_key(r"C:\..\..\a") == "C:\\A"  # nothing goes above a root


def test_a_case_rename_is_told_from_another_spelling() -> None:
    old = r"c:\comfyui\models\loras\style.safetensors"
    assert not renamed_below(old, "C:/comfyui/models/loras/style.safetensors")
    assert not renamed_below(old, r"\\?\C:\comfyui\models\loras\style.safetensors")
    assert renamed_below(old, r"C:\comfyui\models\loras\Style.safetensors")
    assert renamed_below(old, r"C:\comfyui\models\Loras\style.safetensors")
    # Below a scan's root: the root as it was typed is not a rename.
    assert not renamed_below(old, r"C:\ComfyUI\Models\loras\style.safetensors", depth=2)
    assert renamed_below(old, r"C:\ComfyUI\Models\Loras\style.safetensors", depth=2)
    with path_rules(drives={"Z:": r"\\nas\share\sub"}):
        assert not renamed_below(r"Z:\models\a", r"\\nas\share\sub\models\a")


@pytest.mark.parametrize(
    ("path", "device"),
    [
        (r"C:\models\CON", "CON"),
        (r"C:\models\nul.safetensors", "NUL"),
        (r"C:\models\Com1.ckpt", "COM1"),
        (r"C:\models\lpt9 .pt", "LPT9"),
        ("C:\\models\\com\u00b9.bin", "COM\u00b9"),
        ("C:/models/aux", "AUX"),
        (r"\\nas\share\prn.x", "PRN"),
        (r"C:\models\conin$", "CONIN$"),
    ],
)
def test_device_names_are_told(path: str, device: str) -> None:
    assert reserved_device(path) == device
    assert path_key(path)  # keyed like any other path


def test_names_that_only_look_like_devices_are_files() -> None:
    for path in (r"C:\models\console.ckpt", r"C:\models\com10.ckpt", r"C:\nul\a.ckpt", "/m/nul"):
        assert reserved_device(path) is None, path
    with path_rules(WINDOWS):
        assert reserved_device("/m/nul.safetensors") == "NUL"


def test_absolute_keeps_windows_paths_read_elsewhere() -> None:
    assert absolute(r"C:\models") == r"C:\models"
    assert absolute("x/../y") == os.path.abspath("y")
