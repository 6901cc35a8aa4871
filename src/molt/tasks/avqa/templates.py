"""The question templates of MUSIC-AVQA and the question type of a typed question.

Part of molt-av (Apache-2.0). The release writes each question as a template with placeholders (``<Object>``,
``<LR>``, ``<FL>``, ``<TH>``, ``<BA>``, ``<LL>``, ``<LRer>``) and its fill-ins; the 33 templates below are the
``question_content`` strings of its annotation files with their ``type`` (family, sub-type), and the
procedural generator adds its own (:data:`molt.tasks.avqa.synthetic.TEMPLATES`). :func:`recognise_question`
finds the template a typed question follows: its words, with each placeholder standing for one to three words.
"""
from __future__ import annotations

import re

from .reader import _PLACEHOLDER, tokenize

__all__ = ["RELEASE_TEMPLATES", "recognise_question"]

#: ``(question_content, family, sub-type)`` of every template of the MUSIC-AVQA annotation files.
RELEASE_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("Is the <Object> louder than the <Object>?", "Audio", "Comparative"),
    ("Is the <Object> more rhythmic than the <Object>?", "Audio", "Comparative"),
    ("Is the <Object> playing longer than the <Object>?", "Audio", "Comparative"),
    ("How many musical instruments were heard throughout the video?", "Audio", "Counting"),
    ("Is there a <Object> sound?", "Audio", "Counting"),
    ("Are there <Object> and <Object> sound?", "Audio", "Counting"),
    ("Is the instrument on the <LR> more rhythmic than the instrument on the <LR>?", "Audio-Visual", "Comparative"),
    ("Is the instrument on the <LR> louder than the instrument on the <LR>?", "Audio-Visual", "Comparative"),
    ("Is the <Object> on the <LR> more rhythmic than the <Object> on the <LR>?", "Audio-Visual", "Comparative"),
    ("Is the <Object> on the <LR> louder than the <Object> on the <LR>?", "Audio-Visual", "Comparative"),
    ("How many sounding <Object> in the video?", "Audio-Visual", "Counting"),
    ("How many instruments are sounding in the video?", "Audio-Visual", "Counting"),
    ("How many instruments in the video did not sound from beginning to end?", "Audio-Visual", "Counting"),
    ("How many types of musical instruments sound in the video?", "Audio-Visual", "Counting"),
    ("Is there a voiceover?", "Audio-Visual", "Existential"),
    ("Is the <Object> in the video always playing?", "Audio-Visual", "Existential"),
    ("Is this sound from the instrument in the video?", "Audio-Visual", "Existential"),
    ("Which is the musical instrument that sounds at the same time as the <Object>?", "Audio-Visual", "Location"),
    ("Where is the <LL> instrument?", "Audio-Visual", "Location"),
    ("Is the <FL> sound coming from the <LR> instrument?", "Audio-Visual", "Location"),
    ("What is the <LR> instrument of the <FL> sounding instrument?", "Audio-Visual", "Location"),
    ("What is the <TH> instrument that comes in?", "Audio-Visual", "Temporal"),
    ("Where is the <FL> sounding instrument?", "Audio-Visual", "Temporal"),
    ("Which instrument makes sounds <BA> the <Object>?", "Audio-Visual", "Temporal"),
    ("Which <Object> makes the sound <FL>?", "Audio-Visual", "Temporal"),
    ("Is there a <Object> in the entire video?", "Visual", "Counting"),
    ("Are there <Object> and <Object> instruments in the video?", "Visual", "Counting"),
    ("How many <Object> are in the entire video?", "Visual", "Counting"),
    ("How many types of musical instruments appeared in the entire video?", "Visual", "Counting"),
    ("What is the instrument on the <LR> of <Object>?", "Visual", "Location"),
    ("What kind of musical instrument is it?", "Visual", "Location"),
    ("Where is the performance?", "Visual", "Location"),
    ("What kind of instrument is the <LRer> instrument?", "Visual", "Location"),
)

_SLOT = "xxslotxx"


def _pattern(template: str) -> re.Pattern[str]:
    words = tokenize(_PLACEHOLDER.sub(f" {_SLOT} ", template))
    parts = [r"[a-z0-9_]+(?: [a-z0-9_]+){0,2}" if word == _SLOT else re.escape(word) for word in words]
    return re.compile(" ".join(parts))


def recognise_question(question: str) -> dict[str, str] | None:
    """``{"template", "family", "subtype"}`` of the template ``question`` follows (the release's first, then the
    generator's), or ``None``."""
    from .synthetic import TEMPLATES

    text = " ".join(tokenize(question))
    generated = ((template, family, subtype) for (family, subtype), template in TEMPLATES.items())
    for template, family, subtype in (*RELEASE_TEMPLATES, *generated):
        if _pattern(template).fullmatch(text):
            return {"template": template, "family": family, "subtype": subtype}
    return None
