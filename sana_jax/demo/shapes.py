"""The procedural dataset of the embedded default model: one coloured shape moving in a named direction over a
plain background, captioned ``"a red circle moving left"`` (sometimes ``"… on a gray background"``).

Everything is a pure function of a seed, so ``sana-jax train demo`` regenerates exactly the data the shipped
weights were trained on. :func:`measure` reads a video back (dominant colour of the moving object, direction of
its motion); the demo-quality test scores generated videos with it.

Sixteen (colour, shape, direction) combinations, :data:`HELD_OUT`, never appear in training captions; every
pair of words in them does, so generating them tests composition rather than memory.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from sana_jax.errors import InputError

COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 235),
    "yellow": (240, 215, 40), "purple": (150, 60, 210), "cyan": (40, 205, 215),
}
BACKGROUNDS = {"black": (12, 12, 12), "gray": (110, 110, 110), "white": (236, 236, 236)}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # (dx, dy), y grows downwards
VOCABULARY = ("a", "on", "moving", "background", *COLOURS, *SHAPES, *DIRECTIONS, *BACKGROUNDS)


def _held_out() -> tuple[tuple[str, str, str], ...]:
    """16 triples with distinct (colour, direction) and balanced shapes; each word pair stays in training."""
    colours, directions = list(COLOURS), list(DIRECTIONS)
    out = []
    for i in range(16):
        colour, direction = colours[i % 6], directions[(i + i // 6) % 4]
        out.append((colour, SHAPES[(i // 2) % 3], direction))
    return tuple(out)


HELD_OUT = _held_out()
TRAIN_TRIPLES = tuple(t for t in itertools.product(COLOURS, SHAPES, DIRECTIONS) if t not in HELD_OUT)


def caption(colour: str, shape: str, direction: str, background: str | None = None) -> str:
    text = f"a {colour} {shape} moving {direction}"
    return text if background is None else f"{text} on a {background} background"


@dataclasses.dataclass(frozen=True)
class Clip:
    colour: str
    shape: str
    direction: str
    background: str
    x0: float  # centre at frame 0, pixels
    y0: float
    speed: float  # pixels per frame
    radius: float

    def caption(self, with_background: bool) -> str:
        return caption(self.colour, self.shape, self.direction, self.background if with_background else None)


PATHS = ("anywhere", "crossing", "lane")
LANE_JITTER = 0.1  # "lane" paths: the centre across the motion is within this share of the frame of the middle


def random_clip(rng: np.random.Generator, triple: tuple[str, str, str], size: int, frames: int,
                background: str | None = None, paths: str = "anywhere") -> Clip:
    """A clip whose shape stays fully inside the frame for the whole clip.

    ``paths="anywhere"``: it travels about half the frame from a random start. ``"crossing"``: it enters near one
    edge and crosses to the opposite one (start jittered by 5 % of the frame), so the direction word alone fixes
    where the shape is in every frame; across the motion it is anywhere. ``"lane"``: crossing, and across the motion
    it stays within :data:`LANE_JITTER` of the frame's middle, so the prompt alone nearly fixes every frame."""
    if paths not in PATHS:
        raise InputError(f"paths must be one of {PATHS}, got {paths!r}")
    colour, shape, direction = triple
    radius = rng.uniform(0.11, 0.15) * size
    dx, dy = DIRECTIONS[direction]
    lo, hi = radius + 1, size - radius - 1
    if paths in ("crossing", "lane"):  # the travel leaves 5 % of the frame for the start: within that of its edge
        speed = ((hi - lo) - 0.05 * size) / (frames - 1)
    else:
        speed = rng.uniform(0.45, 0.6) * size / (frames - 1)  # travels about half the frame
    travel = speed * (frames - 1)

    def start(d):  # along the motion: leave room for the travel; across it: anywhere
        if d > 0:
            return rng.uniform(lo, hi - travel)
        if d < 0:
            return rng.uniform(lo + travel, hi)
        if paths == "lane":
            return size / 2 + rng.uniform(-LANE_JITTER, LANE_JITTER) * size
        return rng.uniform(lo, hi)

    bg = background or str(rng.choice(list(BACKGROUNDS)))
    return Clip(colour, shape, direction, bg, start(dx), start(dy), speed, radius)


def render(clip: Clip, size: int, frames: int) -> np.ndarray:
    """uint8 (frames, size, size, 3), anti-aliased edges (2×2 supersampled coverage)."""
    dx, dy = DIRECTIONS[clip.direction]
    t = np.arange(frames, dtype=np.float64)[:, None, None]
    cx, cy = clip.x0 + dx * clip.speed * t, clip.y0 + dy * clip.speed * t
    sub = (np.arange(size * 2) + 0.5) / 2
    x, y = sub[None, None, :], sub[None, :, None]
    r = clip.radius
    if clip.shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= r ** 2
    elif clip.shape == "square":
        side = r * 0.9
        inside = (np.abs(x - cx) <= side) & (np.abs(y - cy) <= side)
    else:  # upward-pointing triangle inscribed in the circle of radius r
        top, base = cy - r, cy + 0.6 * r
        half = (y - top) / (base - top) * r * 0.95
        inside = (y >= top) & (y <= base) & (np.abs(x - cx) <= half)
    coverage = inside.reshape(frames, size, 2, size, 2).mean(axis=(2, 4))[..., None]
    fg, bg = np.asarray(COLOURS[clip.colour], np.float64), np.asarray(BACKGROUNDS[clip.background], np.float64)
    return np.round(coverage * fg + (1 - coverage) * bg).astype(np.uint8)


