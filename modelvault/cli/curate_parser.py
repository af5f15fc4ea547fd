"""The grammar of the listing and curating commands, and every command's examples.

Examples are written so they work as they are in POSIX shells, cmd.exe and
PowerShell: double quotes only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from modelvault.cli import curate as cu
from modelvault.cli.options import add_limit, add_model
from modelvault.cli.usage import Parser, whole_number

Handler = Callable[[argparse.Namespace], int]
DEFAULT_LIMIT = 200
SORTS = ("name", "size", "added", "type", "path")
FORMATS = ("table", "json", "csv", "paths")
LEGACY = "~/ComfyUI/custom_nodes/ComfyUI-Model-Manager/data/hikaze_mm.sqlite3"

EXAMPLES: dict[str, Sequence[str]] = {
    "init": ["modelvault init", "modelvault init --db ~/models/catalog.sqlite3"],
    "import": [f"modelvault import {LEGACY}"],
    "migrate": [f"modelvault migrate {LEGACY}", f"modelvault migrate {LEGACY} --workers 2"],
    "worker": ["modelvault worker --workers 4", "modelvault worker --db postgresql://me@db/models"],
    "status": ["modelvault status", "modelvault status --json"],
    "models": [
        "modelvault models --tag style --type lora",
        'modelvault models --base "flux.1 d"',
        "modelvault models --all --sort size --format csv > models.csv",
        "modelvault models --untagged --under ~/ComfyUI/models/loras",
        "modelvault models --missing --format paths",
    ],
    "show": [
        "modelvault show 9f86d081",
        "modelvault show 9F86D081E8  (an AutoV2)",
        "modelvault show ink_style.safetensors",
    ],
    "identify": ["modelvault identify --missing-base", "modelvault identify ink_style.safetensors"],
    "base": ['modelvault base ink_style.safetensors "SDXL 1.0"', 'modelvault base 9f86d081 ""'],
    "bases": ["modelvault bases", "modelvault bases --known"],
    "pending": ["modelvault pending", "modelvault pending --status failed conflict --json"],
    "pending forget": [
        "modelvault pending forget 12 31 --dry-run",
        "modelvault pending forget --status missing --yes",
    ],
    "retry": ["modelvault retry", "modelvault retry --status conflict"],
    "tags": [
        "modelvault tags",
        "modelvault tags rename wip draft",
        'modelvault tags color style "#ff8800"',
        "modelvault tags delete old --dry-run",
    ],
    "tags rename": [
        "modelvault tags rename sdxl sdxl-1.0",
        "modelvault tags rename favourite fav --merge --dry-run",
    ],
    "tags color": ["modelvault tags color style teal", "modelvault tags color style none"],
    "tags delete": ["modelvault tags delete wip old --dry-run", "modelvault tags delete wip --yes"],
    "scan": [
        "modelvault scan --comfyui ~/ComfyUI --hash",
        "modelvault scan ~/stable-diffusion-webui --dry-run -v",
    ],
    "info": ["modelvault info", "modelvault info --json"],
    "demo": ["modelvault demo", "modelvault demo try-it --file-mb 4"],
    "tag": [
        "modelvault tag ink_style.safetensors style favourite",
        'modelvault tag 9f86d081 sdxl --color "#3366cc"',
    ],
    "untag": ["modelvault untag ink_style.safetensors favourite"],
    "note": [
        'modelvault note ink_style.safetensors "best at strength 0.7"',
        "modelvault note ink_style.safetensors --edit",
        "modelvault note ink_style.safetensors",
    ],
    "edit": [
        'modelvault edit 9f86d081 --name "Ink style" --base SDXL',
        "modelvault edit old_model.ckpt --type checkpoint",
    ],
    "rm": [
        "modelvault rm old_portrait.safetensors --dry-run",
        "modelvault rm 9f86d081 1a2b3c4d --yes",
    ],
    "deleted": ["modelvault deleted --limit 10", "modelvault deleted --json > deleted.json"],
    "dupes": ["modelvault dupes", "modelvault dupes --json"],
    "types": ["modelvault types"],
    "serve": [
        "modelvault serve --open",
        "modelvault serve --port 0 --db ./modelvault-demo/catalog.sqlite3",
        "modelvault serve --host 0.0.0.0 --port 8765",
    ],
    "verify": [
        "modelvault verify --all",
        "modelvault verify ink_style.safetensors 9f86d081",
        "modelvault verify --under ~/ComfyUI/models/loras --update",
    ],
    "export": [
        "modelvault export catalog.json",
        "modelvault export catalog.jsonl --with-images",
    ],
    "import-catalog": [
        "modelvault import-catalog catalog.jsonl",
        "modelvault import-catalog catalog.jsonl --db postgresql://me@db/models --conflict keep",
    ],
    "backup": ["modelvault backup", "modelvault backup /mnt/usb/modelvault-backups"],
}


def examples(lines: Sequence[str]) -> str | None:
    """A help page's epilog: the examples, one a line."""
    if not lines:
        return None
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def add_listing_options(models: argparse.ArgumentParser) -> None:
    """``models``: what to list, in which order, how much of it, in which form."""
    models.add_argument(
        "--tag", action="append", metavar="TAG", help="only models with this tag (repeatable)"
    )
    models.add_argument("--untagged", action="store_true", help="only models without any tag")
    models.add_argument(
        "--type", metavar="TYPE", help="only this type, e.g. checkpoint or lora (see 'types')"
    )
    models.add_argument(
        "--base", metavar="BASE", help="only this base model, e.g. SDXL 1.0 (see 'bases')"
    )
    models.add_argument("--search", metavar="TEXT", help="only names or paths containing TEXT")
    models.add_argument(
        "--under",
        action="append",
        metavar="DIR",
        help="only models whose file is in this folder or below it (repeatable)",
    )
    models.add_argument("--missing", action="store_true", help="only models whose file is gone")
    models.add_argument(
        "--unreachable",
        action="store_true",
        help="only models whose file cannot be looked at now (a folder that cannot be read, "
        "a share or drive that is not there); not called missing",
    )
    models.add_argument(
        "--sort",
        choices=SORTS,
        default="name",
        help="by name (any case; the default), size (biggest first), added (newest first), "
        "type or path",
    )
    add_limit(models, f"at most N models (default: {DEFAULT_LIMIT})")
    models.add_argument("--all", action="store_true", help="every model that matches, no limit")
    models.add_argument(
        "--offset", type=whole_number, default=0, metavar="N", help="skip the first N models"
    )
    models.add_argument(
        "--format",
        choices=FORMATS,
        help="table (default), json (as --json), csv (the data as it is), or paths (one a "
        "line, unprintable characters escaped)",
    )


