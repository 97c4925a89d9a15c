"""Video autoencoders, channels-last: ``encode(video (B,T,H,W,3) in [-1,1]) -> normalised latents`` and
``decode(latents) -> video in [-1,1]``. ``converters.load(path)`` returns them from diffusers folders, native
LTX-2 files and original Wan ``.pth``."""

from sana_jax.vae.dcae_v import DCAEVConfig, DCAEVideo
from sana_jax.vae.ltx2 import LTX2VAE, LTX2VAEConfig
from sana_jax.vae.wan import WanVAE, WanVAEConfig

__all__ = ["DCAEVConfig", "DCAEVideo", "LTX2VAE", "LTX2VAEConfig", "WanVAE", "WanVAEConfig"]
