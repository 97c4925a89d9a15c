"""Sigma / timestep schedules, computed on the host with NumPy exactly as diffusers computes them.

A ``Schedule`` holds ``sigmas`` (n+1,) float32 — the last one is the final sigma, 0 — and ``timesteps`` (n,)
float32, the values the model is fed (σ·1000 in diffusers' convention; integer-valued for the DPM-solver and UniPC,
whose schedulers cast them to int64). The arithmetic follows the diffusers code line by line (float64 where diffusers
uses NumPy float64, float32 where it uses torch float32), so sigmas and timesteps match bit for bit; the compiled loop
(``loop.sample``) receives them as arrays, so a new schedule of the same length does not recompile.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from sana_jax.errors import InputError

# LTX-2 stage-2 distilled sigmas, trailing 0 included
# (Lightricks/LTX-2:packages/ltx-pipelines/src/ltx_pipelines/utils/constants.py).
DISTILLED_SIGMAS: tuple[float, ...] = (0.909375, 0.725, 0.421875, 0.0)
# LongSANA per-chunk denoising timesteps
# (NVlabs/Sana:diffusion/scheduler/longlive_flow_euler_sampler.py `denoising_step_list`).
LONGSANA_TIMESTEPS: tuple[int, ...] = (1000, 960, 889, 727)

SOLVER_NAMES = ("dpm++2m", "euler", "renoise", "unipc")


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """``sigmas`` (n+1,) float32 ending at the final sigma; ``timesteps`` (n,) float32 fed to the model;
    ``solver``: the update rule the schedule belongs to (``"dpm++2m"``, ``"euler"``, ``"renoise"`` or ``"unipc"``)."""

    sigmas: np.ndarray
    timesteps: np.ndarray
    solver: str

    def __post_init__(self):
        s, t = np.asarray(self.sigmas, np.float32), np.asarray(self.timesteps, np.float32)
        if s.ndim != 1 or t.ndim != 1 or s.shape[0] != t.shape[0] + 1 or t.shape[0] < 1:
            raise InputError(f"Schedule needs sigmas (n+1,) and timesteps (n,) with n >= 1, got {s.shape}, {t.shape}")
        if self.solver not in SOLVER_NAMES:
            raise InputError(f"Schedule solver must be one of {SOLVER_NAMES}, got {self.solver!r}")
        object.__setattr__(self, "sigmas", s)
        object.__setattr__(self, "timesteps", t)

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])


def flow_shift(sigmas, shift: float):
    """``shift·σ / (1 + (shift−1)·σ)`` (diffusers flow shift); keeps the dtype of ``sigmas`` (NumPy rules)."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def time_shift(mu: float, sigma: float, t, kind: str = "exponential"):
    """Resolution-dependent shift of FlowMatchEulerDiscreteScheduler (``_time_shift_exponential`` / ``_linear``)."""
    if kind == "exponential":
        return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)
    if kind == "linear":
        return mu / (mu + (1 / t - 1) ** sigma)
    raise InputError(f"time_shift kind must be 'exponential' or 'linear', got {kind!r}")


