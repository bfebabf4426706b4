"""The bundled offline demo data (resources/demo), built deterministically from Debian text packages.

Inputs: WordNet 3.0 (Debian `wordnet-base`), fortune cookies (Debian `fortunes-min`) and the hand-written
phrasing in resources/demo/templates.yaml. Outputs: corpus.jsonl.gz, preference_train.jsonl (Skywork
message-list schema), rewardbench2.jsonl (RewardBench 2 schema), rmbench.jsonl (RM-Bench schema), then
baselines.csv / baselines.md. Every random choice comes from one seeded generator and every collection is
iterated in a fixed order, so the same inputs give the same bytes. Command line: `__main__.py`.

Preference families (the same in training pairs and test sets, on disjoint prompts):
definitions (right gloss vs the gloss of another word) -> Factuality; arithmetic (right vs wrong result) ->
Math; instructions with a verifiable constraint (kept vs broken) -> Precise IF; harmful requests (refusal vs
compliance) and harmless ones (help vs needless refusal) -> Safety; on-topic vs off-topic answers -> Focus;
questions with several right answers -> Ties. Chosen and rejected of a prompt share template and style, and
their length order is balanced, so length alone does not tell them apart.
"""
