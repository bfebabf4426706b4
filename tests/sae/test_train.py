"""SAE training: learns a sparse dictionary, resumes after a crash or SIGTERM with identical weights."""

import csv
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from sarm.runtime import PREEMPTED_EXIT_CODE
from sarm.sae.model import SAEConfig, TopKSAE
from sarm.sae.reader import ActivationReader
from sarm.sae.sampling import write_activations
from sarm.sae.train import (
    CHECKPOINT_FILE,
    CSV_COLUMNS,
    SAETrainConfig,
    geometric_median,
    lr_factor,
    reconstruction_loss,
    train_sae,
)

D, M, K = 16, 64, 3


def sparse_mixtures(rows: int, n_true: int = 40, active: int = 3, seed: int = 0) -> torch.Tensor:
    """Rows made of `active` random atoms of a fixed dictionary (what a TopK SAE can recover), plus noise."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.nn.functional.normalize(torch.randn(n_true, D, generator=g), dim=1)
    picks = torch.rand(rows, n_true, generator=g).argsort(dim=1)[:, :active]
    weights = torch.rand(rows, active, generator=g) * 4 + 1
    return (weights[..., None] * atoms[picks]).sum(dim=1) * 30 + 5 + 0.05 * torch.randn(rows, D, generator=g)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("acts")
    write_activations(out, {4: sparse_mixtures(1600)}, shard_rows=200, storage_dtype=torch.float32)
    return out


def config(**overrides) -> SAETrainConfig:
    values = dict(
        batch_size=32,
        epochs=3,
        shuffle_buffer=400,
        checkpoint_every=10,
        log_every=5,
        lr=3e-3,
        eval_rows=800,
        heldout_rows=0,
    )
    return SAETrainConfig(**{**values, **overrides})


def train(data_dir, out_dir, cfg, reader=None, **sae_kwargs):
    sae = TopKSAE(D, SAEConfig(M, K, **sae_kwargs), seed=0)
    metrics = train_sae(reader or cfg.make_reader([data_dir], 4), sae, cfg, out_dir)
    return sae, metrics


def untrained_fvu(data_dir, **sae_kwargs) -> float:
    sae = TopKSAE(D, SAEConfig(M, K, **sae_kwargs), seed=0)
    x = ActivationReader([data_dir], 4, batch_size=32, shuffle_buffer=400).sample(800)
    sae.fit_input_scale_(x)
    with torch.no_grad():
        target = sae.normalize_input(x)
        return ((sae(x)[0] - target).pow(2).sum() / (target - target.mean(0)).pow(2).sum()).item()


def test_training_learns_the_sparse_dictionary_and_writes_all_outputs(data_dir, tmp_path):
    sae, metrics = train(data_dir, tmp_path, config(init_b_pre="geometric_median"))
    assert metrics["fvu"] < 0.25 < untrained_fvu(data_dir)
    assert metrics["explained_variance"] == pytest.approx(1 - metrics["fvu"])
    assert 0 < metrics["l0"] <= K and 0 <= metrics["dead_fraction"] <= 1 and metrics["steps"] == 3 * 50
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    with open(tmp_path / "loss.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS and int(rows[-1]["step"]) == 150 and len(rows) == 30
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / CHECKPOINT_FILE).exists()
    loaded = TopKSAE.load(tmp_path)
    assert torch.equal(loaded.W_dec, sae.W_dec)
    assert torch.allclose(loaded.W_dec.norm(dim=1), torch.ones(M), atol=1e-5)


def test_bf16_encoder_gemm_trains_as_well_and_is_switched_off_afterwards(data_dir, tmp_path):
    sae, metrics = train(data_dir, tmp_path, config(gemm_dtype="bfloat16"))
    assert metrics["fvu"] < 0.25
    assert sae.gemm_dtype is None


def test_upstream_switches_train_too(data_dir, tmp_path):
    cfg = config(loss="normalized_mse", schedule="warmup_decay")
    _, metrics = train(data_dir, tmp_path, cfg, relu=False, standardize_input=True)
    assert metrics["fvu"] < 0.5 * untrained_fvu(data_dir, relu=False, standardize_input=True)
    assert metrics["l0"] == K  # no ReLU: all k selected latents count


def test_auxk_trains_dead_latents_that_the_topk_loss_never_reaches(data_dir, tmp_path):
    def decoder_change_of_dead_latents(alpha):
        sae = TopKSAE(
            D, SAEConfig(M, K, relu=False), seed=0
        )  # no ReLU: negative auxiliary latents still pass gradient
        cfg = config(epochs=1, dead_window=32, auxk_alpha=alpha, auxk_k=8)
        with torch.no_grad():
            sae.encoder.bias[: M // 2] = -1e3  # these latents never win the TopK: always dead
        before = sae.W_dec[: M // 2].clone()
        train_sae(cfg.make_reader([data_dir], 4), sae, cfg, tmp_path / str(alpha))
        return (sae.W_dec[: M // 2] - before).abs().max().item()

    assert decoder_change_of_dead_latents(0.0) < 1e-6  # only the renormalisation's rounding
    assert decoder_change_of_dead_latents(1 / 32) > 1e-2


class CrashingReader(ActivationReader):
    """Dies (like a killed job) when asked for batch `crash_after + 1`."""

    def __init__(self, *args, crash_after: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.left = crash_after

    def __iter__(self):
        for batch in super().__iter__():
            if self.left == 0:
                raise KeyboardInterrupt("killed")
            self.left -= 1
            yield batch


def test_resume_after_a_crash_ends_with_identical_weights(data_dir, tmp_path):
    cfg = config(auxk_alpha=1 / 32, dead_window=320, remove_parallel_grad=True)
    whole, _ = train(data_dir, tmp_path / "whole", cfg)
    crashing = CrashingReader([data_dir], 4, cfg.batch_size, cfg.shuffle_buffer, cfg.seed, crash_after=73)
    with pytest.raises(KeyboardInterrupt):
        train(data_dir, tmp_path / "resumed", cfg, reader=crashing)
    assert torch.load(tmp_path / "resumed" / CHECKPOINT_FILE, weights_only=False)["progress"]["step"] == 70
    resumed, _ = train(data_dir, tmp_path / "resumed", cfg)
    for name, tensor in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name
    assert (tmp_path / "resumed" / "loss.csv").read_text() == (tmp_path / "whole" / "loss.csv").read_text()


SIGTERM_SCRIPT = """
import os, signal, sys
from sarm.sae.reader import ActivationReader
from sarm.sae.model import SAEConfig, TopKSAE
from sarm.sae.train import SAETrainConfig, train_sae

