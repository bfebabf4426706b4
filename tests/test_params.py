"""Rule params: the config keys that change a result (sarm.params)."""

from sarm.params import with_seed


def test_the_first_seed_trains_with_the_configs_keys_untouched():
    keys = {"lr": 4e-6, "seed": 5, "epochs": 3}
    assert with_seed(keys, None) is keys


def test_a_further_seed_changes_only_the_seed_in_place():
    keys = {"lr": 4e-6, "seed": 5, "epochs": 3}
    seeded = with_seed(keys, 7)
    assert list(seeded.items()) == [("lr", 4e-6), ("seed", 7), ("epochs", 3)]  # params compare in key order
    assert keys["seed"] == 5
