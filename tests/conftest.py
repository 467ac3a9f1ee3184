"""Shared test set-up: markers, the default selection, and shared fixtures.

Markers: ``slow`` (seconds to minutes), ``browser`` (headless Chromium), ``gpu`` (needs
CUDA). A plain ``pytest`` run deselects all three; ``--run-all`` (what ``python3
launch.py test`` and CI use) runs everything except ``gpu`` when no GPU is present.
"""
from __future__ import annotations

import pytest

MARKERS = {
    "slow": "takes seconds to minutes (run by --run-all and CI)",
    "browser": "drives headless Chromium against a local server (run by --run-all and CI)",
    "gpu": "needs a CUDA GPU (run only where one is present)",
}


def pytest_addoption(parser):
    parser.addoption("--run-all", action="store_true",
                     help="also run slow and browser tests (and gpu tests if CUDA is present)")


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")


def _cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if config.getoption("-m"):
        return  # an explicit marker expression decides
    run_all = config.getoption("--run-all")
    skip = {"slow": not run_all, "browser": not run_all, "gpu": not (run_all and _cuda_available())}
    for item in items:
        for name, skipped in skip.items():
            if skipped and item.get_closest_marker(name) is not None:
                why = "needs a CUDA GPU" if name == "gpu" else "use --run-all"
                item.add_marker(pytest.mark.skip(reason=f"{name} test ({why})"))
                break
