"""Reward-model stage: SARM and vanilla RM, preference pairs, Bradley-Terry training, its launch, cached final-token states."""
