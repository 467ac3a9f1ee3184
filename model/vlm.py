"""``AuraModel``: the loaded AURA checkpoint, shared and stateless; sessions hold state.

Contract:
* ``AuraModel.load(cfg: EngineConfig, progress=None, sessions=2) -> AuraModel`` loads an HF
  id or a local directory of a Qwen3-VL checkpoint with a ``<|silent|>`` token (tokenizer,
  video processor, weights) on ``cfg.device`` ("auto": CUDA if present; "cuda:1,cuda:2"
  splits it with a device map from model/split.py, vision and embeddings on the first
  GPU, the LM head on the last, served by the reference backend) in ``cfg.dtype``
  ("auto": bf16 on CUDA, fp32 on CPU). Failures raise ``ModelLoadError`` with one line:
  a path that does not exist, a download that failed (names the model and suggests
  ``--preset offline``), a tokenizer without ``<|silent|>``. ``progress(str)`` gets short
  status lines; the hub's own progress bars go to stderr. ``sessions`` is how many sessions
  run at once (the fast backend preallocates a live and a shadow cache for each).
* ``new_session(session_id, clock=None) -> AuraSession`` (model/session.py); many sessions
  share one model and never share state.
* ``embed(ids)`` input embeddings ``(L, hidden)``; ``vision.encode(frames)`` chunk features.
* ``choose_backend(kind, hf_model, device, max_tokens)`` picks the LMBackend: "reference"
  (model/reference.py), "fast" (model/fast/backend.py ``FastBackend(hf_model, max_tokens=...)``,
  CUDA only) or "auto" (fast on CUDA when model/fast/backend.py imports and its kernels
  fit the model's shape, else reference);
  ``attach_backend()`` is the loader's use of it (also for benchmarks that build the HF
  model themselves).
* ``context_budget(cfg, layout)`` tokens per preallocated cache, derived from the windows
  (its docstring; the session never overflows it, model/session.py).
"""
from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Callable

from app.config import EngineConfig

Progress = Callable[[str], None]
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "tokenizer*", "*.model"]


class ModelLoadError(Exception):
    """The model could not be loaded; ``str(e)`` is one line for the user."""


def _import_torch_stack():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ModelLoadError(f"the engine needs torch and transformers ({e.name} is missing); "
                             "run `python3 launch.py` once to install them") from None
    return torch, transformers


def resolve_devices(device: str, torch) -> tuple[str, ...]:
    """One device, or several GPUs for a split VLM (each checked to exist)."""
    parts = tuple(p.strip() for p in device.split(","))
    if len(parts) == 1:
        return (resolve_device(parts[0], torch),)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for part in parts:
        if not (part.startswith("cuda:") and part[5:].isdigit()) or int(part[5:]) >= count:
            raise ModelLoadError(f"engine.device: {part} requested for a split VLM but this machine "
                                 f"has {count} GPU(s)")
    return parts


def load_weights(transformers, path, dtype, devices: tuple[str, ...]):
    """The HF model on one device, or spread over several with a device map."""
    cls = transformers.Qwen3VLForConditionalGeneration
    if len(devices) == 1:
        return cls.from_pretrained(path, dtype=dtype).to(devices[0]).eval()
    try:
        import accelerate  # noqa: F401 - from_pretrained's device_map needs it
    except ImportError:
        raise ModelLoadError("splitting the VLM over several GPUs needs the accelerate package "
                             "(pip install accelerate)") from None
    from model.split import vlm_device_map
    layers = transformers.AutoConfig.from_pretrained(path).text_config.num_hidden_layers
    return cls.from_pretrained(path, dtype=dtype, device_map=vlm_device_map(layers, devices)).eval()


def resolve_device(device: str, torch) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"engine.device: {device} requested but CUDA is not available")
    return device


