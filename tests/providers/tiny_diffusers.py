"""Tiny diffusers pipelines with random weights, built by the tests themselves (no download).

Each builder writes a `save_pretrained` folder that DiffusersProvider loads like
a real model: SD 1.5 img2img, InstructPix2Pix (UNet with 8 input channels) and
SDXL img2img (two text encoders, `prompt_2`). Outputs are noise, but real
pipeline code runs end to end, seeded and reproducible.
"""

from __future__ import annotations

import json
from pathlib import Path


def _tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz,.-":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, model_max_length=77), len(vocab)


def _text_config(vocab_size: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, projection_dim=32,
                          intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2,
                          vocab_size=vocab_size)


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                         norm_num_groups=32)


def _unet(in_channels: int = 4, **extra):
    from diffusers import UNet2DConditionModel

    kw = dict(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=in_channels, out_channels=4,
              down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
              cross_attention_dim=32, norm_num_groups=32)
    kw.update(extra)
    return UNet2DConditionModel(**kw)


def build_sd15(folder: Path, *, instruct_pix2pix: bool = False) -> Path:
    import torch
    from diffusers import PNDMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionInstructPix2PixPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    tokenizer, n = _tokenizer(folder / "_tok")
    parts = dict(unet=_unet(8 if instruct_pix2pix else 4), vae=_vae(), text_encoder=CLIPTextModel(_text_config(n)),
                 tokenizer=tokenizer, scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1), safety_checker=None,
                 feature_extractor=None, requires_safety_checker=False)
    cls = StableDiffusionInstructPix2PixPipeline if instruct_pix2pix else StableDiffusionImg2ImgPipeline
    cls(**parts).save_pretrained(str(folder))
    return folder


def build_sdxl(folder: Path) -> Path:
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tokenizer, n = _tokenizer(folder / "_tok")
    unet = _unet(4, cross_attention_dim=64, attention_head_dim=(2, 4), use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
                 projection_class_embeddings_input_dim=80)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear",
                                       timestep_spacing="leading")
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=_vae(), text_encoder=CLIPTextModel(_text_config(n)), tokenizer=tokenizer,
        text_encoder_2=CLIPTextModelWithProjection(_text_config(n)), tokenizer_2=tokenizer, unet=unet,
        scheduler=scheduler, add_watermarker=False)
    pipe.save_pretrained(str(folder))
    return folder


def build_unet_lora(pipeline_folder: Path, out: Path, *, seed: int = 1, rank: int = 4) -> Path:
    """A random LoRA for the UNet of a tiny SD 1.5 pipeline, as a diffusers `.safetensors` file.

    peft's `init_lora_weights=False` leaves both matrices random (its default zeroes B, a no-op LoRA)."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(str(pipeline_folder), subfolder="unet", local_files_only=True)
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionImg2ImgPipeline.save_lora_weights(str(out.parent), unet_lora_layers=layers, weight_name=out.name)
    return out
