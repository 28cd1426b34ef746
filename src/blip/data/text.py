"""Text cleaning as in the BLIP reference: `pre_caption` for captions, `pre_question` for questions."""

from __future__ import annotations

import re

# The reference replaces (captions) or deletes (questions) exactly these characters.
_PUNCT = re.compile(r"[.!\"()*#:;~]")
_SPACES = re.compile(r"\s+")
_LEFT_RIGHT = re.compile(r"\b(left|right)\b")


def pre_caption(caption: str, max_words: int = 50) -> str:
    """Lower-case, turn `.!"()*#:;~` into spaces, collapse whitespace, strip, keep at most `max_words` words."""
    # The reference collapses only runs of 2+ whitespace characters; collapsing every run also turns a lone tab or
    # newline into a space, which the tokenizer treats the same way, so token ids are unchanged.
    caption = _SPACES.sub(" ", _PUNCT.sub(" ", caption.lower())).strip()
    words = caption.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else caption


def pre_question(question: str, max_words: int = 50) -> str:
    """Lower-case, delete `.!"()*#:;~`, strip trailing spaces, keep at most `max_words` words (reference rules)."""
    question = _PUNCT.sub("", question.lower()).rstrip(" ")
    words = question.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else question


def swap_left_right(text: str) -> str:
    """Exchange the words "left" and "right" (used when an image or an image pair is mirrored)."""
    return _LEFT_RIGHT.sub(lambda m: "right" if m.group(1) == "left" else "left", text)
