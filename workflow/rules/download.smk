# Hugging Face backbones and datasets, fetched once on the login node (compute nodes may have no
# internet); every other job reads the cache offline (sarm.download).


localrules:
    download,


rule download:
    """One hub model snapshot or dataset into the cache (downloads.cache_dir or HF_HOME)."""
    output:
        record=DOWNLOADED,
    log:
        log_path("download", "{kind}/{name}"),
    wildcard_constraints:
        kind="backbone|dataset",
    conda:
        ENVS / "torch.yaml"
    params:
        source=lambda wildcards: hub_source(wildcards.kind, wildcards.name),
        spec=lambda wildcards: (
            config["data"][wildcards.name] if wildcards.kind == "dataset" else {}
        ),
    script:
        "../../scripts/download.py"
