"""The identification commands: ``identify``, ``base``, ``bases``; and ``show``'s lines
on what a model's header says (base, kind, trigger words, resolution, title,
Civitai's hashes)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from modelvault.catalog import curation
from modelvault.catalog.records import ModelRecord
from modelvault.cli.common import EXIT_OK, progress_view, ui
from modelvault.cli.curate import change, open_for_change
from modelvault.cli.escaping import printable
from modelvault.cli.options import add_model
from modelvault.cli.output import Line, plural, table
from modelvault.cli.usage import UsageError
from modelvault.database import DatabaseManager
from modelvault.db.models import Model
from modelvault.errors import NotFoundError
from modelvault.identify import BASES, autov2
from modelvault.identify.catalog import AUTOV3, BASE_SET_BY, IDENTIFY, USER, WRONG_FOLDER
from modelvault.identify.refresh import identify_models, models_to_identify

Command = Callable[..., argparse.ArgumentParser]
IDENTIFY_MODEL_HELP = (
    "its SHA-256 or the first digits of it (an AutoV2 too), its path, or its file name"
)
SHOWN_TRIGGER_WORDS = 10


def add_identify_commands(command: Command) -> None:
    """identify, base, bases."""
    ident = command(
        "identify",
        cmd_identify,
        "read the headers of catalogued models' files (one small read each) and note "
        "their base model, kind, trigger words, resolution and title",
    )
    add_model(ident, nargs="*", help_text=IDENTIFY_MODEL_HELP)
    which = ident.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="every model in the catalog")
    which.add_argument(
        "--missing-base", action="store_true", help="every model that has no base model yet"
    )
    base = command(
        "base",
        cmd_base,
        "set a model's base model (identification never changes it after); "
        '"" clears it, so identification may fill it again',
    )
    add_model(base, help_text=IDENTIFY_MODEL_HELP)
    base.add_argument("name", metavar="NAME", help="e.g. SDXL 1.0, Pony, Flux.1 D (see 'bases')")
    bases = command("bases", cmd_bases, "the base models in use, with how many models have each")
    bases.add_argument(
        "--known", action="store_true", help="the names identification gives, with Civitai's"
    )


# -- identify -----------------------------------------------------------------------------


def cmd_identify(args: argparse.Namespace) -> int:
    if args.models and (args.all or args.missing_base):
        raise UsageError("give models, or --all, or --missing-base: not both")
    if not (args.models or args.all or args.missing_base):
        raise UsageError("say which models: give some, or --all, or --missing-base")
    db = open_for_change(args)
    if args.models:
        wanted = list(dict.fromkeys(db.find_model(key).sha256 for key in args.models))
    else:
        wanted = models_to_identify(db, missing_base=args.missing_base)
    args.work_started = True
    view = progress_view(args)
    done = 0

    def on_file(path: str, outcome: str) -> None:
        nonlocal done
        done += 1
        view.identifying(done, len(wanted), path)

    try:
        report = identify_models(db, wanted, on_file=on_file)
    finally:
        view.close()
    lines: list[Line] = [
        f"identified {plural(report.identified, 'model')}: "
        f"{report.with_base} with a base model, {report.problems} with a problem in its header"
    ]
    lines += [f"  could not read {path}: {why}" for path, why in report.unreadable.items()]
    ui(args).emit(
        {
            "identified": report.identified,
            "with_base": report.with_base,
            "problems": report.problems,
            "unreadable": report.unreadable,
        },
        lines,
    )
    return EXIT_OK


# -- base, bases --------------------------------------------------------------------------


def cmd_base(args: argparse.Namespace) -> int:
    db = open_for_change(args)
    model = db.find_model(args.model)
    name = _vocabulary_name(args.name)
    record = change(args, lambda: curation.update_model(db, model.sha256, base=name))
    line = f"{record.name}: base {model.base or '-'} -> {record.base or '-'}"
    ui(args).emit({"model": record.to_dict()}, [line])
    return EXIT_OK


def _vocabulary_name(given: str) -> str:
    """A name of the vocabulary as it is spelt there (any case given); others as given."""
    wanted = given.strip().lower()
    return next((b.name for b in BASES if b.name.lower() == wanted), given.strip())


def bases_in_use(db: DatabaseManager) -> dict[str, int]:
    """Each base model the catalog's models have, with how many, most first."""
    with db.session_scope() as session:
        rows = session.execute(
            select(Model.base, func.count())
            .where(Model.base.is_not(None))
            .group_by(Model.base)
            .order_by(func.count().desc(), Model.base)
        )
        return {str(base): int(n) for base, n in rows}


