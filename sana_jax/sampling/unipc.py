"""Flow UniPC multistep solver (UniP-2 predictor + UniC corrector, "bh2": B(h) = expm1(−h)), the Wan2.1 default.

Port of ``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, solver_order=2,
solver_type="bh2", predict_x0=True, lower_order_final=True, disable_corrector=[], final_sigmas_type="zero")``
(huggingface/diffusers:src/diffusers/schedulers/scheduling_unipc_multistep.py: ``step``,
``multistep_uni_p_bh_update``, ``multistep_uni_c_bh_update``). UniPC: Zhao et al., arXiv 2302.04867.

Flow convention: x_σ = (1−σ)·x₀ + σ·ε, the model predicts v ≈ ε − x₀, α = 1 − σ, λ(σ) = log(α/σ), and the solver
works on the data prediction m_i = x_i − σ_i·v_i. Step i (model evaluated at x_i, σ_i):

  1. corrector (i ≥ 1), refining x_i with the new m_i before it is used:
       x_i ← (σ_i/σ_{i−1})·x_{i−1} − α_i·B·m_{i−1} − α_i·B·(ρ_D·D + ρ_last·(m_i − m_{i−1})),
     h = λ_i − λ_{i−1}, B = expm1(−h), where x_{i−1} is the previous *corrected* sample. Its order q is the order of
     the previous predictor: q = 1 → ρ_last = ½, no D; q = 2 → D = (m_{i−2} − m_{i−1})/r,
     r = (λ_{i−2} − λ_{i−1})/h and [[1, 1], [r, 1]]·(ρ_D, ρ_last) = (b₁, b₂) with
     b₁ = φ₂/B, b₂ = 2·(φ₂/(−h) − ½)/B, φ₂ = B/(−h) − 1.
  2. predictor to σ_{i+1}, order p = min(2, n − i, i + 1) (warm-up, lower_order_final):
       x_{i+1} = (σ_{i+1}/σ_i)·x_i − α_{i+1}·B·m_i − [p = 2]·α_{i+1}·B·½·(m_{i−1} − m_i)/r,
     h = λ_{i+1} − λ_i, B = expm1(−h), r = (λ_{i−1} − λ_i)/h. The last step has σ_n = 0: λ = +∞, B = −1, ratio 0,
     so x_n = m_{n−1} exactly.

As for the other solvers, everything that depends only on the sigmas is computed once on the host
(``unipc_coefficients``, float64, stored float32) and the jitted ``unipc_step`` is branch-free: a new schedule of
the same length reuses the compiled loop. The scan carries (previous corrected sample, m_{i−1}, m_{i−2}).
(diffusers locates its first step by the integer timestep; from 334 steps at shift 3 the first two timesteps are
both 999 and diffusers starts at index 1. Here step i always uses σ_i.)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

F32 = np.float32
UNIPC_KEYS = ("sigma", "corr", "c_ratio", "c_a", "c_r", "c_rho_d", "c_rho_last", "p_ratio", "p_a", "p_r", "p_rho")


def unipc_orders(num_steps: int) -> np.ndarray:
    """Predictor order per step: ``min(solver_order=2, n − i, lower_order_nums + 1)`` — first order at the first
    step (warm-up) and at the last (``lower_order_final``), second order in between."""
    i = np.arange(num_steps)
    return np.minimum(np.minimum(2, num_steps - i), i + 1)


def unipc_coefficients(sigmas) -> dict[str, np.ndarray]:
    """Per-step scalars of UniPC-2 (bh2, flow sigmas), each (n,) float32, computed in float64 from ``sigmas`` (n+1,).

    ``sigma``: σ_i for m_i = x_i − σ_i·v_i. Corrector (UniC, off at step 0 where ``corr`` = 0):
    ``c_ratio`` = σ_i/σ_{i−1}, ``c_a`` = α_i·expm1(−h), ``c_r`` = r (1 where unused), ``c_rho_d``, ``c_rho_last``.
    Predictor (UniP): ``p_ratio`` = σ_{i+1}/σ_i, ``p_a`` = α_{i+1}·expm1(−h), ``p_r`` = r (1 where unused),
    ``p_rho`` = ½ at second order (diffusers' simplified ``rhos_p``), 0 at first order.
    """
    s = np.asarray(sigmas, F32).astype(np.float64)  # the float32 sigmas diffusers steps with, promoted exactly
    n = s.shape[0] - 1
    alpha = 1.0 - s
    with np.errstate(divide="ignore"):  # σ_n = 0: λ_n = +inf, h = +inf, expm1(−h) = −1 (as in torch)
        lam = np.log(alpha) - np.log(s)
    order = unipc_orders(n)
    out = {k: np.zeros(n, np.float64) for k in UNIPC_KEYS}
    out["c_r"][:] = out["p_r"][:] = 1.0
    for i in range(n):
        out["sigma"][i] = s[i]
        # UniP from σ_i to σ_{i+1} (multistep_uni_p_bh_update, predict_x0: hh = −h, B_h = h_phi_1 = expm1(hh))
        h = lam[i + 1] - lam[i]
        b_h = np.expm1(-h)
        out["p_ratio"][i] = s[i + 1] / s[i]
        out["p_a"][i] = alpha[i + 1] * b_h
        if order[i] == 2:
            out["p_r"][i] = (lam[i - 1] - lam[i]) / h
            out["p_rho"][i] = 0.5
        if i == 0:
            continue
        # UniC at σ_i, from the previous corrected sample at σ_{i−1} (multistep_uni_c_bh_update), of the order
        # of the predictor that produced x_i
        h = lam[i] - lam[i - 1]
        hh = -h
        b_h = np.expm1(hh)
        out["corr"][i] = 1.0
        out["c_ratio"][i] = s[i] / s[i - 1]
        out["c_a"][i] = alpha[i] * b_h
        if order[i - 1] == 1:
            out["c_rho_last"][i] = 0.5  # diffusers: "for order 1, we use a simplified version"
        else:
            r = (lam[i - 2] - lam[i - 1]) / h
            phi = b_h / hh - 1.0  # h_phi_k at k = 1: (e^hh − 1)/hh − 1
            b1 = phi / b_h
            b2 = (phi / hh - 0.5) * 2.0 / b_h
            # torch.linalg.solve([[1, 1], [r, 1]], [b1, b2]) in closed form
            rho_d = (b1 - b2) / (1.0 - r)
            out["c_r"][i] = r
            out["c_rho_d"][i] = rho_d
            out["c_rho_last"][i] = b1 - rho_d
    return {k: v.astype(F32) for k, v in out.items()}


def unipc_init(latents, key=None):
    """Solver state: (previous corrected sample, m_{i−1}, m_{i−2}), zeros before step 0 (their coefficients are 0
    there). ``zeros_like`` keeps the (explicit) sharding of the latents."""
    z = jnp.zeros_like(latents, jnp.float32)
    return z, z, z


def unipc_step(x, v, state, k):
    """One UniPC step at x_i with (guided) velocity ``v``: corrects x_i (UniC), then predicts x_{i+1} (UniP).
    ``state`` = (x_{i−1} corrected, m_{i−1}, m_{i−2}); ``k``: this step's scalars from ``unipc_coefficients``.
    Returns ``(x_{i+1}, (x_i corrected, m_i, m_{i−1}))``. Float32, in diffusers' operation order."""
    x_last, m_prev, m_prev2 = state
    m = x - k["sigma"] * v  # convert_model_output, flow_prediction, predict_x0
    # UniC: x_t_ − α_t·B_h·(corr_res + ρ_last·D1_t), corr_res = ρ_D·D (0 at first order)
    d_c = (m_prev2 - m_prev) / k["c_r"]
    x_c = k["c_ratio"] * x_last - k["c_a"] * m_prev - k["c_a"] * (k["c_rho_d"] * d_c + k["c_rho_last"] * (m - m_prev))
    x = jnp.where(k["corr"] > 0, x_c, x)
    # UniP: x_t_ − α_t·B_h·pred_res, pred_res = ½·D1 at second order, 0 at first
    d_p = (m_prev - m) / k["p_r"]
    x_next = k["p_ratio"] * x - k["p_a"] * m - k["p_a"] * (k["p_rho"] * d_p)
    return x_next, (x, m, m_prev)