class SelfTerminating(ActivationReader):
    served = 0
    def __iter__(self):
        for batch in super().__iter__():
            self.served += 1
            if self.served == 42:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

cfg = SAETrainConfig(**{config})
reader = SelfTerminating([sys.argv[1]], 4, cfg.batch_size, cfg.shuffle_buffer, cfg.seed)
train_sae(reader, TopKSAE({D}, SAEConfig({M}, {K}), seed=0), cfg, sys.argv[2])
"""


def test_sigterm_checkpoints_and_exits_then_resume_matches_an_uninterrupted_run(data_dir, tmp_path):
    cfg = config(checkpoint_every=1000)
    whole, _ = train(data_dir, tmp_path / "whole", cfg)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(SIGTERM_SCRIPT).format(config=repr(vars(cfg)), D=D, M=M, K=K))
    result = subprocess.run(
        [sys.executable, str(script), str(data_dir), str(tmp_path / "resumed")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())},
    )
    assert result.returncode == PREEMPTED_EXIT_CODE, result.stderr[-2000:]
    assert torch.load(tmp_path / "resumed" / CHECKPOINT_FILE, weights_only=False)["progress"]["step"] == 42
    resumed, _ = train(data_dir, tmp_path / "resumed", cfg)
    for name, tensor in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


def test_resume_with_a_changed_config_is_refused(data_dir, tmp_path):
    crashing = CrashingReader([data_dir], 4, 32, 400, 0, crash_after=12)
    with pytest.raises(KeyboardInterrupt):
        train(data_dir, tmp_path, config(), reader=crashing)
    with pytest.raises(ValueError, match="lr"):
        train(data_dir, tmp_path, config(lr=1e-2))


def test_lr_schedules():
    paper = SAETrainConfig()
    assert {lr_factor(paper, step, 100) for step in range(100)} == {1.0}


def test_warmup_decay_is_upstreams_linear_warmup_lr():
    """schrieffer-z/sae LinearWarmupLR (N = 1000, W = 50 warmup, N // 5 = 200 decay steps): warmup from 0,
    constant, then a jump to (N//5 - W) / (N - W - N//5) = 0.2 at 80%, reaching 0 at N - W = 950."""
    upstream = SAETrainConfig(schedule="warmup_decay")
    factors = [lr_factor(upstream, step, 1000) for step in range(1000)]
    assert factors[0] == 0.0 and factors[25] == pytest.approx(0.5) and factors[50] == 1.0
    assert factors[50:800] == [1.0] * 750
    assert factors[800] == pytest.approx(0.2) and factors[875] == pytest.approx(0.1)
    assert factors[949] == pytest.approx(1 / 750) and factors[950:] == [0.0] * 50
    assert lr_factor(upstream, 80, 100) == pytest.approx(15 / 75)  # N = 100: W = 5, N // 5 = 20


def test_losses_on_a_hand_example():
    x = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    x_hat = torch.tensor([[3.0, 2.0], [0.0, 0.0]])
    assert reconstruction_loss("mse", x, x_hat).item() == pytest.approx((4 + 1) / 2)
    assert reconstruction_loss("normalized_mse", x, x_hat).item() == pytest.approx((4 / 25 + 1 / 1) / 2)


def test_geometric_median_ignores_an_outlier():
    points = torch.cat([torch.zeros(10, 2) + torch.randn(10, 2) * 1e-3, torch.full((1, 2), 100.0)])
    assert geometric_median(points).norm() < 0.1 < points.mean(0).norm()


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"loss": "l1"}, "loss"),
        ({"batch_size": 0}, "batch_size"),
        ({"schedule": "cosine"}, "schedule"),
        ({"heldout_rows": -1}, "heldout_rows"),
    ],
)
def test_bad_config_values_name_the_key(values, key):
    with pytest.raises(ValueError, match=f"`{key}`"):
        SAETrainConfig(**values)


