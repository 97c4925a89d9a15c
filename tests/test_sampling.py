"""Samplers against diffusers: schedules bit for bit, each solver update step by step, and the compiled loop
(with classifier-free guidance) against diffusers' scheduler loop driven by the same toy model in torch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sana_jax.errors import InputError
from sana_jax.sampling import (DISTILLED_SIGMAS, LONGSANA_TIMESTEPS, distilled_schedule, dpm_flow_schedule,
                               dpm_solver_pp_2m_coefficients, dpm_solver_pp_2m_step, euler_coefficients,
                               euler_flow_schedule, euler_step, flow_shift, longsana_schedule, renoise, sample,
                               time_shift)
from tests.conftest import max_rel_err

try:
    import diffusers
    import torch
except ImportError:  # the parity tests need the `test` extra
    torch = diffusers = None
needs_torch = pytest.mark.skipif(torch is None, reason="needs torch + diffusers (the `test` extra)")

STEP_TOL = 2e-6  # per-step max relative error, float32 (measured ≤ 2.2e-7; the brief asks ≤ 1e-5)
LOOP_TOL = 1e-5  # whole loop vs diffusers' loop (measured ≤ 7.1e-7)
STEPS = (1, 2, 10, 50)
SHIFTS = (7.0, 8.0)
SHAPE = (2, 3, 4, 6, 8)  # (B, T, H, W, C), channels-last like the package


def dpm_scheduler(n, shift):
    s = diffusers.DPMSolverMultistepScheduler(flow_shift=shift, use_flow_sigmas=True,
                                              prediction_type="flow_prediction")  # SANA-Video (conversion script)
    s.set_timesteps(n)
    return s


def euler_scheduler(n=None, shift=1.0, sigmas=None):
    s = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    s.set_timesteps(n, sigmas=sigmas) if sigmas is not None else s.set_timesteps(n)
    return s


# --------------------------------------------------------------------------------------------------- schedules
@needs_torch
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", STEPS)
def test_schedules_bit_exact(n, shift):
    ref, ours = dpm_scheduler(n, shift), dpm_flow_schedule(n, shift)
    np.testing.assert_array_equal(ours.sigmas, ref.sigmas.numpy())
    assert ref.timesteps.dtype == torch.int64  # the model is fed integer timesteps
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy().astype(np.float32))
    ref, ours = euler_scheduler(n, shift), euler_flow_schedule(n, shift)
    np.testing.assert_array_equal(ours.sigmas, ref.sigmas.numpy())
    np.testing.assert_array_equal(ours.timesteps, ref.timesteps.numpy())


def test_sana_timesteps_from_spec():
    t = dpm_flow_schedule(50, 8.0).timesteps
    assert list(t[:6]) == [999, 997, 994, 991, 989, 986] and list(t[-4:]) == [409, 337, 249, 140]
    assert dpm_flow_schedule(50, 8.0).sigmas[-1] == 0


@needs_torch
def test_dynamic_shift_schedule():
    mu = 1.3
    ref = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    ref.set_timesteps(12, mu=mu)
    ours = euler_flow_schedule(12, mu=mu)
    np.testing.assert_array_equal(ours.sigmas, ref.sigmas.numpy())
    np.testing.assert_allclose(time_shift(mu, 1.0, np.float64(0.5)), np.exp(mu) / (np.exp(mu) + 1.0))
    np.testing.assert_allclose(flow_shift(np.array([0.0, 0.5, 1.0]), 8.0), [0.0, 8 / 9, 1.0])


# ------------------------------------------------------------------------------- solvers, one step at a time
def random_outputs(n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(SHAPE).astype(np.float32), rng.standard_normal((n, *SHAPE)).astype(np.float32)


def diffusers_trajectory(scheduler, x, outs):
    xs = [x]
    for i, t in enumerate(scheduler.timesteps):
        x_t = torch.from_numpy(xs[-1])
        xs.append(scheduler.step(torch.from_numpy(outs[i]), t, x_t, return_dict=False)[0].numpy())
    return xs


_dpm_step = jax.jit(dpm_solver_pp_2m_step)
_euler_step = jax.jit(euler_step)


@needs_torch
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", STEPS)
def test_dpm_solver_steps_match_diffusers(n, shift):
    x, outs = random_outputs(n, seed=n)
    ref = diffusers_trajectory(dpm_scheduler(n, shift), x, outs)
    k = dpm_solver_pp_2m_coefficients(dpm_flow_schedule(n, shift).sigmas)
    assert (k["c"] != 0).sum() == max(n - 2, 0)  # first and last steps are first order
    prev = jnp.zeros(SHAPE, jnp.float32)
    errs = []
    for i in range(n):  # teacher-forced: same x_i and model output as diffusers at every step
        x_next, prev = _dpm_step(ref[i], outs[i], prev, {name: v[i] for name, v in k.items()})
        errs.append(max_rel_err(x_next, ref[i + 1]))
    assert max(errs) <= STEP_TOL, errs
    # free-running through the compiled loop (the "model" replays the same outputs)
    out = sample(replay_model, {"outs": outs, "ts": dpm_flow_schedule(n, shift).timesteps}, x,
                 schedule=dpm_flow_schedule(n, shift), cond=None)
    assert max_rel_err(out, ref[-1]) <= STEP_TOL


@needs_torch
@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("n", STEPS)
def test_euler_steps_match_diffusers(n, shift):
    x, outs = random_outputs(n, seed=100 + n)
    ref = diffusers_trajectory(euler_scheduler(n, shift), x, outs)
    dt = euler_coefficients(euler_flow_schedule(n, shift).sigmas)["dt"]
    errs = [max_rel_err(_euler_step(ref[i], outs[i], dt[i]), ref[i + 1]) for i in range(n)]
    assert max(errs) <= STEP_TOL, errs
    sched = euler_flow_schedule(n, shift)
    out = sample(replay_model, {"outs": outs, "ts": sched.timesteps}, x, schedule=sched, cond=None)
    assert max_rel_err(out, ref[-1]) <= STEP_TOL


def replay_model(params, x, t, cond):
    """A 'model' returning pre-drawn outputs, selected by the timestep it is called with."""
    i = jnp.argmin(jnp.abs(params["ts"] - t[0]))
    return jnp.broadcast_to(params["outs"][i], x.shape)


# ------------------------------------------------------------------------------ the compiled loop, with CFG
def toy_jax(params, x, t, cond):
    tt = (t / 1000.0)[:, None, None, None, None]
    c = jnp.tanh(cond["emb"])[:, None, None, None, :]
    return params["a"] * x * (1.0 + tt) + c * (0.5 + tt) - 0.3 * jnp.sin(x)


def toy_torch(params, x, t, cond):
    tt = (t.float() / 1000.0)[:, None, None, None, None]
    c = torch.tanh(cond)[:, None, None, None, :]
    return params["a"] * x * (1.0 + tt) + c * (0.5 + tt) - 0.3 * torch.sin(x)


def diffusers_loop(scheduler, x, cond, uncond, g, a):
    """SanaVideoPipeline.__call__'s denoising loop with the toy model (float32)."""
    latents, do_cfg = torch.from_numpy(x), g > 1.0
    emb = torch.from_numpy(np.concatenate([uncond, cond]) if do_cfg else cond)
    seen = []
    for t in scheduler.timesteps:
        model_in = torch.cat([latents] * 2) if do_cfg else latents
        timestep = t.expand(model_in.shape[0])
        seen.append(timestep.clone())
        pred = toy_torch({"a": a}, model_in, timestep, emb).float()
        if do_cfg:
            pred_u, pred_c = pred.chunk(2)
            pred = pred_u + g * (pred_c - pred_u)
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]
    return latents.numpy(), seen


