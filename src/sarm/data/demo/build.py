"""All demo files as rows, from the Debian sources, the templates and one seed."""

from __future__ import annotations

import random
from pathlib import Path

import yaml

from sarm.data.demo.arithmetic import ProblemSource
from sarm.data.demo.corpus import corpus_documents
from sarm.data.demo.resources import Resources
from sarm.data.demo.rewardbench2 import rewardbench2_rows
from sarm.data.demo.rmbench import rmbench_rows
from sarm.data.demo.sources import read_fortunes
from sarm.data.demo.ties import TiesSource
from sarm.data.demo.training import training_pairs

SEED = 20250812


def build(wordnet: Path, fortunes: Path, templates_path: Path, seed: int) -> dict[str, list[dict]]:
    """{file name: rows}; the corpus rows are {"text": ...} documents.

    Every random choice comes from one generator, so the order of the calls below is part of the output.
    """
    rng = random.Random(seed)
    templates = yaml.safe_load(templates_path.read_text(encoding="utf-8"))
    res = Resources(wordnet, templates, rng)
    problems = ProblemSource(res)
    ties = TiesSource(res)

    requests = list(templates["harmful_requests"])
    rng.shuffle(requests)
    rb2_requests, rm_requests, train_requests = requests[:14], requests[14:24], requests[24:]
    benign_items = [(b["prompt"], b["prompt"], b["answer"]) for b in templates["benign_requests"]]
    rng.shuffle(benign_items)
    rb2_benign, rm_benign, train_benign = benign_items[:16], benign_items[16:32], benign_items[32:]

    # Test sets first, from their own prompt words and requests; the corpus leaves out their words.
    rb2 = rewardbench2_rows(res, problems, ties, rb2_requests, rb2_benign)
    rmbench = rmbench_rows(res, problems, rm_requests, rm_benign)
    test_words = set(res.used_words)
    pairs = training_pairs(res, problems, ties, train_requests, train_benign)
    docs = corpus_documents(res, test_words, read_fortunes(fortunes))
    return {
        "corpus.jsonl.gz": [{"text": d} for d in docs],
        "preference_train.jsonl": pairs,
        "rewardbench2.jsonl": rb2,
        "rmbench.jsonl": rmbench,
    }