def test_unknown_config_keys_are_rejected():
    with pytest.raises(ValueError, match="learning_rate"):
        SAETrainConfig.from_dict({"learning_rate": 1e-3})


def test_reader_batch_size_must_match_the_config(data_dir, tmp_path):
    with pytest.raises(ValueError, match="batch size"):
        train(
            data_dir,
            tmp_path,
            config(),
            reader=ActivationReader([data_dir], 4, batch_size=16, shuffle_buffer=400),
        )


def test_from_config_nests_the_sae_config_and_keeps_the_training_keys():
    section = {"latents": "16x", "k": "3/64x", "relu": False, "standardize_input": True, "lr": 1e-3}
    cfg = SAETrainConfig.from_config(section, latents=M, k=K)
    assert cfg.sae == SAEConfig(latents=M, k=K, relu=False, standardize_input=True)
    assert cfg.lr == 1e-3


def test_an_sae_that_differs_from_the_training_config_is_refused(data_dir, tmp_path):
    cfg = config(sae=SAEConfig(M, K, relu=False))
    with pytest.raises(ValueError, match="training config says"):
        train_sae(cfg.make_reader([data_dir], 4), TopKSAE(D, SAEConfig(M, K), seed=0), cfg, tmp_path)


def test_metrics_are_measured_on_held_out_rows_that_training_never_sees(data_dir, tmp_path):
    """FVU / L0 / dead latents of metrics.json come from the last `heldout_rows` rows, which the training
    stream skips (the demo trains many epochs over a few thousand sentences: training-set FVU flatters)."""
    assert SAETrainConfig().heldout_rows > 0  # on by default
    cfg = config(heldout_rows=160, epochs=1)
    reader, heldout = cfg.make_reader([data_dir], 4), cfg.make_heldout_reader([data_dir], 4)
    assert (reader.rows, heldout.rows) == (1600 - 160, 160)
    every = sparse_mixtures(1600)
    held = torch.cat(list(heldout))
    assert torch.equal(held, every[-160:])  # the last rows, in storage order
    seen = torch.cat(list(reader))
    assert not (seen[:, None, :] == held[None, :, :]).all(dim=-1).any()  # training never sees one of them
    sae = TopKSAE(D, SAEConfig(M, K), seed=0)
    metrics = train_sae(reader, sae, cfg, tmp_path, eval_reader=heldout)
    assert metrics["eval_split"] == "heldout" and metrics["eval_rows"] == 160
    with torch.no_grad():
        target = sae.normalize_input(held)
        values, indices = sae.encode_topk(held)
        fvu = (target - sae.decode_topk(values, indices)).pow(2).sum() / (target - target.mean(0)).pow(
            2
        ).sum()
        dead = 1 - torch.zeros(M, dtype=torch.bool).index_fill_(0, indices[values != 0], True).float().mean()
    assert metrics["fvu"] == pytest.approx(fvu.item(), rel=1e-4)
    assert metrics["l0"] == pytest.approx((values != 0).sum(dim=-1).float().mean().item())
    assert metrics["dead_fraction"] == pytest.approx(dead.item())
    assert json.loads((tmp_path / "metrics.json").read_text())["eval_split"] == "heldout"


def test_holding_out_more_rows_than_were_sampled_is_refused(data_dir):
    with pytest.raises(ValueError, match="heldout_rows"):
        config(heldout_rows=1600).make_reader([data_dir], 4)


def test_l0_and_dead_latents_count_negative_latents_when_relu_is_off(data_dir, tmp_path):
    """Without ReLU every selected latent is active (upstream counts them), even a negative one."""
    cfg = config(epochs=1, max_samples=64, lr=1e-6)
    sae = TopKSAE(D, SAEConfig(M, K, relu=False), seed=0)
    with torch.no_grad():
        sae.encoder.bias.fill_(-100.0)  # every selected pre-activation is negative
    metrics = train_sae(cfg.make_reader([data_dir], 4), sae, cfg, tmp_path)
    assert metrics["l0"] == K
    assert metrics["dead_fraction"] < 1.0
    with open(tmp_path / "loss.csv") as handle:
        assert {float(row["l0"]) for row in csv.DictReader(handle)} == {float(K)}
