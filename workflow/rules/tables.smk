# The paper's tables and sweep plots, regenerated from result files ("reproduced") beside the paper's
# numbers ("reported"). Light work: run on the submit host.
TABLE3 = TABLE.format(n=3)
TABLE4 = TABLE.format(n=4)


localrules:
    results_table,
    comparisons_table,
    compute_table,
    sweep_plot,


rule results_table:
    input:
        results=lambda wildcards: result_files(f"table{wildcards.n}"),
        reported="resources/paper/paper_reported.csv",
    output:
        markdown=report(
            f"{TABLE}.md",
            caption="../report/results_table.rst",
            category="Tables",
        ),
        csv=f"{TABLE}.csv",
        latex=f"{TABLE}.tex",
    log:
        log_path("results_table", "table{n}"),
    wildcard_constraints:
        n="[123]",
    conda:
        ENVS / "tables.yaml"
    params:
        rows=lambda wildcards: result_rows(f"table{wildcards.n}"),
        bootstrap=config["tables"]["bootstrap"],
        caption=lambda wildcards: report_caption(f"table{wildcards.n}"),
    script:
        "../../scripts/results_table.py"


rule comparisons_table:
    """Paired bootstrap of A - B for the configured pairs of reproduced rows (tables.comparisons)."""
    input:
        results=comparison_files(),
    output:
        markdown=report(
            f"{COMPARISONS}.md",
            caption="../report/comparisons.rst",
            category="Tables",
        ),
        csv=f"{COMPARISONS}.csv",
        latex=f"{COMPARISONS}.tex",
    log:
        log_path("comparisons_table", "comparisons"),
    conda:
        ENVS / "tables.yaml"
    params:
        pairs=comparison_rows(config),
        bootstrap=config["tables"]["bootstrap"],
        caption=report_caption("comparisons"),
    script:
        "../../scripts/comparisons_table.py"


rule compute_table:
    """Table 4: GPU-hours per procedure, from the attempt records of the jobs behind these results."""
    input:
        results=[path for n in (1, 2, 3) for path in result_files(f"table{n}")],
        feature_cards=f"{interpret_dir()}/feature_cards.md",
        steering=f"{steering_dir()}/steering.json",
        reported="resources/paper/paper_compute.csv",
    output:
        markdown=report(
            f"{TABLE4}.md",
            caption="../report/table4.rst",
            category="Tables",
        ),
        csv=f"{TABLE4}.csv",
        latex=f"{TABLE4}.tex",
    log:
        log_path("compute_table", "table4"),
    conda:
        ENVS / "tables.yaml"
    params:
        benchmarks=BENCHMARKS,
        caption=report_caption("table4"),
    script:
        "../../scripts/compute_table.py"


rule sweep_plot:
    input:
        table=f"{TABLE3}.csv",
    output:
        plot=report(
            SWEEP_PLOT,
            caption="../report/sweep_plot.rst",
            category="Table 3 sweeps",
            labels={"sweep": "{kind}"},
        ),
    log:
        log_path("sweep_plot", "{kind}"),
    wildcard_constraints:
        kind="layer|latents|k",
    conda:
        ENVS / "tables.yaml"
    script:
        "../../scripts/sweep_plot.py"
