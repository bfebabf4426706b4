"""The bundled demo data in resources/demo: loads through the real loaders, no leaks, no length shortcut,
and the generator reproduces it byte for byte."""

import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest
import yaml

from sarm.data.corpus import iter_sentences
from sarm.data.demo import baselines
from sarm.data.demo.instructions import satisfies
from sarm.data.demo.sources import missing_files
from sarm.data.demo.training import TRAIN_PAIRS
from sarm.data.preferences import load_preference_pairs
from sarm.data.rewardbench2 import SUBSETS, load_rewardbench2
from sarm.data.rmbench import DOMAINS, load_rmbench
from tests.conftest import REPO

DEMO = REPO / "resources" / "demo"
GENERATED = ("corpus.jsonl.gz", "preference_train.jsonl", "rewardbench2.jsonl", "rmbench.jsonl")
FIRST_QUOTED_WORD = re.compile(r'"([a-z]+)"')
EQUATION = re.compile(r"(\d+) ([-+x]) (\d+) = (\d+)")
SOURCE_PACKAGES = "wordnet-base fortunes-min"
REQUIRE_SOURCES_ENV = "SARM_REQUIRE_DEMO_SOURCES"  # "1": fail instead of skipping without the packages


@pytest.fixture(scope="module")
def pairs():
    return load_preference_pairs(str(DEMO / "preference_train.jsonl"))


@pytest.fixture(scope="module")
def rb2():
    return load_rewardbench2(str(DEMO / "rewardbench2.jsonl"))


@pytest.fixture(scope="module")
def rb2_metadata():
    rows = [
        json.loads(line) for line in (DEMO / "rewardbench2.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    return {row["id"]: row["additional_metadata"] for row in rows}


@pytest.fixture(scope="module")
def rmbench():
    return load_rmbench(str(DEMO / "rmbench.jsonl"))


def test_every_file_loads_through_the_loaders_with_the_intended_sizes(pairs, rb2, rmbench):
    assert len(pairs) == 3000
    assert Counter(p.subset for p in rb2) == dict.fromkeys(SUBSETS, 56)
    assert all(len(p.completions) == 4 for p in rb2 if p.subset != "Ties")
    assert Counter(item.domain for item in rmbench) == dict.fromkeys(DOMAINS, 40)
    assert {p.source for p in pairs} == {f"demo/{f}" for f in TRAIN_PAIRS}


def test_corpus_has_thirty_thousand_sentences_of_ten_words_or_more():
    assert sum(1 for _ in iter_sentences(str(DEMO / "corpus.jsonl.gz"), min_tokens=10)) >= 30_000


def test_ties_prompts_come_in_ref_and_tied_pairs(rb2):
    ties = {p.id: p for p in rb2 if p.subset == "Ties"}
    numbers = {int(i.split(":")[1]) for i in ties}
    assert set(ties) == {f"{kind}:{n}" for n in numbers for kind in ("ref", "tied")}
    assert all(ties[f"ref:{n}"].num_correct == 1 and ties[f"tied:{n}"].num_correct >= 2 for n in numbers)


def _first_quoted_words(prompts):
    return {m.group(1) for p in prompts if (m := FIRST_QUOTED_WORD.search(p))}


def _operand_pairs(prompts):
    return {tuple(re.findall(r"\d+", p)[:2]) for p in prompts if len(re.findall(r"\d+", p)) >= 2}


def test_training_and_test_prompts_are_disjoint(pairs, rb2, rmbench):
    train = [p.chosen[0]["content"] for p in pairs]
    test = [p.prompt for p in rb2] + [item.prompt for item in rmbench]
    assert not set(train) & set(test)
    # the words asked about, the harmful requests and the arithmetic operands differ too
    assert not _first_quoted_words(train) & _first_quoted_words(test)
    harmful = {item.prompt for item in rmbench if item.domain == "safety-refuse"}
    requests = set(yaml.safe_load((DEMO / "templates.yaml").read_text(encoding="utf-8"))["harmful_requests"])
    test_requests = {r for r in requests if any(r in p for p in harmful | set(test))}
    assert test_requests and not any(r in p for r in test_requests for p in train)
    math_sources = {"demo/arithmetic", "demo/focus"}
    train_math = [p.chosen[0]["content"] for p in pairs if p.source in math_sources]
    test_math = [p.prompt for p in rb2 if p.subset in ("Math", "Focus")]
    assert not _operand_pairs(train_math) & _operand_pairs(test_math)


def test_length_alone_scores_near_chance_on_every_subset(rb2):
    chance = baselines.chance(rb2)
    for sign in (+1.0, -1.0):
        scores = baselines.score(rb2, baselines.length_rewards(rb2, sign))
        for name in [*SUBSETS, "Overall"]:
            assert abs(scores[name] - chance[name]) <= 0.15, (sign, name, scores[name], chance[name])


def test_training_pairs_do_not_prefer_the_longer_or_the_shorter_answer(pairs):
    longer = defaultdict(list)
    for p in pairs:
        difference = len(p.chosen[-1]["content"]) - len(p.rejected[-1]["content"])
        longer[p.source].append(np.sign(difference))
    for source, signs in longer.items():
        assert abs(np.mean(signs)) < 0.2, (source, np.mean(signs))


def test_precise_if_answers_keep_or_break_their_constraint(rb2, rb2_metadata):
    for prompt in (p for p in rb2 if p.subset == "Precise IF"):
        meta = rb2_metadata[prompt.id]
        args = {k: v for k, v in meta.items() if k in ("phrase", "opener", "keyword") and v is not None}
        kept = [satisfies(meta["constraint"], text, args) for text in prompt.completions]
        assert kept == [True, False, False, False], (prompt.prompt, prompt.completions)


def test_math_answers_are_right_when_chosen_and_wrong_when_rejected(rb2):
    apply = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "x": lambda a, b: a * b}
    for prompt in (p for p in rb2 if p.subset == "Math"):
        correct = []
        for text in prompt.completions:
            a, op, b, c = EQUATION.search(text).groups()
            correct.append(apply[op](int(a), int(b)) == int(c))
        assert correct == [True, False, False, False], prompt.completions


def test_demo_folder_stays_small():
    sizes = {p.name: p.stat().st_size for p in DEMO.iterdir()}
    assert sizes["corpus.jsonl.gz"] < 3_000_000
    assert sum(sizes.values()) < 5_000_000


def test_baselines_file_lists_every_scorer_and_subset():
    table = pd.read_csv(DEMO / "baselines.csv", index_col="baseline")
    assert list(table.columns) == [*SUBSETS, "Overall"]
    assert {"chance", "bag-of-words logistic regression"} <= set(table.index)
    assert table.loc["chance", "Math"] == 0.25


def test_generator_reproduces_the_committed_files_byte_for_byte(tmp_path):
    if missing := missing_files():
        reason = f"needs the Debian packages {SOURCE_PACKAGES} (apt-get install them); missing {missing}"
        if os.environ.get(REQUIRE_SOURCES_ENV) == "1":  # set by .ci/run, which installs them
            pytest.fail(f"{REQUIRE_SOURCES_ENV}=1 but the generator cannot run: {reason}")
        pytest.skip(reason)
    subprocess.run(
        [sys.executable, "-m", "sarm.data.demo", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    for name in (*GENERATED, "baselines.csv", "baselines.md"):
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), name
