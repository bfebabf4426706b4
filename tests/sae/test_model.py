"""The TopK SAE module: sparsity, sparse paths equal dense ones, normalisations, save/load."""

import json
from dataclasses import astuple

import pytest
import torch

from sarm.sae.model import CONFIG_FILE, SAEConfig, TopKSAE

D, M, K = 16, 64, 5


def make_sae(**kwargs) -> TopKSAE:
    sae = TopKSAE(D, SAEConfig(M, K, **kwargs), seed=1)
    with torch.no_grad():  # non-trivial biases so that every term of the equations is exercised
        sae.b_pre.normal_(generator=torch.Generator().manual_seed(2))
        sae.encoder.bias.normal_(generator=torch.Generator().manual_seed(3))
    return sae


def test_encode_keeps_exactly_k_nonzeros_without_relu_and_they_are_the_top_k():
    sae = make_sae(relu=False)
    x = torch.randn(7, 3, D)
    z = sae.encode(x)
    assert z.shape == (7, 3, M)
    assert ((z != 0).sum(dim=-1) == K).all()
    top = sae.pre_activations(x).topk(K, dim=-1)
    assert torch.allclose(z.gather(-1, top.indices), top.values, atol=1e-5)


def test_relu_clips_negative_selected_latents():
    sae = make_sae(relu=True)
    with torch.no_grad():
        sae.encoder.bias.fill_(-100.0)  # every pre-activation negative
    z = sae.encode(torch.randn(4, D))
    assert (z == 0).all()
    assert (
        (TopKSAE(D, SAEConfig(M, K, relu=False), seed=1).encode(torch.randn(4, D)) != 0)
        .sum(dim=-1)
        .eq(K)
        .all()
    )


def test_sparse_decode_equals_dense_decode():
    sae = make_sae()
    x = torch.randn(6, 2, D)
    values, indices = sae.encode_topk(x)
    z = sae.encode(x)
    assert torch.allclose(sae.decode_topk(values, indices), sae.decode(z), atol=1e-5)
    x_hat, z_forward = sae(x)
    assert torch.equal(z_forward, z)
    assert torch.allclose(x_hat, sae.decode(z), atol=1e-5)


def test_sparse_backward_matches_dense_autograd_including_auxk_latents():
    sae = make_sae()
    x = torch.randn(9, D)
    dead = torch.zeros(M, dtype=torch.bool)
    dead[::3] = True

    def sparse_loss():
        values, indices, aux_values, aux_indices = sae.encode_topk_aux(x, dead, 4)
        aux = sae.decode_topk(aux_values, aux_indices, add_b_pre=False)
        return sae.decode_topk(values, indices).pow(2).sum() + aux.pow(3).sum()

    def dense_loss():
        pre = sae.pre_activations(x)
        values, indices = pre.topk(K, dim=-1)
        aux_values, aux_indices = pre.masked_fill(~dead, float("-inf")).topk(4, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, indices, values.relu())
        z_aux = torch.zeros_like(pre).scatter(-1, aux_indices, aux_values.relu())
        return sae.decode(z).pow(2).sum() + (z_aux @ sae.W_dec).pow(3).sum()

    grads = []
    for loss_fn in (sparse_loss, dense_loss):
        sae.zero_grad()
        loss_fn().backward()
        grads.append({name: p.grad.clone() for name, p in sae.named_parameters()})
    for name, grad in grads[1].items():
        assert torch.allclose(grads[0][name], grad, rtol=1e-4, atol=1e-4), name


def test_gradient_reaches_the_input_through_encode():
    sae = make_sae()
    for p in sae.parameters():
        p.requires_grad_(False)  # frozen SAE, as in SARM: the backbone still needs d z / d x
    x = torch.randn(3, D, requires_grad=True)
    sae.encode(x).sum().backward()
    x_dense = x.detach().clone().requires_grad_(True)
    pre = sae.pre_activations(x_dense)
    values, indices = pre.topk(K, dim=-1)
    torch.zeros_like(pre).scatter(-1, indices, values.relu()).sum().backward()
    assert torch.allclose(x.grad, x_dense.grad, atol=1e-5)


def test_normalize_decoder_gives_unit_norm_directions():
    sae = make_sae()
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(M, 1) * 5 + 0.1)
    sae.normalize_decoder_()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(M), atol=1e-6)


def test_remove_parallel_grad_leaves_gradient_orthogonal_to_each_direction():
    sae = make_sae()
    sae(torch.randn(8, D))[0].pow(2).sum().backward()
    sae.remove_parallel_grad_()
    parallel = (sae.W_dec.grad * sae.W_dec).sum(dim=1).abs()
    assert parallel.max() < 1e-6 * sae.W_dec.grad.abs().max() * D


def test_fit_input_scale_makes_mean_squared_norm_equal_d():
    sae = make_sae(standardize_input=False)  # the global-scale switch
    sample = torch.randn(500, D) * 37.0 + 3.0
    sae.fit_input_scale_(sample)
    assert sae.normalize_input(sample).pow(2).sum(dim=-1).mean().item() == pytest.approx(D, rel=1e-4)


