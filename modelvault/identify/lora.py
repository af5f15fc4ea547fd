"""LoRAs and LyCORIS adapters: which model family they are for, from their key names and widths.

An adapter's keys name the layer it changes and the adapter's own part:
``<prefix><layer>.<part>``. Prefixes: kohya's ``lora_unet_`` / ``lora_te_`` /
``lora_te1_`` / ``lora_te2_`` (the layer's dots written as ``_``),
diffusers/PEFT's ``unet.`` / ``transformer.`` / ``text_encoder.`` /
``text_encoder_2.``, ComfyUI's and diffusion-pipe's ``diffusion_model.``.
Parts: LoRA's ``lora_down``/``lora_up`` (``lora_A``/``lora_B``) and
``alpha``; LyCORIS's ``hada_*`` (LoHa), ``lokr_*`` (LoKr), ``oft_*``, ... The
layers tell the family (Flux's ``double_blocks``, SD 3's ``joint_blocks``,
Wan's ``blocks.N.self_attn``, a UNet's ``down_blocks``); the input width of a
UNet's cross-attention (768, 1024, 2048) tells SD 1.x from 2.x from XL.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from modelvault.identify.keys import highest_index
from modelvault.identify.models import Finding
from modelvault.identify.parsing import TensorInfo, shapes_of

_LORA_PARTS = (
    "lora_down.weight",
    "lora_up.weight",
    "lora_A.weight",
    "lora_B.weight",
    "lora_A.default.weight",
    "lora_B.default.weight",
    "lora.down.weight",
    "lora.up.weight",
    "lora_linear_layer.down.weight",
    "lora_linear_layer.up.weight",
    "alpha",
    "dora_scale",
)
_LYCORIS_PARTS = (
    "hada_w1_a",
    "hada_w1_b",
    "hada_w2_a",
    "hada_w2_b",
    "hada_t1",
    "hada_t2",
    "lokr_w1",
    "lokr_w2",
    "lokr_w1_a",
    "lokr_w1_b",
    "lokr_w2_a",
    "lokr_w2_b",
    "lokr_t2",
    "lora_mid.weight",
    "oft_blocks",
    "oft_diag",
    "diff",
    "diff_b",
)
# Parts whose second dimension is the input width of the layer they change.
_DOWN_PARTS = frozenset(
    {
        "lora_down.weight",
        "lora_A.weight",
        "lora_A.default.weight",
        "lora.down.weight",
        "lora_linear_layer.down.weight",
        "hada_w1_b",
        "diff",
    }
)

# (prefix, which model part, key style); the first that matches is taken.
_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("lora_unet_", "unet", "kohya"),
    ("lora_transformer_", "unet", "kohya"),
    ("lora_te1_", "te1", "kohya"),
    ("lora_te2_", "te2", "kohya"),
    ("lora_te3_", "te3", "kohya"),
    ("lora_te_", "te1", "kohya"),
    ("lycoris_", "unet", "LyCORIS"),
    ("text_encoder_2.", "te2", "diffusers/PEFT"),
    ("text_encoder.", "te1", "diffusers/PEFT"),
    ("unet.", "unet", "diffusers/PEFT"),
    ("transformer.", "unet", "diffusers/PEFT"),
    ("base_model.model.", "unet", "PEFT"),
    ("model.diffusion_model.", "unet", "ComfyUI"),
    ("diffusion_model.", "unet", "ComfyUI/diffusion-pipe"),
    ("", "unet", "bare"),
)
_PREFIX_PARTS = {prefix: (where, style) for prefix, where, style in _PREFIXES}
# An adapter key: (key, prefix, layer, part). The prefix is the first of _PREFIXES the
# key starts with (atomic: never another); the part is the ".<part>" that ends the key,
# the prefix's own dot included (then the layer is empty). No part ends with "." and
# another part, so a key ends with one part at most, and the greedy layer finds it.
_KEY = re.compile(
    r"((?>("
    + "|".join(re.escape(prefix) for prefix, _, _ in _PREFIXES if prefix)
    + r")?)(?:(?<=\.)|(.*)\.)("
    + "|".join(re.escape(p) for p in sorted(_LORA_PARTS + _LYCORIS_PARTS, key=len, reverse=True))
    + r"))",
    re.DOTALL,
)


@dataclass
class _Adapter:
    """An adapter's layers by model part, each with its input width where known."""

    layers: dict[str, dict[str, int | None]] = field(default_factory=dict)
    styles: set[str] = field(default_factory=set)
    lycoris: set[str] = field(default_factory=set)
    _names: str | None = None

    def unet(self) -> dict[str, int | None]:
        return self.layers.get("unet", {})

    def widths(self, pattern: str) -> set[int]:
        unet = self.unet()
        found = {unet[name] for name in filter(re.compile(pattern).search, unet)}
        return {w for w in found if w}

    def starts(self, heads: tuple[str, ...]) -> bool:
        """True if some layer's name starts with one of ``heads`` (a quick test, done
        before the searches of a rule that needs one of them)."""
        lines = "\n" + self._joined()
        return any("\n" + head in lines for head in heads)

    def _joined(self) -> str:
        if self._names is None:  # one C-speed search over all names, not one per name
            self._names = "\n".join(self.unet())
        return self._names

    def any(self, pattern: str) -> bool:
        """True if some layer's name matches ``pattern`` (``^``/``$``: the name's ends)."""
        return re.search(pattern, self._joined(), re.MULTILINE) is not None

    def highest(self, prefix: str) -> int:
        return highest_index(self.unet(), prefix, "_")