def toy_inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(SHAPE).astype(np.float32)
    cond = rng.standard_normal((SHAPE[0], SHAPE[-1])).astype(np.float32)
    uncond = rng.standard_normal((SHAPE[0], SHAPE[-1])).astype(np.float32)
    return x, cond, uncond


@needs_torch
@pytest.mark.parametrize("solver,n,shift,g", [("dpm", 50, 8.0, 4.5), ("dpm", 10, 7.0, 4.5), ("dpm", 20, 8.0, 1.0),
                                              ("euler", 30, 8.0, 4.5), ("euler", 7, 7.0, 1.0)])
def test_loop_matches_diffusers_with_cfg(solver, n, shift, g):
    x, cond, uncond = toy_inputs()
    a = -0.4
    ref_sched = dpm_scheduler(n, shift) if solver == "dpm" else euler_scheduler(n, shift)
    ref, seen = diffusers_loop(ref_sched, x, cond, uncond, g, a)
    sched = dpm_flow_schedule(n, shift) if solver == "dpm" else euler_flow_schedule(n, shift)
    np.testing.assert_array_equal(sched.timesteps, np.stack([s[0].float().numpy() for s in seen]))
    out = sample(toy_jax, {"a": jnp.float32(a)}, x, schedule=sched, cond={"emb": cond}, uncond={"emb": uncond},
                 guidance_scale=g)
    assert out.dtype == jnp.float32 and out.shape == x.shape
    assert max_rel_err(out, ref) <= LOOP_TOL


