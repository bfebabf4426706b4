# RQ1: what the value head reads. Activating contexts on RM-Bench -> explanations -> detection -> cards.


localrules:
    feature_cards,


rule feature_contexts:
    """Top activating sentence-end contexts of every feature on the RM-Bench-format set."""
    input:
        model=f"{REWARD_MODEL_DIR}/reward_model.json",
        backbone=backbone_files,
        rmbench=local_data("rmbench"),
    output:
        contexts=f"{INTERPRET_DIR}/contexts.parquet",
        background=f"{INTERPRET_DIR}/background.parquet",
    log:
        log_path("feature_contexts", REWARD_MODEL_NAME),
    benchmark:
        benchmark_path("feature_contexts", REWARD_MODEL_NAME)
    conda:
        ENVS / "torch.yaml"
    params:
        backbone=lambda wildcards: backbone_path(wildcards.backbone),
        data=config["data"]["rmbench"],
        interpret=only(config, "interpret", ["top_contexts", "detection_contexts"]),
        reward_model=only(config, "reward_model", ["max_length", "date_string"]),
    script:
        "../../scripts/feature_contexts.py"


rule explain_features:
    """Explanation per feature: an LLM's (with a 1-5 consistency score) or the contrastive words; an API key
    is read from the environment."""
    input:
        model=f"{REWARD_MODEL_DIR}/reward_model.json",
        contexts=f"{INTERPRET_DIR}/contexts.parquet",
        background=f"{INTERPRET_DIR}/background.parquet",
        explainer=explainer_files("explain_features"),
    output:
        explanations=f"{INTERPRET_DIR}/explanations.parquet",
    log:
        log_path("explain_features", REWARD_MODEL_NAME),
    benchmark:
        benchmark_path("explain_features", REWARD_MODEL_NAME)
    conda:
        ENVS / "interpret.yaml"
    resources:
        gpu=explainer_gpus("explain_features"),
    params:
        interpret=only(
            config, "interpret", ["explainer", "max_features", "top_contexts"]
        ),
        explainer_path=explainer_path(),
        cache=EXPLAINER_CACHE,
    script:
        "../../scripts/explain_features.py"


rule detection_scores:
    """Beyond the paper: can a judge (lexical, or the chat explainer) pick activating contexts from the
    explanation alone?"""
    input:
        contexts=f"{INTERPRET_DIR}/contexts.parquet",
        background=f"{INTERPRET_DIR}/background.parquet",
        explanations=f"{INTERPRET_DIR}/explanations.parquet",
        explainer=explainer_files("detection_scores"),
    output:
        detection=f"{INTERPRET_DIR}/detection.parquet",
    log:
        log_path("detection_scores", REWARD_MODEL_NAME),
    benchmark:
        benchmark_path("detection_scores", REWARD_MODEL_NAME)
    conda:
        ENVS / "interpret.yaml"
    resources:
        gpu=explainer_gpus("detection_scores"),
    params:
        interpret=only(
            config,
            "interpret",
            ["explainer", "detection_contexts", "top_contexts", "detection_judge"],
        ),
        explainer_path=explainer_path(),
        cache=EXPLAINER_CACHE,
    script:
        "../../scripts/detection_scores.py"


rule feature_cards:
    """The paper's case studies: top positive / negative features with explanation and contexts."""
    input:
        model=f"{REWARD_MODEL_DIR}/reward_model.json",
        contexts=f"{INTERPRET_DIR}/contexts.parquet",
        explanations=f"{INTERPRET_DIR}/explanations.parquet",
        detection=f"{INTERPRET_DIR}/detection.parquet",
    output:
        cards=report(
            f"{INTERPRET_DIR}/feature_cards.md",
            caption="../report/feature_cards.rst",
            category="Features",
        ),
        figure=report(
            f"{INTERPRET_DIR}/feature_cards.png",
            caption="../report/feature_cards.rst",
            category="Features",
        ),
    log:
        log_path("feature_cards", REWARD_MODEL_NAME),
    conda:
        ENVS / "tables.yaml"
    params:
        interpret=only(config, "interpret", ["cards"]),
    script:
        "../../scripts/feature_cards.py"
