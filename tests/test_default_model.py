"""The embedded default model: it ships in the package, `sana-jax generate` uses it without --model, and its videos
show the colour and the motion the prompt asks for on combinations it never saw as captions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sana_jax.cli import main
from sana_jax.demo import default_model_path, models, recipe, shapes
from sana_jax.errors import InputError

DEFAULT = default_model_path()
pytestmark = pytest.mark.skipif(not (DEFAULT / "model_index.json").exists(), reason="default model not built")


@pytest.fixture(scope="module")
def pipe():
    from sana_jax.pipelines import SanaVideoPipeline

    return SanaVideoPipeline.from_pretrained(DEFAULT)


def test_ships_small_and_complete():
    size = sum(f.stat().st_size for f in DEFAULT.rglob("*") if f.is_file())
    assert size <= 20 * 2 ** 20, f"{size / 2 ** 20:.1f} MiB"
    index = json.loads((DEFAULT / "model_index.json").read_text())
    for component in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (DEFAULT / component).is_dir() and component in index
    record = json.loads((DEFAULT / "recipe.json").read_text())
    assert record["quality_on_held_out"]["colour"] >= 0.8


def test_the_shipped_dit_is_the_recipes_preconditioned_dit():
    """The DiT loads wrapped in the preconditioning of the recipe run that made it (config.json's "preconditioning"
    key: noise scale and target); the recipe builds the same wrapper from scratch, and the plain one without a noise
    scale."""
    import converters
    from flax import nnx

    from sana_jax.models import PreconditionedTransformer, SanaVideoTransformer

    shipped = converters.load(DEFAULT / "transformer")
    settings = json.loads((DEFAULT / "recipe.json").read_text())["settings"]
    assert type(shipped) is PreconditionedTransformer
    assert shipped.config == models.transformer_config(settings["noise_scale"], settings["target"])
    assert settings["noise_scale"] == recipe.DEFAULTS["noise_scale"]
    fresh = nnx.eval_shape(lambda: recipe.starting_models(0, target=settings["target"])[0])
    assert type(fresh) is PreconditionedTransformer and fresh.config == shipped.config
    plain = nnx.eval_shape(lambda: recipe.starting_models(0, noise_scale=None)[0])
    assert type(plain) is SanaVideoTransformer


def test_held_out_prompts_are_unseen_combinations():
    prompts = shapes.held_out_prompts()
    assert len(prompts) == len(set(prompts)) == 16
    training = {shapes.caption(*t) for t in shapes.TRAIN_TRIPLES}
    assert not set(prompts) & training
    for colour, shape, direction in shapes.HELD_OUT:  # every word pair of a held-out prompt was trained on
        assert any(t[0] == colour and t[2] == direction for t in shapes.TRAIN_TRIPLES)
        assert any(t[0] == colour and t[1] == shape for t in shapes.TRAIN_TRIPLES)
        assert any(t[1] == shape and t[2] == direction for t in shapes.TRAIN_TRIPLES)


@pytest.mark.parametrize("paths", shapes.PATHS)
def test_measure_reads_rendered_clips(paths):
    for frames, caption in shapes.dataset(24, seed=11, paths=paths):
        assert shapes.measure(frames, wrap=paths == "wrap") == shapes.parse_prompt(caption), caption
    assert shapes.measure(np.full((17, 64, 64, 3), 90, np.uint8)) == (None, None)


def test_dataset_on_one_background_never_names_it():
    """``shapes.dataset(background=...)``: every clip on that background, no caption naming one (the default names
    the background in about half the captions)."""
    fixed = list(shapes.dataset(6, size=32, frames=3, seed=5, background="white"))
    assert all((video[:, 0, 0] == shapes.BACKGROUNDS["white"]).all() for video, _ in fixed)
    assert not any("background" in caption for _, caption in fixed)
    default = list(shapes.dataset(6, size=32, frames=3, seed=5))
    assert any("background" in caption for _, caption in default)


def test_unnamed_background_is_one_background():
    """``unnamed_background``: clips whose caption names no background are all on that one; the named ones, the
    shapes and the captions are the default draws'."""
    default = list(shapes.dataset(24, size=32, frames=3, seed=4))
    fixed = list(shapes.dataset(24, size=32, frames=3, seed=4, unnamed_background="gray"))
    assert [c for _, c in fixed] == [c for _, c in default]
    unnamed = [(v, w) for (v, c), (w, _) in zip(fixed, default) if "background" not in c]
    assert unnamed and all((v[:, 0, 0] == shapes.BACKGROUNDS["gray"]).all() for v, _ in unnamed)
    assert any(not (v[:, 0, 0] == w[:, 0, 0]).all() for v, w in unnamed)  # some were on another background
    assert all((v == w).all() for (v, c), (w, _) in zip(fixed, default) if "background" in c)
    with pytest.raises(InputError, match="background"):
        next(shapes.dataset(1, unnamed_background="plaid"))