# ------------------------------------------------------------------------------ compile once, progress hook
def test_loop_compiles_once_and_cfg_is_static():
    traces = []

    def model(params, x, t, cond):  # a fresh function: its own jit cache entries
        traces.append((x.shape, t.shape))
        return toy_jax(params, x, t, cond)

    x, cond, uncond = toy_inputs()
    sched = dpm_flow_schedule(6, 8.0)
    kw = {"schedule": sched, "cond": {"emb": cond}, "uncond": {"emb": uncond}}
    a = sample(model, {"a": jnp.float32(-0.4)}, x, guidance_scale=4.5, **kw)
    b = sample(model, {"a": jnp.float32(-0.4)}, x + 1.0, guidance_scale=6.0, progress=lambda i: None, **kw)
    sample(model, {"a": jnp.float32(-0.4)}, x - 1.0, guidance_scale=6.0, progress=lambda i: None, **kw)
    sample(model, {"a": jnp.float32(-0.3)}, x, guidance_scale=4.5, schedule=dpm_flow_schedule(6, 7.0),
           cond={"emb": cond + 1}, uncond={"emb": uncond})  # new schedule values, params, prompt: same program
    assert not np.allclose(a, b)
    assert traces == [((2 * SHAPE[0], *SHAPE[1:]), (2 * SHAPE[0],))] * 2  # with / without the progress hook
    # g = 1 skips the unconditional half (a static decision: one more trace, batch B)
    sample(model, {"a": jnp.float32(-0.4)}, x, schedule=sched, cond={"emb": cond}, guidance_scale=1.0)
    assert traces[-1] == (SHAPE, (SHAPE[0],)) and len(traces) == 3


@pytest.mark.parametrize("n", [1, 7])
def test_progress_hook_called_once_per_step(n):
    calls = []
    x, cond, _ = toy_inputs()
    out = sample(toy_jax, {"a": jnp.float32(-0.4)}, x, schedule=dpm_flow_schedule(n, 8.0), cond={"emb": cond},
                 progress=calls.append)
    jax.block_until_ready(out)
    jax.effects_barrier()
    assert calls == list(range(n))


def test_bad_inputs():
    x, cond, _ = toy_inputs()
    with pytest.raises(InputError, match="uncond"):
        sample(toy_jax, {"a": 0.0}, x, schedule=dpm_flow_schedule(3), cond={"emb": cond}, guidance_scale=4.5)
    with pytest.raises(InputError, match="key"):
        sample(toy_jax, {"a": 0.0}, x, schedule=longsana_schedule(), cond={"emb": cond})
    with pytest.raises(InputError, match="num_inference_steps"):
        dpm_flow_schedule(0)


