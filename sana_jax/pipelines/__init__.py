"""Pipelines: glue from prompts to videos. ``SanaVideoPipeline.from_pretrained(folder)`` loads a diffusers folder
(or its Hub id); each pipeline's ``check(...)`` does every check that needs no weights, before loading;
``RefinePipeline`` is the LTX-2 stage-2 refiner and ``TwoStagePipeline`` chains the two (the 2K path);
``StreamingPipeline`` streams long videos chunk by chunk (LongSANA) into an mp4 with constant memory;
``WanPipeline`` is Wan2.1 text-to-video (diffusers' ``WanPipeline`` folders)."""

from sana_jax.pipelines.refine import RefineOutput, RefinePipeline, RefinerPlan
from sana_jax.pipelines.streaming import StreamingPipeline, StreamResult
from sana_jax.pipelines.text_to_video import GenerationRequest, SanaVideoOutput, SanaVideoPipeline
from sana_jax.pipelines.two_stage import TwoStageOutput, TwoStagePipeline, TwoStagePlan
from sana_jax.pipelines.wan import WanPipeline

__all__ = ["GenerationRequest", "RefineOutput", "RefinePipeline", "RefinerPlan", "SanaVideoOutput",
           "SanaVideoPipeline", "StreamResult", "StreamingPipeline", "TwoStageOutput", "TwoStagePipeline",
           "TwoStagePlan", "WanPipeline"]