def add_tag_actions(tags: argparse.ArgumentParser, on_command: Parser, destructive: Parser) -> None:
    """``tags rename|color|delete``; ``tags`` alone lists them."""
    actions = tags.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)

    def action(name: str, handler: Handler, text: str, *parents: Parser) -> Any:
        p = actions.add_parser(
            name,
            help=text,
            description=text,
            parents=[on_command, *parents],
            epilog=examples(EXAMPLES[f"tags {name}"]),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(handler=handler)
        return p

    rename = action(
        "rename",
        cu.cmd_tags_rename,
        "rename a tag; into one that exists only with --merge (which deletes the old one)",
        destructive,
    )
    rename.add_argument("old", metavar="OLD")
    rename.add_argument("new", metavar="NEW")
    rename.add_argument(
        "--merge", action="store_true", help="NEW exists: its models get OLD's, then OLD goes"
    )
    color = action("color", cu.cmd_tags_color, "give a tag a colour, or none")
    color.add_argument("tag", metavar="TAG")
    color.add_argument(
        "color", metavar="COLOUR", help="#rrggbb, #rgb, a CSS name, rgb() or hsl(); none for none"
    )
    delete = action(
        "delete", cu.cmd_tags_delete, "delete tags (the models stay, without them)", destructive
    )
    delete.add_argument("tags", metavar="TAG", nargs="+")


Command = Callable[..., argparse.ArgumentParser]


def add_curating_commands(command: Command, destructive: Parser) -> None:
    """tag, untag, note, edit, rm, deleted, dupes, types."""
    tag = command("tag", cu.cmd_tag, "tag a model (new tags are created)")
    add_model(tag)
    tag.add_argument("tags", metavar="TAG", nargs="+")
    tag.add_argument(
        "--color", metavar="COLOUR", help="the colour of tags that are new or have none"
    )
    untag = command("untag", cu.cmd_untag, "take tags off a model (the tags stay for the others)")
    add_model(untag)
    untag.add_argument("tags", metavar="TAG", nargs="+")
    note = command(
        "note",
        cu.cmd_note,
        "show, write or remove a model's note (an empty note removes it)",
    )
    add_model(note)
    note.add_argument("text", metavar="TEXT", nargs="?", help="the new note")
    note.add_argument("--edit", action="store_true", help="edit the note in $VISUAL or $EDITOR")
    note.add_argument("--clear", action="store_true", help="remove the note")
    edit = command("edit", cu.cmd_edit, "change a model's name, type or base model")
    add_model(edit)
    edit.add_argument("--name", metavar="NAME")
    edit.add_argument("--type", metavar="TYPE", help="e.g. lora or checkpoint")
    edit.add_argument("--base", metavar="BASE", help='e.g. SDXL; "" for none')
    rm = command(
        "rm",
        cu.cmd_rm,
        "remove models from the catalog: the entries only, never a file (each is kept in "
        "'modelvault deleted')",
        destructive,
    )
    add_model(rm, nargs="+")
    deleted = command(
        "deleted", cu.cmd_deleted, "what was removed from the catalog, newest first, whole"
    )
    add_limit(deleted, "the last N only")
    command(
        "dupes",
        cu.cmd_dupes,
        "every content found at more than one path: each path, and which is the model",
    )
    command("types", cu.cmd_types, "the model types in use, with how many models have each")
