"""sarm.sae.reader: shuffled, resumable, memory-bounded batches from sampled shards."""

import pytest
import torch

from sarm.sae.reader import ActivationReader
from sarm.sae.sampling import write_activations


@pytest.fixture
def parts(tmp_path):
    """Two parts whose rows carry their global index in column 0 (exact in float32)."""
    dirs = []
    for part, (start, rows) in enumerate([(0, 53), (53, 40)]):
        values = torch.arange(start, start + rows, dtype=torch.float32)[:, None].repeat(1, 4)
        write_activations(tmp_path / f"part{part}", {5: values}, shard_rows=10, storage_dtype=torch.float32)
        dirs.append(tmp_path / f"part{part}")
    return dirs


def ids(batches):
    return [batch[:, 0].long().tolist() for batch in batches]


def test_each_epoch_yields_every_row_once_in_a_new_order(parts):
    reader = ActivationReader(parts, 5, batch_size=8, shuffle_buffer=24, seed=3)
    first, second = ids(reader), ids(reader)
    assert len(first) == len(reader) == 12
    assert [len(b) for b in first] == [8] * 11 + [5]
    for epoch in (first, second):
        assert sorted(sum(epoch, [])) == list(range(93))
    assert first != second and sum(first, []) != list(range(93))


def test_same_seed_same_batches_other_seed_other_batches(parts):
    make = lambda seed: ids(ActivationReader(parts, 5, batch_size=8, shuffle_buffer=24, seed=seed))  # noqa: E731
    assert make(1) == make(1)
    assert make(1) != make(2)


def test_reader_resumes_from_its_state_at_the_same_batch(parts):
    reader = ActivationReader(parts, 5, batch_size=8, shuffle_buffer=24, seed=0)
    whole = ids(reader) + ids(reader)
    interrupted = ActivationReader(parts, 5, batch_size=8, shuffle_buffer=24, seed=0)
    seen = ids(interrupted)
    iterator = iter(interrupted)
    seen += ids([next(iterator) for _ in range(5)])
    state = interrupted.state_dict()
    resumed = ActivationReader(parts, 5, batch_size=8, shuffle_buffer=24, seed=0)
    resumed.load_state_dict(state)
    assert seen + ids(resumed) == whole


def test_reader_memory_is_bounded_by_shuffle_buffer_plus_one_shard(parts):
    reader = ActivationReader(parts, 5, batch_size=7, shuffle_buffer=24, seed=0)
    for _ in range(3):
        batches = ids(reader)
    assert 0 < reader.max_rows_held < 24 + 10
    assert any(len({row // 10 for row in batch}) > 1 for batch in batches)  # rows mix across shards


def test_reader_errors_name_the_problem(parts, tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        ActivationReader([tmp_path / "nowhere"], 5, batch_size=8)
    with pytest.raises(ValueError, match="layer 6 was not sampled"):
        ActivationReader(parts, 6, batch_size=8)
    with pytest.raises(ValueError, match="shuffle_buffer"):
        ActivationReader(parts, 5, batch_size=8, shuffle_buffer=4)
    reader = ActivationReader(parts, 5, batch_size=8, shuffle_buffer=24)
    with pytest.raises(ValueError, match=r"other settings \(`shards`"):
        ActivationReader(parts[:1], 5, batch_size=8, shuffle_buffer=24).load_state_dict(reader.state_dict())