def test_lane_paths_cross_the_middle():
    """``paths="lane"``: the shape crosses the frame edge to edge along its direction and stays within
    LANE_JITTER of the middle across it, so the prompt alone nearly fixes where it is in every frame."""
    rng = np.random.default_rng(3)
    for triple in [("red", "circle", d) for d in shapes.DIRECTIONS]:
        clip = shapes.random_clip(rng, triple, 64, 9, paths="lane")
        dx, dy = shapes.DIRECTIONS[triple[2]]
        across = clip.y0 if dx else clip.x0
        assert abs(across - 32) <= shapes.LANE_JITTER * 64
        start, travel = (clip.x0 if dx else clip.y0), clip.speed * 8
        assert travel > 0.6 * 64 and clip.radius < start + (dx + dy) * travel < 64 - clip.radius


def test_wrap_paths_go_round_for_ever():
    """``paths="wrap"``: the frame is a torus — a shape leaving one edge re-enters from the opposite one at the same
    speed, frames ``first`` on continue the same clip, and the wrap-aware measure reads the direction of a long
    clip whose centroid jumps back at every lap (the plain one is fooled)."""
    rng = np.random.default_rng(1)
    clip = shapes.random_clip(rng, ("red", "circle", "left"), 64, 9, background="black", paths="wrap")
    assert shapes.WRAP_SPEED[0] * 64 <= clip.speed <= shapes.WRAP_SPEED[1] * 64
    long = shapes.render(clip, 64, 60)
    np.testing.assert_array_equal(shapes.render(clip, 64, 20, first=40), long[40:])
    red = np.linalg.norm(long.astype(float) - shapes.COLOURS["red"], axis=-1) < 60
    assert any(red[t, :, 0].any() and red[t, :, -1].any() for t in range(60))  # split across the edge
    assert red.sum(axis=(1, 2)).std() < 0.05 * red.sum(axis=(1, 2)).mean()  # never clipped: the same area
    assert shapes.measure(long, wrap=True) == ("red", "left")
    assert shapes.measure(long) != ("red", "left")


def test_background_cleanliness():
    clip = next(shapes.dataset(1, seed=2, paths="wrap", background="black"))[0]
    black = shapes.BACKGROUNDS["black"]
    np.testing.assert_array_equal(shapes.background_cleanliness(clip, black), 1.0)
    noisy = clip.copy()
    noisy[:, :8, :8] = 200  # an 8×8 block of noise in a corner, away from the shape
    assert np.all(shapes.background_cleanliness(noisy, black) < 1.0)
    assert len(shapes.train_prompts()) == 4 * len(shapes.TRAIN_TRIPLES)


def test_recipe_can_start_from_an_earlier_dit(tmp_path):
    """``dit_from``: the DiT and text encoder come from that pipeline folder, weight for weight; a folder without
    them is refused by name, before anything is rendered or written."""
    import converters
    from converters.nnx_state import flat_params

    from sana_jax.errors import InputError

    transformer, text_encoder = recipe.starting_models(0, DEFAULT, target="edm")  # retargeted: the same weights
    assert transformer.config.preconditioning.target == "edm"
    for model, component in ((transformer, "transformer"), (text_encoder, "text_encoder")):
        got, want = flat_params(model), flat_params(converters.load(DEFAULT / component))
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(want[name]), err_msg=name)
    frames, captions = recipe.render_clips(4, seed=0)
    pipe, dataset = recipe.untrained_pipeline(tmp_path, converters.load(DEFAULT / "vae"), frames, captions, seed=0,
                                              start=(transformer, text_encoder))
    assert dataset.size == 4 and pipe.transformer.config == transformer.config
    with pytest.raises(InputError, match="not a demo pipeline folder"):
        recipe.make_default_model(tmp_path / "n", dit_from=DEFAULT / "vae")
    with pytest.raises(InputError, match="preconditioning None"):  # a velocity DiT cannot continue this one
        recipe.starting_models(0, DEFAULT, noise_scale=None)
    assert not list(tmp_path.glob("n*"))


@pytest.fixture(scope="module")
def held_out(pipe):
    result = recipe.evaluate(pipe, shapes.held_out_prompts(), seed=0)
    wrong = [(v["prompt"], v["colour"], v["direction"]) for v in result["videos"]
             if not (v["colour_ok"] and v["direction_ok"])]
    print(f"held-out score {result['score']:.0%} (colour {result['colour']:.0%}, direction "
          f"{result['direction']:.0%}); wrong: {wrong}")
    return result


def test_demo_colour_follows_unseen_prompts(held_out):
    """The object's dominant colour matches the prompt in ≥ 80 % of the 16 unseen combinations (seed 0)."""
    assert held_out["colour"] >= 0.8, held_out["videos"]


def test_demo_quality_on_held_out_prompts(held_out):
    """The issue's bar: colour AND direction right in ≥ 80 % of the 16 unseen combinations (seed 0; the shipped
    model: 14 of 16, recorded in its recipe.json)."""
    assert held_out["score"] >= 0.8, held_out["videos"]


def test_generate_without_model_uses_the_default(tmp_path, capsys):
    from sana_jax.io.video import read_video

    out = tmp_path / "square.mp4"
    assert main(["generate", "a blue square moving up", "--out", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "embedded default model" in printed and "9 frames, 64×64" in printed
    frames = read_video(out)
    assert frames.shape == (9, 64, 64, 3)
    colour, _direction = shapes.measure(frames, threshold=70.0)
    assert colour == "blue"
