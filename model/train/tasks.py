"""Questions, answers and the per-chunk script of a synthetic stream.

Contract:
* ``ChunkRecord(frames, start_s, t_s, question, answer, context_only)``: one 1-s step of a
  stream, the unit ``samples.build_samples`` takes (``answer`` = reply text, None =
  ``<|silent|>``; ``context_only``: in the context, never supervised). Fine-tuning from
  reviews builds the same records from a recording.
* ``script(chunks, questions)``: the right answer per chunk, from the chunk's last frame:
  - "What colour is the background?": ``answer_colour`` at once;
  - "Tell me when the background turns X.": ``ACK`` at once, silent until a chunk shows X,
    then ``alert(X)``, once;
  - "Tell me every time the background changes.": ``ACK`` at once, then ``alert(c)`` at every
    chunk whose colour differs from the chunk before, to the end of the stream (a chunk with
    a question answers the question instead);
  - "Which colour are you waiting for?": ``answer_waiting``, whose first word is the awaited
    colour (``NOTHING`` when none);
  - "Is the background X?": ``answer_is`` (yes/no).
* ``episode(rng, kind, ...) -> (World, [Ask])``; the kinds:
  - ``qa``: colour questions; ``check``: yes/no questions, half of them true;
  - ``alert``: a when-question whose colour comes (sometimes after other changes);
    ``negative``: one whose colour never comes, then a colour question;
  - ``chase`` / ``miss``: the same two in a fast world (1.5..6 s segments), the target after
    0 to 4 other changes, so neither "the first change" nor "a few seconds" predicts it;
    suffixes ``_late`` / ``_any`` ask later in long streams, ``_snap`` in short ones;
  - ``every``: an every-change request in a fast world, sometimes a colour question after;
  - ``status_<kind>``: ``<kind>`` plus one status question while the when-question waits.
    It is what teaches the comparison: its answer's first token needs the awaited colour at
    the decision position, which no silent/speak decision alone ever made the model route
    there (docs/training.md);
  - ``idle_<kind>``: ``<kind>`` plus one status question while nothing waits (before the
    when-question or after its alert; anywhere in a ``qa`` episode): "Nothing.";
  - ``pre_<kind>``: ``<kind>`` plus a colour question before the when-question (without
    it in training, a colour answer before a request made alerts at a distractor likely).
* ``chunk_stream(world, asks, fps, size, jitter_seed)``: the world's frames cut into chunks by
  ``app.sampler.FrameSampler`` exactly as replay cuts a video (a question closes the open
  chunk early), then scripted; ``chunk_frames(frames, asks)`` the same for any frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.train.world import COLOURS, NAMES, World, name_colour

ASK_COLOUR = ("What colour is the background?", "What color is the background?",
              "Which colour is the background now?", "What is the background colour?")
ASK_WHEN = ("Tell me when the background turns {c}.", "Let me know when the background becomes {c}.",
            "Tell me when it turns {c}.", "Say something when the background is {c}.")
ASK_IS = ("Is the background {c}?", "Is the background {c} now?", "Is it {c}?")
ASK_EVERY = ("Tell me every time the background changes.", "Let me know whenever the background changes.",
             "Tell me each time the colour changes.")
ASK_WAITING = ("Which colour are you waiting for?", "What colour are you waiting for?")
NOTHING = "Nothing."
ACK = "OK, I will let you know then."
FPS = 10.0
SIZES = ((64, 64), (120, 160), (90, 160))     # (h, w) camera sizes used in training


def answer_colour(c: str) -> str:
    return f"The background is {c}."


def alert(c: str) -> str:
    return f"The background turned {c}."


def answer_is(asked: str, c: str) -> str:
    return f"Yes, the background is {c}." if asked == c else f"No, the background is {c}."


@dataclass(frozen=True)
class Ask:
    t_s: float
    text: str
    target: str | None = None       # the colour of a when-question


@dataclass(frozen=True, eq=False)
class ChunkRecord:
    frames: tuple                   # 1 or 2 RGB uint8 frames
    start_s: float
    t_s: float
    question: str | None = None
    answer: str | None = None       # None = silent
    context_only: bool = False      # seen, never a target (a held-out note's chunk)


def ask_colour(rng) -> str:
    return ASK_COLOUR[rng.integers(len(ASK_COLOUR))]


def ask_is(rng, colour: str) -> str:
    return ASK_IS[rng.integers(len(ASK_IS))].format(c=colour)


def ask_when(rng, colour: str) -> str:
    return ASK_WHEN[rng.integers(len(ASK_WHEN))].format(c=colour)


def answer_waiting(c: str | None) -> str:
    """The status answer: its first word is the awaited colour (see ``episode``'s ``status_``)."""
    return f"{c.capitalize()}." if c else NOTHING


def is_status(question: str) -> bool:
    return question.strip().lower() in {q.lower() for q in ASK_WAITING}


def parse_check(question: str) -> str | None:
    """The colour a yes/no question names ("Is the background blue?"; None for others)."""
    q = question.lower()
    if q.startswith("is "):
        found = [c for c in NAMES if c in q]
        return found[-1] if found else None
    return None


def is_every(question: str) -> bool:
    return question.strip().lower() in {q.lower() for q in ASK_EVERY}


def parse_target(question: str) -> str | None:
    """The colour a when-question waits for (None for other questions)."""
    q = question.lower()
    if q.startswith(("tell me when", "let me know when", "say something when")):
        found = [c for c in NAMES if c in q]
        return found[-1] if found else None
    return None


def chunk_colour(rec_frames) -> str:
    return name_colour(rec_frames[-1].reshape(-1, 3).mean(0))


def script(chunks, questions: dict[int, str]) -> list[ChunkRecord]:
    """``chunks``: ``app.events.VideoChunk``s; ``questions``: chunk index -> text."""
    out, waiting, every, last = [], None, False, None
    for i, ch in enumerate(chunks):
        colour = chunk_colour(ch.frames)
        q = questions.get(i)
        answer = None
        if q is not None:
            target = parse_target(q)
            asked = parse_check(q)
            if target is not None:
                answer, waiting = ACK, target
            elif is_every(q):
                answer, every = ACK, True
            elif asked is not None:
                answer = answer_is(asked, colour)
            elif is_status(q):
                answer = answer_waiting(waiting)
            else:
                answer = answer_colour(colour)
        elif (waiting is not None and colour == waiting) or (every and colour != last):
            answer = alert(colour)
            waiting = None if colour == waiting else waiting
        out.append(ChunkRecord(tuple(ch.frames), ch.start_s, ch.t_s, q, answer))
        last = colour
    return out


def chunk_stream(world: World, asks: list[Ask], fps: float = FPS, size=(64, 64),
                 jitter_seed: int | None = None) -> list[ChunkRecord]:
    return chunk_frames(world.frames(fps, *size, jitter_seed=jitter_seed), asks)


def chunk_frames(frames, asks) -> list[ChunkRecord]:
    """``app.events.VideoFrame``s (a world, or a decoded video) -> scripted records."""
    from app.sampler import FrameSampler
    sampler, chunks, questions = FrameSampler(), [], {}
    pending = sorted(asks, key=lambda a: a.t_s)
    for frame in frames:
        while pending and pending[0].t_s <= frame.t_s:
            ask = pending.pop(0)
            ch = sampler.close_partial(ask.t_s)
            if ch is not None:
                questions[len(chunks)] = ask.text
                chunks.append(ch)
        chunks.extend(sampler.feed(frame))
    return script(chunks, questions)


def _round(t: float) -> float:
    return round(t * 10) / 10


def episode(rng: np.random.Generator, kind: str, duration_s: float, max_gap_s: float = 15.0,
            after_s: float = 8.0) -> tuple[World, list[Ask]]:
    """A random world and its questions (see the module contract). ``max_gap_s`` bounds
    the time from a when-question to its event (a curriculum knob); ``after_s`` the stream
    left after the event."""
    if kind == "qa":
        world = World.random(rng, duration_s)
        return world, [Ask(t, ask_colour(rng)) for t in _ask_times(rng, duration_s, 3)]
    if kind.startswith("status_"):                       # + "which colour are you waiting for?"
        return _with_status(rng, *episode(rng, kind[len("status_"):], duration_s, max_gap_s, after_s))
    if kind.startswith("idle_"):                         # + the same while nothing waits
        return _with_idle_status(rng, *episode(rng, kind[len("idle_"):], duration_s, max_gap_s, after_s))
    if kind.startswith("pre_"):                          # + a colour question before the request
        return _with_colour_before(rng, *episode(rng, kind[len("pre_"):], duration_s, max_gap_s, after_s))
    if kind == "every":
        world = World.random(rng, duration_s, min_seg_s=FAST_SEG_S[0], max_seg_s=FAST_SEG_S[1])
        tq = _round(float(rng.uniform(0.6, max(1.0, duration_s * 0.4))))
        asks = [Ask(tq, ASK_EVERY[rng.integers(len(ASK_EVERY))])]
        if rng.random() < 0.4:                             # a colour question later
            asks.append(Ask(_round(float(rng.uniform(tq + 1.0, duration_s - 0.2))), ask_colour(rng)))
        return world, asks
    if kind == "check":                                    # yes/no: half name the colour shown
        world = World.random(rng, duration_s, min_seg_s=FAST_SEG_S[0], max_seg_s=FAST_SEG_S[1])
        return world, [Ask(t, ask_is(rng, world.colour_at(t) if rng.random() < 0.5 else
                                     NAMES[rng.integers(len(NAMES))])) for t in _ask_times(rng, duration_s, 4)]
    world = World.random(rng, duration_s + 40.0)
    if kind == "alert":
        ks = [k for k in range(1, len(world.starts)) if world.starts[k] <= duration_s] or [1]
        k = ks[rng.integers(len(ks))]                      # the event segment
        target = world.colours[k]
        j = k - 1                                          # the question's segment
        while j > 0 and world.colours[j - 1] != target and rng.random() < 0.4:
            j -= 1                                         # other changes come first
        lo = max(world.starts[j] + 0.5, world.starts[k] - max_gap_s, 0.6)
        hi = world.starts[k] - 0.6
        if lo > hi:
            return episode(rng, kind, duration_s, max_gap_s, after_s)
        tq = _round(float(rng.uniform(lo, hi)))
        end = world.starts[k] + float(rng.uniform(1.5, after_s))
        asks = [Ask(tq, ask_when(rng, target), target)]
        if rng.random() < 0.5:                             # a colour question after the alert
            ta = _round(world.starts[k] + float(rng.uniform(2.0, after_s + 6)))
            asks.append(Ask(ta, ask_colour(rng)))
            end = max(end, ta + 0.5)
        if rng.random() < 0.3 and tq > 2.0:               # and one before the when-question
            asks.append(Ask(_round(float(rng.uniform(0.6, tq - 1.0))), ask_colour(rng)))
        return _cut(world, end), asks
    if kind == "negative":
        tq = _round(float(rng.uniform(0.6, max(1.0, duration_s / 2))))
        ta = _round(tq + float(rng.uniform(3.0, max(4.0, min(29.0, duration_s - tq)))))
        return _never_comes(rng, world, tq, ta) or episode(rng, kind, duration_s, max_gap_s, after_s)
    base, _, variant = kind.partition("_")
    if base in ("chase", "miss") and variant in ("", "late", "any", "snap"):
        if variant == "snap":                               # short: the distractors weigh more
            return _fast_episode(rng, base, min(duration_s, SNAP_S), min(max_gap_s, SNAP_GAP_S), 3.0)
        late = {"": {}, "late": dict(ask_by_s=duration_s),
                "any": dict(ask_by_s=duration_s, ask_frac=1.0, ask_after=0.8)}[variant]
        return _fast_episode(rng, base, duration_s, max_gap_s, after_s, **late)
    raise ValueError(f"episode: unknown kind {kind!r}")


FAST_SEG_S = (1.5, 6.0)
EARLY_ASK_S = 4.0     # asked early: most silent turns of the sample are waiting ones
SNAP_S, SNAP_GAP_S = 10.0, 9.0    # the snap kinds' stream and question-to-event bounds


def _fast_episode(rng, kind: str, duration_s: float, max_gap_s: float, after_s: float,
                  ask_by_s: float = EARLY_ASK_S, ask_frac: float = 0.5, ask_after: float = 0.4):
    world = World.random(rng, duration_s + 40.0, min_seg_s=FAST_SEG_S[0], max_seg_s=FAST_SEG_S[1])
    tq = _round(float(rng.uniform(0.6, max(1.0, min(duration_s * ask_frac, ask_by_s)))))
    current = world.colour_at(tq)
    if kind == "chase":
        first: dict[str, float] = {}                       # colour -> its first start after tq
        for s, c in world.changes():
            if s > tq + 0.6 and c != current and c not in first and s <= tq + max_gap_s:
                first[c] = s
        if not first:
            return _fast_episode(rng, kind, duration_s, max_gap_s, after_s, ask_by_s, ask_frac, ask_after)
        target = list(first)[rng.integers(len(first))]
        event = first[target]
        asks = [Ask(tq, ask_when(rng, target), target)]
        end = event + float(rng.uniform(1.5, after_s))
        if rng.random() < ask_after:                       # a colour question after the alert
            ta = _round(event + float(rng.uniform(1.5, after_s + 4)))
            asks.append(Ask(ta, ask_colour(rng)))
            end = max(end, ta + 0.5)
        return _cut(world, end), asks
    ta = _round(tq + float(rng.uniform(3.0, max(4.0, max_gap_s))))
    return _never_comes(rng, world, tq, ta) or _fast_episode(rng, kind, duration_s, max_gap_s, after_s, ask_by_s,
                                                             ask_frac, ask_after)


def _ask_times(rng, duration_s: float, most: int) -> list[float]:
    """1 to ``most`` question times in the stream, on the 0.1 s grid, sorted."""
    n = int(rng.integers(1, most + 1))
    return sorted({_round(float(t)) for t in rng.uniform(0.6, duration_s - 0.2, size=n)})


def _with_status(rng, world: World, asks: list[Ask]):
    """Ask the status question once while the episode's when-question (``asks[0]``) waits:
    between 1 s after it and 0.6 s before its event or the episode's other questions (an
    ``alert`` episode's colour question before the request counts too: then none is asked)."""
    when = asks[0]
    if when.target:
        ends = [s for s, c in world.changes() if c == when.target and s > when.t_s] + [a.t_s for a in asks[1:]]
        end = min(ends) if ends else world.duration_s
        if end - when.t_s > 1.6:
            t = _round(float(rng.uniform(when.t_s + 1.0, end - 0.6)))
            asks = asks + [Ask(t, ASK_WAITING[rng.integers(len(ASK_WAITING))])]
    return world, asks


def _with_idle_status(rng, world: World, asks: list[Ask]):
    """Ask the status question once while nothing waits: before the when-question (``asks[0]``)
    or after its event, at least 0.6 s from every other question (none when no such time)."""
    spans = [(0.6, world.duration_s - 0.2)]
    when = asks[0]
    if when.target:
        events = [s for s, c in world.changes() if c == when.target and s > when.t_s]
        spans = [(0.6, when.t_s - 0.6)] + ([(events[0] + 1.0, world.duration_s - 0.2)] if events else [])
    times = [t for lo, hi in spans for t in np.arange(np.ceil(lo * 10) / 10, hi, 0.1)
             if all(abs(t - a.t_s) >= 0.6 for a in asks)]
    if times:
        t = _round(float(times[rng.integers(len(times))]))
        asks = asks + [Ask(t, ASK_WAITING[rng.integers(len(ASK_WAITING))])]
    return world, asks


def _with_colour_before(rng, world: World, asks: list[Ask]):
    """A colour question 0.6 s or more before the when-question (``asks[0]``) and any other
    question before it (none when it is asked before 1.2 s)."""
    first = min(a.t_s for a in asks)
    if first >= 1.2:
        asks = asks + [Ask(_round(float(rng.uniform(0.6, first - 0.6))), ask_colour(rng))]
    return world, asks


def _never_comes(rng, world: World, tq: float, ta: float):
    """A when-question at ``tq`` for a colour the world does not show before the colour
    question at ``ta`` (None when every colour shows)."""
    seen = {world.colour_at(t) for t in np.arange(tq, ta + 1.0, 0.1)}
    missing = [c for c in NAMES if c not in seen]
    if not missing:
        return None
    target = missing[rng.integers(len(missing))]
    return _cut(world, ta + 0.5), [Ask(tq, ask_when(rng, target), target), Ask(ta, ask_colour(rng))]


def _cut(world: World, end_s: float) -> World:
    keep = [i for i, s in enumerate(world.starts) if s < end_s]
    return World(tuple(world.starts[i] for i in keep), tuple(world.colours[i] for i in keep),
                 float(end_s), world.shape)
