"""Text-to-video with a released SANA-Video checkpoint (diffusers folder).

    python examples/text_to_video.py path/to/SANA-Video_2B_480p_diffusers "a cat surfing a wave at sunset"
"""

import sys

from sana_jax.pipelines import SanaVideoPipeline

folder, prompt = sys.argv[1], sys.argv[2]
pipe = SanaVideoPipeline.from_pretrained(folder, dtype="bfloat16")  # float32 on CPU
out = pipe(prompt, negative_prompt="", num_frames=81, num_inference_steps=50, guidance_scale=6.0, seed=0,
           motion_score=30)  # appends " motion score: 30." as the SANA-Video docs do
out.save("text_to_video.mp4", overwrite=True)  # an existing file is refused otherwise
print({stage: f"{seconds:.1f} s" for stage, seconds in out.timings.items()})
