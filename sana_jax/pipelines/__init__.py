"""Pipelines: glue from prompts to videos. ``SanaVideoPipeline.from_pretrained(folder)`` loads a diffusers folder."""

from sana_jax.pipelines.text_to_video import SanaVideoOutput, SanaVideoPipeline

__all__ = ["SanaVideoOutput", "SanaVideoPipeline"]
