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
    wrap: bool = False  # the frame is a torus: what leaves one edge re-enters from the opposite one

    def caption(self, with_background: bool) -> str:
        return caption(self.colour, self.shape, self.direction, self.background if with_background else None)


PATHS = ("anywhere", "crossing", "lane", "wrap")
LANE_JITTER = 0.1  # "lane" paths: the centre across the motion is within this share of the frame of the middle
WRAP_SPEED = (0.06, 0.08)  # "wrap" paths: speed range, in frames (of the frame size) per video frame


def random_clip(rng: np.random.Generator, triple: tuple[str, str, str], size: int, frames: int,
                background: str | None = None, paths: str = "anywhere") -> Clip:
    """A clip whose shape stays fully inside the frame for the whole clip.

    ``paths="anywhere"``: it travels about half the frame from a random start. ``"crossing"``: it enters near one
    edge and crosses to the opposite one (start jittered by 5 % of the frame), so the direction word alone fixes
    where the shape is in every frame; across the motion it is anywhere. ``"lane"``: crossing, and across the motion
    it stays within :data:`LANE_JITTER` of the frame's middle, so the prompt alone nearly fixes every frame.
    ``"wrap"``: the streaming world — a lane across the motion, a random start and a steady speed
    (:data:`WRAP_SPEED`) along it, and the frame a torus, so the motion has a right answer for ever."""
    if paths not in PATHS:
        raise InputError(f"paths must be one of {PATHS}, got {paths!r}")
    colour, shape, direction = triple
    radius = rng.uniform(0.11, 0.15) * size
    dx, dy = DIRECTIONS[direction]
    lo, hi = radius + 1, size - radius - 1
    if paths == "wrap":
        dx, dy = DIRECTIONS[direction]
        bg = background or str(rng.choice(list(BACKGROUNDS)))
        speed = rng.uniform(*WRAP_SPEED) * size
        along, across = rng.uniform(0, size), size / 2 + rng.uniform(-LANE_JITTER, LANE_JITTER) * size
        x0, y0 = (along, across) if dx else (across, along)
        return Clip(colour, shape, direction, bg, x0, y0, speed, radius, wrap=True)
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


def render(clip: Clip, size: int, frames: int, first: int = 0) -> np.ndarray:
    """uint8 (frames, size, size, 3), anti-aliased edges (2×2 supersampled coverage); frames ``first`` on (a wrap
    clip goes on for ever)."""
    dx, dy = DIRECTIONS[clip.direction]
    t = np.arange(first, first + frames, dtype=np.float64)[:, None, None]
    cx, cy = clip.x0 + dx * clip.speed * t, clip.y0 + dy * clip.speed * t
    sub = (np.arange(size * 2) + 0.5) / 2
    x, y = sub[None, None, :], sub[None, :, None]
    if clip.wrap:  # on the torus: the pixel's offset from the centre, taken the short way round
        cx, cy = np.mod(cx, size), np.mod(cy, size)
        x = cx + np.mod(x - cx + size / 2, size) - size / 2
        y = cy + np.mod(y - cy + size / 2, size) - size / 2
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
    inside = np.broadcast_to(inside, (frames, size * 2, size * 2))
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


def train_prompts() -> list[str]:
    """Every training caption: each training triple alone and on each named background."""
    return [caption(*t, background) for t in TRAIN_TRIPLES for background in (None, *BACKGROUNDS)]


def held_out_prompts() -> list[str]:
    """The 16 held-out combinations as prompts (never seen as training captions)."""
    return [caption(*t) for t in HELD_OUT]


# -- reading a video back --------------------------------------------------------------------------------------

