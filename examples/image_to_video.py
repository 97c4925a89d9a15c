"""Image-to-video: the image becomes frame 0 (its latent is kept, at timestep 0, through the whole denoising).

    python examples/image_to_video.py path/to/SANA-Video_2B_480p_diffusers first_frame.png "the waves crash in"

The diffusers conversion recommends a FlowMatchEulerDiscreteScheduler (shift 8) for image-to-video; the pipeline
uses whatever scheduler the folder's scheduler/ holds.
"""

import sys

import numpy as np
from PIL import Image

from sana_jax.pipelines import SanaVideoPipeline

folder, image_path, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
pipe = SanaVideoPipeline.from_pretrained(folder, dtype="bfloat16")
height, width = pipe.default_size()
image = np.asarray(Image.open(image_path).convert("RGB").resize((width, height), Image.LANCZOS))
out = pipe(prompt, image=image, height=height, width=width, num_frames=81, num_inference_steps=50,
           guidance_scale=6.0, seed=0)
out.save("image_to_video.mp4", overwrite=True)  # an existing file is refused otherwise