# ----------------------------------------------------------------------------- LTX-2 distilled, LongSANA
def test_distilled_schedule_and_renoise():
    sched = distilled_schedule()
    assert DISTILLED_SIGMAS == (0.909375, 0.725, 0.421875, 0.0)
    np.testing.assert_array_equal(sched.sigmas, np.float32(DISTILLED_SIGMAS))
    np.testing.assert_array_equal(sched.timesteps, np.float32(DISTILLED_SIGMAS[:3]) * np.float32(1000))
    assert sched.solver == "euler" and distilled_schedule(DISTILLED_SIGMAS[:3]).sigmas.tolist() == sched.sigmas.tolist()
    rng = np.random.default_rng(3)
    x, eps = rng.standard_normal((2, 5, 7)).astype(np.float32), rng.standard_normal((2, 5, 7)).astype(np.float32)
    z = renoise(x, eps, 0.909375)
    assert z.dtype == jnp.float32
    np.testing.assert_allclose(z, 0.909375 * eps + 0.090625 * x, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(renoise(x, eps, 0.0), x)
    # stage 2 = re-noise then 3 Euler steps without guidance; compare with ltx-core's x0 form (ltx2.md §3.3)
    x5, cond, _ = toy_inputs(seed=4)
    noise = np.random.default_rng(5).standard_normal(SHAPE).astype(np.float32)
    z = renoise(x5, noise, sched.sigmas[0])
    out = sample(toy_jax, {"a": jnp.float32(-0.4)}, z, schedule=sched, cond={"emb": cond})
    ref = np.asarray(z, np.float64)
    s = np.float64(DISTILLED_SIGMAS)
    for i in range(3):
        v = np.asarray(toy_jax({"a": -0.4}, jnp.asarray(ref, jnp.float32), jnp.full((SHAPE[0],), 1000 * s[i],
                                                                                      jnp.float32), {"emb": cond}))
        x0 = ref - s[i] * v
        ref = ref + (s[i + 1] - s[i]) * (ref - x0) / s[i]
    assert max_rel_err(out, ref) <= 1e-5


@needs_torch
def test_distilled_matches_diffusers_flow_euler():
    sched, x, (_, cond, _) = distilled_schedule(), None, toy_inputs(seed=6)
    noise, x = (np.random.default_rng(7).standard_normal(SHAPE).astype(np.float32) for _ in range(2))
    z = np.asarray(renoise(x, noise, DISTILLED_SIGMAS[0]))
    ref, _ = diffusers_loop(euler_scheduler(sigmas=list(DISTILLED_SIGMAS[:3])), z, cond, None, 1.0, -0.4)
    out = sample(toy_jax, {"a": jnp.float32(-0.4)}, z, schedule=sched, cond={"emb": cond})
    assert max_rel_err(out, ref) <= LOOP_TOL


@needs_torch
def test_longsana_schedule_and_renoise_loop():
    sched = longsana_schedule()
    assert LONGSANA_TIMESTEPS == (1000, 960, 889, 727) and sched.solver == "renoise"
    np.testing.assert_array_equal(sched.timesteps, np.float32(LONGSANA_TIMESTEPS))
    assert longsana_schedule(LONGSANA_TIMESTEPS + (0,)).sigmas.tolist() == sched.sigmas.tolist()
    # NVlabs/Sana FlowMatchScheduler(shift=7, sigma_min=0, extra_one_step=True).set_timesteps(1000), in torch
    table = torch.linspace(1.0, 0.0, 1001)[:-1]
    table = 7.0 * table / (1 + 6.0 * table)
    table_t = table * 1000

    def lookup(t):
        return table[torch.argmin((table_t - t).abs())]

    np.testing.assert_allclose(sched.sigmas[:-1], [float(lookup(t)) for t in LONGSANA_TIMESTEPS], rtol=1e-6)
    assert sched.sigmas[0] == 1.0 and sched.sigmas[-1] == 0.0
    # LongLiveFlowEuler's inner loop for one chunk (x0 in float64, add_noise to the next timestep, output x0)
    x, cond, _ = toy_inputs(seed=8)
    key = jax.random.key(11, impl="rbg")  # any key impl works; rbg compiles faster than threefry on CPU
    out = sample(toy_jax, {"a": jnp.float32(-0.4)}, x, schedule=sched, cond={"emb": cond}, key=key)
    lat, k = torch.from_numpy(x), key
    for i, t in enumerate(LONGSANA_TIMESTEPS):
        v = toy_torch({"a": -0.4}, lat, torch.full((SHAPE[0],), float(t)), torch.from_numpy(cond))
        x0 = (lat.double() - lookup(t).double() * v.double()).float()
        if i == len(LONGSANA_TIMESTEPS) - 1:
            lat = x0
            break
        k, sub = jax.random.split(k)
        eps = torch.from_numpy(np.asarray(jax.random.normal(sub, SHAPE, jnp.float32)))
        s_next = lookup(LONGSANA_TIMESTEPS[i + 1])
        lat = (1 - s_next) * x0 + s_next * eps
    assert max_rel_err(out, lat.numpy()) <= LOOP_TOL


# ---------------------------------------------------------------------- a real (tiny) DiT, and 8 fake devices
def test_loop_with_tiny_sana_video_model():
    """The pattern a pipeline uses: nnx.split once, merge inside model_fn; CFG batched vs two separate calls."""
    from flax import nnx

    from tests.helpers import tiny_model

    model = tiny_model()
    graphdef, state = nnx.split(model)

    def model_fn(params, x, t, cond):
        return nnx.merge(graphdef, params)(x, cond["text"], t, cond["mask"])

    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 4, 6, 4)).astype(np.float32)
    cond = {"text": rng.standard_normal((1, 5, 8)).astype(np.float32), "mask": np.ones((1, 5), np.int32)}
    uncond = {"text": rng.standard_normal((1, 5, 8)).astype(np.float32), "mask": np.array([[1, 1, 0, 0, 0]], np.int32)}
    sched = dpm_flow_schedule(4, 8.0)
    out = sample(model_fn, state, x, schedule=sched, cond=cond, uncond=uncond, guidance_scale=6.0)
    k = dpm_solver_pp_2m_coefficients(sched.sigmas)
    forward = jax.jit(model_fn)
    ref, prev = jnp.asarray(x), jnp.zeros(x.shape, jnp.float32)
    for i in range(sched.num_steps):  # a Python loop with separate cond / uncond calls
        t = jnp.full((1,), sched.timesteps[i])
        v_c, v_u = forward(state, ref, t, cond), forward(state, ref, t, uncond)
        ref, prev = dpm_solver_pp_2m_step(ref, v_u + 6.0 * (v_c - v_u), prev, {n: v[i] for n, v in k.items()})
    assert max_rel_err(out, ref) <= 1e-5


