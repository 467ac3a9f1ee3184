"""Device placement: the automatic layout by GPU count and the explicit overrides."""
import pytest

from app.placement import plan_placement


def test_no_gpu_runs_on_cpu_with_a_warning():
    """Without a GPU the app must still start, and say why it is slow."""
    p = plan_placement(0)
    assert (p.vlm, p.asr, p.tts) == (("cpu",), "cpu", "cpu")
    assert "CPU" in p.warning


def test_one_gpu_puts_everything_on_it():
    p = plan_placement(1)
    assert (p.vlm, p.asr, p.tts, p.warning) == (("cuda:0",), "cuda:0", "cuda:0", "")


def test_two_gpus_split_speech_and_vlm_like_the_authors():
    """Speech must not share the VLM's GPU when two exist (the authors' layout)."""
    p = plan_placement(2)
    assert (p.vlm, p.asr, p.tts) == (("cuda:1",), "cuda:0", "cuda:0")
    assert plan_placement(4).vlm == ("cuda:1",)


def test_explicit_devices_override_and_are_checked():
    p = plan_placement(2, vlm="cuda:0", asr="cpu", tts="cuda")
    assert (p.vlm, p.asr, p.tts) == (("cuda:0",), "cpu", "cuda:0")
    assert plan_placement(3, vlm="cuda:1,cuda:2").vlm == ("cuda:1", "cuda:2")
    with pytest.raises(ValueError, match=r"^--vlm-device: cuda:1 requested but this machine has 1 GPU$"):
        plan_placement(1, vlm="cuda:1")
    with pytest.raises(ValueError, match=r"^--asr-device: cuda:0 requested but this machine has no GPU$"):
        plan_placement(0, asr="cuda:0")
    with pytest.raises(ValueError, match="^--tts-device: expected"):
        plan_placement(1, tts="gpu")
    with pytest.raises(ValueError, match="GPUs only"):
        plan_placement(2, vlm="cpu,cuda:1")
    with pytest.raises(ValueError, match="once"):
        plan_placement(2, vlm="cuda:1,cuda:1")
