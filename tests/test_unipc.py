"""Wan2.1's samplers against diffusers: the flow UniPC multistep solver (schedule bit for bit, the trajectory through
the compiled loop with and without guidance), flow-match Euler with a plain shift, and analytic known-answer checks
of the UniPC coefficients that need no PyTorch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax.sampling import (SOLVERS, euler_flow_schedule, get_solver, sample, unipc_coefficients,
                               unipc_flow_schedule, unipc_init, unipc_orders, unipc_step)
from sana_jax.sampling.schedules import SOLVER_NAMES
from tests.conftest import max_rel_err
from tests.test_sampling import diffusers_loop, replay_model, toy_inputs, toy_jax

try:
    import diffusers
    import torch
except ImportError:  # the parity tests need the `test` extra
    torch = diffusers = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch + diffusers (the `test` extra)")

STEP_TOL = 5e-6  # free-running trajectory with replayed outputs (measured ≤ 1.0e-6 at 50 steps)
LOOP_TOL = 1e-5  # the compiled loop with the toy model and CFG vs diffusers' loop
STEPS = (1, 2, 3, 10, 50)
SHIFTS = (1.0, 3.0, 5.0, 8.0)
SHAPE = (2, 3, 4, 6, 8)

_step = jax.jit(unipc_step)


def unipc_scheduler(n, shift):
    """The Wan2.1 scheduler as the diffusers converter writes it (defaults spelled out)."""
    s = diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                          num_train_timesteps=1000, flow_shift=shift, solver_order=2,
                                          solver_type="bh2", predict_x0=True, lower_order_final=True,
                                          final_sigmas_type="zero")
    s.set_timesteps(n)
    return s


# --------------------------------------------------------------------------------------------------- schedules
@needs_torch
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", STEPS)
def test_unipc_schedule_bit_exact(n, shift):
    ref, ours = unipc_scheduler(n, shift), unipc_flow_schedule(n, shift)
    assert ours.solver == "unipc"
    np.testing.assert_array_equal(ours.sigmas, ref.sigmas.numpy())
    assert ref.timesteps.dtype == torch.int64
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy().astype(np.float32))


@needs_torch
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", STEPS)
def test_euler_shift_schedule_bit_exact(n, shift):
    """Wan's alternative scheduler: FlowMatchEulerDiscreteScheduler(shift=s), set_timesteps(n), no dynamic shift."""
    ref = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift, num_train_timesteps=1000)
    ref.set_timesteps(n)
    ours = euler_flow_schedule(n, shift=shift)
    np.testing.assert_array_equal(ours.sigmas, ref.sigmas.numpy())
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())


def test_unipc_schedule_values():
    sched = unipc_flow_schedule(50, 3.0)
    assert list(sched.timesteps[:3]) == [999, 993, 986] and list(sched.timesteps[-3:]) == [162, 113, 60]
    assert sched.sigmas[0] == np.float32(1 - 1e-6) and sched.sigmas[-1] == 0 and sched.sigmas.shape == (51,)
    assert unipc_flow_schedule(1, 1.0).timesteps.tolist() == [999.0]  # σ0 = 1 − 1e-6 → int64(999.999)
    assert "unipc" in SOLVER_NAMES and SOLVERS["unipc"] is get_solver("unipc")


def test_unipc_coefficient_structure():
    for n in (1, 2, 3, 10):
        order = unipc_orders(n)
        assert order[0] == 1 and order[-1] == 1 and (order[1:-1] == 2).all()
        k = unipc_coefficients(unipc_flow_schedule(n, 3.0).sigmas)
        assert all(v.shape == (n,) and v.dtype == np.float32 for v in k.values())
        assert k["corr"][0] == 0 and (k["corr"][1:] == 1).all()  # no corrector before the first model output
        assert ((k["p_rho"] != 0) == (order == 2)).all()
        assert ((k["c_rho_d"][1:] != 0) == (order[:-1] == 2)).all()  # UniC's order is the previous predictor's
        assert k["p_ratio"][-1] == 0 and k["p_a"][-1] == -1  # σ_n = 0: x_n = m_{n−1}


