"""Offline language identification of generated text (py3langid ships its model: nothing is downloaded).

    lid = LanguageIdentifier(["en", "fra_Latn", "zh"])     # group labels: ISO 639-1 or FLORES codes
    lid("Le chat est sur le tapis.")                       # "fra_Latn"

Only the given languages compete, so every text gets one of the groups.
"""

from __future__ import annotations

from neuronlab.errors import NeuronlabError

# ISO 639-3 (as in FLORES codes such as fra_Latn) -> ISO 639-1 (py3langid's labels), for common languages
ISO3 = {
    "eng": "en",
    "fra": "fr",
    "deu": "de",
    "spa": "es",
    "por": "pt",
    "ita": "it",
    "rus": "ru",
    "arb": "ar",
    "ara": "ar",
    "hin": "hi",
    "ind": "id",
    "vie": "vi",
    "jpn": "ja",
    "zho": "zh",
    "cmn": "zh",
    "kor": "ko",
    "ell": "el",
    "nld": "nl",
    "pol": "pl",
    "tur": "tr",
    "ukr": "uk",
    "ces": "cs",
    "swe": "sv",
    "fin": "fi",
    "heb": "he",
    "tha": "th",
    "ben": "bn",
    "fas": "fa",
    "pes": "fa",
    "urd": "ur",
    "swh": "sw",
    "tam": "ta",
}


def iso_code(group: str) -> str:
    """The ISO 639-1 code of a group label such as "fr", "fra" or "fra_Latn"."""
    base = group.split("_")[0].split("-")[0].lower()
    return ISO3.get(base, base)


class LanguageIdentifier:
    def __init__(self, groups: list[str]):
        from py3langid.langid import MODEL_FILE
        from py3langid.langid import LanguageIdentifier as _LID

        self._lid = _LID.from_model_file(MODEL_FILE, norm_probs=True)
        codes: dict[str, str] = {}
        for g in groups:
            if iso_code(g) in codes:
                raise NeuronlabError(
                    f"groups {codes[iso_code(g)]!r} and {g!r} are the same language "
                    f"({iso_code(g)}) to the language identifier: give each language one group"
                )
            codes[iso_code(g)] = g
        unknown = sorted(c for c in codes if c not in self._lid.nb_classes)
        if unknown:
            raise NeuronlabError(
                f"the language identifier does not know {unknown}; name groups by ISO 639-1 or "
                "FLORES codes (en, fra_Latn, ...)"
            )
        self._lid.set_languages(sorted(codes))
        self._group = codes

    def __call__(self, text: str) -> str:
        code, _prob = self._lid.classify(text)
        return self._group[code]
