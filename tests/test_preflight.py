"""Mistakes found before the compute: a dry run stops in seconds with one sentence naming the key or file."""

import os
import subprocess
import time

from .conftest import REPO, snakemake_command

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def dry_run(*config: str, env: dict | None = None):
    command = snakemake_command("-n", "--cores", "1", "--configfile", "config/demo.yaml", "--config", *config)
    start = time.monotonic()
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, env=env or OFFLINE, timeout=120
    )
    return result, result.stdout + result.stderr, time.monotonic() - start


def test_a_typo_in_a_local_data_path_stops_the_dry_run():
    result, output, seconds = dry_run(
        "data={'preferences': {'source': 'resources/demo/preference_trian.jsonl'}}"
    )
    assert result.returncode != 0 and seconds < 60
    assert "config key `data.preferences.source` names 'resources/demo/preference_trian.jsonl'" in output
    assert "Building DAG" not in output  # stopped while the config was validated


def test_an_openai_explainer_without_its_key_stops_the_dry_run():
    env = {k: v for k, v in OFFLINE.items() if k != "SARM_TEST_LLM_KEY"}
    result, output, seconds = dry_run(
        "interpret={'explainer': {'kind': 'openai', 'api_key_env': 'SARM_TEST_LLM_KEY'}}", env=env
    )
    assert result.returncode != 0 and seconds < 60
    assert "the environment variable SARM_TEST_LLM_KEY is empty or not set" in output
    result, output, _ = dry_run(
        "interpret={'explainer': {'kind': 'openai', 'api_key_env': 'SARM_TEST_LLM_KEY'}}",
        env={**env, "SARM_TEST_LLM_KEY": "sk-dry-run"},
    )
    assert result.returncode == 0, output
    assert "sk-dry-run" not in output


def test_the_endpoint_check_stops_the_dry_run_on_a_non_openai_endpoint():
    from tests.fixtures.raw_http import RawReply, RawServer

    with RawServer(RawReply(200, b"<html>Sign in</html>", "text/html")) as server:
        explainer = f"{{'kind': 'openai', 'base_url': '{server.url}', 'check_endpoint': 'true'}}"
        result, output, seconds = dry_run(
            f"interpret={{'explainer': {explainer}}}", env={**OFFLINE, "OPENAI_API_KEY": "sk-dry-run"}
        )
        assert server.requests == 1
    assert result.returncode != 0 and seconds < 60
    assert f"{server.url}/chat/completions" in output and "a body that is not JSON" in output
    assert "sk-dry-run" not in output
