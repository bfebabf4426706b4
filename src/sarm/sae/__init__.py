"""Sparse autoencoder stage: TopK SAE model, activation sampling and reading, training."""
