# Residual-stream activations: one job per (layer, corpus part), so adding a layer adds jobs and reruns none
# (with sampling.group_layers: one job per part for all layers of a backbone and level, one forward pass,
# as the CPU demo does; with sampling.share_levels, the sequence and token levels of the same layers come
# from one forward pass too). Stored under sampling.activation_root (scratch); sampling.delete_after_sae:
# true deletes them (temp) once every SAE reading them is trained.


rule sample_activations:
    """Hidden states of each sentence's last token (sequence) or of every token (token level)."""
    input:
        sentences=SENTENCES,
        backbone=backbone_files,
    output:
        activations=activations_output(),
    log:
        log_path("sample_activations", "{backbone}/{level}/layer{layer}/part{part}"),
    benchmark:
        benchmark_path(
            "sample_activations", "{backbone}/{level}/layer{layer}/part{part}"
        )
    wildcard_constraints:
        layer=r"\d+(-\d+)*",
    conda:
        ENVS / "torch.yaml"
    params:
        backbone=lambda wildcards: backbone_path(wildcards.backbone),
        layers=lambda wildcards: [int(layer) for layer in wildcards.layer.split("-")],
        sampling=lambda wildcards: result_keys(
            config, "sampling", drop=sampling_keys_not_for(wildcards.level)
        ),
        inference_dtype=config["inference_dtype"],
    script:
        "../../scripts/sample_activations.py"


rule sample_activations_levels:
    """Both levels' activations of the same layers from one forward pass (sampling.share_levels)."""
    input:
        sentences=SENTENCES,
        backbone=backbone_files,
    output:
        sequence=activations_output("sequence"),
        token=activations_output("token"),
    log:
        log_path(
            "sample_activations", "{backbone}/sequence+token/layer{layer}/part{part}"
        ),
    benchmark:
        benchmark_path(
            "sample_activations", "{backbone}/sequence+token/layer{layer}/part{part}"
        )
    wildcard_constraints:
        backbone=shared_sampling_backbone(),
        layer=r"\d+(-\d+)*",
    conda:
        ENVS / "torch.yaml"
    params:
        backbone=lambda wildcards: backbone_path(wildcards.backbone),
        layers=lambda wildcards: [int(layer) for layer in wildcards.layer.split("-")],
        sampling=result_keys(config, "sampling", drop=sampling_keys_not_for("token")),
        inference_dtype=config["inference_dtype"],
    script:
        "../../scripts/sample_activations.py"


ruleorder: sample_activations_levels > sample_activations
