"""The family of a full model (checkpoint, diffusion model, VAE, text encoder, ControlNet,
upscaler) from its tensor names and shapes.

Learned from how ComfyUI (``comfy/model_detection.py``, ``comfy/sd.py``) and
InvokeAI (its model probe) tell models apart: each family has tensors no other
has (``head.modulation`` for Wan, ``joint_blocks`` for SD 3, ...), and the widths
of a few layers tell the variants (a UNet's cross-attention is 768 wide in
SD 1.x, 1024 in SD 2.x, 2048 in SDXL).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from modelvault.identify.keys import Keys
from modelvault.identify.parsing import TensorInfo


@dataclass(frozen=True)
class Finding:
    """What the tensors say: the kind of model, its base (None where not told) and more."""

    kind: str
    base: str | None
    architecture: str | None


# Where a file keeps its diffusion model: ldm/sgm checkpoints (A1111, ComfyUI), Cosmos,
# AuraFlow (as ComfyUI's unet_prefix_from_state_dict finds it). Under the first, a
# diffusion model is one whether or not a rule knows its family.
_DIFFUSION_PREFIXES = ("model.diffusion_model.", "net.", "model.")
# A checkpoint's other parts: its VAE and text encoders.
_OTHER_PARTS = ("first_stage_model.", "cond_stage_model.", "conditioner.", "text_encoders.", "vae.")
_CROSS_ATTENTION = re.compile(r"(^|\.)attn2\.to_k\.weight$")


def full_model(tensors: Mapping[str, TensorInfo]) -> Finding | None:
    """The finding for a model that is not an adapter, or None where no rule knows it."""
    everything = Keys.of(tensors)
    control = _controlnet(everything)
    if control is not None:
        return control
    kind = "checkpoint" if everything.starts(*_OTHER_PARTS) else "diffusion_model"
    for prefix in _DIFFUSION_PREFIXES:
        inner = everything.under(prefix)
        if len(inner) <= 5:  # a few stray names are no model
            continue
        found = diffusion(inner)
        if found is not None or prefix == _DIFFUSION_PREFIXES[0]:
            return Finding(kind, *(found or (None, None)))
    found = diffusion(everything)
    if found is not None:
        return Finding("diffusion_model", *found)
    for rule in (_vae, _text_encoder, _upscaler):
        finding = rule(everything)
        if finding is not None:
            return finding
    vae_only = everything.under("first_stage_model.")
    return _vae(vae_only) if len(vae_only) == len(everything) else None


Family = tuple[str | None, str]  # (base, architecture)


def diffusion(k: Keys) -> Family | None:
    """The family of a diffusion model (a UNet or a transformer) from its own tensor names."""
    for rule in _DIFFUSION_RULES:
        found = rule(k)
        if found is not None:
            return found
    return None


def _mmdit(k: Keys) -> Family | None:
    if not k.has("joint_blocks.0.context_block.attn.qkv.weight"):
        return None
    width = k.dim("x_embedder.proj.weight", 0)
    depth = width // 64 if width else k.blocks("joint_blocks.")
    if depth >= 38:
        return "SD 3.5", f"SD 3.5 Large (MMDiT, {depth} blocks)"
    if k.has("joint_blocks.0.x_block.attn2.qkv.weight"):
        return "SD 3.5", f"SD 3.5 Medium (MMDiT-X, {depth} blocks)"
    return "SD 3", f"SD 3 Medium (MMDiT, {depth} blocks)"


def _flux(k: Keys) -> Family | None:
    norm = "double_blocks.0.img_attn.norm.key_norm."
    if not (k.has(norm + "scale") or k.has(norm + "weight")):
        return None
    if k.starts("distilled_guidance_layer."):
        return "Chroma", "Chroma (Flux.1 with a distilled guidance layer)"
    if not k.has("img_in.weight"):
        return None
    if k.has("double_stream_modulation_img.lin.weight"):
        return "Flux.2", "Flux.2"
    channels = (k.dim("img_in.weight", 1) or 64) // 4
    variant = {16: "", 96: " Fill", 32: " Canny/Depth"}.get(channels, f" ({channels} channels)")
    if k.has("guidance_in.in_layer.weight"):
        return "Flux.1 D", f"Flux.1 dev{variant}"
    return "Flux.1 S", f"Flux.1 schnell{variant}"


def _diffusers_flux_or_sd3(k: Keys) -> Family | None:
    if k.has("single_transformer_blocks.0.attn.to_q.weight", "x_embedder.weight"):
        if k.starts("time_text_embed.guidance_embedder."):
            return "Flux.1 D", "Flux.1 dev (diffusers)"
        return "Flux.1 S", "Flux.1 schnell (diffusers)"
    if k.has("transformer_blocks.0.attn.add_q_proj.weight", "pos_embed.proj.weight"):
        depth = k.blocks("transformer_blocks.")
        if depth >= 38 or k.has("transformer_blocks.0.attn2.to_q.weight"):
            return "SD 3.5", f"SD 3.5 (diffusers, {depth} blocks)"
        return "SD 3", f"SD 3 (diffusers, {depth} blocks)"
    return None


def _hunyuan_video(k: Keys) -> Family | None:
    if not k.has("txt_in.individual_token_refiner.blocks.0.norm1.weight"):
        return None
    if k.rank("img_in.proj.weight") == 4:  # 2-D patches: an image model
        return None, "HunyuanImage (Hunyuan Video's transformer on images)"
    if k.has("cond_type_embedding.weight") or k.has("byt5_in.fc1.weight"):
        return "Hunyuan Video 1.5", "HunyuanVideo 1.5"
    return "Hunyuan Video", "HunyuanVideo"


def _wan(k: Keys) -> Family | None:
    if not k.has("head.modulation"):
        return None
    dim = k.dim("head.modulation", -1)
    size = {1536: "1.3B", 5120: "14B", 3072: "5B"}.get(dim or 0, f"dim {dim}")
    version = "2.2" if k.dim("patch_embedding.weight", 1) == 48 else "2.1"
    if k.has("vace_patch_embedding.weight"):
        task = "VACE"
    elif k.has("img_emb.proj.0.bias"):
        task = "i2v"
    else:
        task = "t2v"
    return "Wan Video", f"Wan {version} {size} {task}"


def _ltxv(k: Keys) -> Family | None:
    if not k.has("adaln_single.emb.timestep_embedder.linear_1.bias"):
        return None
    if k.has("pos_embed.proj.bias"):  # PixArt in diffusers' layout
        return None, "PixArt (diffusers)"
    if k.starts("audio_adaln_single."):
        return "LTXV", "LTX-2 (audio and video)"
    return "LTXV", "LTX-Video"


def _cosmos(k: Keys) -> Family | None:
    if k.has("blocks.block0.blocks.0.block.attn.to_q.0.weight"):
        return "Cosmos", "Cosmos 1"
    if k.has("blocks.0.mlp.layer1.weight", "x_embedder.proj.1.weight"):
        return "Cosmos", "Cosmos Predict2"
    return None


def _lumina(k: Keys) -> Family | None:
    if not k.has("cap_embedder.1.weight", "noise_refiner.0.attention.k_norm.weight"):
        return None
    if k.dim("cap_embedder.1.weight", 0) == 2304:
        return "Lumina", "Lumina 2"
    return None, "Lumina-like transformer (Z-Image and others)"


def _single_key(key: str, base: str, architecture: str) -> Callable[[Keys], Family | None]:
    def rule(k: Keys) -> Family | None:
        return (base, architecture) if k.has(key) else None

    return rule


def _qwen(k: Keys) -> Family | None:
    return ("Qwen", "Qwen-Image") if k.has("txt_norm.weight", "img_in.weight") else None


def _unet(k: Keys) -> Family | None:
    """An ldm/sgm UNet (SD 1.x, 2.x, XL, refiner, SVD), told by its cross-attention width."""
    if not k.has("input_blocks.0.0.weight"):
        return None
    context = _cross_attention_width(k)
    adm = k.dim("label_emb.0.0.weight", 1)
    extra = _input_channels(k.dim("input_blocks.0.0.weight", 1))
    if k.starts("input_blocks.1.1.time_stack.", "input_blocks.4.1.time_stack."):
        return "SVD", "Stable Video Diffusion UNet"
    return _unet_family(context, adm, extra)


def _unet_family(context: int | None, adm: int | None, extra: str) -> Family:
    if context == 2048:
        return "SDXL 1.0", f"SDXL UNet{extra}"
    if context == 1280 and adm == 2560:
        return "SDXL Refiner", "SDXL refiner UNet"
    if context == 768:
        return "SD 1.5", f"SD 1.x UNet{extra}"
    if context == 1024:
        unclip = " unCLIP" if adm in (1536, 2048) else ""
        return "SD 2.x", f"SD 2.x{unclip} UNet{extra}"
    return None, f"UNet (cross-attention {context} wide)"


def _input_channels(channels: int | None) -> str:
    return {9: " (inpainting)", 8: " (instruct-pix2pix)"}.get(channels or 4, "")


def _cross_attention_width(k: Keys) -> int | None:
    for name in sorted(k.shapes):
        if _CROSS_ATTENTION.search(name):
            return k.dim(name, 1)
    return None


def _diffusers_unet(k: Keys) -> Family | None:
    if not k.has("conv_in.weight", "down_blocks.0.resnets.0.conv1.weight"):
        return None
    adm = k.first_dim(("add_embedding.linear_1.weight", "class_embedding.linear_1.weight"), 1)
    return _unet_family(_cross_attention_width(k), adm, _input_channels(k.dim("conv_in.weight", 1)))


_DIFFUSION_RULES: tuple[Callable[[Keys], Family | None], ...] = (
    _mmdit,
    _single_key("clf.1.weight", "Stable Cascade", "Stable Cascade"),
    _single_key("double_layers.0.attn.w1q.weight", "AuraFlow", "AuraFlow"),
    _single_key("mlp_t5.0.weight", "Hunyuan DiT", "Hunyuan-DiT"),
    _hunyuan_video,
    _flux,
    _single_key("t5_yproj.weight", "Mochi", "Mochi preview"),
    _ltxv,
    _cosmos,
    _lumina,
    _wan,
    _single_key("caption_projection.0.linear.weight", "HiDream", "HiDream-I1"),
    _qwen,
    _unet,
    _diffusers_flux_or_sd3,
    _diffusers_unet,
)


def _controlnet(k: Keys) -> Finding | None:
    """ControlNets: ldm (A1111/ComfyUI), diffusers, and the Flux and SD 3 ones."""
    for prefix in ("control_model.", ""):
        inner = k.under(prefix)
        if inner.has("input_hint_block.0.weight") and inner.starts("zero_convs."):
            found = _unet(inner)
            return Finding("controlnet", *(found or (None, "ControlNet")))
    if k.has("controlnet_cond_embedding.conv_in.weight"):
        found = _diffusers_unet(k) or (None, "ControlNet (diffusers)")
        return Finding("controlnet", found[0], f"ControlNet ({found[1]})")
    if k.starts("controlnet_blocks."):
        if k.starts("pos_embed_input."):
            return Finding("controlnet", "SD 3", "SD 3 ControlNet")
        if k.starts("double_blocks.", "single_transformer_blocks.", "controlnet_x_embedder."):
            return Finding("controlnet", "Flux.1", "Flux.1 ControlNet")
        return Finding("controlnet", None, "ControlNet")
    return None


def _vae(k: Keys) -> Finding | None:
    """VAEs, told by their decoders (a video VAE's convolutions are 3-D)."""
    if k.starts("decoder.middle.0.residual.0.gamma"):  # Wan's (and Qwen-Image's) causal VAE
        z = k.first_dim(("conv2.weight",), 0) or k.first_dim(("decoder.conv1.weight",), 1)
        if z == 48:
            return Finding("vae", "Wan Video", "Wan 2.2 VAE (48 latent channels)")
        return Finding("vae", None, "Wan 2.1 VAE (16 latent channels; Qwen-Image uses it too)")
    video = (
        ("decoder.unpatcher3d.wavelets", "Cosmos", "Cosmos tokenizer VAE"),
        ("decoder.up_blocks.0.res_blocks.0.conv1.conv.weight", "LTXV", "LTX-Video VAE"),
        ("decoder.conv_in.conv.weight", "Hunyuan Video", "HunyuanVideo VAE (causal 3-D)"),
        ("decoder.mid.block_1.mix_factor", "SVD", "Stable Video Diffusion video decoder"),
    )
    for key, base, architecture in video:
        if k.has(key):
            return Finding("vae", base, architecture)
    latent = k.dim("decoder.conv_in.weight", 1)
    if latent is None:
        return None
    if latent == 32 and k.starts("bn."):
        return Finding("vae", "Flux.2", "Flux.2 VAE (32 latent channels)")
    described = {
        4: "SD VAE, 4 latent channels (SD 1.x, 2.x and SDXL share its shape)",
        16: "16 latent channels (SD 3 and Flux.1 share its shape)",
    }
    return Finding("vae", None, described.get(latent, f"VAE, {latent} latent channels"))


def _text_encoder(k: Keys) -> Finding | None:
    clip = k.dim("text_model.encoder.layers.0.self_attn.k_proj.weight", 0)
    if clip is not None:
        names = {768: "CLIP-L", 1024: "OpenCLIP ViT-H", 1280: "CLIP-G (OpenCLIP ViT-bigG)"}
        return Finding("text_encoder", None, names.get(clip, f"CLIP text encoder, {clip} wide"))
    open_clip = k.dim("transformer.resblocks.0.attn.in_proj_weight", 1)
    if open_clip is not None:
        return Finding("text_encoder", None, f"OpenCLIP text encoder, {open_clip} wide")
    t5 = k.dim("encoder.block.0.layer.0.SelfAttention.k.weight", 1)
    if t5 is not None:
        if k.has("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight"):
            return Finding("text_encoder", "Wan Video", f"umT5 encoder, {t5} wide")
        return Finding("text_encoder", None, f"T5 encoder, {t5} wide")
    llm = k.dim("model.layers.0.self_attn.q_proj.weight", 1)
    if llm is not None:
        return Finding("text_encoder", None, f"decoder-only language model, {llm} wide")
    return None


def _upscaler(k: Keys) -> Finding | None:
    rules = (
        (("model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"), "ESRGAN"),
        (("conv_first.weight", "body.0.rdb1.conv1.weight"), "ESRGAN (RRDBNet, Real-ESRGAN)"),
        (
            (
                "conv_first.weight",
                "layers.0.residual_group.blocks.0.attn.relative_position_bias_table",
            ),
            "SwinIR",
        ),
    )
    for keys, architecture in rules:
        if k.has(*keys):
            return Finding("upscale", None, architecture)
    return None