SHARDED = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from sana_jax.sampling import sample, dpm_flow_schedule, longsana_schedule

    def model(params, x, t, cond):
        return params * x * (1 + t[:, None, None] / 1000) + jnp.tanh(cond)[:, None, :]

    assert jax.device_count() == 8
    mesh = jax.make_mesh((8,), ("d",))
    x = np.random.default_rng(0).standard_normal((2, 16, 4)).astype(np.float32)
    c, u = np.ones((2, 4), np.float32), -np.ones((2, 4), np.float32)
    kw = dict(schedule=dpm_flow_schedule(6), cond=c, uncond=u, guidance_scale=4.5)
    ref = sample(model, jnp.float32(-0.3), x, **kw)
    ref_r = sample(model, jnp.float32(-0.3), x, schedule=longsana_schedule(), cond=c, key=jax.random.key(0))
    with jax.set_mesh(mesh):
        xs = jax.device_put(x, NamedSharding(mesh, P(None, "d")))
        calls = []
        out = sample(model, jnp.float32(-0.3), xs, progress=calls.append, **kw)  # unordered callbacks here
        out_r = sample(model, jnp.float32(-0.3), xs, schedule=longsana_schedule(), cond=c, key=jax.random.key(0))
        jax.block_until_ready((out, out_r)); jax.effects_barrier()
    assert sorted(calls) == list(range(6)), calls
    assert out.sharding.spec == P(None, "d", None), out.sharding
    assert float(jnp.abs(out - ref).max()) <= 1e-6 and float(jnp.abs(out_r - ref_r).max()) <= 1e-5
    print("OK")
""")


def test_loop_sharded_on_8_fake_devices():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", SHARDED], env=env, cwd=root, capture_output=True, text=True,
                       timeout=300, check=False)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]