def test_per_token_standardisation_is_the_default_and_fits_no_global_scale():
    """Paper: activations normalised "as recommended in Gao et al." = per token, as Gao et al.'s and the
    authors' code do; the global scale E||x||^2 = d is the switch `standardize_input: false`."""
    assert SAEConfig(M, K).standardize_input is True
    sae = TopKSAE(D, SAEConfig(M, K), seed=1)
    x = torch.randn(6, D) * 7 + 2
    assert sae.fit_input_scale_(x) == 1.0 and sae.input_scale.item() == 1.0
    normalized = sae.normalize_input(x)
    assert torch.allclose(normalized.mean(dim=-1), torch.zeros(6), atol=1e-5)
    assert torch.allclose(normalized.std(dim=-1), torch.ones(6), atol=1e-4)
    # so the code of a state does not depend on its norm: 5 x the state gives the same latents
    assert torch.allclose(sae.encode(5 * x), sae.encode(x), atol=1e-4)


def test_an_attention_sink_row_does_not_set_the_scale_of_the_other_rows():
    """The first token's residual is ~140x the median norm (benchmarks/README.md). With per-token
    standardisation (the paper preset, which keeps that token at token level as the authors' code does)
    every row enters the SAE with squared norm ~d; a global scale fitted on such data shrinks the others."""
    ordinary = torch.randn(99, D)
    sample = torch.cat([ordinary[:1] * 140 * 10, ordinary])  # one sink among 100 rows
    default = TopKSAE(D, SAEConfig(M, K), seed=1)
    default.fit_input_scale_(sample)
    norms = default.normalize_input(ordinary).pow(2).sum(dim=-1)
    assert torch.allclose(norms, torch.full_like(norms, D - 1.0), rtol=1e-3)
    global_scale = TopKSAE(D, SAEConfig(M, K, standardize_input=False), seed=1)
    global_scale.fit_input_scale_(sample)
    assert global_scale.normalize_input(ordinary).pow(2).sum(dim=-1).mean() < 0.01 * D


def test_standardize_input_is_per_token_zero_mean_unit_std():
    sae = make_sae(standardize_input=True)
    x = sae.normalize_input(torch.randn(4, D) * 10 + 5)
    assert torch.allclose(x.mean(dim=-1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(x.std(dim=-1), torch.ones(4), atol=1e-4)


def test_save_load_roundtrip_gives_identical_outputs(tmp_path):
    sae = make_sae(relu=False, standardize_input=True)
    sae.input_scale.fill_(0.5)
    sae.save(tmp_path / "sae", info={"layer": 3})
    loaded = TopKSAE.load(tmp_path / "sae")
    assert (loaded.d_model, *astuple(loaded.cfg)) == (
        D,
        M,
        K,
        False,
        True,
    )
    x = torch.randn(5, D)
    assert torch.equal(loaded.pre_activations(x), sae.pre_activations(x))
    assert torch.equal(loaded.encode(x), sae.encode(x))
    assert json.loads((tmp_path / "sae" / CONFIG_FILE).read_text())["info"] == {"layer": 3}


def test_load_names_the_missing_or_mismatched_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="sae.json"):
        TopKSAE.load(tmp_path)
    make_sae().save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    (tmp_path / CONFIG_FILE).write_text(json.dumps({**config, "latents": M * 2}))
    with pytest.raises(ValueError, match="does not match"):
        TopKSAE.load(tmp_path)


@pytest.mark.parametrize("args", [(D, M, M + 1), (D, 0, 1), (D, M, 2.5)])
def test_invalid_shapes_are_rejected_with_the_argument_name(args):
    with pytest.raises(ValueError, match="TopKSAE"):
        TopKSAE(args[0], SAEConfig(*args[1:]))


def test_seed_makes_initialisation_reproducible():
    assert torch.equal(TopKSAE(D, SAEConfig(M, K), seed=7).W_dec, TopKSAE(D, SAEConfig(M, K), seed=7).W_dec)
    assert not torch.equal(
        TopKSAE(D, SAEConfig(M, K), seed=7).W_dec, TopKSAE(D, SAEConfig(M, K), seed=8).W_dec
    )


def test_bf16_gemm_keeps_float32_values_and_nearly_the_same_selection():
    sae = make_sae()
    x = torch.randn(64, D)
    exact_values, exact_indices = sae.encode_topk(x)
    sae.gemm_dtype = torch.bfloat16
    values, indices = sae.encode_topk(x)
    assert values.dtype == torch.float32
    same = sum(len(set(a) & set(b)) for a, b in zip(indices.tolist(), exact_indices.tolist(), strict=True))
    assert same >= 0.9 * indices.numel()
    assert torch.allclose(values.sort(dim=-1).values, exact_values.sort(dim=-1).values, atol=0.1)


def test_the_sae_config_is_saved_with_the_weights_and_read_back(tmp_path):
    cfg = SAEConfig(latents=M, k=K, relu=False, standardize_input=True)
    TopKSAE(D, cfg, seed=0).save(tmp_path)
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert {key: saved[key] for key in ("d_model", "latents", "k", "relu", "standardize_input")} == {
        "d_model": D,
        "latents": M,
        "k": K,
        "relu": False,
        "standardize_input": True,
    }
    assert TopKSAE.load(tmp_path).cfg == cfg
