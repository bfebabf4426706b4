"""Explainers against a real HTTP server on 127.0.0.1: retries, caching, parsing, key handling."""

import logging

import pandas as pd
import pytest
import yaml

from sarm.config import validate_config
from sarm.interpret.contexts import ContextConfig
from sarm.interpret.detection import DetectionConfig
from sarm.interpret.explainers import (
    ExplainerConfig,
    ExplainerError,
    LocalExplainer,
    OpenAIExplainer,
    build_explainer,
    explain_features,
)
from tests.conftest import REPO
from tests.openai_stub import OpenAIStub, Reply

KEY = "sk-test-4f1e9c2b7a0d-never-store-me"
GOOD = "Explanation: Refusals to help with a harmful request.\nScore: 4"


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


@pytest.fixture
def contexts() -> pd.DataFrame:
    rows = []
    for feature in (3, 7, 11):
        for rank in range(5):
            rows.append(
                (feature, rank, 5.0 - rank, f"feature {feature} context {rank}.", f"item{rank}/chosen0")
            )
    return pd.DataFrame(rows, columns=["feature", "rank", "activation", "context", "source_id"])


def openai_explainer(stub: OpenAIStub, cache_dir, **kwargs) -> OpenAIExplainer:
    return OpenAIExplainer(
        "gpt-test", base_url=stub.url, cache_dir=cache_dir, backoff_seconds=0.001, **kwargs
    )


def test_retries_429_and_500_with_backoff_then_parses_answer(api_key, contexts, tmp_path):
    with OpenAIStub([Reply(429, "slow down"), Reply(500, "boom"), Reply(200, GOOD)]) as stub:
        table = explain_features(contexts, [3], openai_explainer(stub, tmp_path, max_retries=3))
    assert len(stub.requests) == 3
    assert table.loc[0, ["feature", "explainer", "status", "score"]].tolist() == [
        3,
        "openai:gpt-test",
        "ok",
        4,
    ]
    assert table.loc[0, "explanation"] == "Refusals to help with a harmful request."


def test_gives_up_after_max_retries_with_a_clear_error(api_key, contexts, tmp_path):
    with OpenAIStub([Reply(503)] * 5) as stub:
        with pytest.raises(ExplainerError, match="still failing after 2 retries"):
            explain_features(contexts, [3], openai_explainer(stub, tmp_path, max_retries=2))
    assert len(stub.requests) == 3


def test_client_errors_are_not_retried(api_key, contexts, tmp_path):
    with OpenAIStub([Reply(400, "bad model name")]) as stub:
        with pytest.raises(ExplainerError, match="refused"):
            explain_features(contexts, [3], openai_explainer(stub, tmp_path))
    assert len(stub.requests) == 1


def test_rerun_answers_from_cache_with_zero_requests(api_key, contexts, tmp_path):
    with OpenAIStub(answer=lambda body: GOOD) as stub:
        first = explain_features(contexts, [3, 7, 11], openai_explainer(stub, tmp_path))
    assert len(stub.requests) == 3
    with OpenAIStub(answer=lambda body: "Explanation: something else.\nScore: 1") as stub:
        explainer = openai_explainer(stub, tmp_path)
        second = explain_features(contexts, [3, 7, 11], explainer)
    assert len(stub.requests) == 0 and explainer.requests_made == 0
    pd.testing.assert_frame_equal(first, second)


def test_cache_key_changes_with_temperature_and_model(api_key, contexts, tmp_path):
    with OpenAIStub(answer=lambda body: GOOD) as stub:
        explain_features(contexts, [3], openai_explainer(stub, tmp_path))
        explain_features(contexts, [3], openai_explainer(stub, tmp_path, temperature=0.7))
        explain_features(contexts, [3], OpenAIExplainer("other-model", base_url=stub.url, cache_dir=tmp_path))
    assert len(stub.requests) == 3


def test_unparseable_answer_is_recorded_with_raw_text(api_key, contexts, tmp_path):
    malformed = "These contexts are mostly about refusing things, I would say quite consistent."
    with OpenAIStub([Reply(200, malformed), Reply(200, "Explanation: numbers.\nScore: 9")]) as stub:
        table = explain_features(contexts, [3, 7], openai_explainer(stub, tmp_path))
    assert table["status"].tolist() == ["unparseable", "unparseable"]
    assert table.loc[0, "raw"] == malformed
    assert table["explanation"].isna().all() and table["score"].isna().all()


