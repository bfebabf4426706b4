"""Family `arithmetic` (Math): the right result vs plausible slips, and the source of distinct problems."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sarm.data.demo.items import Item
from sarm.data.demo.resources import Resources

OPERAND_RANGES = {
    "add": ((10, 999), (10, 999)),
    "sub": ((20, 999), (5, 500)),
    "mul": ((3, 99), (3, 19)),
    "gain": ((5, 90), (2, 60)),
    "loss": ((12, 99), (2, 60)),
    "groups": ((3, 24), (2, 15)),
    "two_digit_mul": ((12, 99), (12, 99)),  # RM-Bench worked multiplications only
}
KINDS = ("add", "sub", "mul", "gain", "loss", "groups")


@dataclass(frozen=True)
class Problem:
    kind: str
    a: int
    b: int
    name: str = ""
    items: str = ""

    @property
    def result(self) -> int:
        if self.kind in ("add", "gain"):
            return self.a + self.b
        if self.kind in ("sub", "loss"):
            return self.a - self.b
        return self.a * self.b

    def fill(self, template: str, c: int) -> str:
        return template.format(a=self.a, b=self.b, c=c, name=self.name, items=self.items)


class ProblemSource:
    """Distinct arithmetic problems: no operand pair is used twice in the whole demo data."""

    def __init__(self, res: Resources):
        self.res = res
        self.used: set[tuple[int, int]] = set()  # operand pairs, whatever the operation

    def draw(self, kind: str, *, reserve: bool = True) -> Problem:
        """A new problem of this kind; `reserve=False` for problems that only supply off-topic answers."""
        rng = self.res.rng
        (a_lo, a_hi), (b_lo, b_hi) = OPERAND_RANGES[kind]
        for _ in range(10_000):
            a, b = rng.randint(a_lo, a_hi), rng.randint(b_lo, b_hi)
            if (kind in ("sub", "loss") and b >= a) or (kind == "two_digit_mul" and b % 10 == 0):
                continue
            if (a, b) not in self.used:
                if reserve:
                    self.used.add((a, b))
                return Problem(kind, a, b, rng.choice(self.res.t["names"]), rng.choice(self.res.t["items"]))
        raise ValueError(f"ran out of distinct {kind} problems; widen OPERAND_RANGES")

    def prompt(self, problem: Problem) -> str:
        return problem.fill(
            self.res.rng.choice(self.res.t["arithmetic_prompts"][problem.kind]), problem.result
        )

    def answer(self, problem: Problem, value: int | None = None) -> str:
        value = problem.result if value is None else value
        return problem.fill(self.res.t["arithmetic_answers"][problem.kind], value)


def wrong_results(rng: random.Random, problem: Problem, count: int) -> list[int]:
    """Plausible slips: off by one or two, a carry error (10), a wrong group count, a swapped operation."""
    c = problem.result
    slips = [c + d for d in (-1, 1, -2, 2, -10, 10, -9, 11, 100, -100)]
    if problem.kind in ("mul", "groups"):
        slips += [problem.a * (problem.b + 1), problem.a * (problem.b - 1), problem.a + problem.b]
    if problem.kind in ("sub", "loss"):
        slips += [problem.a + problem.b]
    options = sorted({s for s in slips if s > 0 and s != c})
    return rng.sample(options, count)


def arithmetic(res: Resources, problems: ProblemSource, count: int, n_rejected: int) -> list[Item]:
    """Math: the right result vs wrong results, with the same worked sentence around them."""
    items = []
    for index in range(count):
        problem = problems.draw(KINDS[index % len(KINDS)])
        wrong = wrong_results(res.rng, problem, n_rejected)
        items.append(
            Item(
                "arithmetic",
                problems.prompt(problem),
                [problems.answer(problem)],
                [problems.answer(problem, w) for w in wrong],
                key=f"{problem.kind}:{problem.a}:{problem.b}",
            )
        )
    return items
