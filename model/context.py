"""The context policy of protocol section 3, as pure functions over a round ledger.

Contract: a ``Round`` is one chunk step: its stream span ``start_s..t_s``, the question
asked in it (or None) and the assistant turn it got (``answer``: reply token ids, or None
for ``<|silent|>``; ``done`` once the turn is complete). Nothing here touches tensors.

Video window (N = ``video_s``, float N' = ``float_s``, both in stream seconds): the
window starts at ``window_start`` and holds every round that ends after it. Before a new
chunk ending at ``t`` is appended, ``advance_window`` moves the start forward by exactly
N' (repeatedly, after a gap) while ``t - start > N + N'``: the window grows to N + N'
seconds, then the oldest N' seconds leave at once. With 1-s chunks that is: 45 chunks,
then the 46th arrives, 15 leave, 31 remain (the release drops 16: an off-by-one).

QA window (M = ``qa_groups``, cap ``max_rounds``): rounds that left the video window become
text-only QA groups. A question round opens a group; a later video-only round with a spoken
answer continues the current group as a user turn with empty text + its answer. Only
spoken rounds leave text, as in the release: silent video-only rounds are dropped, and so
is a question round whose answer was ``<|silent|>`` (its later answers stay a group without
a head; a group with nothing spoken does not count toward M). No text ``<|silent|>`` turn
is ever rendered. A spoken round with no group to continue (the model spoke before any
question: an orphan) is merged into the last group kept so far, or opens a headless group
when there is none. Only the last M groups are kept; a group longer than ``max_rounds``
keeps its first round and its latest ones (earliest empty-text rounds go first). The
system prompt is never evicted (the session renders it first, always).

``cut_point(start, float_s)`` is where the next cut will move the window start: once a
completed round ends after it, the post-cut context is fully known (``plan`` with that
start), which is what lets the session build it in a shadow cache before the cut.
"""
from __future__ import annotations

from dataclasses import dataclass, field

EPS = 1e-6


@dataclass(frozen=True)
class Round:
    key: int                                  # session-unique round number
    start_s: float
    t_s: float
    question: str | None = None
    answer: tuple[int, ...] | None = None     # None = silent
    done: bool = False

    @property
    def spoken(self) -> bool:
        return self.done and self.answer is not None


@dataclass(frozen=True)
class QaTurn:
    """A text-only round of the QA history: user text ("" for a continuation) + answer."""
    text: str
    answer: tuple[int, ...] | None
    key: int = field(default=-1, compare=False)    # the round's key (not part of the text)


@dataclass(frozen=True)
class Plan:
    qa: tuple[QaTurn, ...] = ()
    window: tuple[Round, ...] = field(default_factory=tuple)


def advance_window(start_s: float, t_s: float, video_s: float, float_s: float) -> float:
    """The window start after a chunk ending at ``t_s`` arrives (moves by whole N' steps)."""
    while t_s - start_s > video_s + float_s + EPS:
        start_s += float_s
    return start_s


def in_window(r: Round, start_s: float) -> bool:
    return r.t_s > start_s + EPS


def cut_point(start_s: float, float_s: float) -> float:
    return start_s + float_s


def _raw_groups(outside: list[Round]) -> list[list[Round]]:
    """Questions open groups (silent answer or not), spoken video-only rounds continue the
    last one (or open a headless one when there is none), silent video-only rounds go."""
    groups: list[list[Round]] = []
    for r in outside:
        if r.question is not None or (r.spoken and not groups):
            groups.append([r])
        elif r.spoken:
            groups[-1].append(r)
    return groups


def qa_groups(outside: list[Round], qa_groups_max: int, max_rounds: int) -> list[list[Round]]:
    """Group the rounds that left the video window (time order) per the QA rules: only
    spoken rounds stay (a silently answered question's round goes, its later answers stay
    a group without a head); a group with none left does not count toward M."""
    visible = [[r for r in g if r.spoken] for g in _raw_groups(outside)]
    groups = [g for g in visible if g]
    kept = groups[-qa_groups_max:] if qa_groups_max > 0 else []
    return [g if len(g) <= max_rounds else [g[0], *g[len(g) - max_rounds + 1:]] for g in kept]


def qa_turns(groups: list[list[Round]]) -> tuple[QaTurn, ...]:
    return tuple(QaTurn(r.question or "", r.answer, r.key) for g in groups for r in g)


def plan(rounds: list[Round], start_s: float, qa_groups_max: int, max_rounds: int) -> Plan:
    """The context for window start ``start_s``: QA text turns, then the window's rounds."""
    outside = [r for r in rounds if not in_window(r, start_s)]
    window = tuple(r for r in rounds if in_window(r, start_s))
    return Plan(qa_turns(qa_groups(outside, qa_groups_max, max_rounds)), window)


def prune(rounds: list[Round], start_s: float, qa_groups_max: int, max_rounds: int) -> list[Round]:
    """Drop outside rounds that can no longer matter (silent ones, evicted or capped-away
    group rounds). ``plan`` over the result equals ``plan`` over the input for this and any
    later window start, so the ledger stays bounded on long streams."""
    outside = [r for r in rounds if not in_window(r, start_s)]
    keep = {r.key for g in qa_groups(outside, qa_groups_max, max_rounds) for r in g}
    if qa_groups_max > 0:
        # a silent question still heads its group: later answers must group under it
        raw = _raw_groups(outside)
        keep |= {g[0].key for g in raw if any(r.key in keep for r in g)}
        if raw:
            keep.add(raw[-1][0].key)        # the group later continuations will join
    return [r for r in outside if r.key in keep] + [r for r in rounds if in_window(r, start_s)]
