# TopK sparse autoencoders, one per (backbone, layer, level, latents, k).


rule train_sae:
    """Train a TopK SAE streaming from every sampling part's shards."""
    input:
        activations=activation_parts,
    output:
        sae=f"{SAE_DIR}/sae.safetensors",
        config=f"{SAE_DIR}/sae.json",
        metrics=f"{SAE_DIR}/metrics.json",
        curve=f"{SAE_DIR}/loss.csv",
        plot=report(
            f"{SAE_DIR}/loss.png",
            caption="../report/sae_loss.rst",
            category="SAE training",
            labels={
                "backbone": "{backbone}",
                "layer": "{layer}",
                "level": "{level}",
                "M": "{latents}",
                "k": "{k}",
            },
        ),
    log:
        log_path("train_sae", SAE_NAME),
    benchmark:
        benchmark_path("train_sae", SAE_NAME)
    conda:
        ENVS / "torch.yaml"
    params:
        sae=result_keys(config, "sae", drop=["latents", "k"]),
    script:
        "../../scripts/train_sae.py"
