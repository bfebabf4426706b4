# The bill before the run: per job of the config's DAG, parameters, memory per GPU, FLOPs, GPU-hours on
# A100-80GB / H100 and activation disk, beside the paper's Table 4 and the SLURM profile's requests.


localrules:
    plan,


PLAN = "results/plan"


rule plan:
    """`snakemake plan` writes results/plan.md + .csv (same as `sarm plan config/config.yaml`)."""
    input:
        profile="profiles/slurm/config.yaml",
        reported="resources/paper/paper_compute.csv",
    output:
        markdown=f"{PLAN}.md",
        csv=f"{PLAN}.csv",
    log:
        log_path("plan", "plan"),
    conda:
        ENVS / "tables.yaml"
    params:
        config=config,
    script:
        "../../scripts/plan.py"
