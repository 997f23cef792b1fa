"""The demo's multilingual corpus, generated offline from Faker's locale vocabularies (MIT licence).

    python -m neuronlab.demo.corpus OUT_DIR --lines 2400     # needs `pip install faker`

Each line mixes what a locale offers: lorem-style sentences from its word list, a person's name and job,
an address. Ten languages in six scripts: Latin (en fr de es it), Cyrillic (ru), Greek (el), Arabic (ar),
Han (zh), Japanese kana and kanji (ja). Seeded, so one Faker version always gives the same text.
"""

from __future__ import annotations

import argparse
from pathlib import Path

LOCALES = {
    "en": "en_US",
    "fr": "fr_FR",
    "de": "de_DE",
    "es": "es_ES",
    "it": "it_IT",
    "ru": "ru_RU",
    "el": "el_GR",
    "ar": "ar_AA",
    "zh": "zh_CN",
    "ja": "ja_JP",
}


def generate(lang: str, n_lines: int, seed: int = 0) -> list[str]:
    from faker import Faker

    fake = Faker(LOCALES[lang])
    fake.seed_instance(seed)
    lines = []
    for i in range(n_lines):
        kind = i % 4
        if kind == 3:
            line = f"{fake.name()}, {fake.job()}. {fake.sentence(nb_words=6)}"
        elif kind == 2 and lang not in ("ar",):  # ar_AA addresses are English templates
            line = f"{fake.address()}. {fake.sentence(nb_words=6)}"
        else:
            line = fake.paragraph(nb_sentences=2)
        lines.append(" ".join(line.split()))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--lines", type=int, default=2400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for lang in LOCALES:
        (args.out / f"{lang}.txt").write_text("\n".join(generate(lang, args.lines, args.seed)) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
