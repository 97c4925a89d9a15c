"""Diffusion sampling: host-side schedules (diffusers-exact), float32 solvers, and one compiled denoising loop.

    from sana_jax.sampling import dpm_flow_schedule, sample
    latents = sample(model_fn, params, noise, schedule=dpm_flow_schedule(50, shift=8.0),
                     cond=cond, uncond=uncond, guidance_scale=6.0)

Schedules: ``dpm_flow_schedule`` (SANA-Video), ``unipc_flow_schedule`` / ``euler_flow_schedule`` (Wan2.1),
``distilled_schedule`` (LTX-2 stage 2), ``longsana_schedule``, ``causvid_schedule`` / ``self_forcing_schedule`` (the
Wan students' per-chunk re-noising); each names the solver that steps it.
"""

from sana_jax.sampling.loop import sample
from sana_jax.sampling.schedules import (DISTILLED_SIGMAS, LONGSANA_TIMESTEPS, Schedule, calculate_shift,
                                         distilled_schedule, dpm_flow_schedule, euler_flow_schedule, flow_shift,
                                         longsana_schedule, time_shift, unipc_flow_schedule, causvid_schedule,
                                         self_forcing_schedule, warp_timesteps)
from sana_jax.sampling.solvers import (SOLVERS, Solver, dpm_solver_pp_2m_coefficients, dpm_solver_pp_2m_step,
                                       euler_coefficients, euler_step, get_solver, renoise, renoise_coefficients,
                                       renoise_step)
from sana_jax.sampling.unipc import unipc_coefficients, unipc_init, unipc_orders, unipc_step

__all__ = [
    "DISTILLED_SIGMAS", "LONGSANA_TIMESTEPS", "SOLVERS", "Schedule", "Solver", "calculate_shift",
    "distilled_schedule", "dpm_flow_schedule", "dpm_solver_pp_2m_coefficients", "dpm_solver_pp_2m_step",
    "euler_coefficients", "euler_flow_schedule", "euler_step", "flow_shift", "get_solver", "longsana_schedule",
    "renoise", "renoise_coefficients", "renoise_step", "sample", "time_shift", "unipc_coefficients",
    "unipc_flow_schedule", "unipc_init", "unipc_orders", "unipc_step", "causvid_schedule",
    "self_forcing_schedule", "warp_timesteps",
]
