"""The languages OpenAI's transcription answers name, as BCP-47 tags.

whisper-1's ``verbose_json`` names the language in English ("spanish"), the
newer models list ISO-639-1 codes (``languages: [{"code": "es"}]``); both come
out as the code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Whisper's own list (its tokenizer's LANGUAGES), name -> ISO-639-1.
_NAMES = {
    "english": "en", "chinese": "zh", "german": "de", "spanish": "es", "russian": "ru", "korean": "ko",
    "french": "fr", "japanese": "ja", "portuguese": "pt", "turkish": "tr", "polish": "pl",
    "catalan": "ca", "dutch": "nl", "arabic": "ar", "swedish": "sv", "italian": "it",
    "indonesian": "id", "hindi": "hi", "finnish": "fi", "vietnamese": "vi", "hebrew": "he",
    "ukrainian": "uk", "greek": "el", "malay": "ms", "czech": "cs", "romanian": "ro", "danish": "da",
    "hungarian": "hu", "tamil": "ta", "norwegian": "no", "thai": "th", "urdu": "ur", "croatian": "hr",
    "bulgarian": "bg", "lithuanian": "lt", "latin": "la", "maori": "mi", "malayalam": "ml",
    "welsh": "cy", "slovak": "sk", "telugu": "te", "persian": "fa", "latvian": "lv", "bengali": "bn",
    "serbian": "sr", "azerbaijani": "az", "slovenian": "sl", "kannada": "kn", "estonian": "et",
    "macedonian": "mk", "breton": "br", "basque": "eu", "icelandic": "is", "armenian": "hy",
    "nepali": "ne", "mongolian": "mn", "bosnian": "bs", "kazakh": "kk", "albanian": "sq",
    "swahili": "sw", "galician": "gl", "marathi": "mr", "punjabi": "pa", "sinhala": "si",
    "khmer": "km", "shona": "sn", "yoruba": "yo", "somali": "so", "afrikaans": "af", "occitan": "oc",
    "georgian": "ka", "belarusian": "be", "tajik": "tg", "sindhi": "sd", "gujarati": "gu",
    "amharic": "am", "yiddish": "yi", "lao": "lo", "uzbek": "uz", "faroese": "fo",
    "haitian creole": "ht", "pashto": "ps", "turkmen": "tk", "nynorsk": "nn", "maltese": "mt",
    "sanskrit": "sa", "luxembourgish": "lb", "myanmar": "my", "tibetan": "bo", "tagalog": "tl",
    "malagasy": "mg", "assamese": "as", "tatar": "tt", "hawaiian": "haw", "lingala": "ln",
    "hausa": "ha", "bashkir": "ba", "javanese": "jw", "sundanese": "su", "cantonese": "yue",
}  # fmt: skip


def language_tag(value: object) -> str | None:
    """A language as the API names it (a code or an English name) -> a tag; None if unknown."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if not text:
        return None
    if text in _NAMES:
        return _NAMES[text]
    # Already a code ("es", "es-419"); anything else is not a language we can match.
    parts = text.replace("_", "-").split("-")
    return text if parts[0].isalpha() and 2 <= len(parts[0]) <= 3 else None


def first_listed(languages: Iterable[Any] | None) -> str | None:
    """The first of ``languages: [{"code": ...}]`` (most of the audio first), as a tag."""
    for item in languages or ():
        code = item.get("code") if isinstance(item, dict) else getattr(item, "code", None)
        tag = language_tag(code)
        if tag is not None:
            return tag
    return None
