"""The synthetic world: a solid background that changes colour every 3 to 15 seconds.

Contract:
* ``COLOURS``: the palette (name -> RGB); ``World.random(rng, duration_s)`` draws colour
  segments (each 3..15 s, never the same colour twice in a row; change times on the 0.1 s
  grid) and, optionally, a shape of a palette colour; ``colour_at(t)`` the colour name at
  stream time ``t``; ``changes()`` the change times with the new colour.
* ``frame(t, h, w, jitter_rng=None) -> (h, w, 3) uint8`` renders the world at any size
  (``jitter_rng`` adds a small per-frame colour shift, like a camera's).
* ``frames(fps, h, w)`` yields ``app.events.VideoFrame``s (what replay reads from a file);
  ``write_video(path, fps, h, w)`` writes an .mp4 (OpenCV, mp4v) or a .y4m (raw I420, the
  browser's fake camera format); ``name_colour(rgb)`` is the nearest palette colour.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220),
    "yellow": (240, 215, 40), "white": (245, 245, 245), "black": (15, 15, 15)}
NAMES = tuple(COLOURS)
SHAPES = ("circle", "square", "triangle")
MIN_SEG_S, MAX_SEG_S = 3.0, 15.0
GRID_S = 0.1


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    cx: float            # centre, fractions of the frame
    cy: float
    size: float          # half-size, fraction of the shorter side


@dataclass(frozen=True)
class World:
    starts: tuple[float, ...]      # segment start times (the first is 0)
    colours: tuple[str, ...]
    duration_s: float
    shape: Shape | None = None

    @classmethod
    def random(cls, rng: np.random.Generator, duration_s: float, shape: bool = False,
               first: str | None = None, min_seg_s: float = MIN_SEG_S,
               max_seg_s: float = MAX_SEG_S) -> "World":
        starts, colours = [0.0], [first or NAMES[rng.integers(len(NAMES))]]
        while True:
            t = starts[-1] + round(float(rng.uniform(min_seg_s, max_seg_s)) / GRID_S) * GRID_S
            if t >= duration_s:
                break
            starts.append(round(t, 1))
            colours.append(rng.choice([c for c in NAMES if c != colours[-1]]))
        sh = None
        if shape:
            sh = Shape(SHAPES[rng.integers(3)], NAMES[rng.integers(len(NAMES))],
                       float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.12, 0.25)))
        return cls(tuple(starts), tuple(str(c) for c in colours), float(duration_s), sh)

    @classmethod
    def scripted(cls, segments: list[tuple[float, str]], duration_s: float) -> "World":
        """A world with given ``(start_s, colour)`` segments (tests, demos)."""
        if not segments or segments[0][0] != 0 or any(c not in COLOURS for _, c in segments):
            raise ValueError("World.scripted: segments must start at 0 with palette colours")
        return cls(tuple(s for s, _ in segments), tuple(c for _, c in segments), float(duration_s))

    def colour_at(self, t: float) -> str:
        i = int(np.searchsorted(np.asarray(self.starts), t + 1e-9, side="right")) - 1
        return self.colours[max(i, 0)]

    def changes(self) -> list[tuple[float, str]]:
        return list(zip(self.starts[1:], self.colours[1:]))

    def frame(self, t: float, h: int, w: int, jitter_rng: np.random.Generator | None = None) -> np.ndarray:
        rgb = np.array(COLOURS[self.colour_at(t)], dtype=np.int16)
        if jitter_rng is not None:
            rgb = rgb + jitter_rng.integers(-10, 11, size=3)
        img = np.empty((h, w, 3), dtype=np.uint8)
        img[:] = np.clip(rgb, 0, 255).astype(np.uint8)
        if self.shape is not None:
            _draw(img, self.shape)
        return img

    def frames(self, fps: float, h: int, w: int, jitter_seed: int | None = None):
        from app.events import VideoFrame
        rng = np.random.default_rng(jitter_seed) if jitter_seed is not None else None
        for n in range(int(round(self.duration_s * fps))):
            yield VideoFrame(n / fps, self.frame(n / fps, h, w, rng))

    def write_video(self, path: Path, fps: float = 10.0, h: int = 240, w: int = 320) -> Path:
        path = Path(path)
        if path.suffix == ".y4m":
            _write_y4m(path, self, fps, h, w)
        else:
            import cv2
            out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            if not out.isOpened():
                raise OSError(f"OpenCV cannot write {path}")
            for f in self.frames(fps, h, w):
                out.write(f.image[:, :, ::-1].copy())
            out.release()
        return path


def _draw(img: np.ndarray, s: Shape) -> None:
    h, w = img.shape[:2]
    r = s.size * min(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    dx, dy = xx - s.cx * w, yy - s.cy * h
    if s.kind == "circle":
        mask = dx * dx + dy * dy <= r * r
    elif s.kind == "square":
        mask = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    else:   # an upward triangle inside the square
        mask = (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    img[mask] = COLOURS[s.colour]


def _write_y4m(path: Path, world: World, fps: float, h: int, w: int) -> None:
    import cv2
    if h % 2 or w % 2:
        raise ValueError("y4m (4:2:0) needs an even frame size")
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{int(round(fps))}:1 Ip A1:1 C420jpeg\n".encode())
        for fr in world.frames(fps, h, w):
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(fr.image, cv2.COLOR_RGB2YUV_I420).tobytes())


def name_colour(rgb) -> str:
    """The palette colour nearest ``rgb`` (a frame's mean colour)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return min(NAMES, key=lambda n: float(((np.asarray(COLOURS[n]) - rgb) ** 2).sum()))
