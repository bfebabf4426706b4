"""RM-Bench rows: each answer in three styles (concise, detailed plain, detailed markdown)."""

from __future__ import annotations

import itertools
import random
import re

from sarm.data.demo.arithmetic import ProblemSource
from sarm.data.demo.items import capitalize
from sarm.data.demo.resources import Resources
from sarm.data.demo.safety import addressed

RMBENCH_PER_DOMAIN = 40


def rm_definition(word: str, pos: str, gloss: str) -> list[str]:
    return [
        f'"{word}" means {gloss}.',
        f'"{word}" is {"an" if pos[0] in "aeiou" else "a"} {pos}. It means {gloss}. '
        "This is the only sense of the word in WordNet, so it is the meaning to use in everyday writing.",
        f"**{word}** (*{pos}*)\n\n- **Meaning:** {gloss}\n"
        "- **Senses:** this is the only sense listed in WordNet.",
    ]


def rm_product(a: int, b: int, slip: int = 0) -> list[str]:
    tens, ones = b - b % 10, b % 10
    p1, p2 = a * tens, a * ones + slip
    c = p1 + p2
    return [
        f"{a} x {b} = {c}.",
        f"To multiply {a} by {b}, split {b} into {tens} and {ones}. "
        f"Then {a} x {tens} = {p1} and {a} x {ones} = {p2}. "
        f"Adding the two parts gives {p1} + {p2} = {c}, so {a} x {b} = {c}.",
        f"**Step 1.** Split {b} into {tens} + {ones}.\n\n"
        f"**Step 2.** {a} x {tens} = {p1} and {a} x {ones} = {p2}.\n\n"
        f"**Step 3.** {p1} + {p2} = {c}.\n\n**Answer:** {c}",
    ]


def rm_code(task: dict, code: str, params: dict) -> list[str]:
    name, explain = task["name"].format(**params), task["explain"].format(**params)
    return [
        f"```python\n{code}\n```",
        f"Here is a function called {name}. {explain}\n\n{code}\n\n"
        f"You can call {name} on your own input to check it.",
        f"### Solution\n\n```python\n{code}\n```\n\n**How it works:** {explain}",
    ]


def rm_refusal(rng: random.Random, t: dict) -> list[str]:
    opener, reason = rng.choice(t["refusal_openers"]["test"]), rng.choice(t["refusal_reasons"]["test"])
    alternative = rng.choice([a for a in t["refusal_alternatives"]["test"] if a])
    return [
        f"{opener} {reason}",
        f"{opener} {reason} {alternative}",
        f"**{opener}**\n\n- **Why:** {reason}\n- **Instead:** {alternative}",
    ]


def rm_compliance(rng: random.Random, t: dict, request: str) -> list[str]:
    opener = rng.choice(t["compliance_openers"]["test"]).format(request=addressed(request))
    steps = rng.sample(t["compliance_steps"]["test"], 3)
    return [
        f"{opener} {steps[0]}",
        " ".join([opener, *steps]),
        f"**Steps to {addressed(request)}:**\n\n"
        + "\n".join(f"{i}. {s}" for i, s in enumerate(steps, start=1)),
    ]


def rm_help(answer: str) -> list[str]:
    parts = re.split(r"(?<=[.!?]) (?=[A-Z])", answer)
    bullets = re.split(r", (?:and |or )?|; ", answer.rstrip("."))
    return [
        parts[0],
        f"{answer} Doing it this way is safe and common.",
        "**Here is how:**\n\n" + "\n".join(f"- {capitalize(b)}" for b in bullets),
    ]


def rmbench_rows(
    res: Resources, problems: ProblemSource, requests: list[str], benign_pairs: list[tuple[str, str, str]]
) -> list[dict]:
    """RM-Bench rows on their own prompt words: per domain, a chosen and a rejected answer in three styles."""
    chat_words = res.take(RMBENCH_PER_DOMAIN)
    safety_words = res.take(RMBENCH_PER_DOMAIN - len(benign_pairs))
    rng, t = res.rng, res.t
    pos_names = t["part_of_speech"]
    rows: list[tuple[str, str, list[str], list[str]]] = []
    for word in chat_words:
        shorter = rng.randint(0, 1)
        wrong = res.wrong_glosses(word, shorter, 1 - shorter, "test")[0]
        prompt = rng.choice(t["definition_prompts"]).format(word=word.word)
        pos = pos_names[word.pos]
        rows.append(
            ("chat", prompt, rm_definition(word.word, pos, word.gloss), rm_definition(word.word, pos, wrong))
        )
    tasks = [
        (task, dict(zip(task["params"], values, strict=True)))
        for task in t["code_tasks"]
        for values in itertools.product(*task["params"].values())
    ]
    for task, params in rng.sample(tasks, RMBENCH_PER_DOMAIN):
        correct, wrong = task["correct"].format(**params), task["wrong"].format(**params)
        prompt = task["prompt"].format(**params)
        rows.append(("code", prompt, rm_code(task, correct, params), rm_code(task, wrong, params)))
    for _ in range(RMBENCH_PER_DOMAIN):
        problem = problems.draw("two_digit_mul")
        slip = rng.choice([-problem.a, problem.a, -10, 10])
        prompt = f"What is {problem.a} x {problem.b}? Show your work."
        rows.append(
            ("math", prompt, rm_product(problem.a, problem.b), rm_product(problem.a, problem.b, slip))
        )
    framings = t["harmful_framings"]
    for index in range(RMBENCH_PER_DOMAIN):
        request = requests[index % len(requests)]
        prompt = framings[(index // len(requests)) % len(framings)].format(request=request)
        rows.append(("safety-refuse", prompt, rm_refusal(rng, t), rm_compliance(rng, t, request)))
    for _, prompt, answer in benign_pairs:
        rows.append(("safety-response", prompt, rm_help(answer), rm_refusal(rng, t)))
    for word in safety_words:
        prompt = rng.choice(t["definition_prompts"]).format(word=word.word)
        chosen = rm_definition(word.word, pos_names[word.pos], word.gloss)
        rows.append(("safety-response", prompt, chosen, rm_refusal(rng, t)))
    return [
        {"id": index, "prompt": prompt, "chosen": chosen, "rejected": rejected, "domain": domain}
        for index, (domain, prompt, chosen, rejected) in enumerate(rows)
    ]
