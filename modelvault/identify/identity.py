"""What a model is: ``Identity``, and the fixed vocabularies its fields are drawn from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BASES", "KINDS", "Base", "Identity"]

META_VERSION = 1  # meta.identify's layout; a later one may re-identify older entries


@dataclass(frozen=True)
class Base:
    """One base model family: our name, Civitai's name for it (None where Civitai has
    none of its own), and how it is told."""

    name: str
    civitai: str | None
    told_by: str


# The vocabulary of Identity.base. docs/IDENTIFY.md shows it as a table; a test keeps
# the two the same.
BASES: tuple[Base, ...] = (
    Base("SD 1.5", "SD 1.5", "768-wide cross-attention and text encoder (SD 1.4 too)"),
    Base("SD 2.1", "SD 2.1", "metadata naming SD 2.1 (its base model's file name)"),
    Base("SD 2.x", None, "1024-wide cross-attention and text encoder"),
    Base("SDXL 1.0", "SDXL 1.0", "2048-wide cross-attention, 2816-wide ADM input, lora_te2_"),
    Base("SDXL Refiner", None, "1280-wide cross-attention, 2560-wide ADM input"),
    Base("Pony", "Pony", "SDXL, and the metadata's base model name says Pony"),
    Base("Illustrious", "Illustrious", "SDXL, and the metadata's base model name says so"),
    Base("NoobAI", "NoobAI", "SDXL, and the metadata's base model name says so"),
    Base("SD 3", "SD 3", "MMDiT joint blocks, 24 deep, no second attention"),
    Base("SD 3.5", "SD 3.5", "MMDiT 38 deep (Large) or with x_block attn2 (Medium)"),
    Base("Flux.1 D", "Flux.1 D", "Flux double/single blocks with guidance_in"),
    Base("Flux.1 S", "Flux.1 S", "Flux double/single blocks without guidance_in"),
    Base("Flux.1", None, "Flux blocks where dev and schnell cannot be told (most LoRAs)"),
    Base("Flux.2", None, "Flux blocks with shared (global) modulation"),
    Base("Chroma", "Chroma", "Flux blocks with distilled_guidance_layer"),
    Base("SVD", "SVD", "SD UNet with time_stack (temporal) blocks"),
    Base("Stable Cascade", "Stable Cascade", "clf and clip mapper layers"),
    Base("AuraFlow", "AuraFlow", "double_layers with w1q attention"),
    Base("Hunyuan DiT", "Hunyuan 1", "mlp_t5 text projection"),
    Base("Lumina", "Lumina", "cap_embedder and noise_refiner (Lumina 2)"),
    Base("HiDream", "HiDream", "caption_projection layers"),
    Base("Qwen", "Qwen", "txt_norm and img_in (Qwen-Image)"),
    Base("Hunyuan Video", "Hunyuan Video", "txt_in individual_token_refiner, 3-D patches"),
    Base("Hunyuan Video 1.5", None, "the same with cond_type_embedding or byt5_in"),
    Base(
        "Wan Video", "Wan Video", "head.modulation; the variant (1.3B/14B, t2v/i2v) in architecture"
    ),
    Base("LTXV", "LTXV", "adaln_single timestep embedder"),
    Base("Mochi", "Mochi", "t5_yproj"),
    Base("Cosmos", None, "blocks.block0 attention (Cosmos 1) or blocks.N.mlp.layer1 (Predict2)"),
)
BASE_NAMES = frozenset(base.name for base in BASES)

# The vocabulary of Identity.kind; each with the catalog's `type` it belongs in (the
# types the scan gives ComfyUI's folders), so a file in the wrong folder can be named.
KINDS: Mapping[str, str] = {
    "checkpoint": "checkpoint",
    "diffusion_model": "diffusion_model",
    "lora": "lora",
    "lycoris": "lora",
    "vae": "vae",
    "text_encoder": "text_encoder",
    "controlnet": "controlnet",
    "embedding": "embedding",
    "upscale": "upscale",
    "unknown": "other",
}

METADATA = "metadata"
TENSORS = "tensors"


@dataclass(frozen=True)
class Identity:
    """What a model file is, as far as its header tells.

    ``base``: a name from ``BASES`` or None; ``kind``: a key of ``KINDS``;
    ``source``: ``"metadata"`` where the file's own metadata named the base,
    ``"tensors"`` where its tensor names and shapes told it, None where neither
    did; ``architecture``: what was found, in more detail than ``base``;
    ``trigger_words``, ``resolution`` (``"1024x1024"``), ``title`` from the
    training metadata; ``training``: the file's metadata keys, verbatim but
    bounded; ``tensors_base``: what the tensors say where the metadata decided
    otherwise; ``problem``: one sentence on what is wrong with the file.
    """

    kind: str = "unknown"
    format: str = "unknown"
    base: str | None = None
    source: str | None = None
    architecture: str | None = None
    trigger_words: tuple[str, ...] = ()
    resolution: str | None = None
    title: str | None = None
    training: Mapping[str, str] = field(default_factory=dict)
    tensors_base: str | None = None
    problem: str | None = None

    @property
    def catalog_type(self) -> str:
        """The catalog's ``type`` (a ComfyUI folder's kind) a file of this kind belongs in."""
        return KINDS[self.kind]

    def to_meta(self) -> dict[str, Any]:
        """The JSON object for ``meta.identify``: every field that says something."""
        meta: dict[str, Any] = {"version": META_VERSION, "kind": self.kind, "format": self.format}
        optional: dict[str, Any] = {
            "base": self.base,
            "source": self.source,
            "architecture": self.architecture,
            "trigger_words": list(self.trigger_words),
            "resolution": self.resolution,
            "title": self.title,
            "training": dict(self.training),
            "tensors_base": self.tensors_base,
            "problem": self.problem,
        }
        meta.update((key, value) for key, value in optional.items() if value)
        return meta
