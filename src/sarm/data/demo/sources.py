"""The Debian text packages the demo data comes from: WordNet 3.0 (`wordnet-base`), `fortunes-min`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

WORDNET = Path("/usr/share/wordnet")
FORTUNES = Path("/usr/share/games/fortunes")
FORTUNE_FILES = ("fortunes", "literature", "riddles")
POS_FILES = ("noun", "verb", "adj", "adv")


@dataclass(frozen=True)
class Synset:
    """One WordNet meaning: its lemmas, definition and usage examples."""

    offset: str
    pos: str
    lexfile: int
    lemmas: tuple[str, ...]
    gloss: str  # the definition, without the quoted examples
    examples: tuple[str, ...]

    @property
    def word(self) -> str:
        return self.lemmas[0]


def _parse_gloss(text: str) -> tuple[str, tuple[str, ...]]:
    examples = tuple(e.strip() for e in re.findall(r'"([^"]*)"', text) if e.strip())
    definition = text.split('"', 1)[0].strip().rstrip(";").strip()
    return definition, examples


def read_wordnet(folder: Path) -> list[Synset]:
    """Every synset of WordNet's data files, in file order (nouns, verbs, adjectives, adverbs)."""
    synsets = []
    for pos in POS_FILES:
        with open(folder / f"data.{pos}", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("  "):  # licence header
                    continue
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                count = int(fields[3], 16)
                lemmas = tuple(
                    re.sub(r"\(.*\)$", "", w).replace("_", " ") for w in fields[4 : 4 + 2 * count : 2]
                )
                definition, examples = _parse_gloss(gloss.strip())
                synsets.append(Synset(fields[0], pos, int(fields[1]), lemmas, definition, examples))
    return synsets


def read_sense_counts(folder: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Per lemma: senses over all parts of speech, and the largest tagged-sense count (frequency)."""
    senses: dict[str, int] = {}
    tagged: dict[str, int] = {}
    for pos in POS_FILES:
        with open(folder / f"index.{pos}", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("  "):
                    continue
                fields = line.split()
                lemma, pointers = fields[0].replace("_", " "), int(fields[3])
                senses[lemma] = senses.get(lemma, 0) + int(fields[2])
                tagged[lemma] = max(tagged.get(lemma, 0), int(fields[5 + pointers]))
    return senses, tagged


def read_fortunes(folder: Path) -> list[str]:
    cookies = []
    for name in FORTUNE_FILES:
        text = (folder / name).read_text(encoding="utf-8", errors="replace")
        cookies.extend(c.strip() for c in text.split("\n%\n") if c.strip() and c.strip() != "%")
    return cookies


def missing_files(wordnet: Path = WORDNET, fortunes: Path = FORTUNES) -> list[Path]:
    """The source files the generator reads that are not there (none once both packages are installed)."""
    needed = [wordnet / f"data.{p}" for p in POS_FILES] + [wordnet / f"index.{p}" for p in POS_FILES]
    return [path for path in needed + [fortunes / f for f in FORTUNE_FILES] if not path.is_file()]
