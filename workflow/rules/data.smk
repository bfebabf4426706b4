# Backbones and the sentence corpus.


rule convert_backbone:
    """De-quantise a GGUF model shipped in a Python package into a normal Hugging Face folder."""
    output:
        model=directory(CONVERTED_BACKBONE),
    log:
        log_path("convert_backbone", "{backbone}"),
    conda:
        ENVS / "torch.yaml"
    params:
        source=lambda wildcards: config["backbones"][wildcards.backbone]["source"],
    script:
        "../../scripts/convert_backbone.py"


rule split_sentences:
    """Stream the corpus once, split it into sentences, filter by token count, deal them into parts."""
    input:
        backbone=backbone_files,
        corpus=local_data("corpus"),
    output:
        parts=expand(SENTENCES, part=sampling_parts(), allow_missing=True),
    log:
        log_path("split_sentences", "{backbone}"),
    benchmark:
        benchmark_path("split_sentences", "{backbone}")
    conda:
        ENVS / "torch.yaml"
    params:
        corpus=config["data"]["corpus"],
        backbone=lambda wildcards: backbone_path(wildcards.backbone),
    script:
        "../../scripts/split_sentences.py"