# ------------------------------------------------------------------------- trajectories against diffusers
def diffusers_trajectory(scheduler, x, outs):
    xs = [x]
    for i, t in enumerate(scheduler.timesteps):
        x_t = torch.from_numpy(xs[-1])
        xs.append(scheduler.step(torch.from_numpy(outs[i]), t, x_t, return_dict=False)[0].numpy())
    return xs


@needs_torch
@pytest.mark.parametrize("shift", (3.0, 8.0))
@pytest.mark.parametrize("n", STEPS)
def test_unipc_steps_match_diffusers(n, shift):
    """Random model outputs replayed in both: every intermediate sample, then the compiled loop's result."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    outs = rng.standard_normal((n, *SHAPE)).astype(np.float32)
    ref = diffusers_trajectory(unipc_scheduler(n, shift), x, outs)
    sched = unipc_flow_schedule(n, shift)
    k = unipc_coefficients(sched.sigmas)
    y, state, errs = jnp.asarray(x), unipc_init(jnp.asarray(x)), []
    for i in range(n):  # free-running: the corrector changes the sample diffusers keeps, so no teacher forcing
        y, state = _step(y, outs[i], state, {name: v[i] for name, v in k.items()})
        errs.append(max_rel_err(y, ref[i + 1]))
    assert max(errs) <= STEP_TOL, errs
    out = sample(replay_model, {"outs": outs, "ts": sched.timesteps}, x, schedule=sched, cond=None)
    assert max_rel_err(out, ref[-1]) <= STEP_TOL


@needs_torch
@pytest.mark.parametrize("solver,n,shift,g", [("unipc", 1, 3.0, 5.0), ("unipc", 2, 3.0, 5.0), ("unipc", 3, 5.0, 5.0),
                                              ("unipc", 10, 3.0, 5.0), ("unipc", 10, 8.0, 1.0),
                                              ("unipc", 50, 5.0, 6.0), ("euler", 10, 5.0, 5.0),
                                              ("euler", 3, 3.0, 1.0)])
def test_wan_loop_matches_diffusers_with_cfg(solver, n, shift, g):
    """WanPipeline's denoising loop (t.expand(B), v = v_u + g·(v_c − v_u), scheduler.step) with a smooth nonlinear
    toy model in torch vs ``sample`` with the same model in jax."""
    x, cond, uncond = toy_inputs(seed=n)
    a = -0.4
    if solver == "unipc":
        ref_sched, sched = unipc_scheduler(n, shift), unipc_flow_schedule(n, shift)
    else:
        ref_sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
        ref_sched.set_timesteps(n)
        sched = euler_flow_schedule(n, shift)
    ref, seen = diffusers_loop(ref_sched, x, cond, uncond, g, a)
    np.testing.assert_array_equal(sched.timesteps, np.stack([s[0].float().numpy() for s in seen]))
    out = sample(toy_jax, {"a": jnp.float32(a)}, x, schedule=sched, cond={"emb": cond}, uncond={"emb": uncond},
                 guidance_scale=g)
    assert out.dtype == jnp.float32 and out.shape == x.shape
    assert max_rel_err(out, ref) <= LOOP_TOL


def test_unipc_new_schedule_same_length_does_not_retrace():
    traces = []

    def model(params, x, t, cond):
        traces.append(x.shape)
        return toy_jax(params, x, t, cond)

    x, cond, _ = toy_inputs()
    a = sample(model, {"a": jnp.float32(-0.4)}, x, schedule=unipc_flow_schedule(6, 3.0), cond={"emb": cond})
    b = sample(model, {"a": jnp.float32(-0.4)}, x, schedule=unipc_flow_schedule(6, 8.0), cond={"emb": cond})
    assert len(traces) == 1 and not np.allclose(a, b)


# ------------------------------------------------------------------------------------ analytic known answers
# A "model" whose data prediction depends on σ only, m(σ) = P(λ), λ = log((1−σ)/σ), i.e. v = (x − P(λ))/σ. The flow
# ODE then has the closed-form solution x(σ) = σ·K + α·Q(λ), α = 1 − σ, with Q the polynomial for which e^λ·Q(λ) is
# an antiderivative of e^λ·P(λ) (d(x/σ)/dλ = e^λ·m). The UniC-2 corrector integrates quadratic P exactly; UniP-2
# (bh2, ρ = ½, diffusers' simplified predictor) and UniC-1 (ρ = ½) integrate constant P exactly and have the
# known error −α_t·P'·(h + B + h·B/2), B = expm1(−h), for linear P.
def _poly_exact(sig, coeffs, k):
    """x(σ) for P(λ) = Σ c_j λ^j, K the integration constant (the 'noise')."""
    sig, lam = np.float64(sig), _lam(sig)
    q, p = 0.0, np.polynomial.Polynomial(coeffs)
    sign = 1.0
    while p.degree() >= 0 and np.any(p.coef):  # Q = P − P' + P'' − …
        q = q + sign * p(lam)
        p, sign = p.deriv(), -sign
    return sig * k + (1 - sig) * q


def _lam(sig):
    sig = np.float64(sig)
    return np.log1p(-sig) - np.log(sig)


@pytest.mark.parametrize("shift", (1.0, 3.0, 8.0))
def test_unipc_corrector_exact_for_quadratic_data_prediction(shift):
    n = 12
    sched = unipc_flow_schedule(n, shift)
    s = sched.sigmas.astype(np.float64)
    k = unipc_coefficients(sched.sigmas)
    kk = np.random.default_rng(0).standard_normal(64)
    for coeffs, exact in (([0.3, 0.2, -0.04], True), ([0.3, 0.2, -0.04, 0.01], False)):
        poly = np.polynomial.Polynomial(coeffs)
        errs = []
        for i in range(2, n):  # UniC-2 from step 2 on; teacher-forced with the exact previous sample and outputs
            x_prev = _poly_exact(s[i - 1], coeffs, kk)
            state = tuple(jnp.asarray(np.broadcast_to(v, kk.shape), jnp.float32)
                          for v in (x_prev, poly(_lam(s[i - 1])), poly(_lam(s[i - 2]))))
            x_i = _poly_exact(s[i], coeffs, kk)  # where the model is evaluated (UniC does not use it beyond m_i)
            v = (x_i - poly(_lam(s[i]))) / s[i]
            _, (x_corr, _, _) = _step(jnp.asarray(x_i, jnp.float32), jnp.asarray(v, jnp.float32), state,
                                      {name: c[i] for name, c in k.items()})
            errs.append(max_rel_err(x_corr, x_i))
        if exact:
            assert max(errs) <= 2e-6, errs  # float32 rounding (measured ≤ 1.4e-7)
        else:  # a cubic term is outside UniC-2's exactness: the check is not vacuous
            assert max(errs) >= 1e-4, errs  # (measured 3e-4 … 7e-4)


@pytest.mark.parametrize("shift", (1.0, 3.0, 8.0))
def test_unipc_known_error_for_linear_data_prediction(shift):
    """For P(λ) = c₀ + c₁λ, a rule x_t = (σ_t/σ_s)·x_s − α_t·B·m_s − α_t·B·ρ·c₁h (UniP-1: ρ = 0; UniP-2 and UniC-1:
    ρ = ½, the D term being exactly c₁h) is off by −α_t·c₁·(h + B + ρ·h·B), B = expm1(−h), h = λ_t − λ_s."""
    n = 8
    sched = unipc_flow_schedule(n, shift)
    s = sched.sigmas.astype(np.float64)
    k = unipc_coefficients(sched.sigmas)
    kk = np.random.default_rng(1).standard_normal(64)
    coeffs = [0.4, -0.25]
    poly = np.polynomial.Polynomial(coeffs)

    def known_error(t, s_, rho):
        h = _lam(s[t]) - _lam(s[s_])
        b = np.expm1(-h)
        return -(1 - s[t]) * coeffs[1] * (h + b + rho * h * b)

    order, worst = unipc_orders(n), 0.0
    for i in range(n - 1):  # the last step (to σ = 0) is checked by test_unipc_coefficient_structure
        m = [poly(_lam(s[j])) if j >= 0 else 0.0 for j in (i - 1, i - 2)]
        x_prev = _poly_exact(s[i - 1], coeffs, kk) if i >= 1 else np.zeros_like(kk)
        state = tuple(jnp.asarray(np.broadcast_to(v, kk.shape), jnp.float32) for v in (x_prev, *m))
        x_i = _poly_exact(s[i], coeffs, kk)  # teacher-forced: the exact sample and previous outputs
        v = (x_i - poly(_lam(s[i]))) / s[i]
        x_next, (x_corr, _, _) = _step(jnp.asarray(x_i, jnp.float32), jnp.asarray(v, jnp.float32), state,
                                       {name: c[i] for name, c in k.items()})
        # UniC-2 (i ≥ 2) is exact here; UniC-1 (i = 1) has the ρ = ½ error
        corr_err = known_error(i, i - 1, 0.5) if i == 1 else 0.0
        pred_err = known_error(i + 1, i, 0.5 if order[i] == 2 else 0.0)
        ref_next = _poly_exact(s[i + 1], coeffs, kk) + s[i + 1] / s[i] * corr_err + pred_err
        scale = np.abs(x_i).max()
        assert np.abs(np.asarray(x_corr) - (x_i + corr_err)).max() <= 2e-6 * scale, i
        assert np.abs(np.asarray(x_next) - ref_next).max() <= 2e-6 * scale, i
        worst = max(worst, abs(pred_err) / scale)
    assert worst >= 1e-3  # the errors checked are far above the tolerance: a wrong ρ, r or B would show


def test_unipc_gaussian_data_reaches_exact_flow():
    """Exact velocity of x₀ ~ N(μ, s²) per element: v*(x, σ) = −μ + (σ − (1−σ)s²)/V·(x − (1−σ)μ),
    V = (1−σ)²s² + σ². The flow maps noise z to (1−σ)μ + √V·z; diffusers' last step returns the posterior mean
    E[x₀ | x] = x − σ·v* at the last nonzero σ. UniPC (20 steps, shift 3 as Wan) lands much closer to that answer
    than Euler, and its samples have the right mean and spread. (An end-to-end sanity check; the tests above are the
    ones that pin each coefficient: a 0.1% change in any of them fails them.)"""
    c = 6
    mu = np.linspace(-1.0, 1.0, c).astype(np.float32)
    sd = np.linspace(1.5, 0.5, c).astype(np.float32)
    x = np.random.default_rng(0).standard_normal((8192, c)).astype(np.float32)

    def model(p, x, t, cond):  # the σ of the step, looked up from the timestep the loop passes
        sig = p["sig"][jnp.argmin(jnp.abs(p["ts"] - t[0]))]
        var = (1 - sig) ** 2 * p["sd"] ** 2 + sig ** 2
        return -p["mu"] + (sig - (1 - sig) * p["sd"] ** 2) / var * (x - (1 - sig) * p["mu"])

    def error(sched):
        s0, sl = np.float64(sched.sigmas[0]), np.float64(sched.sigmas[-2])
        mu64, sd64 = mu.astype(np.float64), sd.astype(np.float64)
        var = lambda s: (1 - s) ** 2 * sd64 ** 2 + s ** 2  # noqa: E731
        z = (x - (1 - s0) * mu64) / np.sqrt(var(s0))
        xl = (1 - sl) * mu64 + np.sqrt(var(sl)) * z
        target = mu64 + (1 - sl) * sd64 ** 2 / var(sl) * (xl - (1 - sl) * mu64)  # E[x₀ | x_σ = xl]
        p = {"ts": sched.timesteps, "sig": sched.sigmas[:-1], "mu": mu, "sd": sd}
        out = np.asarray(sample(model, p, x, schedule=sched, cond=None))
        return np.sqrt(np.mean((out - target) ** 2)), out  # RMS error

    err_u, out = error(unipc_flow_schedule(20, 3.0))
    err_e, _ = error(euler_flow_schedule(20, 3.0))
    assert err_u <= 0.03 and err_u <= 0.3 * err_e, (err_u, err_e)  # measured RMS 0.018 vs 0.092
    # the marginal: 8192 samples (standard error of the mean ≤ 0.017); the final x₀ step shrinks the spread ≤ 5%
    np.testing.assert_allclose(out.mean(0), mu, atol=0.07)
    np.testing.assert_allclose(out.std(0), sd, rtol=0.08)