def test_api_key_is_sent_but_never_written_to_cache_or_logs(api_key, contexts, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with OpenAIStub([Reply(429), Reply(200, GOOD)]) as stub:
        explain_features(contexts, [3], openai_explainer(stub, tmp_path / "cache"))
    assert stub.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    written = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert written, "the answer should have been cached"
    assert all(KEY not in p.read_text() for p in written)
    assert KEY not in caplog.text


def test_missing_key_is_one_sentence_naming_the_variable(monkeypatch, contexts, tmp_path):
    monkeypatch.delenv("MY_LLM_KEY", raising=False)
    with OpenAIStub() as stub:
        with pytest.raises(ExplainerError) as err:
            explain_features(contexts, [3], openai_explainer(stub, tmp_path, api_key_env="MY_LLM_KEY"))
    assert "MY_LLM_KEY" in str(err.value) and "\n" not in str(err.value)
    assert len(stub.requests) == 0


def test_cached_answers_need_no_key(monkeypatch, api_key, contexts, tmp_path):
    with OpenAIStub(answer=lambda body: GOOD) as stub:
        explain_features(contexts, [3], openai_explainer(stub, tmp_path))
    monkeypatch.delenv("OPENAI_API_KEY")
    with OpenAIStub() as stub:
        table = explain_features(contexts, [3], openai_explainer(stub, tmp_path))
    assert table.loc[0, "status"] == "ok" and len(stub.requests) == 0


def test_key_pasted_as_variable_name_is_rejected_without_echoing_it():
    with pytest.raises(ExplainerError) as err:
        OpenAIExplainer("gpt-test", api_key_env="sk-abc-123")
    assert "sk-abc-123" not in str(err.value)


def test_request_shows_top_contexts_in_rank_order_at_configured_temperature(api_key, contexts, tmp_path):
    with OpenAIStub(answer=lambda body: GOOD) as stub:
        explain_features(contexts, [7], openai_explainer(stub, tmp_path), top_contexts=3)
    body = stub.requests[0].body
    assert body["model"] == "gpt-test" and body["temperature"] == 0.0
    prompt = body["messages"][-1]["content"]
    lines = [line for line in prompt.splitlines() if line.startswith("Activation:")]
    assert lines == [f"Activation: {5 - r:.3g} Context: feature 7 context {r}." for r in range(3)]


def test_feature_without_contexts_is_marked_and_costs_no_request(api_key, contexts, tmp_path):
    with OpenAIStub() as stub:
        table = explain_features(contexts, [99], openai_explainer(stub, tmp_path))
    assert table.loc[0, "status"] == "no_contexts" and len(stub.requests) == 0


def test_local_explainer_generates_greedily_and_reruns_from_cache(tiny_backbone, contexts, tmp_path):
    explainer = LocalExplainer(tiny_backbone, cache_dir=tmp_path, max_tokens=6)
    first = explain_features(contexts, [3, 7], explainer)
    # A random tiny model cannot follow the format: its answers are kept as unparseable, not dropped.
    assert first["status"].tolist() == ["unparseable", "unparseable"]
    assert explainer.requests_made == 2
    again = LocalExplainer(tiny_backbone, cache_dir=tmp_path, max_tokens=6)
    pd.testing.assert_frame_equal(first, explain_features(contexts, [3, 7], again))
    assert again.requests_made == 0 and again._lm is None  # never even loaded the model


def test_local_explainer_greedy_answers_are_reproducible(tiny_backbone, contexts):
    answers = [
        LocalExplainer(tiny_backbone, max_tokens=6).complete([{"role": "user", "content": "hi"}])
        for _ in range(2)
    ]
    assert answers[0] == answers[1]


def test_local_explainer_rejects_a_folder_without_model(tmp_path):
    with pytest.raises(ExplainerError, match="no config.json"):
        LocalExplainer(tmp_path).complete([{"role": "user", "content": "hi"}])


def test_stage_configs_follow_the_validated_paper_config(tmp_path):
    config = validate_config(
        yaml.safe_load((REPO / "config/config.yaml").read_text()),
        REPO / "workflow/schemas/config.schema.yaml",
    )
    interpret = config["interpret"]
    explainer = build_explainer(ExplainerConfig.from_config(interpret["explainer"]), tmp_path)
    assert isinstance(explainer, OpenAIExplainer)
    assert (explainer.model, explainer.temperature, explainer.api_key_env) == (
        "gpt-4o",
        0.0,
        "OPENAI_API_KEY",
    )
    contexts = ContextConfig.from_config(interpret, config["reward_model"])
    detection = DetectionConfig.from_config(interpret)
    # Detection judges the contexts ranked just after the ones the explainer saw.
    assert detection.holdout_from_rank == interpret["top_contexts"]
    assert contexts.top_n == detection.holdout_from_rank + detection.activating


def test_local_explainer_kind_needs_a_model_folder(tmp_path):
    config = ExplainerConfig(kind="local", model="smollm2-135m")
    with pytest.raises(ExplainerError, match="no model folder"):
        build_explainer(config, tmp_path)
    local = build_explainer(config, tmp_path, local_model=tmp_path)
    assert isinstance(local, LocalExplainer) and local.name == "local:smollm2-135m"


def test_local_explainer_writes_the_answer_format_and_the_model_fills_each_field(tiny_backbone):
    from sarm.interpret.prompts import explanation_messages

    answer = LocalExplainer(tiny_backbone, max_tokens=4).complete(
        explanation_messages([(2.0, "I cannot help.")])
    )
    lines = answer.split("\n")
    assert [line.split(":", 1)[0] for line in lines] == ["Explanation", "Score"]
    assert all(line.split(":", 1)[1].strip() for line in lines)  # each field completed by the model