def calculate_shift(seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096,
                    base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """``mu`` for ``time_shift``, linear in the token count (diffusers pipelines' ``calculate_shift``)."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return seq_len * m + (base_shift - m * base_seq_len)


def _check_steps(num_steps) -> int:
    if not isinstance(num_steps, (int, np.integer)) or isinstance(num_steps, bool) or num_steps < 1:
        raise InputError(f"num_inference_steps must be an integer >= 1, got {num_steps!r}")
    return int(num_steps)


def dpm_flow_schedule(num_steps: int, shift: float = 8.0, num_train_timesteps: int = 1000) -> Schedule:
    """SANA-Video's scheduler: ``DPMSolverMultistepScheduler(flow_shift=shift, use_flow_sigmas=True,
    prediction_type="flow_prediction")`` (defaults: dpmsolver++, order 2, midpoint, lower_order_final,
    final_sigmas_type="zero"). Mirrors its ``set_timesteps`` (use_flow_sigmas branch): float64 sigmas, timesteps =
    σ·1000 truncated to int64, then sigmas + [0] cast to float32."""
    n, big_n = _check_steps(num_steps), num_train_timesteps
    alphas = np.linspace(1, 1 / big_n, n + 1)
    sigmas = np.flip(flow_shift(1.0 - alphas, float(shift)))[:-1].copy()
    timesteps = (sigmas * big_n).astype(np.int64)  # torch .to(int64) truncates toward zero
    sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
    return Schedule(sigmas, timesteps.astype(np.float32), "dpm++2m")


def unipc_flow_schedule(num_steps: int, shift: float = 3.0, num_train_timesteps: int = 1000) -> Schedule:
    """Wan2.1's scheduler: ``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
    flow_shift=shift)`` (defaults: order 2, bh2, predict_x0, lower_order_final, final_sigmas_type="zero"). Mirrors
    its ``set_timesteps`` (huggingface/diffusers:src/diffusers/schedulers/scheduling_unipc_multistep.py, use_flow_sigmas
    branch): float64 σ = S_shift(linspace(1, 1/N_train, n+1)[:-1]); σ_0 −= 1e−6 when it is within 1e−6 of 1 (keeps
    log(1 − σ_0) finite); timesteps = σ·N_train truncated to int64; then sigmas + [0] cast to float32. The solver uses
    the exact σ, the model the truncated timestep (for shift 3, 50 steps: 999, 993, 986, …, 113, 60)."""
    n, big_n = _check_steps(num_steps), num_train_timesteps
    sigmas = np.linspace(1, 1 / big_n, n + 1)[:-1]
    sigmas = flow_shift(sigmas, float(shift))  # float64: flow_shift * sigmas / (1 + (flow_shift - 1) * sigmas)
    if np.fabs(sigmas[0] - 1) < 1e-6:
        sigmas[0] -= 1e-6
    timesteps = (sigmas * big_n).astype(np.int64)  # torch .to(int64) truncates toward zero
    sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
    return Schedule(sigmas, timesteps.astype(np.float32), "unipc")


def euler_flow_schedule(num_steps: int | None = None, shift: float = 1.0, *, sigmas: Sequence[float] | None = None,
                        mu: float | None = None, time_shift_type: str = "exponential",
                        num_train_timesteps: int = 1000) -> Schedule:
    """``FlowMatchEulerDiscreteScheduler(shift=shift, num_train_timesteps=...)`` then ``set_timesteps(num_steps)`` or
    ``set_timesteps(sigmas=...)``; ``mu`` selects ``use_dynamic_shifting`` (``time_shift(mu, 1, σ)`` instead of the
    fixed shift). Mirrors diffusers, including that the default schedule's last sigma is shifted twice (once in
    ``__init__`` for ``sigma_min``, once in ``set_timesteps``)."""
    big_n = num_train_timesteps
    # __init__: torch float32 arithmetic
    init = np.linspace(1, big_n, big_n, dtype=np.float32)[::-1].copy() / big_n
    if mu is None:
        init = flow_shift(init, float(shift))
    sigma_max, sigma_min = float(init[0]), float(init[-1])
    # set_timesteps
    if sigmas is None:
        n = _check_steps(num_steps)
        s = np.linspace(sigma_max * big_n, sigma_min * big_n, n) / big_n  # float64
    else:
        s = np.array(sigmas).astype(np.float32)
        if num_steps is not None and len(s) != num_steps:
            raise InputError(f"got {len(s)} sigmas for num_inference_steps={num_steps}")
        _check_steps(len(s))
    s = time_shift(mu, 1.0, s, time_shift_type) if mu is not None else flow_shift(s, float(shift))
    s = np.asarray(s).astype(np.float32)
    timesteps = s * np.float32(big_n)  # torch float32: sigmas * num_train_timesteps
    return Schedule(np.concatenate([s, np.zeros(1, np.float32)]), timesteps, "euler")


def distilled_schedule(sigmas: Sequence[float] = DISTILLED_SIGMAS) -> Schedule:
    """LTX-2 distilled stage-2 schedule: the sigmas verbatim (shift 1, no dynamic shifting), Euler, no guidance.
    A trailing 0 is dropped first (diffusers' ``STAGE_2_DISTILLED_SIGMA_VALUES`` omit it; the scheduler appends it)."""
    s = list(sigmas)
    if s and s[-1] == 0:
        s = s[:-1]
    return euler_flow_schedule(sigmas=s, shift=1.0)


def longsana_schedule(timesteps: Sequence[int] = LONGSANA_TIMESTEPS, shift: float = 7.0,
                      num_train_timesteps: int = 1000) -> Schedule:
    """LongSANA per-chunk schedule (``LongLiveFlowEuler``): the model sees ``timesteps``; each σ is a
    nearest-neighbour lookup in ``FlowMatchScheduler(shift, sigma_min=0, extra_one_step=True)`` at 1000 steps.
    Solver ``"renoise"``: x0 = x − σ·v, then re-noised to the next σ with fresh noise; the last step returns x0.
    (The Sana script casts the model's timestep to the model dtype: in bf16, 889 → 888 and 727 → 728.)"""
    t = [float(v) for v in timesteps]
    if t and t[-1] == 0:  # the config lists a trailing 0, which the sampler strips
        t = t[:-1]
    _check_steps(len(t))
    big_n = num_train_timesteps
    table = np.linspace(1.0, 0.0, big_n + 1)[:-1].astype(np.float32)  # torch.linspace(1, 0, 1001)[:-1], float32
    table = flow_shift(table, float(shift))
    table_t = table * np.float32(big_n)
    idx = [int(np.argmin(np.abs(table_t - np.float32(v)))) for v in t]
    sig = np.concatenate([table[idx], np.zeros(1, np.float32)])
    return Schedule(sig, np.asarray(t, np.float32), "renoise")


# CausVid's released autoregressive Wan student (tianweiy/CausVid:configs/wan_causal_dmd.yaml) and Self-Forcing's
# (guandeh17/Self-Forcing:configs/self_forcing_dmd.yaml): per-chunk timesteps before warping, and the shift.
CAUSVID_TIMESTEPS: tuple[int, ...] = (1000, 757, 522)
SELF_FORCING_TIMESTEPS: tuple[int, ...] = (1000, 750, 500, 250)


def warp_timesteps(timesteps: Sequence[int], shift: float, num_train_timesteps: int = 1000) -> list[float]:
    """``warp_denoising_step``: t → the shifted table's entry 1000 − t (``concat(T, [0])[1000 − t]``, T the
    1000-step table of :func:`longsana_schedule`), i.e. 1000·S_shift(t/1000) on the table's grid."""
    big_n = num_train_timesteps
    table = flow_shift(np.linspace(1.0, 0.0, big_n + 1)[:-1].astype(np.float32), float(shift))
    table_t = np.concatenate([table * np.float32(big_n), np.zeros(1, np.float32)])
    return [float(table_t[big_n - int(t)]) for t in timesteps]


def causvid_schedule(timesteps: Sequence[int] = CAUSVID_TIMESTEPS, shift: float = 8.0) -> Schedule:
    """CausVid's per-chunk schedule (no warping, shift 8): the model sees t = 1000, 757, 522."""
    return longsana_schedule(timesteps, shift=shift)


def self_forcing_schedule(timesteps: Sequence[int] = SELF_FORCING_TIMESTEPS, shift: float = 5.0) -> Schedule:
    """Self-Forcing's per-chunk schedule (warped, shift 5): the model sees t = 1000, 937.5, 833.3, 625."""
    return longsana_schedule(warp_timesteps(timesteps, shift), shift=shift)
