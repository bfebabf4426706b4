# Residual-stream activations: one job per corpus part, all needed layers from one forward pass.


rule sample_activations:
    """Hidden states of each sentence's last token (sequence) or of every token (token level)."""
    input:
        sentences=SENTENCES,
        backbone=backbone_files,
    output:
        activations=directory(ACTIVATIONS),
    log:
        log_path("sample_activations", "{backbone}/{level}/part{part}"),
    benchmark:
        benchmark_path("sample_activations", "{backbone}/{level}/part{part}")
    conda:
        ENVS / "torch.yaml"
    params:
        backbone=lambda wildcards: backbone_path(wildcards.backbone),
        layers=lambda wildcards: sae_layers(wildcards.backbone, wildcards.level),
        sampling=config["sampling"],
    script:
        "../../scripts/sample_activations.py"
