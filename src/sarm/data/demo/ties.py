"""Family `ties`: questions with several right answers, each with a reference version with exactly one."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sarm.data.demo.items import Item
from sarm.data.demo.lengths import pick_by_length
from sarm.data.demo.resources import Resources


def primes_between(lo: int, hi: int) -> list[int]:
    return [n for n in range(lo + 1, hi) if n > 1 and all(n % d for d in range(2, math.isqrt(n) + 1))]


@dataclass
class TiesQuestion:
    """A question with several right answers and its reference version with exactly one."""

    kind: str
    key: str
    tied_prompt: str
    tied_correct: list[str]
    tied_wrong: list[str]
    ref_prompt: str
    ref_correct: str
    ref_wrong: list[str]


class TiesSource:
    """Ties questions (primes, multiples, divisors in a range; synonyms), none asked twice."""

    def __init__(self, res: Resources):
        self.res = res
        self.used: set[str] = set()
        synonym_sets = [
            s
            for s in res.fillers
            if len([w for w in s.lemmas if w.isalpha() and w.islower()]) >= 3 and len(s.gloss.split()) <= 12
        ]
        self.synonym_sets = synonym_sets
        # (semantic field, single lower-case word) per part of speech: answers that mean something else
        self.words_by_pos = {
            pos: [(s.lexfile, w) for s in synsets for w in s.lemmas if w.isalpha() and w.islower()]
            for pos, synsets in res.fillers_by_pos.items()
        }

    def _fresh(self, key: str) -> bool:
        if key in self.used:
            return False
        self.used.add(key)
        return True

    def draw(self, kind: str) -> TiesQuestion:
        make = getattr(self, f"_{kind}")
        while True:
            question = make()
            if question is not None and self._fresh(question.key):
                return question

    def _numbers(self, kind, params, right, wrong_pool, ref_value, ref_wrong_pool) -> TiesQuestion | None:
        rng, q = self.res.rng, self.res.t["ties_questions"][kind]
        if len(right) < 2 or len(wrong_pool) < 4 or len(ref_wrong_pool) < 4:
            return None
        tied_right = sorted(rng.sample(right, min(4, len(right))))
        tied_wrong = rng.sample(wrong_pool, rng.randint(3, 4))
        ref_wrong = rng.sample(ref_wrong_pool, rng.randint(3, 4))
        return TiesQuestion(
            kind,
            f"{kind}:" + ":".join(str(params[k]) for k in sorted(params)),
            q["tied"].format(**params),
            [q["answer"].format(**params, x=x) for x in tied_right],
            [q["answer"].format(**params, x=x) for x in tied_wrong],
            q["ref"].format(**params),
            q["ref_answer"].format(**params, x=ref_value),
            [q["ref_answer"].format(**params, x=x) for x in ref_wrong],
        )

    def _prime(self):
        rng = self.res.rng
        lo = rng.randint(10, 400)
        hi = lo + rng.randint(12, 30)
        primes = primes_between(lo, hi)
        composites = [n for n in range(lo + 1, hi) if n not in primes]
        return self._numbers(
            "prime",
            {"lo": lo, "hi": hi},
            primes,
            composites,
            primes[0] if primes else 0,
            primes[1:] + composites,
        )

    def _multiple(self):
        rng = self.res.rng
        k = rng.randint(3, 17)
        lo = rng.randint(10, 300)
        hi = lo + rng.randint(3, 6) * k
        multiples = [n for n in range(lo + 1, hi) if n % k == 0]
        others = [n for n in range(lo + 1, hi) if n % k]
        return self._numbers(
            "multiple", {"k": k, "lo": lo, "hi": hi}, multiples, others, multiples[-1] if multiples else 0,
            multiples[:-1] + others,
        )  # fmt: skip

    def _divisor(self):
        n = self.res.rng.randint(12, 240)
        divisors = [d for d in range(2, n) if n % d == 0]
        # wrong answers sit next to the right ones, so they are no longer (no more digits) than them
        near = sorted(
            {d + step for d in divisors for step in (-1, 1, 2) if 1 < d + step < n and n % (d + step)}
        )
        small = [d for d in range(2, 10) if n % d]
        smallest = divisors[0] if divisors else 0
        return self._numbers("divisor", {"n": n}, divisors, near, smallest, divisors[1:] + small)

    def _synonym(self):
        rng, q = self.res.rng, self.res.t["ties_questions"]["synonym"]
        synset = rng.choice(self.synonym_sets)
        lemmas = sorted({w for w in synset.lemmas if w.isalpha() and w.islower()})
        initials = [w[0] for w in lemmas]
        unique = [w for w in lemmas if initials.count(w[0]) == 1]
        others = sorted(
            {
                w
                for lexfile, w in self.words_by_pos[synset.pos]
                if lexfile != synset.lexfile or synset.pos in ("adj", "adv")
            }
            - set(lemmas)
        )
        if not unique:
            return None
        target = rng.choice(unique)
        same_letter = [w for w in others if w[0] == target[0]]
        tied_right = rng.sample(lemmas, min(4, len(lemmas)))
        tied_wrong = pick_by_length(rng, rng.choice(tied_right), rng.sample(others, 200), 2, 2)
        ref_wrong = [w for w in lemmas if w != target][:2] + rng.sample(same_letter, 2)
        letter = target[0]
        return TiesQuestion(
            "synonym",
            f"synonym:{synset.offset}",
            q["tied"].format(gloss=synset.gloss),
            [q["answer"].format(lemma=w) for w in tied_right],
            [q["answer"].format(lemma=w) for w in tied_wrong],
            q["ref"].format(gloss=synset.gloss, letter=letter),
            q["ref_answer"].format(letter=letter, lemma=target),
            [q["ref_answer"].format(letter=letter, lemma=w) for w in ref_wrong],
        )


TIES_KINDS = ("prime", "multiple", "divisor", "synonym")


def ties_rows(source: TiesSource, count: int) -> list[tuple[str, Item]]:
    """RewardBench 2 Ties rows: for each N a `ref:N` and a `tied:N` prompt."""
    rows = []
    rng = source.res.rng
    for n in range(count):
        q = source.draw(TIES_KINDS[n % len(TIES_KINDS)])
        rows.append((f"ref:{n}", Item("ties", q.ref_prompt, [q.ref_correct], q.ref_wrong, key=q.key)))
        rows.append((f"tied:{n}", Item("ties", q.tied_prompt, q.tied_correct, q.tied_wrong, key=q.key)))
    for _, item in rows:
        rng.shuffle(item.chosen)
        rng.shuffle(item.rejected)
    return rows


def ties_pairs(source: TiesSource, count: int) -> list[Item]:
    """Training pairs from the same kinds of questions: one right and one wrong answer per prompt."""
    rng = source.res.rng
    items = []
    while len(items) < count:
        q = source.draw(TIES_KINDS[len(items) % len(TIES_KINDS)])
        items.append(
            Item("ties", q.tied_prompt, [rng.choice(q.tied_correct)], [rng.choice(q.tied_wrong)], key=q.key)
        )
        items.append(Item("ties", q.ref_prompt, [q.ref_correct], [rng.choice(q.ref_wrong)], key=q.key))
    return items[:count]
