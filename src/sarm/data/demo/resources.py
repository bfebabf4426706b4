"""WordNet split into prompt words, distractors and fillers; with the templates and the seeded generator."""

from __future__ import annotations

import bisect
import random
import re
from pathlib import Path

from sarm.data.demo.lengths import pick_sides
from sarm.data.demo.sources import POS_FILES, Synset, read_sense_counts, read_wordnet

# WordNet words reserved for prompts (test sets ~230, training 600); the rest are distractors
PROMPT_WORDS = 900


class Resources:
    """WordNet split into prompt words (each used once) and filler glosses, plus the templates."""

    def __init__(self, wordnet: Path, templates: dict, rng: random.Random):
        self.t = templates
        self.rng = rng
        self.synsets = read_wordnet(wordnet)
        senses, tagged = read_sense_counts(wordnet)
        self.tagged = tagged
        keys = [s for s in self.synsets if self._good_key(s, senses, tagged)]
        keys.sort(key=lambda s: (s.word, s.offset))
        rng.shuffle(keys)
        # Prompt words are popped from the end as families use them; the other common, one-sense words lend
        # their glosses as wrong or off-topic answers (same kind of word, so their vocabulary gives nothing
        # away).
        # Each half of the distractors serves one side, so no wrong answer of a test set was seen in training.
        self.keys = keys[:PROMPT_WORDS]
        rest = keys[PROMPT_WORDS:]
        self.distractors = {"test": rest[: len(rest) // 2], "train": rest[len(rest) // 2 :]}
        key_words = {s.word for s in keys}
        self.fillers = [
            s for s in self.synsets if not key_words.intersection(s.lemmas) and self._good_gloss(s)
        ]
        self.fillers_by_pos = {pos: [s for s in self.fillers if s.pos == pos] for pos in POS_FILES}
        # per part of speech: (gloss length, gloss, semantic field) sorted, for wrong_glosses
        self.glosses_by_length = {
            (split, pos): sorted({(len(s.gloss), s.gloss, s.lexfile) for s in synsets if s.pos == pos})
            for split, synsets in self.distractors.items()
            for pos in POS_FILES
        }
        self.used_words: list[str] = []

    @staticmethod
    def _good_gloss(s: Synset) -> bool:
        words = s.gloss.split()
        return 4 <= len(words) <= 22 and not re.search(r"[\"`;]|\.\.\.", s.gloss) and s.gloss[:1].islower()

    @classmethod
    def _good_key(cls, s: Synset, senses: dict[str, int], tagged: dict[str, int]) -> bool:
        word = s.word
        return (
            word.isalpha()
            and word.islower()
            and 4 <= len(word) <= 12
            and senses.get(word) == 1
            and tagged.get(word, 0) >= 1
            and cls._good_gloss(s)
            and word[:5] not in s.gloss.lower()
        )

    def take(self, count: int) -> list[Synset]:
        if count > len(self.keys):
            raise ValueError(f"WordNet has too few prompt words left ({len(self.keys)} < {count})")
        taken = [self.keys.pop() for _ in range(count)]
        self.used_words.extend(s.word for s in taken)
        return taken

    def wrong_glosses(
        self, key: Synset, shorter: int, longer: int, split: str, window: int = 12
    ) -> list[str]:
        """Glosses of other words of the same part of speech (nouns, verbs: of another semantic field)."""
        pool = self.glosses_by_length[(split, key.pos)]

        def fits(entry: tuple[int, str, int]) -> bool:
            return entry[1] != key.gloss and (key.pos in ("adj", "adv") or entry[2] != key.lexfile)

        def nearest(indices) -> list[str]:
            found: list[str] = []
            for i in indices:
                if fits(pool[i]) and pool[i][1] not in found:
                    found.append(pool[i][1])
                    if len(found) == window:
                        break
            return found

        low = bisect.bisect_left(pool, (len(key.gloss),))
        high = bisect.bisect_left(pool, (len(key.gloss) + 1,))
        below, above = nearest(range(low - 1, -1, -1))[::-1], nearest(range(high, len(pool)))
        equal = [e[1] for e in pool[low:high] if fits(e)]
        return pick_sides(self.rng, below, equal, above, shorter, longer)
