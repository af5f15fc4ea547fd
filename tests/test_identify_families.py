"""identify(): each family, kind and LoRA key style, from real files with real tensor names.

Every case is a file written to disk (sparse: no tensor data) and read back
through read_header, as modelvault identify will; the tensor names and shapes
are those the family's real files carry (a representative subset of them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from support.model_files import Shapes, write_gguf, write_safetensors

from modelvault.identify import BASES, KINDS, Identity, identify, read_header
from modelvault.identify.metadata import LEFT_OUT_KEY, TRAINING_BUDGET, VALUE_CAP

DOCS = Path(__file__).resolve().parent.parent / "docs" / "IDENTIFY.md"
DM = "model.diffusion_model."


def sd_unet(prefix: str, context: int, *, channels: int = 320, adm: int | None = None) -> Shapes:
    shapes = {
        f"{prefix}input_blocks.0.0.weight": (channels, 4, 3, 3),
        f"{prefix}input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (channels * 2, context),
        f"{prefix}input_blocks.4.1.proj_in.weight": (channels * 2, channels * 2),
        f"{prefix}middle_block.1.transformer_blocks.0.attn2.to_v.weight": (channels * 4, context),
        f"{prefix}out.2.weight": (4, channels, 3, 3),
        f"{prefix}time_embed.0.weight": (channels * 4, channels),
    }
    if adm:
        shapes[f"{prefix}label_emb.0.0.weight"] = (channels * 4, adm)
    return shapes


VAE_IN_CHECKPOINT = {
    "first_stage_model.decoder.conv_in.weight": (512, 4, 3, 3),
    "first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3),
}
SD1_TEXT = {
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768)
}
FLUX = {
    "img_in.weight": (3072, 64),
    "txt_in.weight": (3072, 4096),
    "vector_in.in_layer.weight": (3072, 768),
    "double_blocks.0.img_attn.norm.key_norm.scale": (128,),
    "double_blocks.18.img_attn.qkv.weight": (9216, 3072),
    "single_blocks.37.linear1.weight": (21504, 3072),
    "final_layer.linear.weight": (64, 3072),
}
GUIDANCE = {"guidance_in.in_layer.weight": (3072, 256)}
WAN_14B = {
    "head.modulation": (1, 2, 5120),
    "head.head.weight": (64, 5120),
    "patch_embedding.weight": (5120, 16, 1, 2, 2),
    "blocks.0.self_attn.q.weight": (5120, 5120),
    "blocks.0.ffn.0.weight": (13824, 5120),
    "blocks.39.cross_attn.k.weight": (5120, 4096),
}
MMDIT_BLOCK = "joint_blocks.0.context_block.attn.qkv.weight"

# name: (tensors, metadata, expected kind, base, source, architecture contains)
FAMILIES: dict[str, tuple[Shapes, dict[str, str], str, str | None, str | None, str]] = {
    "sd15 checkpoint": (
        {**sd_unet(DM, 768), **VAE_IN_CHECKPOINT, **SD1_TEXT},
        {},
        "checkpoint",
        "SD 1.5",
        "tensors",
        "SD 1.x UNet",
    ),
    "sd15 inpainting": (
        {**sd_unet(DM, 768), f"{DM}input_blocks.0.0.weight": (320, 9, 3, 3), **VAE_IN_CHECKPOINT},
        {},
        "checkpoint",
        "SD 1.5",
        "tensors",
        "inpainting",
    ),
    "sd2 checkpoint": (
        {
            **sd_unet(DM, 1024),
            **VAE_IN_CHECKPOINT,
            "cond_stage_model.model.token_embedding.weight": (49408, 1024),
        },
        {},
        "checkpoint",
        "SD 2.x",
        "tensors",
        "SD 2.x UNet",
    ),
    "sdxl checkpoint": (
        {
            **sd_unet(DM, 2048, adm=2816),
            **VAE_IN_CHECKPOINT,
            "conditioner.embedders.1.model.token_embedding.weight": (49408, 1280),
        },
        {},
        "checkpoint",
        "SDXL 1.0",
        "tensors",
        "SDXL UNet",
    ),
    "sdxl refiner": (
        {**sd_unet(DM, 1280, channels=384, adm=2560), **VAE_IN_CHECKPOINT},
        {},
        "checkpoint",
        "SDXL Refiner",
        "tensors",
        "refiner",
    ),
    "sdxl unet alone": (
        sd_unet("", 2048, adm=2816),
        {},
        "diffusion_model",
        "SDXL 1.0",
        "tensors",
        "SDXL",
    ),
    "svd": (
        {
            **sd_unet(DM, 1024, adm=768),
            f"{DM}input_blocks.1.1.time_stack.0.attn1.to_q.weight": (320, 320),
        },
        {},
        "diffusion_model",
        "SVD",
        "tensors",
        "Stable Video",
    ),
    "diffusers sd15 unet": (
        {
            "conv_in.weight": (320, 4, 3, 3),
            "down_blocks.0.resnets.0.conv1.weight": (320, 320, 3, 3),
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight": (320, 768),
            "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
        },
        {},
        "diffusion_model",
        "SD 1.5",
        "tensors",
        "SD 1.x",
    ),
    "sd3 medium": (
        {
            f"{DM}{MMDIT_BLOCK}": (4608, 1536),
            f"{DM}x_embedder.proj.weight": (1536, 16, 2, 2),
            f"{DM}joint_blocks.23.x_block.attn.qkv.weight": (4608, 1536),
            f"{DM}pos_embed": (1, 36864, 1536),
            f"{DM}context_embedder.weight": (1536, 4096),
            f"{DM}final_layer.linear.weight": (64, 1536),
            "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight": (768,),
        },
        {},
        "checkpoint",
        "SD 3",
        "tensors",
        "SD 3 Medium",
    ),
    "sd35 large": (
        {
            MMDIT_BLOCK: (7296, 2432),
            "x_embedder.proj.weight": (2432, 16, 2, 2),
            "joint_blocks.37.x_block.attn.qkv.weight": (7296, 2432),
            "joint_blocks.0.context_block.attn.ln_q.weight": (64,),
        },
        {},
        "diffusion_model",
        "SD 3.5",
        "tensors",
        "Large",
    ),
    "sd35 medium": (
        {
            MMDIT_BLOCK: (4608, 1536),
            "x_embedder.proj.weight": (1536, 16, 2, 2),
            "joint_blocks.0.x_block.attn2.qkv.weight": (4608, 1536),
        },
        {},
        "diffusion_model",
        "SD 3.5",
        "tensors",
        "Medium",
    ),
    "flux dev": ({**FLUX, **GUIDANCE}, {}, "diffusion_model", "Flux.1 D", "tensors", "Flux.1 dev"),
    "flux schnell": (FLUX, {}, "diffusion_model", "Flux.1 S", "tensors", "schnell"),
    "flux fill in a checkpoint": (
        {
            **{DM + k: v for k, v in {**FLUX, **GUIDANCE}.items()},
            DM + "img_in.weight": (3072, 384),
            "vae.decoder.conv_in.weight": (512, 16, 3, 3),
            "text_encoders.t5xxl.x": (4,),
        },
        {},
        "checkpoint",
        "Flux.1 D",
        "tensors",
        "Fill",
    ),
    "chroma": (
        {**FLUX, "distilled_guidance_layer.in_proj.weight": (5120, 64)},
        {},
        "diffusion_model",
        "Chroma",
        "tensors",
        "Chroma",
    ),
    "flux 2": (
        {
            **FLUX,
            "img_in.weight": (6144, 128),
            "double_stream_modulation_img.lin.weight": (36864, 6144),
        },
        {},
        "diffusion_model",
        "Flux.2",
        "tensors",
        "Flux.2",
    ),
    "hunyuan video": (
        {
            "txt_in.individual_token_refiner.blocks.0.norm1.weight": (3072,),
            "img_in.proj.weight": (3072, 16, 1, 2, 2),
            "double_blocks.19.img_attn_qkv.weight": (9216, 3072),
            "single_blocks.39.linear1.weight": (21504, 3072),
            "txt_in.input_embedder.weight": (3072, 4096),
            "guidance_in.in_layer.weight": (3072, 256),
        },
        {},
        "diffusion_model",
        "Hunyuan Video",
        "tensors",
        "HunyuanVideo",
    ),
    "hunyuan video 1.5": (
        {
            "txt_in.individual_token_refiner.blocks.0.norm1.weight": (2048,),
            "img_in.proj.weight": (2048, 65, 1, 1, 1),
            "cond_type_embedding.weight": (3, 2048),
            "byt5_in.fc1.weight": (2048, 1472),
        },
        {},
        "diffusion_model",
        "Hunyuan Video 1.5",
        "tensors",
        "1.5",
    ),
    "wan 2.1 t2v 14b": (WAN_14B, {}, "diffusion_model", "Wan Video", "tensors", "Wan 2.1 14B t2v"),
    "wan 2.1 i2v 14b": (
        {**WAN_14B, "img_emb.proj.0.bias": (1280,)},
        {},
        "diffusion_model",
        "Wan Video",
        "tensors",
        "14B i2v",
    ),
    "wan 2.1 t2v 1.3b": (
        {
            "head.modulation": (1, 2, 1536),
            "patch_embedding.weight": (1536, 16, 1, 2, 2),
            "blocks.29.self_attn.q.weight": (1536, 1536),
        },
        {},
        "diffusion_model",
        "Wan Video",
        "tensors",
        "1.3B t2v",
    ),
    "wan 2.2 5b": (
        {"head.modulation": (1, 2, 3072), "patch_embedding.weight": (3072, 48, 1, 2, 2)},
        {},
        "diffusion_model",
        "Wan Video",
        "tensors",
        "Wan 2.2 5B",
    ),
    "ltxv": (
        {
            "adaln_single.emb.timestep_embedder.linear_1.bias": (2048,),
            "patchify_proj.weight": (2048, 128),
            "transformer_blocks.27.attn2.to_k.weight": (2048, 4096),
        },
        {},
        "diffusion_model",
        "LTXV",
        "tensors",
        "LTX-Video",
    ),
    "mochi": (
        {"t5_yproj.weight": (1536, 4096), "blocks.0.attn.qkv_x.weight": (9216, 3072)},
        {},
        "diffusion_model",
        "Mochi",
        "tensors",
        "Mochi",
    ),
    "cosmos 7b": (
        {
            "net.blocks.block0.blocks.0.block.attn.to_q.0.weight": (4096, 4096),
            "net.x_embedder.proj.1.weight": (4096, 68),
            **{
                f"net.blocks.block{i}.blocks.0.block.attn.to_k.0.weight": (4096, 4096)
                for i in range(5)
            },
        },
        {},
        "diffusion_model",
        "Cosmos",
        "tensors",
        "Cosmos 1",
    ),
    "cosmos predict2": (
        {"blocks.0.mlp.layer1.weight": (8192, 2048), "x_embedder.proj.1.weight": (2048, 68)},
        {},
        "diffusion_model",
        "Cosmos",
        "tensors",
        "Predict2",
    ),
    "auraflow": (
        {
            **{f"model.double_layers.{i}.attn.w1q.weight": (3072, 3072) for i in range(4)},
            "model.positional_encoding": (1, 9216, 3072),
            "model.cond_seq_linear.weight": (3072, 2048),
        },
        {},
        "diffusion_model",
        "AuraFlow",
        "tensors",
        "AuraFlow",
    ),
    "hunyuan dit": (
        {"mlp_t5.0.weight": (8192, 2048), "x_embedder.proj.weight": (1408, 4, 2, 2)},
        {},
        "diffusion_model",
        "Hunyuan DiT",
        "tensors",
        "Hunyuan",
    ),
    "stable cascade": (
        {"clf.1.weight": (64, 2048, 1, 1), "clip_txt_mapper.weight": (2048, 1280)},
        {},
        "diffusion_model",
        "Stable Cascade",
        "tensors",
        "Cascade",
    ),
    "lumina 2": (
        {"cap_embedder.1.weight": (2304, 2304), "noise_refiner.0.attention.k_norm.weight": (96,)},
        {},
        "diffusion_model",
        "Lumina",
        "tensors",
        "Lumina 2",
    ),
    "hidream": (
        {"caption_projection.0.linear.weight": (2560, 4096)},
        {},
        "diffusion_model",
        "HiDream",
        "tensors",
        "HiDream",
    ),
    "qwen image": (
        {"txt_norm.weight": (3584,), "img_in.weight": (3072, 64)},
        {},
        "diffusion_model",
        "Qwen",
        "tensors",
        "Qwen",
    ),
    # VAEs
    "sd vae": (
        {
            "encoder.conv_in.weight": (128, 3, 3, 3),
            "decoder.conv_in.weight": (512, 4, 3, 3),
            "quant_conv.weight": (8, 8, 1, 1),
        },
        {},
        "vae",
        None,
        None,
        "4 latent channels",
    ),
    "flux vae": (
        {"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_in.weight": (512, 16, 3, 3)},
        {},
        "vae",
        None,
        None,
        "16 latent",
    ),
    "wan 2.1 vae": (
        {"decoder.middle.0.residual.0.gamma": (384, 1, 1, 1), "conv2.weight": (16, 16, 1, 1, 1)},
        {},
        "vae",
        None,
        None,
        "Wan 2.1 VAE",
    ),
    "wan 2.2 vae": (
        {"decoder.middle.0.residual.0.gamma": (1024, 1, 1, 1), "conv2.weight": (48, 48, 1, 1, 1)},
        {},
        "vae",
        "Wan Video",
        "tensors",
        "Wan 2.2 VAE",
    ),
    "hunyuan video vae": (
        {
            "decoder.conv_in.conv.weight": (512, 16, 3, 3, 3),
            "decoder.up_blocks.0.resnets.0.conv1.conv.weight": (512, 512, 3, 3, 3),
        },
        {},
        "vae",
        "Hunyuan Video",
        "tensors",
        "HunyuanVideo VAE",
    ),
    "ltxv vae": (
        {"decoder.up_blocks.0.res_blocks.0.conv1.conv.weight": (512, 512, 3, 3, 3)},
        {},
        "vae",
        "LTXV",
        "tensors",
        "LTX",
    ),
    # text encoders
    "clip-l": (
        {
            "text_model.encoder.layers.0.self_attn.k_proj.weight": (768, 768),
            "text_model.final_layer_norm.weight": (768,),
        },
        {},
        "text_encoder",
        None,
        None,
        "CLIP-L",
    ),
    "clip-g": (
        {"text_model.encoder.layers.0.self_attn.k_proj.weight": (1280, 1280)},
        {},
        "text_encoder",
        None,
        None,
        "CLIP-G",
    ),
    "t5 xxl": (
        {
            "encoder.block.0.layer.0.SelfAttention.k.weight": (4096, 4096),
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": (32, 64),
            "shared.weight": (32128, 4096),
        },
        {},
        "text_encoder",
        None,
        None,
        "T5 encoder, 4096 wide",
    ),
    "umt5 xxl": (
        {
            "encoder.block.0.layer.0.SelfAttention.k.weight": (4096, 4096),
            "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight": (32, 64),
            "shared.weight": (256384, 4096),
        },
        {},
        "text_encoder",
        "Wan Video",
        "tensors",
        "umT5",
    ),
    "llm text encoder": (
        {
            "model.layers.0.self_attn.q_proj.weight": (4096, 4096),
            "model.embed_tokens.weight": (128320, 4096),
        },
        {},
        "text_encoder",
        None,
        None,
        "language model",
    ),
    # ControlNets
    "sd15 controlnet": (
        {
            "control_model.input_hint_block.0.weight": (16, 3, 3, 3),
            "control_model.zero_convs.0.0.weight": (320, 320, 1, 1),
            **sd_unet("control_model.", 768),
        },
        {},
        "controlnet",
        "SD 1.5",
        "tensors",
        "SD 1.x",
    ),
    "sdxl controlnet diffusers": (
        {
            "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
            "conv_in.weight": (320, 4, 3, 3),
            "down_blocks.0.resnets.0.conv1.weight": (320, 320, 3, 3),
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
            "add_embedding.linear_1.weight": (1280, 2816),
        },
        {},
        "controlnet",
        "SDXL 1.0",
        "tensors",
        "ControlNet",
    ),
    "flux controlnet": (
        {
            "controlnet_x_embedder.weight": (3072, 64),
            "controlnet_blocks.0.weight": (3072, 3072),
            "transformer_blocks.0.attn.to_q.weight": (3072, 3072),
        },
        {},
        "controlnet",
        "Flux.1",
        "tensors",
        "Flux.1 ControlNet",
    ),
    # embeddings and upscalers
    "sd1 embedding": ({"emb_params": (8, 768)}, {}, "embedding", "SD 1.5", "tensors", "768"),
    "sd2 embedding": ({"emb_params": (4, 1024)}, {}, "embedding", "SD 2.x", "tensors", "1024"),
    "sdxl embedding": (
        {"clip_l": (4, 768), "clip_g": (4, 1280)},
        {},
        "embedding",
        "SDXL 1.0",
        "tensors",
        "clip_g",
    ),
    "esrgan": (
        {"model.0.weight": (64, 3, 3, 3), "model.1.sub.0.RDB1.conv1.0.weight": (32, 64, 3, 3)},
        {},
        "upscale",
        None,
        None,
        "ESRGAN",
    ),
    "real-esrgan": (
        {"conv_first.weight": (64, 3, 3, 3), "body.0.rdb1.conv1.weight": (32, 64, 3, 3)},
        {},
        "upscale",
        None,
        None,
        "RRDBNet",
    ),
}

# Further variants, each a rule of its own.
FAMILIES.update(
    {
        "diffusers flux dev": (
            {
                "single_transformer_blocks.0.attn.to_q.weight": (3072, 3072),
                "x_embedder.weight": (3072, 64),
                "time_text_embed.guidance_embedder.linear_1.weight": (3072, 256),
            },
            {},
            "diffusion_model",
            "Flux.1 D",
            "tensors",
            "diffusers",
        ),
        "diffusers flux schnell": (
            {
                "single_transformer_blocks.0.attn.to_q.weight": (3072, 3072),
                "x_embedder.weight": (3072, 64),
            },
            {},
            "diffusion_model",
            "Flux.1 S",
            "tensors",
            "diffusers",
        ),
        "diffusers sd3": (
            {
                "transformer_blocks.0.attn.add_q_proj.weight": (1536, 1536),
                "pos_embed.proj.weight": (1536, 16, 2, 2),
                "transformer_blocks.23.attn.to_q.weight": (1536, 1536),
            },
            {},
            "diffusion_model",
            "SD 3",
            "tensors",
            "24 blocks",
        ),
        "diffusers sd35 large": (
            {
                "transformer_blocks.0.attn.add_q_proj.weight": (2432, 2432),
                "pos_embed.proj.weight": (2432, 16, 2, 2),
                "transformer_blocks.37.attn.to_q.weight": (2432, 2432),
            },
            {},
            "diffusion_model",
            "SD 3.5",
            "tensors",
            "38 blocks",
        ),
        "hunyuan image": (
            {
                "txt_in.individual_token_refiner.blocks.0.norm1.weight": (3584,),
                "img_in.proj.weight": (3584, 64, 1, 1),
            },
            {},
            "diffusion_model",
            None,
            None,
            "HunyuanImage",
        ),
        "wan vace": (
            {**WAN_14B, "vace_patch_embedding.weight": (5120, 96, 1, 2, 2)},
            {},
            "diffusion_model",
            "Wan Video",
            "tensors",
            "VACE",
        ),
        "pixart in diffusers layout": (
            {
                "adaln_single.emb.timestep_embedder.linear_1.bias": (1152,),
                "pos_embed.proj.bias": (1152,),
            },
            {},
            "diffusion_model",
            None,
            None,
            "PixArt",
        ),
        "ltx-2": (
            {
                "adaln_single.emb.timestep_embedder.linear_1.bias": (4096,),
                "audio_adaln_single.linear.weight": (1, 1),
            },
            {},
            "diffusion_model",
            "LTXV",
            "tensors",
            "LTX-2",
        ),
        "z-image": (
            {
                "cap_embedder.1.weight": (3840, 2560),
                "noise_refiner.0.attention.k_norm.weight": (128,),
            },
            {},
            "diffusion_model",
            None,
            None,
            "Z-Image",
        ),
        "unet of an unknown width": (
            sd_unet("", 640),
            {},
            "diffusion_model",
            None,
            None,
            "640 wide",
        ),
        "sd2 unclip": (
            sd_unet(DM, 1024, adm=2048),
            {},
            "diffusion_model",
            "SD 2.x",
            "tensors",
            "unCLIP",
        ),
        "sdxl ldm controlnet": (
            {
                "control_model.input_hint_block.0.weight": (16, 3, 3, 3),
                "control_model.zero_convs.0.0.weight": (320, 320, 1, 1),
                **sd_unet("control_model.", 2048, adm=2816),
            },
            {},
            "controlnet",
            "SDXL 1.0",
            "tensors",
            "SDXL",
        ),
        "sd3 controlnet": (
            {
                "controlnet_blocks.0.weight": (1536, 1536),
                "pos_embed_input.proj.weight": (1536, 16, 2, 2),
            },
            {},
            "controlnet",
            "SD 3",
            "tensors",
            "SD 3 ControlNet",
        ),
        "controlnet of no known family": (
            {"controlnet_blocks.0.weight": (1, 1)},
            {},
            "controlnet",
            None,
            None,
            "ControlNet",
        ),
        "flux 2 vae": (
            {
                "encoder.conv_in.weight": (128, 3, 3, 3),
                "decoder.conv_in.weight": (512, 32, 3, 3),
                "bn.running_mean": (128,),
            },
            {},
            "vae",
            "Flux.2",
            "tensors",
            "Flux.2 VAE",
        ),
        "vae of another width": (
            {"decoder.conv_in.weight": (512, 8, 3, 3)},
            {},
            "vae",
            None,
            None,
            "8 latent channels",
        ),
        "open clip": (
            {"transformer.resblocks.0.attn.in_proj_weight": (3072, 1024)},
            {},
            "text_encoder",
            None,
            None,
            "OpenCLIP",
        ),
        "swinir": (
            {
                "conv_first.weight": (180, 3, 3, 3),
                "layers.0.residual_group.blocks.0.attn.relative_position_bias_table": (225, 6),
            },
            {},
            "upscale",
            None,
            None,
            "SwinIR",
        ),
    }
)


def kohya(prefix: str, layer: str, rank: int, width: int) -> Shapes:
    return {
        f"{prefix}{layer}.lora_down.weight": (rank, width),
        f"{prefix}{layer}.lora_up.weight": (width, rank),
        f"{prefix}{layer}.alpha": (),
    }


def peft(prefix: str, layer: str, rank: int, width: int) -> Shapes:
    return {
        f"{prefix}{layer}.lora_A.weight": (rank, width),
        f"{prefix}{layer}.lora_B.weight": (width, rank),
    }


SD_TE = "text_model_encoder_layers_0_self_attn_q_proj"
LORAS: dict[str, tuple[Shapes, str, str | None, str]] = {
    "kohya sd15": (
        {
            **kohya(
                "lora_unet_", "down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 8, 768
            ),
            **kohya("lora_te_", SD_TE, 8, 768),
        },
        "lora",
        "SD 1.5",
        "kohya keys",
    ),
    "kohya sd2": (
        kohya("lora_unet_", "down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 8, 1024),
        "lora",
        "SD 2.x",
        "SD 2.x",
    ),
    "kohya sdxl by lora_te2_": (
        {
            **kohya("lora_te1_", SD_TE, 8, 768),
            **kohya("lora_te2_", SD_TE, 8, 1280),
            **kohya("lora_unet_", "input_blocks_4_1_transformer_blocks_0_attn1_to_q", 8, 640),
        },
        "lora",
        "SDXL 1.0",
        "SDXL LoRA",
    ),
    "kohya sdxl by 2048 cross-attention": (
        kohya("lora_unet_", "down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k", 8, 2048),
        "lora",
        "SDXL 1.0",
        "SDXL",
    ),
    "kohya sdxl by its deep blocks": (
        kohya("lora_unet_", "output_blocks_2_1_transformer_blocks_7_attn1_to_q", 8, 1280),
        "lora",
        "SDXL 1.0",
        "SDXL",
    ),
    "diffusers sdxl": (
        {
            **peft("unet.", "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", 16, 2048),
            **peft("text_encoder_2.", "text_model.encoder.layers.0.self_attn.q_proj", 16, 1280),
        },
        "lora",
        "SDXL 1.0",
        "diffusers/PEFT keys",
    ),
    "diffusers sd15": (
        peft("unet.", "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v", 4, 768),
        "lora",
        "SD 1.5",
        "diffusers/PEFT",
    ),
    "kohya flux": (
        {
            **kohya("lora_unet_", "double_blocks_0_img_attn_qkv", 16, 3072),
            **kohya("lora_unet_", "single_blocks_37_linear1", 16, 3072),
        },
        "lora",
        "Flux.1",
        "Flux.1 LoRA, kohya keys",
    ),
    "kohya flux with guidance_in": (
        {
            **kohya("lora_unet_", "double_blocks_0_img_attn_qkv", 16, 3072),
            **kohya("lora_unet_", "guidance_in_in_layer", 16, 256),
        },
        "lora",
        "Flux.1 D",
        "Flux.1 dev",
    ),
    "diffusers flux": (
        {
            **peft("transformer.", "single_transformer_blocks.0.attn.to_q", 16, 3072),
            **peft("transformer.", "transformer_blocks.0.attn.add_q_proj", 16, 3072),
        },
        "lora",
        "Flux.1",
        "diffusers/PEFT",
    ),
    "diffusers flux double blocks only": (
        {
            **peft("transformer.", "transformer_blocks.0.attn.to_q", 16, 3072),
            **peft("transformer.", "transformer_blocks.0.attn.add_k_proj", 16, 3072),
        },
        "lora",
        "Flux.1",
        "Flux.1",
    ),
    "kohya sd3": (
        kohya("lora_unet_", "joint_blocks_0_x_block_attn_qkv", 16, 1536),
        "lora",
        "SD 3",
        "SD 3 LoRA",
    ),
    "kohya sd35 large": (
        kohya("lora_unet_", "joint_blocks_30_x_block_attn_qkv", 16, 2432),
        "lora",
        "SD 3.5",
        "SD 3.5",
    ),
    "diffusion-pipe wan": (
        peft("diffusion_model.", "blocks.0.self_attn.q", 32, 5120),
        "lora",
        "Wan Video",
        "Wan 14B LoRA",
    ),
    "musubi wan 1.3b": (
        kohya("lora_unet_", "blocks_0_cross_attn_k", 32, 1536),
        "lora",
        "Wan Video",
        "Wan 1.3B",
    ),
    "musubi hunyuan video": (
        {
            **kohya("lora_unet_", "double_blocks_0_img_mlp_fc1", 32, 3072),
            **kohya("lora_unet_", "single_blocks_39_linear1", 32, 3072),
        },
        "lora",
        "Hunyuan Video",
        "Hunyuan Video LoRA",
    ),
    "ltxv": (
        peft("diffusion_model.", "transformer_blocks.0.attn1.to_q", 128, 2048),
        "lora",
        "LTXV",
        "LTX-Video",
    ),
    "loha sdxl": (
        {
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.hada_w1_a": (640, 8),
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.hada_w1_b": (8, 2048),
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.hada_w2_a": (640, 8),
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.hada_w2_b": (8, 2048),
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.alpha": (),
        },
        "lycoris",
        "SDXL 1.0",
        "LyCORIS (LoHa)",
    ),
    "lokr sd15": (
        {
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lokr_w1": (8, 8),
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lokr_w2": (
                40,
                96,
            ),
        },
        "lycoris",
        "SD 1.5",
        "LyCORIS (LoKr)",
    ),
}


LORAS.update(
    {
        "kohya sdxl refiner": (
            kohya("lora_unet_", "input_blocks_4_1_transformer_blocks_0_attn2_to_k", 8, 1280),
            "lora",
            "SDXL Refiner",
            "refiner",
        ),
        "kohya sd35 medium by attn2": (
            kohya("lora_unet_", "joint_blocks_0_x_block_attn2_qkv", 16, 1536),
            "lora",
            "SD 3.5",
            "SD 3.5",
        ),
        "diffusers qwen image": (
            {
                **peft("transformer.", "transformer_blocks.0.attn.add_q_proj", 16, 3072),
                **peft("transformer.", "transformer_blocks.0.img_mlp.net.0.proj", 16, 3072),
            },
            "lora",
            "Qwen",
            "Qwen-Image",
        ),
        "mochi": (peft("", "blocks.0.attn.qkv_x", 16, 3072), "lora", "Mochi", "Mochi"),
        "sdxl text encoders only": (
            {**kohya("lora_te1_", SD_TE, 8, 768), **kohya("lora_te2_", SD_TE, 8, 1280)},
            "lora",
            "SDXL 1.0",
            "SDXL",
        ),
        "sd15 text encoder only": (kohya("lora_te_", SD_TE, 8, 768), "lora", "SD 1.5", "SD 1.x"),
        "sd2 text encoder only": (kohya("lora_te_", SD_TE, 8, 1024), "lora", "SD 2.x", "SD 2.x"),
        "unet self-attention only": (
            kohya(
                "lora_unet_", "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", 8, 320
            ),
            "lora",
            None,
            "UNet LoRA",
        ),
        "unet with an sd15 text encoder": (
            {
                **kohya(
                    "lora_unet_",
                    "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                    8,
                    320,
                ),
                **kohya("lora_te_", SD_TE, 8, 768),
            },
            "lora",
            "SD 1.5",
            "SD 1.x",
        ),
        "layers of no known family": (
            kohya("lora_unet_", "some_layer", 8, 100),
            "lora",
            None,
            "LoRA, kohya keys",
        ),
        "full (diff) lycoris": (
            {
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.diff": (
                    320,
                    768,
                ),
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.diff_b": (
                    320,
                ),
            },
            "lycoris",
            "SD 1.5",
            "LyCORIS (full)",
        ),
    }
)


def _identify(
    tmp_path: Path, shapes: Shapes, metadata: Mapping[str, str] | None = None
) -> Identity:
    path = write_safetensors(tmp_path / "model.safetensors", shapes, metadata or None)
    header = read_header(path)
    assert header.problem is None, header.problem
    return identify(header, file_name=path.name)


@pytest.mark.parametrize("case", FAMILIES)
def test_each_family_is_told_by_its_tensors(tmp_path: Path, case: str) -> None:
    shapes, metadata, kind, base, source, architecture = FAMILIES[case]
    found = _identify(tmp_path, shapes, metadata)
    assert (found.kind, found.base, found.source) == (kind, base, source)
    assert found.architecture is not None
    assert architecture in found.architecture, found.architecture
    assert found.problem is None


@pytest.mark.parametrize("case", LORAS)
def test_each_lora_key_style_is_told(tmp_path: Path, case: str) -> None:
    shapes, kind, base, architecture = LORAS[case]
    found = _identify(tmp_path, shapes)
    assert (found.kind, found.base) == (kind, base), found
    assert found.source == ("tensors" if base else None)
    assert found.architecture is not None
    assert architecture in found.architecture, found.architecture


FLUX_LORA = {**kohya("lora_unet_", "double_blocks_0_img_attn_qkv", 16, 3072)}
SD15_LORA = LORAS["kohya sd15"][0]
SDXL_LORA = LORAS["kohya sdxl by lora_te2_"][0]


@pytest.mark.parametrize(
    ("shapes", "metadata", "base", "tensors_base"),  # tensors_base "=": the tensors decided
    [
        (
            SDXL_LORA,
            {
                "ss_base_model_version": "sdxl_base_v1-0",
                "ss_sd_model_name": "ponyDiffusionV6XL_v6StartWithThisOne.safetensors",
            },
            "Pony",
            None,
        ),
        (SDXL_LORA, {"ss_sd_model_name": "illustriousXL_v01.safetensors"}, "Illustrious", None),
        (
            SDXL_LORA,
            {"ss_sd_model_name": "noobaiXLNAIXL_vPred10Version.safetensors"},
            "NoobAI",
            None,
        ),
        (SDXL_LORA, {"ss_sd_model_name": "sd_xl_base_1.0.safetensors"}, "SDXL 1.0", "="),
        (
            SD15_LORA,
            {"ss_sd_model_name": "ponyDiffusion.safetensors"},
            "SD 1.5",
            "=",
        ),  # Pony: SDXL only
        (
            LORAS["kohya sd2"][0],
            {"ss_v2": "True", "ss_sd_model_name": "v2-1_768-ema-pruned.safetensors"},
            "SD 2.1",
            None,
        ),
        (LORAS["kohya sd2"][0], {"ss_v2": "True", "ss_sd_model_name": "v2-0.ckpt"}, "SD 2.x", None),
        (
            FLUX_LORA,
            {"ss_base_model_version": "flux1", "ss_sd_model_name": "flux1-dev.safetensors"},
            "Flux.1 D",
            None,
        ),
        (FLUX_LORA, {"modelspec.architecture": "flux-1-schnell/lora"}, "Flux.1 S", None),
        (FLUX_LORA, {"ss_network_module": "networks.lora_flux"}, "Flux.1", None),
        (
            SD15_LORA,
            {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"},
            "SDXL 1.0",
            "SD 1.5",
        ),
        (SD15_LORA, {"ss_base_model_version": "sd_v1"}, "SD 1.5", None),
        (LORAS["kohya sd35 large"][0], {"ss_base_model_version": "sd3"}, "SD 3.5", None),
        (
            LORAS["diffusion-pipe wan"][0],
            {"modelspec.architecture": "wan2.1/lora"},
            "Wan Video",
            None,
        ),
        (
            LORAS["musubi hunyuan video"][0],
            {"modelspec.architecture": "hunyuan-video/lora"},
            "Hunyuan Video",
            None,
        ),
        (
            {"x.weight": (4, 4)},
            {"modelspec.architecture": "stable-diffusion-3-5-large"},
            "SD 3.5",
            None,
        ),
    ],
)
def test_the_metadata_decides_where_it_says(
    tmp_path: Path, shapes: Shapes, metadata: dict[str, str], base: str, tensors_base: str | None
) -> None:
    found = _identify(tmp_path, shapes, metadata)
    if tensors_base == "=":
        assert (found.base, found.source, found.tensors_base) == (base, "tensors", None)
    else:
        assert (found.base, found.source, found.tensors_base) == (base, "metadata", tensors_base)


def test_a_gguf_is_told_by_its_metadata_and_refined_by_its_tensors(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "flux1-dev-Q8_0.gguf",
        {**FLUX, **GUIDANCE},
        {"general.architecture": "flux"},
        ggml_type=8,
    )
    found = identify(read_header(path))
    assert (found.kind, found.base, found.source, found.format) == (
        "diffusion_model",
        "Flux.1 D",
        "metadata",
        "gguf",
    )
    wan = identify(
        read_header(write_gguf(tmp_path / "wan.gguf", WAN_14B, {"general.architecture": "wan"}))
    )
    assert (wan.base, wan.architecture) == ("Wan Video", "Wan 2.1 14B t2v")
    t5 = identify(
        read_header(
            write_gguf(
                tmp_path / "t5.gguf",
                {"enc.blk.0.attn_k.weight": (4096, 4096)},
                {"general.architecture": "t5encoder"},
            )
        )
    )
    assert (t5.kind, t5.base, t5.architecture) == ("text_encoder", None, "t5encoder")


def test_the_kind_lycoris_comes_from_the_network_module(tmp_path: Path) -> None:
    found = _identify(
        tmp_path,
        SD15_LORA,
        {"ss_network_module": "lycoris.kohya", "ss_network_args": '{"algo": "locon"}'},
    )
    assert found.kind == "lycoris"
    assert found.catalog_type == "lora"
    args_only = _identify(
        tmp_path,
        SD15_LORA,
        {"ss_network_module": "networks.lora", "ss_network_args": '{"algo": "lokr"}'},
    )
    assert args_only.kind == "lycoris"


def test_trigger_words_resolution_and_title(tmp_path: Path) -> None:
    tags = {
        "10_ohwx": {"ohwx woman": 40, "smile": 12, " outdoors ": 7, "": 99, "bad": "x"},
        "5_style": {"smile": 30},
    }
    tags["5_style"].update({f"tag{i:02d}": 1 for i in range(20)})
    metadata = {
        "modelspec.trigger_phrase": "ohwx woman",
        "ss_tag_frequency": json.dumps(tags),
        "ss_resolution": "(1024, 768)",
        "modelspec.title": "LoRA@1712345678.5",  # a trainer's placeholder: passed over
        "ss_output_name": "ohwx_v2",
    }
    found = _identify(tmp_path, SDXL_LORA, metadata)
    assert found.trigger_words[:4] == ("ohwx woman", "smile", "outdoors", "tag00")
    assert (
        len(found.trigger_words) == 10
    )  # the phrase, then the 10 most frequent tags, deduplicated
    assert found.resolution == "1024x768"
    assert found.title == "ohwx_v2"
    spec = _identify(
        tmp_path, SDXL_LORA, {"modelspec.title": "My Style", "modelspec.resolution": "1024x1024"}
    )
    assert (spec.title, spec.resolution, spec.trigger_words) == ("My Style", "1024x1024", ())


@pytest.mark.parametrize(
    "frequency", ["{not json", "[1, 2]", '{"a": [1]}', "[" * 5000 + "]" * 5000]
)
def test_a_malformed_tag_frequency_gives_no_trigger_words(tmp_path: Path, frequency: str) -> None:
    found = _identify(tmp_path, SDXL_LORA, {"ss_tag_frequency": frequency})
    assert found.trigger_words == ()
    assert found.problem is None


def test_training_keys_are_kept_verbatim_but_bounded(tmp_path: Path) -> None:
    metadata = {f"ss_key_{i:03d}": "v" * 200 for i in range(200)}
    metadata["ss_learning_rate"] = "0.0001"
    metadata["ss_tag_frequency"] = json.dumps({"1_x": {f"t{i}": i for i in range(20000)}})
    found = _identify(tmp_path, SDXL_LORA, metadata)
    training = found.training
    assert training["ss_learning_rate"] == "0.0001"
    assert sum(len(k) + len(v) for k, v in training.items()) <= TRAINING_BUDGET + 400
    assert "ss_tag_frequency" in training[LEFT_OUT_KEY]
    kept = [k for k in training if k != LEFT_OUT_KEY]
    assert all(training[k] == metadata[k] for k in kept)
    long = _identify(
        tmp_path, SDXL_LORA, {"modelspec.thumbnail": "data:image/png;base64," + "A" * 50000}
    )
    cut = long.training["modelspec.thumbnail"]
    assert cut.startswith("data:image/png;base64,AAA")
    assert cut.endswith("more characters cut]")
    assert len(cut) < VALUE_CAP + 60


def test_to_meta_is_json_and_leaves_out_what_says_nothing(tmp_path: Path) -> None:
    found = _identify(tmp_path, LORAS["kohya flux"][0], {"ss_output_name": "x"})
    meta = found.to_meta()
    assert json.loads(json.dumps(meta)) == meta
    assert meta["version"] == 1
    assert meta["kind"] == "lora"
    assert meta["base"] == "Flux.1"
    assert meta["source"] == "tensors"
    assert "problem" not in meta
    assert "trigger_words" not in meta
    assert "tensors_base" not in meta
    assert Identity().to_meta() == {"version": 1, "kind": "unknown", "format": "unknown"}


def test_a_damaged_file_is_still_identified_as_far_as_it_can_be(tmp_path: Path) -> None:
    path = write_safetensors(tmp_path / "cut.safetensors", {**FLUX, **GUIDANCE})
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)  # a download cut short
    found = identify(read_header(path))
    assert found.base == "Flux.1 D"
    assert found.problem is not None
    assert "places tensor" in found.problem


def test_nothing_known_is_unknown(tmp_path: Path) -> None:
    found = _identify(tmp_path, {"some.random.weight": (3, 3), "other": (2,)})
    assert (found.kind, found.base, found.source, found.architecture) == (
        "unknown",
        None,
        None,
        None,
    )
    empty = _identify(tmp_path, {})
    assert empty.kind == "unknown"
    assert empty.problem is None


def test_every_base_and_kind_is_in_the_docs_table() -> None:
    if not DOCS.is_file():
        pytest.skip(f"{DOCS} is not here (an sdist without docs/): run from a checkout")
    text = DOCS.read_text(encoding="utf-8")
    rows = {m.group(1) for m in re.finditer(r"^\| ([^|]+?) \|", text, re.MULTILINE)}
    missing = [base.name for base in BASES if base.name not in rows]
    assert not missing, f"docs/IDENTIFY.md lacks rows for {missing}"
    for kind in KINDS:
        assert f"`{kind}`" in text, kind


def test_every_base_a_rule_gives_is_in_the_vocabulary() -> None:
    names = {base.name for base in BASES}
    found = {case[3] for case in FAMILIES.values()} | {case[2] for case in LORAS.values()}
    assert found - {None} <= names
    assert set(KINDS) >= {case[2] for case in FAMILIES.values()}