def check_background(name: str | None, what: str = "background") -> None:
    """Refuse a background that is neither None nor one of :data:`BACKGROUNDS`."""
    if name is not None and name not in BACKGROUNDS:
        raise InputError(f"{what} must be one of {sorted(BACKGROUNDS)} or None, got {name!r}")


def dataset(count: int, *, size: int = 64, frames: int = 17, seed: int = 0, background_caption_rate: float = 0.5,
            triples=TRAIN_TRIPLES, paths: str = "anywhere", background: str | None = None,
            unnamed_background: str | None = None):
    """``count`` (frames uint8 (T, size, size, 3), caption) pairs drawn from the training triples.

    A ``background_caption_rate`` share of the captions name the clip's background. By default the others are on
    any background too, so a prompt that names none asks for a blend of them. With ``unnamed_background``, those
    clips are on that one background instead (the same draws otherwise): a prompt without a background then asks
    for one clip, not a blend. With ``background``, every clip is on that one background and no caption names it.
    """
    check_background(background)
    check_background(unnamed_background, "unnamed_background")
    rng = np.random.default_rng(seed)
    for _ in range(count):
        triple = triples[rng.integers(len(triples))]
        clip = random_clip(rng, triple, size, frames, background=background, paths=paths)
        named = background is None and rng.random() < background_caption_rate
        if not named and unnamed_background is not None and background is None:
            clip = dataclasses.replace(clip, background=unnamed_background)
        yield render(clip, size, frames), clip.caption(named)


def held_out_prompts() -> list[str]:
    """The 16 held-out combinations as prompts (never seen as training captions)."""
    return [caption(*t) for t in HELD_OUT]


# -- reading a video back --------------------------------------------------------------------------------------

def measure(frames: np.ndarray, threshold: float = 60.0) -> tuple[str | None, str | None]:
    """(dominant colour name of the moving object, direction of motion) of a uint8 video (T, H, W, 3).

    The background is the median colour of the frame borders; object pixels differ from it by more than
    ``threshold`` (RGB distance). The colour is the palette entry that best explains the object pixels as blends
    of itself with the background (edges and blur mix the two; a plain nearest-colour rule reads a dark blend of
    yellow over black as green); the direction is the sign of the larger least-squares slope of the object's
    centroid over time. ``None`` when no object or no motion is found.
    """
    v = np.asarray(frames, np.float32)
    border = np.concatenate([v[:, 0], v[:, -1], v[:, :, 0], v[:, :, -1]], axis=1).reshape(-1, 3)
    bg = np.median(border, axis=0)
    mask = np.linalg.norm(v - bg, axis=-1) > threshold  # (T, H, W)
    if mask.sum() < 4 * len(v):
        return None, None
    colour = _object_colour(v[mask], bg)
    t_idx, ys, xs = [], [], []
    for t in range(len(v)):
        yy, xx = np.nonzero(mask[t])
        if len(xx) >= 4:
            t_idx.append(t)
            ys.append(yy.mean())
            xs.append(xx.mean())
    if len(t_idx) < 2:
        return colour, None
    tt = np.asarray(t_idx, np.float32)
    sx, sy = np.polyfit(tt, xs, 1)[0], np.polyfit(tt, ys, 1)[0]
    if max(abs(sx), abs(sy)) * (len(v) - 1) < 0.1 * v.shape[2]:  # moved less than a tenth of the frame
        return colour, None
    if abs(sx) >= abs(sy):
        return colour, "right" if sx > 0 else "left"
    return colour, "down" if sy > 0 else "up"


def _object_colour(pixels: np.ndarray, background: np.ndarray) -> str:
    """The palette colour c minimising the median distance of the pixels to the segment background → c."""
    names = list(COLOURS)
    best, best_err = names[0], np.inf
    offset = pixels - background
    for name in names:
        d = np.asarray(COLOURS[name], np.float32) - background
        alpha = np.clip(offset @ d / max(float(d @ d), 1e-6), 0.0, 1.0)
        err = float(np.median(np.linalg.norm(offset - alpha[:, None] * d, axis=1)))
        if err < best_err:
            best, best_err = name, err
    return best


def parse_prompt(prompt: str) -> tuple[str | None, str | None]:
    """The colour and direction words of a prompt."""
    words = prompt.lower().replace(".", " ").split()
    return (next((w for w in words if w in COLOURS), None), next((w for w in words if w in DIRECTIONS), None))
