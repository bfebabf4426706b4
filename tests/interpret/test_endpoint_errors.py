"""Endpoints that answer with something other than a chat completion, and the checks before the DAG runs
(sarm.config.check_explainer): a missing key, an unreachable, refusing or non-OpenAI endpoint."""

import json
import socket

import pandas as pd
import pytest

from sarm.config import ConfigError, check_explainer
from sarm.interpret.explainers import ExplainerError, OpenAIExplainer, explain_features
from tests.fixtures.raw_http import RawReply, RawServer
from tests.openai_stub import OpenAIStub, completion

KEY = "sk-test-0b1c2d3e-never-in-a-message"
GOOD = "Explanation: Polite refusals.\nScore: 4"


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)


@pytest.fixture
def contexts() -> pd.DataFrame:
    rows = [(feature, rank, 3.0 - rank, f"context {rank}.", "x") for feature in (1, 2) for rank in range(3)]
    return pd.DataFrame(rows, columns=["feature", "rank", "activation", "context", "source_id"])


def explainer(url, cache_dir, max_retries=2):
    return OpenAIExplainer(
        "gpt-test", base_url=url, cache_dir=cache_dir, max_retries=max_retries, backoff_seconds=0.001
    )


@pytest.mark.parametrize(
    "reply",
    [
        RawReply(200, b"<html><body>Please log in</body></html>", "text/html"),
        RawReply(200, b"<html>not json at all", "application/json"),
        RawReply(200, b'{"detail": "not a completion"}', "application/json"),
    ],
    ids=["html-page", "json-content-type-bad-body", "json-without-choices"],
)
def test_a_200_that_is_not_a_completion_names_endpoint_status_body_and_what_to_check(
    api_key, contexts, tmp_path, reply
):
    with RawServer(reply) as server, pytest.raises(ExplainerError) as caught:
        explain_features(contexts, [1], explainer(server.url, tmp_path))
    message = str(caught.value)
    assert server.url in message and "HTTP 200" in message
    assert repr(reply.body[:120]) in message
    assert "base_url" in message and "/v1" in message
    assert server.requests == 3  # retried as for a 5xx: 1 + max_retries
    assert KEY not in message


def test_a_bad_answer_is_retried_and_the_good_one_is_cached(api_key, contexts, tmp_path):
    good = json.dumps(completion("gpt-test", GOOD)).encode()
    with RawServer(RawReply(200, b"oops", "text/plain"), RawReply(200, good, "application/json")) as server:
        table = explain_features(contexts, [1], explainer(server.url, tmp_path))
        assert server.requests == 2
    assert table.loc[0, "status"] == "ok" and table.loc[0, "score"] == 4
    with RawServer(RawReply(200, b"down for maintenance", "text/plain")) as server:
        again = explain_features(contexts, [1], explainer(server.url, tmp_path))  # cached: no request
        assert server.requests == 0
    assert again.loc[0, "explanation"] == table.loc[0, "explanation"]


def test_missing_key_is_one_sentence_naming_the_variable():
    with pytest.raises(ConfigError) as caught:
        check_explainer({"kind": "openai", "api_key_env": "MY_LLM_KEY"}, environ={})
    message = str(caught.value)
    assert "MY_LLM_KEY" in message and "interpret.explainer.kind" in message and "\n" not in message
    check_explainer({"kind": "local", "model": "smollm2-135m"}, environ={})  # no key needed
    check_explainer({"kind": "openai"}, environ={"OPENAI_API_KEY": "x"})  # no request without the switch


def test_endpoint_check_sends_one_tiny_request_with_the_key():
    with OpenAIStub(answer=lambda body: "OK") as stub:
        check_explainer(
            {"kind": "openai", "model": "gpt-test", "base_url": stub.url, "check_endpoint": True},
            environ={"OPENAI_API_KEY": KEY},
        )
    (request,) = stub.requests
    assert request.body["max_tokens"] == 1 and request.body["model"] == "gpt-test"
    assert request.headers["authorization"] == f"Bearer {KEY}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (RawReply(200, b"<html>hello</html>", "text/html"), "not JSON"),
        (RawReply(200, b'{"object": "list"}', "application/json"), "no `choices`"),
        (RawReply(401, b'{"error": "bad key"}', "application/json"), "HTTP 401 (the key in OPENAI_API_KEY"),
        (RawReply(404, b"no route", "text/plain"), "HTTP 404 (no such route or model"),
    ],
    ids=["html", "json-not-completion", "refused-key", "wrong-route"],
)
def test_endpoint_check_says_what_is_wrong(reply, expected):
    with RawServer(reply) as server, pytest.raises(ConfigError) as caught:
        check_explainer(
            {"kind": "openai", "base_url": server.url, "check_endpoint": True},
            environ={"OPENAI_API_KEY": KEY},
        )
    message = str(caught.value)
    assert expected in message and f"{server.url}/chat/completions" in message and KEY not in message


def test_endpoint_check_of_an_unreachable_address():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(ConfigError, match=r"cannot reach the explainer endpoint .*check the address"):
        check_explainer(
            {"kind": "openai", "base_url": url, "check_endpoint": True}, environ={"OPENAI_API_KEY": KEY}
        )
