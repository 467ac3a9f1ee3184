"""Loading (issue 2 item 1): the real loader on the tiny checkpoint, one-line errors,
backend choice."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from model.reference import ReferenceBackend
from model.vlm import AuraModel, ModelLoadError, choose_backend
from tests.model.conftest import engine_cfg


def test_tiny_checkpoint_loads_on_cpu_in_fp32(tiny_model):
    """dtype/device 'auto' on a CPU box: fp32 on the CPU, reference backend."""
    assert tiny_model.device == "cpu" and tiny_model.hf.dtype == torch.float32
    assert isinstance(tiny_model.backend, ReferenceBackend)
    assert tiny_model.tokenizer.convert_ids_to_tokens(tiny_model.specials.silent) == "<|silent|>"


def test_missing_directory_is_one_line(tmp_path):
    with pytest.raises(ModelLoadError) as e:
        AuraModel.load(engine_cfg(tmp_path / "nope"))
    assert str(e.value) == f"engine.model: no such model directory: {tmp_path / 'nope'}"


def test_failed_download_names_the_model_and_suggests_offline(monkeypatch, tmp_path):
    """No hub access (forced offline here, so nothing touches the network): the message
    names the model and points at --preset offline, in one line."""
    import huggingface_hub.constants as hub
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError) as e:
        AuraModel.load(engine_cfg("aura-live-tests/no-such-model"))
    msg = str(e.value)
    assert "\n" not in msg and "aura-live-tests/no-such-model" in msg and "--preset offline" in msg


def test_tokenizer_without_silent_is_refused(tiny_dir, tmp_path):
    """A plain Qwen3-VL checkpoint (no <|silent|>) must not load as AURA."""
    broken = tmp_path / "no-silent"
    shutil.copytree(tiny_dir, broken)
    tok = json.loads((broken / "tokenizer.json").read_text())
    for added in tok["added_tokens"]:
        if added["content"] == "<|silent|>":
            added["content"] = "<|quiet|>"
    (broken / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ModelLoadError, match=r"no <\|silent\|> token") as e:
        AuraModel.load(engine_cfg(broken))
    assert "\n" not in str(e.value)


def test_backend_choice(tiny_model):
    """auto on the CPU is the reference backend; 'fast' needs CUDA and says so."""
    assert isinstance(choose_backend("auto", tiny_model.hf, "cpu", 1024), ReferenceBackend)
    assert isinstance(choose_backend("reference", tiny_model.hf, "cpu", 1), ReferenceBackend)
    with pytest.raises(ModelLoadError, match="needs a CUDA device"):
        choose_backend("fast", tiny_model.hf, "cpu", 1)


def test_split_device_is_refused_clearly(tiny_dir):
    """A split onto GPUs that are not there is one line naming a missing one (any machine)."""
    with pytest.raises(ModelLoadError, match=r"cuda:(0|63) requested for a split VLM but this machine has \d+ GPU") as e:
        AuraModel.load(engine_cfg(tiny_dir, device="cuda:0,cuda:63"))
    assert "\n" not in str(e.value)


def test_split_device_map_covers_the_model_and_gives_the_same_logits(tiny_dir, tmp_path):
    """Guards --vlm-device cuda:1,cuda:2: the device map from model/split.py must name every
    module of the real Qwen3-VL class, and the model split by it must compute what the whole
    one does through the engine. No GPUs here: the second half goes to accelerate's "disk"
    offload, which dispatches it with the same hooks a second GPU gets."""
    import numpy as np
    import torch
    import transformers
    from app.events import VideoChunk
    from model.split import vlm_device_map
    from model.vlm import AuraModel
    from tests.model.conftest import engine_cfg
    cfg = engine_cfg(tiny_dir)
    whole = AuraModel.load(cfg)
    dmap = vlm_device_map(whole.hf.config.text_config.num_hidden_layers, ("cpu", "disk"))
    split_hf = transformers.Qwen3VLForConditionalGeneration.from_pretrained(
        tiny_dir, dtype=torch.float32, device_map=dmap, offload_folder=str(tmp_path)).eval()
    assert split_hf.hf_device_map == dmap
    split = AuraModel(cfg, split_hf, whole.tokenizer, whole.vision.proc, "cpu", split=True)
    split.attach_backend()
    assert type(split.backend).__name__ == "ReferenceBackend"
    rng = np.random.default_rng(3)
    frames = tuple(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2))
    a, b = whole.new_session("a"), split.new_session("b")
    for i, q in enumerate(("What is on the table?", None)):
        for s in (a, b):
            list(s.step(VideoChunk(i + 1.0, float(i), frames, i), q))
    assert torch.allclose(a.next_token_logits(), b.next_token_logits(), atol=1e-5)


def test_cache_pool_grows_with_the_sessions_admitted(tiny_dir):
    """--max-sessions 4 must not run out of fast-backend caches: a live and a shadow each."""
    from model.vlm import AuraModel
    from tests.model.conftest import engine_cfg
    assert AuraModel.load(engine_cfg(tiny_dir), sessions=4).cache_pool_size == 8
    assert AuraModel.load(engine_cfg(tiny_dir)).cache_pool_size == 4
