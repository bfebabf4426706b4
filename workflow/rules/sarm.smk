# Reward models trained with the Bradley-Terry loss: SARM (pretrained or random SAE encoder) and the
# conventional RM baseline. With reward_model.train_backbone false, the backbone runs once per dataset
# (cache_final_states) and every model trains its head on the cache; evaluation and steering read it too. With
# train_layers N, the layers below l-N run once per dataset (cache_token_states) and each model trains its
# top N layers on that cache.


rule cache_final_states:
    """Final-token residual states of every conversation (of RM-Bench, only the pairs of the steering
    domains), at every layer a reward model reads."""
    input:
        backbone=backbone_files,
        data=lambda wildcards: local_data(wildcards.dataset),
    output:
        states=FINAL_STATES,
    log:
        log_path("cache_final_states", "{backbone}/{dataset}"),
    benchmark:
        benchmark_path("cache_final_states", "{backbone}/{dataset}")
    conda:
        ENVS / "torch.yaml"
    params:
        backbone=lambda wildcards: backbone_path(wildcards.backbone),
        layers=lambda wildcards: reward_model_layers(wildcards.backbone),
        data=lambda wildcards: cached_data(wildcards.dataset),
        reward_model=only(config, "reward_model", ["max_length", "date_string"]),
        inference_dtype=config["inference_dtype"],
    script:
        "../../scripts/cache_final_states.py"


rule cache_token_states:
    """Every token's residual state at one layer, for the reward models that train only the layers above it."""
    input:
        backbone=backbone_files,
        data=lambda wildcards: local_data(wildcards.dataset),
    output:
        states=TOKEN_STATES,
    log:
        log_path("cache_token_states", "{backbone}/layer{layer}/{dataset}"),
    benchmark:
        benchmark_path("cache_token_states", "{backbone}/layer{layer}/{dataset}")
    conda:
        ENVS / "torch.yaml"
    params:
        backbone=lambda wildcards: backbone_path(wildcards.backbone),
        data=lambda wildcards: config["data"][wildcards.dataset],
        reward_model=only(
            config, "reward_model", ["max_length", "date_string", "token_states_dtype"]
        ),
        inference_dtype=config["inference_dtype"],
    script:
        "../../scripts/cache_token_states.py"


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
        reward_model=training_params(drop=unused_train_layers_keys()),
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
        reward_model=training_params(
            drop=["head_input", "head_init", *unused_train_layers_keys()]
        ),
    script:
        "../../scripts/train_reward_model.py"
