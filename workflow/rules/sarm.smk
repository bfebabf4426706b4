# Reward models trained with the Bradley-Terry loss: SARM (pretrained or random SAE encoder) and the
# conventional RM baseline. The backbone runs once per dataset (cache_states) for every model that does not
# train all of it: a head-only model (train_backbone false) trains on the final-token states, a model that
# trains its top N layers (train_layers N) on every token's state at layer l-N. Evaluation reads the same
# cache.


rule cache_states:
    """One backbone pass over a dataset (of RM-Bench, only the pairs of the steering domains): final-token
    states at every layer a head-only model reads, every token's state at each layer a top-N model starts
    from."""
    input:
        backbone=backbone_files,
        data=lambda wildcards: local_data(wildcards.dataset),
    output:
        states=CACHED_STATES,
    log:
        log_path("cache_states", "{backbone}/{dataset}"),
    benchmark:
        benchmark_path("cache_states", "{backbone}/{dataset}")
    conda:
        ENVS / "torch.yaml"
    params:
        backbone=lambda wildcards: backbone_path(wildcards.backbone),
        layers=lambda wildcards: final_state_layers(wildcards.backbone),
        token_layers=lambda wildcards: cached_token_layers(wildcards),
        data=lambda wildcards: cached_data(wildcards.dataset),
        reward_model=lambda wildcards: cache_settings(wildcards),
        inference_dtype=config["inference_dtype"],
    script:
        "../../scripts/cache_states.py"


rule train_sarm:
    """Truncated backbone + SAE encoder (frozen; pretrained or random init) + linear value head."""
    input:
        unpack(reward_model_inputs),
    output:
        model=f"{SARM_DIR}/reward_model.json",
        weights=f"{SARM_DIR}/reward_model.safetensors",
        curve=f"{SARM_DIR}/train_log.csv",
    log:
        log_path("train_sarm", SARM_NAME),
    benchmark:
        benchmark_path("train_sarm", SARM_NAME)
    conda:
        ENVS / "torch.yaml"
    params:
        backbone=lambda wildcards: backbone_path(wildcards.backbone),
        data=config["data"]["preferences"],
        reward_model=training_params(),
    script:
        "../../scripts/train_reward_model.py"


rule train_vanilla_rm:
    """Conventional reward model: linear head on the layer-l hidden state, same data and budget."""
    input:
        unpack(reward_model_inputs),
    output:
        model=f"{VANILLA_DIR}/reward_model.json",
        weights=f"{VANILLA_DIR}/reward_model.safetensors",
        curve=f"{VANILLA_DIR}/train_log.csv",
    log:
        log_path("train_vanilla_rm", "{backbone}/layer{layer}{seed_suffix}"),
    benchmark:
        benchmark_path("train_vanilla_rm", "{backbone}/layer{layer}{seed_suffix}")
    conda:
        ENVS / "torch.yaml"
    params:
        backbone=lambda wildcards: backbone_path(wildcards.backbone),
        data=config["data"]["preferences"],
        reward_model=training_params(drop=["head_input", "head_init"]),
    script:
        "../../scripts/train_reward_model.py"
