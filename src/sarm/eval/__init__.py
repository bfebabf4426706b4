"""Evaluation stage: scoring a reward model on RewardBench 2 and the benchmark's own scoring rules."""
