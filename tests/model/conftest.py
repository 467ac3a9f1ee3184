"""Shared fixtures for the engine tests: one tiny checkpoint per test run, loaded through
the real loader; seeded frames. Torch runs single-threaded here (tiny matrices: threads
only add synchronisation cost on a 2-core box); restored afterwards."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from app.config import EngineConfig  # noqa: E402
from app.events import VideoChunk  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shared_tiny(tmp_path_factory) -> Path:
    """The seed-0 tiny checkpoint, built once per test run (shared with tests/app)."""
    from model.tiny import build
    target = tmp_path_factory.getbasetemp() / "aura-tiny"
    if not (target / "aura_tiny.json").is_file():
        build(target, seed=0)
    return target


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return shared_tiny(tmp_path_factory)


def engine_cfg(tiny_dir: Path, **overrides) -> EngineConfig:
    base = dict(model=str(tiny_dir), device="cpu", video_window_s=6.0, float_window_s=3.0,
                qa_window_groups=2, max_new_tokens=6)
    base.update(overrides)
    return EngineConfig(**base)


@pytest.fixture(scope="session")
def tiny_model(tiny_dir):
    from model.vlm import AuraModel
    return AuraModel.load(engine_cfg(tiny_dir))


def fp_tol(*refs, dtype=None, ulps: int = 32) -> float:
    """An absolute tolerance for comparing float results of the same math computed in a
    different order (batching, slicing, another kernel): ``ulps`` units of rounding at the
    largest magnitude among ``refs`` in ``dtype`` (default: the first ref's dtype). Logits
    of magnitude ~30 in fp32 get ~1.1e-4 (CI saw 1.14e-5 against a fixed 1e-5 bound); never
    below the dtype's resolution at magnitude 1."""
    dtype = dtype or refs[0].dtype
    peak = max(float(r.detach().abs().max()) for r in refs)
    return max(peak, 1.0) * torch.finfo(dtype).eps * ulps


def random_frames(rng: np.random.Generator, n: int = 2, size: tuple[int, int] = (64, 64)):
    return tuple(rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n))


def chunk_at(i: int, frames, start_s: float | None = None, t_s: float | None = None) -> VideoChunk:
    start = float(i) if start_s is None else start_s
    return VideoChunk(t_s=start + 1.0 if t_s is None else t_s, start_s=start, frames=frames, index=i)