def known_base(db: DatabaseManager, given: str) -> str:
    """``models --base``: the base as given if a model has it or identification gives it
    (any case); else ``NotFoundError`` naming the vocabulary and the bases in use."""
    wanted = given.strip().lower()
    in_use = bases_in_use(db)
    if any(base.lower() == wanted for base in [*in_use, *(b.name for b in BASES)]):
        return given.strip()
    used = ", ".join(f"{b} ({n})" for b, n in in_use.items()) or "none yet"
    vocabulary = ", ".join(b.name for b in BASES)
    raise NotFoundError(
        f"no model has the base {given.strip()!r}: the bases in use are {used} "
        f"(see `modelvault bases`); identification gives {vocabulary}."
    )


def cmd_bases(args: argparse.Namespace) -> int:
    out = ui(args)
    if args.known:
        rows = [[b.name, b.civitai or "-", b.told_by] for b in BASES]
        data = [{"name": b.name, "civitai": b.civitai, "told_by": b.told_by} for b in BASES]
        out.emit({"bases": data}, table(["BASE", "CIVITAI", "TOLD BY"], rows, right=set()))
        return EXIT_OK
    in_use = bases_in_use(open_catalog_read_only(args))
    lines = table(["BASE", "MODELS"], [[b, str(n)] for b, n in in_use.items()], right={1})
    out.emit(
        {"bases": [{"base": b, "models": n} for b, n in in_use.items()]},
        lines if in_use else ["no model has a base model yet (see `modelvault identify`)"],
    )
    return EXIT_OK


def open_catalog_read_only(args: argparse.Namespace) -> DatabaseManager:
    from modelvault.cli.common import open_catalog

    return open_catalog(args, read_only=True)


def wrong_folder_lines(db: DatabaseManager, since: datetime) -> list[str]:
    """``scan --hash -v``: the models catalogued or changed since ``since`` whose header
    says they are of another kind than their folder's."""
    wrong = Model.meta[IDENTIFY][WRONG_FOLDER].as_string()
    with db.session_scope() as session:
        rows = session.execute(
            select(Model.path, wrong)
            .where(Model.updated_at >= since, wrong.is_not(None))
            .order_by(Model.path)
        )
        return [f"wrong folder: {printable(path)}: {why}" for path, why in rows]


# -- show ---------------------------------------------------------------------------------


def identity_lines(model: ModelRecord, meta: dict[str, Any]) -> list[tuple[str, Line]]:
    """``show``'s lines on what the header says; takes its keys out of ``meta``."""
    ident = meta.pop(IDENTIFY, None)
    autov3 = meta.pop(AUTOV3, None)
    lines: list[tuple[str, Line]] = [("AutoV2", autov2(model.sha256))]
    if isinstance(autov3, str):
        lines.append(("AutoV3", autov3.upper()))
    if not isinstance(ident, Mapping):
        return [("identified", "not yet (see `modelvault identify`)"), *lines]
    return [*_found_lines(model, ident), *lines]


def _found_lines(model: ModelRecord, ident: Mapping[str, Any]) -> list[tuple[str, Line]]:
    kind = str(ident.get("kind", "unknown"))
    what = kind.replace("_", " ")
    if ident.get("format"):
        what += f" ({ident['format']})"
    lines: list[tuple[str, Line]] = [("kind", what)]
    lines.append(("base found", _base_found(model, ident)))
    if ident.get("architecture"):
        lines.append(("architecture", str(ident["architecture"])))
    words = ident.get("trigger_words")
    if isinstance(words, list) and words:
        shown = ", ".join(str(w) for w in words[:SHOWN_TRIGGER_WORDS])
        lines.append(("trigger words", shown))
    for key in ("resolution", "title"):
        if ident.get(key):
            lines.append((key, str(ident[key])))
    for key, label in ((WRONG_FOLDER, "wrong folder"), ("problem", "problem")):
        if ident.get(key):
            lines.append((label, str(ident[key])))
    return lines


def _base_found(model: ModelRecord, ident: Mapping[str, Any]) -> str:
    found = ident.get("base")
    said = f"{found} (from its {ident.get('source')})" if found else "none"
    if ident.get(BASE_SET_BY) == USER:
        return f"{said}; the base was set by hand"
    if model.base and model.base != found:
        return f"{said}; the base was given before it was identified"
    return said