def measure(frames: np.ndarray, threshold: float = 60.0, *, wrap: bool = False) -> tuple[str | None, str | None]:
    """(dominant colour name of the moving object, direction of motion) of a uint8 video (T, H, W, 3).

    The background is the median colour of the frame borders; object pixels differ from it by more than
    ``threshold`` (RGB distance). The colour is the palette entry that best explains the object pixels as blends
    of itself with the background (edges and blur mix the two; a plain nearest-colour rule reads a dark blend of
    yellow over black as green); the direction is the sign of the larger least-squares slope of the object's
    centroid over time. ``wrap``: the frame is a torus (``paths="wrap"``): the centroid is the circular mean of
    the object's pixels and the motion the sum of frame-to-frame steps taken the short way round, so a shape
    crossing an edge moves on instead of jumping back. ``None`` when no object or no motion is found.
    """
    v = np.asarray(frames, np.float32)
    border = np.concatenate([v[:, 0], v[:, -1], v[:, :, 0], v[:, :, -1]], axis=1).reshape(-1, 3)
    if wrap:  # the object crosses the borders: the background is the frame's median colour instead
        border = v.reshape(-1, 3)
    bg = np.median(border, axis=0)
    mask = np.linalg.norm(v - bg, axis=-1) > threshold  # (T, H, W)
    if mask.sum() < 4 * len(v):
        return None, None
    colour = _object_colour(v[mask], bg)
    t_idx, ys, xs = [], [], []
    h, w = mask.shape[1:]
    for t in range(len(v)):
        yy, xx = np.nonzero(mask[t])
        if len(xx) >= 4:
            t_idx.append(t)
            ys.append(_circular_mean(yy, h) if wrap else yy.mean())
            xs.append(_circular_mean(xx, w) if wrap else xx.mean())
    if len(t_idx) < 2:
        return colour, None
    tt = np.asarray(t_idx, np.float32)
    if wrap:  # mean step per frame, each step the short way round the torus
        steps = np.diff(tt)
        sx = np.sum(np.mod(np.diff(xs) + w / 2, w) - w / 2) / np.sum(steps)
        sy = np.sum(np.mod(np.diff(ys) + h / 2, h) - h / 2) / np.sum(steps)
    else:
        sx, sy = np.polyfit(tt, xs, 1)[0], np.polyfit(tt, ys, 1)[0]
    if max(abs(sx), abs(sy)) * (len(v) - 1) < 0.1 * v.shape[2]:  # moved less than a tenth of the frame
        return colour, None
    if abs(sx) >= abs(sy):
        return colour, "right" if sx > 0 else "left"
    return colour, "down" if sy > 0 else "up"


def _circular_mean(positions: np.ndarray, period: int) -> float:
    angle = 2 * np.pi * (positions + 0.5) / period
    return float(np.mod(np.angle(np.mean(np.exp(1j * angle))) * period / (2 * np.pi) - 0.5, period))


def background_cleanliness(frames: np.ndarray, background: tuple[int, int, int], *, levels: float = 30.0,
                           threshold: float = 60.0) -> np.ndarray:
    """Per frame, the share of background pixels within ``levels`` (max over RGB) of the ``background`` colour,
    for a uint8 video (T, H, W, 3) of one shape: background pixels are those outside a square around the object
    (its pixels differ from the background by more than ``threshold``; the square, 0.4 of the frame wide — room for
    the largest shape and its blur — is centred on their circular mean and measured on the torus, so a shape split
    across an edge is framed whole). A frame with no object pixels counts every pixel as background."""
    v = np.asarray(frames, np.float32)
    bg = np.asarray(background, np.float32)
    near = np.max(np.abs(v - bg), axis=-1) <= levels  # (T, H, W)
    far = np.linalg.norm(v - bg, axis=-1) > threshold
    t, h, w = near.shape
    yy, xx = np.mgrid[:h, :w]
    out = np.empty(t)
    for i in range(t):
        keep = np.ones((h, w), bool)
        ys, xs = np.nonzero(far[i])
        if len(xs):
            dy = np.abs(yy - _circular_mean(ys, h))
            dx = np.abs(xx - _circular_mean(xs, w))
            dy, dx = np.minimum(dy, h - dy), np.minimum(dx, w - dx)
            keep = (dy > 0.2 * h) | (dx > 0.2 * w)
        out[i] = near[i][keep].mean()
    return out


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