def adapter(tensors: Mapping[str, TensorInfo]) -> Finding | None:
    """The finding for a LoRA or LyCORIS adapter; None unless most keys are adapter parts
    and some carry weights (not only alphas)."""
    parts = _parts(tensors)
    weighty = any(part not in ("alpha", "dora_scale") for _, _, _, part in parts)
    if not weighty or len(parts) * 2 < len(tensors):
        return None
    found = _read(shapes_of(tensors), parts)
    base, family = _family(found)
    kind = "lycoris" if found.lycoris else "lora"
    what = f"LyCORIS ({', '.join(sorted(found.lycoris))})" if found.lycoris else "LoRA"
    style = " and ".join(sorted(found.styles)) or "unknown"
    subject = f"{family} {what}" if family else what
    return Finding(kind, base, f"{subject}, {style} keys")


_Part = tuple[str, str, str, str]  # (key, prefix, layer as written, part)


def _parts(tensors: Mapping[str, TensorInfo]) -> list[_Part]:
    """The keys that are adapter parts (a regular expression's C code runs per key)."""
    found = filter(None, map(_KEY.fullmatch, tensors))
    return [m.groups("") for m in found]  # type: ignore[misc]


def _read(shapes: Mapping[str, Sequence[int]], parts: list[_Part]) -> _Adapter:
    found = _Adapter()
    found.styles.update(_PREFIX_PARTS[prefix][1] for prefix in {p[1] for p in parts})
    lokr: dict[tuple[str, str], dict[str, Sequence[int]]] = {}
    for key, prefix, written, part in parts:
        where = _PREFIX_PARTS[prefix][0]
        layer = written.replace(".", "_")
        widths = found.layers.get(where)
        if widths is None:
            widths = found.layers[where] = {}
        if part in _DOWN_PARTS:
            shape = shapes[key]
            widths[layer] = shape[1] if len(shape) >= 2 else widths.get(layer)
        elif layer not in widths:
            widths[layer] = None
        if part in _LYCORIS_PARTS:
            found.lycoris.add(_lycoris_name(part))
            if part.startswith("lokr_"):
                lokr.setdefault((where, layer), {})[part] = shapes[key]
    for (where, layer), lokr_shapes in lokr.items():
        found.layers[where][layer] = _lokr_width(lokr_shapes)
    return found


def _lycoris_name(part: str) -> str:
    for prefix, name in (("hada", "LoHa"), ("lokr", "LoKr"), ("oft", "OFT"), ("lora_mid", "LoCon")):
        if part.startswith(prefix):
            return name
    return "full"


def _lokr_width(shapes: Mapping[str, Sequence[int]]) -> int | None:
    """A LoKr layer's input width: the product of its two factors' second dimensions."""
    one = shapes.get("lokr_w1") or shapes.get("lokr_w1_b")
    two = shapes.get("lokr_w2") or shapes.get("lokr_w2_b")
    if one and two and len(one) >= 2 and len(two) >= 2:
        return one[1] * two[1]
    return None


_Family = tuple[str | None, str | None]


def _family(a: _Adapter) -> _Family:
    """(base, what to call the family) for the adapter's layers."""
    for rule, heads in _FAMILY_RULES:
        if a.starts(heads):
            found = rule(a)
            if found is not None:
                return found
    return _text_encoders_only(a)


