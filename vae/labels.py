"""The emotion label set (CAFE's seven) and the one mapping from label variants to it.

Every reader (CAFE spreadsheet, FER2013 codes, folder names, manifests, YAML configs) goes
through `canonical_emotion`, so "Happiness", "happy" and "HAPPY" all mean the same class.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = (
    "angry",
    "disgusted",
    "fearful",
    "happy",
    "neutral",
    "sad",
    "surprised",
)

_ALIASES = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgusted",
    "disgusted": "disgusted",
    "fear": "fearful",
    "fearful": "fearful",
    "afraid": "fearful",
    "scared": "fearful",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "neutral": "neutral",
    "calm": "neutral",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprised",
    "surprised": "surprised",
}

# FER2013's integer codes (emotion column of fer2013.csv).
FER2013_CODES: dict[int, str] = {
    0: "angry",
    1: "disgusted",
    2: "fearful",
    3: "happy",
    4: "sad",
    5: "surprised",
    6: "neutral",
}


def canonical_emotion(label: str) -> str:
    """Map a label variant ("Happiness", " disgust ", "FEAR") to one of `EMOTIONS`.

    Raises ValueError naming the label and the accepted names when it cannot be mapped.
    """
    key = str(label).strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(
        f"unknown emotion label {label!r}; use one of {', '.join(EMOTIONS)} "
        f"(accepted variants: {', '.join(sorted(_ALIASES))})"
    )


def emotion_index(label: str) -> int:
    """Index of a label (any accepted variant) in `EMOTIONS`."""
    return EMOTIONS.index(canonical_emotion(label))
