"""`reward_model.train_layers`: how many decoder layers below the read layer l a reward model trains.

`all` (the paper) trains the embeddings and layers 0..l-1. A positive N trains layers l-N..l-1 only, on
per-token states cached at layer l-N (`sarm.rm.token_states`); N >= l is `all`. Standard library only:
the workflow imports this while it builds the DAG.
"""

from __future__ import annotations

ALL = "all"


def check_train_layers(train_layers: object, train_backbone: bool, recon_tokens: str = "final") -> None:
    """ValueError naming the config keys when `train_layers` is malformed or does not fit the other keys."""
    if train_layers != ALL and (
        isinstance(train_layers, bool) or not isinstance(train_layers, int) or train_layers < 1
    ):
        raise ValueError(
            f"config key `reward_model.train_layers` must be `all` or a positive integer, got {train_layers!r}"
        )
    if train_layers == ALL:
        return
    if not train_backbone:
        raise ValueError(
            f"config key `reward_model.train_layers: {train_layers}` trains backbone layers, but "
            "`reward_model.train_backbone` is false (head only): set train_backbone true or train_layers all"
        )
    if recon_tokens == "assistant_turn":
        raise ValueError(
            f"config key `reward_model.recon_tokens: assistant_turn` needs `reward_model.train_layers: all` "
            f"(got {train_layers}): the per-token cache keeps no assistant-turn boundaries"
        )


def first_trained_layer(layer: int, train_layers: int | str) -> int | None:
    """First decoder layer trained by a model reading `layer`; None when every layer and the embeddings train."""
    if train_layers == ALL or train_layers >= layer:
        return None
    return layer - train_layers


def token_states_layer(layer: int, train_layers: int | str, train_backbone: bool) -> int | None:
    """The layer of the cached per-token states a model reading `layer` trains from: its first trained layer
    with `train_layers: N`; None when it trains its head only (frozen backbone) or every layer."""
    return first_trained_layer(layer, train_layers) if train_backbone else None