def _flux_like(a: _Adapter) -> _Family | None:
    native = a.any(r"^(double_blocks|single_blocks)_\d+_")
    diffusers = a.any(r"^single_transformer_blocks_\d+_")
    if not (native or diffusers):
        return None
    hunyuan = (
        a.any(r"^double_blocks_\d+_(img|txt)_mlp_fc[12]|^double_blocks_\d+_img_mod_linear")
        or a.any(r"^txt_in_individual_token_refiner|token_refiner")
        or a.highest("double_blocks_") >= 19
        or a.highest("single_blocks_") >= 38
        or a.highest("single_transformer_blocks_") >= 38
    )
    if hunyuan:
        return "Hunyuan Video", "Hunyuan Video"
    if a.any(r"^guidance_in_|guidance_embedder"):
        return "Flux.1 D", "Flux.1 dev"
    return "Flux.1", "Flux.1"


def _sd3(a: _Adapter) -> _Family | None:
    native = a.any(r"^joint_blocks_\d+_")
    dual = a.any(r"^transformer_blocks_\d+_attn_add_[qkv]_proj")
    if not (native or dual):
        return None
    width = a.widths(r"(attn_(qkv|to_q)|attn_add_q_proj)$")
    if dual and (
        a.any(r"^transformer_blocks_\d+_(img|txt)_mlp")
        or (a.highest("transformer_blocks_") >= 24 and 3072 in width)
    ):
        return "Qwen", "Qwen-Image"
    if dual and 3072 in width:
        return "Flux.1", "Flux.1"
    depth = max(a.highest("joint_blocks_"), a.highest("transformer_blocks_")) + 1
    if depth > 24 or 2432 in width or a.any(r"x_block_attn2|attn2_"):
        return "SD 3.5", "SD 3.5"
    return "SD 3", "SD 3"


def _wan(a: _Adapter) -> _Family | None:
    if not a.any(r"^blocks_\d+_(self_attn|cross_attn)_[qkvo]$|^blocks_\d+_ffn_[02]$"):
        return None
    width = a.widths(r"^blocks_\d+_(self_attn|cross_attn)_[qkv]$")
    size = {5120: " 14B", 1536: " 1.3B", 3072: " 5B"}.get(max(width, default=0), "")
    return "Wan Video", f"Wan{size}"


def _dit_video(a: _Adapter) -> _Family | None:
    if a.any(r"^blocks_\d+_attn_qkv_x$"):
        return "Mochi", "Mochi"
    if a.any(r"^transformer_blocks_\d+_attn1_to_[qkv]$") and 2048 in a.widths(r"attn1_to_[qkv]$"):
        return "LTXV", "LTX-Video"
    return None


def _unet(a: _Adapter) -> _Family | None:
    if not a.any(r"^(down_blocks|up_blocks|mid_block|input_blocks|output_blocks|middle_block)_"):
        return None
    cross = a.widths(r"attn2_to_[kv]$")
    deep = a.any(r"transformer_blocks_[2-9]_|^(label_emb|add_embedding)")
    if "te2" in a.layers or 2048 in cross or deep:
        return "SDXL 1.0", "SDXL"
    if 1280 in cross:
        return "SDXL Refiner", "SDXL refiner"
    if 768 in cross:
        return "SD 1.5", "SD 1.x"
    if 1024 in cross:
        return "SD 2.x", "SD 2.x"
    return _text_encoders_only(a) if "te1" in a.layers else (None, "UNet")


def _text_encoders_only(a: _Adapter) -> _Family:
    if "te2" in a.layers:
        return "SDXL 1.0", "SDXL"
    widths = {w for w in a.layers.get("te1", {}).values() if w}
    if 768 in widths:
        return "SD 1.5", "SD 1.x"
    if 1024 in widths:
        return "SD 2.x", "SD 2.x"
    return None, None


# Each family's rule, and the starts of layer names it needs one of (its searches below
# all ask for a name starting so): a rule is skipped at once where none is there.
_FAMILY_RULES: tuple[tuple[Callable[[_Adapter], _Family | None], tuple[str, ...]], ...] = (
    (_flux_like, ("double_blocks_", "single_blocks_", "single_transformer_blocks_")),
    (_sd3, ("joint_blocks_", "transformer_blocks_")),
    (_wan, ("blocks_",)),
    (_dit_video, ("blocks_", "transformer_blocks_")),
    (
        _unet,
        (
            "down_blocks_",
            "up_blocks_",
            "mid_block_",
            "input_blocks_",
            "output_blocks_",
            "middle_block_",
        ),
    ),
)
