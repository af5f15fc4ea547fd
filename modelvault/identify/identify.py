"""``identify(header)``: what a model is, from its header alone.

The metadata decides the base where it names one (kohya's
``ss_base_model_version``, ``ss_v2``, its network module, ModelSpec's
``modelspec.architecture``, GGUF's ``general.architecture``); the tensors may
only refine it within the same family (``Flux.1`` to ``Flux.1 D``). Where the
metadata is silent, the tensor names and shapes decide. The base model's file
name kohya records (``ss_sd_model_name``) refines SDXL to Pony, Illustrious or
NoobAI, SD 2.x to SD 2.1, Flux.1 to dev or schnell: only metadata says those.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from modelvault.identify import metadata as meta
from modelvault.identify.identity import METADATA, TENSORS, Identity
from modelvault.identify.lora import adapter
from modelvault.identify.models import Finding, full_model
from modelvault.identify.parsing import (
    GGUF,
    PICKLE,
    PYTORCH_ZIP,
    SAFETENSORS,
    ZIP,
    Header,
    TensorInfo,
)

# A coarse base the tensors may make finer without overruling the metadata.
_REFINES: Mapping[str, frozenset[str]] = {
    "Flux.1": frozenset({"Flux.1 D", "Flux.1 S"}),
    "SD 3": frozenset({"SD 3.5"}),
    "SD 2.x": frozenset({"SD 2.1"}),
    "Hunyuan Video": frozenset({"Hunyuan Video 1.5"}),
}
# What a file's name says it is, to name a file whose content is something else.
_SUFFIX_FORMATS: Mapping[str, str] = {
    ".safetensors": SAFETENSORS,
    ".sft": SAFETENSORS,
    ".gguf": GGUF,
}
_FORMAT_NAMES: Mapping[str, str] = {
    PICKLE: "a pickled PyTorch checkpoint",
    PYTORCH_ZIP: "a PyTorch zip checkpoint (pickled inside)",
    ZIP: "a zip archive",
}
# Embeddings: a few vectors per token, as wide as the text encoder they are for.
_EMBEDDING_WIDTHS: Mapping[int, tuple[str, str]] = {
    768: ("SD 1.5", "SD 1.x embedding (768 wide)"),
    1024: ("SD 2.x", "SD 2.x embedding (1024 wide)"),
}


def identify(header: Header, *, file_name: str | None = None) -> Identity:
    """What the model whose header is ``header`` is; ``file_name`` (optional) lets a
    ``.safetensors`` that is really a pickle or a zip be named as such."""
    problem = header.problem or _name_problem(header.format, file_name)
    if not header.tensors and not header.metadata:
        # Nothing to read a kind or base from (no model format, a pickle, an empty
        # header): the format and the problem are all there is to say.
        return Identity(format=header.format, problem=problem)
    found = _from_tensors(header.tensors)
    said = meta.base(header.metadata)
    base, source, tensors_base = _decide(said, found.base if found else None)
    if base is not None:
        refined = meta.refine_by_name(header.metadata, base)
        if refined != base:
            base, source = refined, METADATA
    return Identity(
        kind=_kind(found, meta.kind(header.metadata)),
        format=header.format,
        base=base,
        source=source,
        architecture=found.architecture if found else _metadata_architecture(header.metadata),
        trigger_words=meta.trigger_words(header.metadata),
        resolution=meta.resolution(header.metadata),
        title=meta.title(header.metadata),
        training=meta.training(header.metadata),
        tensors_base=tensors_base,
        problem=problem,
    )


def _from_tensors(tensors: Mapping[str, TensorInfo]) -> Finding | None:
    if not tensors:
        return None
    return adapter(tensors) or _embedding(tensors) or full_model(tensors)


def _embedding(tensors: Mapping[str, TensorInfo]) -> Finding | None:
    """Textual inversion: one to three tensors of shape [vectors, width], named as
    A1111 and kohya name them (``emb_params``, ``clip_l``/``clip_g``) or after a token."""
    if len(tensors) > 3 or any(len(t.shape) != 2 or "." in name for name, t in tensors.items()):
        return None
    widths = {name: t.shape[-1] for name, t in tensors.items()}
    if widths.get("clip_l") == 768 and widths.get("clip_g") == 1280:
        return Finding("embedding", "SDXL 1.0", "SDXL embedding (clip_l 768, clip_g 1280)")
    width = widths.get("emb_params", next(iter(widths.values())) if len(widths) == 1 else 0)
    if width not in _EMBEDDING_WIDTHS:
        return None
    base, architecture = _EMBEDDING_WIDTHS[width]
    return Finding("embedding", base, architecture)


def _decide(said: str | None, told: str | None) -> tuple[str | None, str | None, str | None]:
    """(base, source, what the tensors say where the metadata overruled them)."""
    if said is None:
        return told, (TENSORS if told else None), None
    if told is not None and told in _REFINES.get(said, frozenset()):
        return told, METADATA, None
    disagrees = told is not None and told != said and said not in _REFINES.get(told, frozenset())
    return said, METADATA, told if disagrees else None


def _kind(found: Finding | None, said: str | None) -> str:
    """The tensors tell the kind; the metadata only where they cannot, or to say LyCORIS."""
    told = found.kind if found else None
    if told == "lora" and said == "lycoris":
        return "lycoris"
    return told or said or "unknown"


def _metadata_architecture(metadata: Mapping[str, object]) -> str | None:
    for key in ("modelspec.architecture", "general.architecture"):
        value = metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()[: meta.MAX_TITLE]
    return None


def _name_problem(found_format: str, file_name: str | None) -> str | None:
    if not file_name:
        return None
    suffix = os.path.splitext(file_name)[1].lower()
    claimed = _SUFFIX_FORMATS.get(suffix)
    if claimed is None or claimed == found_format or found_format not in _FORMAT_NAMES:
        return None
    return (
        f"The file is named {suffix} but is {_FORMAT_NAMES[found_format]}: "
        "modelvault never unpickles it; rename it, or convert it with a tool you trust."
    )