def resolve_dtype(dtype: str, device: str, torch):
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def locate(model: str, progress: Progress) -> Path:
    """A local directory for ``model``: the directory itself, or the hub download."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    looks_local = model.startswith(("/", ".", "~")) or path.exists() or not _HF_ID.match(model)
    if looks_local:
        raise ModelLoadError(f"engine.model: no such model directory: {model}")
    from huggingface_hub import snapshot_download
    progress(f"fetching {model} from the Hugging Face hub (cached after the first time)")
    try:
        return Path(snapshot_download(model, allow_patterns=_WEIGHT_FILES))
    except (OSError, ValueError) as e:
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"could not download {model} ({why}); check the network and the "
                             "model id, or run with --preset offline") from None


def choose_backend(kind: str, hf_model, device: str, max_tokens: int, pool_size: int = 4):
    """The LMBackend for ``kind`` (reference | fast | auto)."""
    from model.reference import ReferenceBackend
    on_cuda = device.startswith("cuda")
    if kind == "reference" or (kind == "auto" and not on_cuda):
        return ReferenceBackend(hf_model)
    if not on_cuda:
        raise ModelLoadError("engine.backend: the fast backend needs a CUDA device")
    try:
        from model.fast.backend import FastBackend, unsupported
    except ImportError as e:
        if kind == "fast":
            raise ModelLoadError(f"engine.backend: the fast backend is not available ({e})") from None
        return ReferenceBackend(hf_model)
    why = unsupported(hf_model)
    if why:
        if kind == "fast":
            raise ModelLoadError(f"engine.backend: the fast backend cannot run this model ({why}); "
                                 "use backend auto or reference")
        return ReferenceBackend(hf_model)
    # a live and a shadow cache for each session admitted at once (app.max_sessions)
    return FastBackend(hf_model, max_tokens=max_tokens, pool_size=pool_size)


WARM_FRAME_SIZES = ((480, 640), (720, 1280))   # (h, w) of the usual webcams
CHUNK_S = 1.0            # app.sampler.FrameSampler's chunk length (2 frames at 2 fps)
EXTRA_CHUNKS = 2         # beyond the N + N' seconds: the chunk straddling the start, a partial one
QUESTION_TOKENS = 64     # allowance per question (typical spoken questions are 5-30 tokens)
MARGIN = 1.05


def context_budget(cfg: EngineConfig, layout) -> int:
    """Cache size (tokens) for one session's context, derived from the windows.

    ``layout`` is the session's ``model.prompt.Layout`` (exact turn sizes). The video
    window at its widest (N + N' seconds of 1-s chunks, plus ``EXTRA_CHUNKS``), each chunk
    at the pixel budget's most visual tokens with a silent turn; the QA window (M groups of
    one round: question allowance + a longest reply); the current round's question and
    reply; the system prompt; times ``MARGIN``, rounded up to 256. About 18k tokens at the
    defaults (the measured peak of a 10-minute stream is ~15.3k). More (partial chunks,
    long QA groups) does not overflow: the session cuts the window early
    (``AuraSession``, ``ContextOverflowError`` only when even the QA history cannot fit).
    """
    visual = cfg.max_pixels // (2 * 32 * 32)          # 2 x H x W <= max_pixels, 32 x 32 per token
    chunk = len(layout.chunk((1, 1), None)) - 1 + visual + len(layout.answer(None))
    reply = len(layout.answer((0,) * cfg.max_new_tokens))
    chunks = math.ceil((cfg.video_window_s + cfg.float_window_s) / CHUNK_S) + EXTRA_CHUNKS
    qa = cfg.qa_window_groups * (len(layout.text_turn("")) + QUESTION_TOKENS + reply)
    need = len(layout.system()) + chunks * chunk + qa + QUESTION_TOKENS + reply
    return -(-int(need * MARGIN) // 256) * 256


class AuraModel:
    def __init__(self, cfg: EngineConfig, hf_model, tokenizer, video_processor, device: str,
                 sessions: int = 2, split: bool = False):
        from model.prompt import Specials
        from model.vision import VisionEncoder
        self.cfg = cfg
        self.hf = hf_model
        self.tokenizer = tokenizer
        self.device = device          # the first device of a split model
        self.sessions = max(1, int(sessions))
        self.split = split
        self.specials = Specials.from_tokenizer(tokenizer)
        self.vision = VisionEncoder(hf_model, video_processor, cfg.max_pixels)
        self.backend = None
        self._exempt: dict[int, bool] = {}
        self._embed_w = None         # the input embedding matrix (read on first use)

    @classmethod
    def load(cls, cfg: EngineConfig, progress: Progress | None = None, sessions: int = 2) -> "AuraModel":
        say = progress or (lambda _msg: None)
        torch, transformers = _import_torch_stack()
        from model.prompt import Specials
        devices = resolve_devices(cfg.device, torch)
        device = devices[0]
        if len(devices) > 1 and cfg.backend == "fast":
            raise ModelLoadError("engine.backend: the fast backend runs on one GPU; a split VLM "
                                 "(engine.device with several GPUs) uses backend auto or reference")
        dtype = resolve_dtype(cfg.dtype, device, torch)
        path = locate(cfg.model, say)
        say(f"loading the tokenizer and processor from {path}")
        try:
            tok = transformers.AutoTokenizer.from_pretrained(path)
            Specials.from_tokenizer(tok)
            vproc = transformers.AutoVideoProcessor.from_pretrained(path)
        except ValueError as e:
            raise ModelLoadError(f"{cfg.model}: {str(e).splitlines()[0]}") from None
        except OSError as e:
            raise ModelLoadError(f"{cfg.model}: tokenizer/processor files missing or unreadable "
                                 f"({str(e).splitlines()[0][:160]})") from None
        vproc.cap_pixels_per_frame = False   # we size frames ourselves (do_resize=False)
        say(f"loading weights ({str(dtype).replace('torch.', '')}) onto {', '.join(devices)}")
        try:
            hf = load_weights(transformers, path, dtype, devices)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"{cfg.model}: could not load the weights "
                                 f"({str(e).splitlines()[0][:160]})") from None
        if cfg.adapter:  # merged now, so no backend pays for LoRA at decode time (model/adapter.py)
            from model.adapter import AdapterError, merge
            say(f"merging the adapter {cfg.adapter}")
            try:
                hf = merge(hf, cfg.adapter)
            except AdapterError as e:
                raise ModelLoadError(f"engine.adapter: {e}") from None
        model = cls(cfg, hf, tok, vproc, device, sessions=sessions, split=len(devices) > 1)
        model.attach_backend()
        say(f"model ready ({type(model.backend).__name__})")
        return model

    def attach_backend(self) -> None:
        """Pick the LM backend for ``cfg.backend`` (the fast one gets ``context_budget``
        tokens per cache, a live and a shadow cache for each of ``sessions``; a split model always
        gets the reference backend) and, with
        the fast backend, the graph-captured vision encoder, warmed up for the usual camera
        sizes (``WARM_FRAME_SIZES``; another size is captured on its first chunk, ~0.4 s)."""
        from model.prompt import Layout
        budget = context_budget(self.cfg, Layout.for_config(self.tokenizer, self.specials, self.cfg))
        kind = "reference" if self.split else self.cfg.backend
        self.backend = choose_backend(kind, self.hf, self.device, budget, pool_size=self.cache_pool_size)
        if type(self.backend).__name__ == "FastBackend":
            from model.fast.vision import FastVision
            grids = [self.vision.prep.grid_for(h, w) for h, w in WARM_FRAME_SIZES]
            self.vision.fast = FastVision(self.hf, grids, auto_prepare=True)

    @property
    def cache_pool_size(self) -> int:
        """Caches the fast backend preallocates: a live and a shadow per session."""
        return 2 * self.sessions

    def embed(self, ids: tuple[int, ...]):
        """Input embeddings ``(L, hidden)`` on the model's device, without waiting for it:
        one id is a view of its row; more go up pinned and asynchronously on CUDA."""
        import torch
        if self._embed_w is None:
            self._embed_w = self.hf.get_input_embeddings().weight.detach()
        w = self._embed_w
        if len(ids) == 1:
            return w[int(ids[0])][None]
        t = torch.tensor(ids, dtype=torch.long)
        if w.device.type == "cuda":
            t = t.pin_memory()
        return w.index_select(0, t.to(w.device, non_blocking=True))

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def exempt(self, token: int) -> bool:
        """Special, punctuation or digit tokens: never get the repetition penalty."""
        if token not in self._exempt:
            from model.sampling import is_plain_symbol
            sp = self.specials
            special = token in sp.structural or token in (sp.im_end, sp.silent)
            self._exempt[token] = special or is_plain_symbol(self.decode([token]))
        return self._exempt[token]

    def new_session(self, session_id: str, clock=None):
        from model.session import AuraSession
        return AuraSession(self, session_id, clock=clock)


def _main(argv: list[str]) -> int:
    """``python -m model.vlm MODEL``: load a model and print one line (a smoke check)."""
    from app.config import EngineConfig as Cfg
    try:
        m = AuraModel.load(Cfg(model=argv[0] if argv else Cfg().model), progress=print)
    except ModelLoadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"loaded: vocab {len(m.tokenizer)}, silent id {m.specials.silent}, device {m.device}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
