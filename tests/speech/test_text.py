"""speech.text: sentence splitting for streamed replies and cleaning text for the voice."""
from speech.text import SentenceSplitter, clean_for_speech


def _stream(text, step=1, **kw):
    s, out = SentenceSplitter(**kw), []
    for i in range(0, len(text), step):
        out += s.push(text[i:i + step])
    return out, s.flush()


def test_sentences_are_released_as_soon_as_they_end():
    """The first sentence must be handed to TTS before the reply ends (streaming voice)."""
    s = SentenceSplitter()
    assert s.push("I see a red cup.") == []    # the boundary waits for the next character
    assert s.push(" It is on") == ["I see a red cup."]
    assert s.push(" the table! Anything else?") == ["It is on the table!"]
    assert s.flush() == ["Anything else?"]
    assert s.flush() == []


def test_no_false_splits_on_numbers_abbreviations_and_lists():
    """Decimals, "e.g.", titles and list numbers must not cut a sentence in two; the
    result must not depend on how the model chunked its tokens."""
    text = 'It costs 3.50 dollars, e.g. cheap. Mr. Smith said "hi." Then:\n1. Apples\n2. Pears\nDone'
    expected = ["It costs 3.50 dollars, e.g. cheap.", 'Mr. Smith said "hi."', "Then:", "1. Apples",
                "2. Pears"]
    for step in (1, 3, 7, len(text)):
        sentences, rest = _stream(text, step)
        assert sentences == expected and rest == ["Done"], step


def test_long_sentences_are_cut_at_a_pause():
    """A run-on reply must not keep the voice silent: it is cut at a comma or space."""
    first_limit = 60
    text = "well, " * 30
    sentences, rest = _stream(text, 5, first_max_chars=first_limit, max_chars=100)
    assert sentences and all(len(x) <= 100 for x in sentences)
    assert len(sentences[0]) <= first_limit
    assert " ".join(sentences + rest).split() == text.split()


def test_clean_for_speech_strips_markup_and_emoji():
    """Markdown, links, special tokens and emoji must not be read aloud."""
    dirty = "## Result\n**Bold** and _it_ `code` [the docs](http://x.y) at https://a.b/c 😀👍🏽 <|silent|> ok"
    assert clean_for_speech(dirty) == "Result Bold and it code the docs at link ok"
    assert clean_for_speech("- item one\n- item *two*") == "item one item two"
    assert clean_for_speech("😀 🎉 **") == ""
    assert clean_for_speech("Café déjà vu, 3 × 4 = 12.") == "Café déjà vu, 3 × 4 = 12."
