"""Reply text for speech: incremental sentence splitting and markup/emoji stripping.

Contract:
* ``SentenceSplitter().push(delta) -> list[str]`` returns the sentences completed by this
  piece of streamed text (in order, stripped, never empty); ``flush()`` returns what is
  left. A sentence ends at ``.``/``!``/``?``/``…`` (plus closing quotes or brackets) once
  the next character is whitespace, or at a line break. The boundary is only decided when
  that next character has arrived, so "3." followed later by "5" never splits.
  Abbreviations ("e.g.", "Mr.", single initials) and list numbers ("1.") do not end a
  sentence. A sentence longer than ``max_chars`` is cut at the last comma/semicolon/colon
  (or space) so the voice never waits for an endless sentence; the first sentence may be
  cut earlier (``first_max_chars``) to start speaking sooner.
* ``clean_for_speech(text) -> str`` removes what should not be read aloud: Markdown
  (emphasis, code, headings, list markers, tables, links -> their text, images),
  HTML-like tags and special tokens such as ``<|silent|>``, bare URLs (-> "link"), emoji
  and other pictographs; it collapses whitespace. It returns "" when nothing speakable is
  left (the TTS then skips the sentence). It sanitises first (below).
* ``sanitize_text(text) -> str``: the one text sanitiser for whatever a person, a file or
  the voice gets (captions, recordings, exports, speech): control characters (line breaks
  and tabs kept, CR LF -> LF, tab -> space), U+FFFD, lone surrogates, noncharacters and
  bidirectional overrides/isolates are removed; everything else is kept as it is.

Pure functions and a small per-reply object; standard library only.
"""
from __future__ import annotations

import re
import unicodedata

_ENDERS = ".!?…"
_CLOSERS = "\"')]}”’»"
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "eg", "ie",
    "approx", "no", "fig", "cf", "al", "inc", "ltd", "co", "mt", "a.m", "p.m", "u.s", "u.k",
}
_BREAKS = ",;:—–"


def _word_before(text: str, i: int) -> str:
    """The token ending at index ``i`` (exclusive), lower-cased, without leading punctuation."""
    j = i
    while j > 0 and not text[j - 1].isspace():
        j -= 1
    return text[j:i].lstrip("\"'([{“‘«").lower()


def _is_boundary(text: str, i: int) -> bool:
    """``text[i]`` is a sentence-ending character; is this a real sentence end?"""
    if text[i] != ".":
        return True
    word = _word_before(text, i)
    if word in _ABBREVIATIONS:
        return False
    if len(word) == 1 and word.isalpha():       # an initial: "J. Smith"
        return False
    if word.isdigit():                          # "1." opening a list item
        line_start = text.rfind("\n", 0, i - len(word)) + 1
        return text[line_start:i - len(word)].strip() != ""
    return True


class SentenceSplitter:
    """Accumulates streamed reply text and hands out finished sentences."""

    def __init__(self, max_chars: int = 220, first_max_chars: int = 120) -> None:
        self.max_chars = max_chars
        self.first_max_chars = first_max_chars
        self._buf = ""
        self._emitted = 0

    def push(self, delta: str) -> list[str]:
        self._buf += delta
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            piece, self._buf = self._buf[:cut].strip(), self._buf[cut:]
            if piece:
                out.append(piece)
                self._emitted += 1
        return out

    def flush(self) -> list[str]:
        rest, self._buf = self._buf.strip(), ""
        if rest:
            self._emitted += 1
            return [rest]
        return []

    def _find_cut(self) -> int | None:
        buf = self._buf
        for i, ch in enumerate(buf):
            if ch == "\n" and buf[:i].strip():
                return i + 1
            if ch in _ENDERS:
                j = i + 1
                while j < len(buf) and (buf[j] in _CLOSERS or buf[j] in _ENDERS):
                    j += 1
                if j >= len(buf):
                    break            # the next character decides; wait for it
                if buf[j].isspace() and _is_boundary(buf, i):
                    return j
        limit = self.first_max_chars if self._emitted == 0 else self.max_chars
        if len(buf) <= limit:
            return None
        window = buf[:limit]
        for marks in (_BREAKS, " "):
            k = max(window.rfind(m) for m in marks)
            if k > limit // 3:
                return k + 1
        return limit


_FENCE = re.compile(r"```.*?(```|$)", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.I)
_TAG = re.compile(r"<\|[^|>]*\|>|</?[A-Za-z][^<>]{0,200}>")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s*", re.M)
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+", re.M)
_QUOTE = re.compile(r"^\s*>\s?", re.M)
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}.*$", re.M)
_EMPHASIS = re.compile(r"(\*{1,3}|_{1,3}|~~)(?=\S)(.+?)(?<=\S)\1")
_LEFTOVER = re.compile(r"[*_`#|~^\\]+")
_SPACES = re.compile(r"\s+")


def _speakable_char(ch: str) -> bool:
    cat = unicodedata.category(ch)
    if cat in ("So", "Cs", "Co", "Cn"):       # symbols (emoji), surrogates, private use
        return False
    if cat in ("Mn", "Cf") and ch in "\u200d\ufe0e\ufe0f\u20e3":   # emoji joiners/selectors
        return False
    return not (0x1F000 <= ord(ch) <= 0x1FAFF)


# bidi embeddings/overrides (U+202A-202E) and isolates (U+2066-2069) can make shown text
# read differently from what it is
_BIDI = set(range(0x202A, 0x202F)) | set(range(0x2066, 0x206A))


def _shown_char(ch: str) -> bool:
    o = ord(ch)
    if ch in "\n":
        return True
    if o < 0x20 or 0x7F <= o < 0xA0:                      # C0/C1 control characters
        return False
    if o == 0xFFFD or 0xD800 <= o < 0xE000 or o in _BIDI:   # replacement char, surrogates
        return False
    return not (0xFDD0 <= o <= 0xFDEF or (o & 0xFFFE) == 0xFFFE)   # noncharacters


def sanitize_text(text: str) -> str:
    """``text`` without control characters, U+FFFD and the like (see the contract)."""
    t = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    if t.isprintable() and "\ufffd" not in t:     # fast path (False whenever there is a \n)
        return t
    return "".join(ch for ch in t if _shown_char(ch))


def clean_for_speech(text: str) -> str:
    """Text as it should be spoken: no markup, no emoji, single spaces."""
    t = _FENCE.sub(" ", sanitize_text(text))
    t = _IMAGE.sub(r"\1", t)
    t = _LINK.sub(r"\1", t)
    t = _URL.sub("link", t)
    t = _TAG.sub(" ", t)
    t = _TABLE_RULE.sub(" ", t)
    t = _HEADING.sub("", t)
    t = _QUOTE.sub("", t)
    t = _BULLET.sub("", t)
    t = _EMPHASIS.sub(r"\2", t)
    t = t.replace("`", "")
    t = _LEFTOVER.sub(" ", t)
    t = "".join(ch for ch in t if _speakable_char(ch))
    t = _SPACES.sub(" ", t).strip()
    return t if any(ch.isalnum() for ch in t) else ""
