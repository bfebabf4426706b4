"""Explainers of features: an OpenAI-compatible API, a local transformers chat model, or the contrastive word
statistic of `contrastive.py` (no language model). `interpret.explainer.kind` picks one.

The two chat models share one on-disk response cache keyed by a hash of the request, so a rerun (or a run resumed after a
crash) makes no repeated calls. The API key is read from the environment at call time and never stored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from pathlib import Path

import openai
import pandas as pd
import torch
from tqdm.auto import tqdm

from sarm.backbone import packaged_gguf_path
from sarm.data.records import Message
from sarm.interpret.contexts import background_halves, silent_contexts
from sarm.interpret.contrastive import G2_AT_P001, ContrastiveExplainer, FeatureExplanation
from sarm.interpret.prompts import ANSWER_FIELD, explanation_messages, parse_explanation
from sarm.paths import GGUF_PREFIX
from sarm.runtime import write_text_atomic

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 60.0
EXPLANATION_COLUMNS = ["feature", "explainer", "explanation", "score", "status", "raw"]
EXPLAINER_KINDS = ("openai", "local", "contrastive")
BODY_SHOWN = 120  # bytes of a bad answer shown in the error


class ExplainerError(RuntimeError):
    """A chat model could not answer; the message says why and what to do."""


class BadAnswer(Exception):
    """An endpoint answered (often HTTP 200) with a body that is not an OpenAI chat completion."""

    def __init__(self, status: int, body: bytes):
        super().__init__(f"HTTP {status} with a body that is not a chat completion: {body!r}")
        self.status, self.body = status, body


class ResponseCache:
    """One JSON file per request under `cache_dir`, named by the SHA-256 of the request."""

    def __init__(self, cache_dir: str | Path | None):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    @staticmethod
    def key(request: dict) -> str:
        return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def _path(self, request: dict) -> Path | None:
        if self.cache_dir is None:
            return None
        key = self.key(request)
        return self.cache_dir / key[:2] / f"{key}.json"

    def get(self, request: dict) -> str | None:
        path = self._path(request)
        if path is None or not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))["response"]

    def put(self, request: dict, response: str) -> None:
        path = self._path(request)
        if path is None:
            return
        write_text_atomic(json.dumps({"request": request, "response": response}, ensure_ascii=False), path)


class CachedChatModel(ABC):
    """Answers chat messages; a subclass implements `_generate`, this class adds the cache."""

    model: str
    temperature: float
    max_tokens: int
    name: str  # provenance written beside each explanation, e.g. openai:gpt-4o
    needs_background = False

    def __init__(self, cache_dir: str | Path | None):
        self.cache = ResponseCache(cache_dir)
        self.requests_made = 0
        self.name = type(self).__name__  # subclasses name their backend

    def request(self, messages: list[Message]) -> dict:
        """What identifies an answer: the cache key is a hash of exactly this."""
        return {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def complete(self, messages: list[Message]) -> str:
        """The model's answer, from the cache when this exact request was answered before."""
        request = self.request(messages)
        cached = self.cache.get(request)
        if cached is not None:
            return cached
        answer = self._generate(messages)
        self.requests_made += 1
        self.cache.put(request, answer)
        return answer

    @abstractmethod
    def _generate(self, messages: list[Message]) -> str:
        """The backend's answer to `messages` (called only on a cache miss)."""

    def explain_feature(self, shown: list[tuple[float, str]], silent: list[str]) -> FeatureExplanation:
        """The model's explanation and 1..5 score from the top contexts (`silent` is not shown to it)."""
        raw = self.complete(explanation_messages(shown))
        parsed = parse_explanation(raw)
        if parsed is None:
            return FeatureExplanation(None, None, "unparseable", raw)
        return FeatureExplanation(parsed.explanation, parsed.score, "ok", raw)


class OpenAIExplainer(CachedChatModel):
    """Any OpenAI-compatible chat endpoint (api.openai.com, vLLM, llama.cpp) through the `openai` client."""

    def __init__(
        self,
        model: str = "gpt-4o",
        base_url: str | None = None,
        temperature: float = 0.0,
        max_retries: int = 6,
        cache_dir: str | Path | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_tokens: int = 512,
        backoff_seconds: float = 1.0,
        timeout: float = 120.0,
    ):
        super().__init__(cache_dir)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
            # Never echo the value: a key pasted here by mistake must not end up in a log.
            raise ExplainerError(
                "config key `interpret.explainer.api_key_env` must be the NAME of an environment variable"
            )
        self.model, self.base_url, self.temperature = model, base_url, float(temperature)
        self.max_retries, self.max_tokens = max_retries, max_tokens
        self.api_key_env, self.backoff_seconds, self.timeout = api_key_env, backoff_seconds, timeout
        self.name = f"openai:{model}"
        self._client = None

    def _get_client(self):
        if self._client is None:
            api_key = os.environ.get(self.api_key_env)
            if not api_key:
                raise ExplainerError(
                    f"the environment variable {self.api_key_env} is not set: export your API key for "
                    f"{self.base_url or 'api.openai.com'} in it (responses already cached need no key)."
                )
            # Retries are ours (below), so the client must not retry on its own as well.
            self._client = openai.OpenAI(
                api_key=api_key, base_url=self.base_url, max_retries=0, timeout=self.timeout
            )
        return self._client

    @property
    def endpoint(self) -> str:
        return self.base_url or "api.openai.com"

    def _answer(self, client, messages: list[Message]) -> str:
        """One request; BadAnswer when the endpoint answers with something that is not a chat completion."""
        raw = client.chat.completions.with_raw_response.create(
            model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
        )
        try:
            response = raw.parse()
            choices = response.choices
            if not isinstance(choices, list):  # JSON, but not a chat completion
                raise AttributeError("choices")
            content = choices[0].message.content if choices else ""
        except (
            json.JSONDecodeError,
            UnicodeDecodeError,
            AttributeError,
            TypeError,
            openai.APIResponseValidationError,
        ) as err:
            raise BadAnswer(raw.status_code, raw.http_response.content[:BODY_SHOWN]) from err
        return content or ""

    def _generate(self, messages: list[Message]) -> str:
        client = self._get_client()
        for attempt in range(self.max_retries + 1):
            try:
                return self._answer(client, messages)
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as err:
                reason = err
            except openai.APIStatusError as err:
                if err.status_code < 500:
                    raise ExplainerError(f"{self.model} at {self.endpoint} refused: {err}") from err
                reason = err
            except BadAnswer as err:
                reason = err
            if attempt == self.max_retries:
                if isinstance(reason, BadAnswer):
                    raise ExplainerError(
                        f"{self.model} at {self.endpoint} answered HTTP {reason.status} with a body that is not "
                        f"an OpenAI chat completion (first bytes: {reason.body!r}), {self.max_retries + 1} "
                        "times: check that `interpret.explainer.base_url` is the OpenAI-compatible API root "
                        "(often ending in /v1), not a web page, proxy or login page, and that the server "
                        "serves /chat/completions"
                    ) from reason
                raise ExplainerError(
                    f"{self.model} at {self.endpoint} still failing after "
                    f"{self.max_retries} retries: {reason}"
                ) from reason
            delay = min(MAX_BACKOFF_SECONDS, self.backoff_seconds * 2**attempt) * (1 + 0.1 * random.random())
            log.warning(
                "request failed (%s); retry %d/%d in %.1f s", reason, attempt + 1, self.max_retries, delay
            )
            time.sleep(delay)
        raise AssertionError("unreachable")


class LocalExplainer(CachedChatModel):
    """A local transformers chat model, greedy decoding: a HF folder or a packaged `gguf:pkg/file.gguf`."""

    def __init__(
        self,
        model_dir: str | Path,
        cache_dir: str | Path | None = None,
        max_tokens: int = 128,
        label: str | None = None,
    ):
        super().__init__(cache_dir)
        self.model_dir = str(model_dir)
        self.model = f"local-fieldwise:{self.model_dir}"
        self.name = f"local:{label or Path(self.model_dir).name}"
        self.temperature = 0.0
        self.max_tokens = max_tokens
        self._tokenizer = self._lm = None

    def _load(self):
        if self._lm is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer  # seconds to import: only when used

            if self.model_dir.startswith(GGUF_PREFIX):
                gguf = packaged_gguf_path(self.model_dir)
                source, extra = gguf.parent, {"gguf_file": gguf.name}
            else:
                if not (Path(self.model_dir) / "config.json").is_file():
                    raise ExplainerError(f"explainer model folder {self.model_dir!r} has no config.json")
                source, extra = self.model_dir, {}
            log.info("loading local explainer %s", self.model_dir)
            self._tokenizer = AutoTokenizer.from_pretrained(source, **extra)
            if self._tokenizer.chat_template is None:
                raise ExplainerError(
                    f"explainer model {self.model_dir!r} has no chat template: use an instruct model"
                )
            self._lm = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **extra).eval()
        return self._tokenizer, self._lm

    def _generate(self, messages: list[Message]) -> str:
        """Fill the answer format of the prompt field by field ("Explanation: <...>" lines).

        Small local models rarely keep to a two-line format on their own; writing each "Field:" prefix for
        them and letting them complete one line per field keeps the content theirs and the format ours.
        """
        tokenizer, _ = self._load()
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        fields = ANSWER_FIELD.findall(messages[-1]["content"])
        if not fields:
            return self._complete_line(prompt, stop_at_newline=False)
        answer = ""
        for field in fields:
            answer += f"{field}: " + self._complete_line(prompt + answer + f"{field}:") + "\n"
        return answer.strip()

    def _complete_line(self, text: str, stop_at_newline: bool = True) -> str:
        tokenizer, lm = self._load()
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.inference_mode():
            output = lm.generate(
                **inputs, max_new_tokens=self.max_tokens, do_sample=False, pad_token_id=pad_id
            )
        completion = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        completion = completion.strip()
        return completion.split("\n", 1)[0].strip() if stop_at_newline else completion


@dataclass(frozen=True)
class ExplainerConfig:
    kind: str = "openai"  # one of EXPLAINER_KINDS
    model: str = "gpt-4o"  # API model name (openai), or the backbone key of a local chat model
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_retries: int = 6
    max_terms: int = 5  # contrastive: words per explanation
    min_contexts: int = 2  # contrastive: top contexts a word must occur in
    min_g2: float = G2_AT_P001  # contrastive: smallest G² of a word kept
    markers: str = "keep"  # contrastive: chat-template markers among the words (keep) or not (drop)

    @classmethod
    def from_config(cls, explainer: dict) -> ExplainerConfig:
        """From the validated `interpret.explainer` config section."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in explainer.items() if k in known})


def build_explainer(
    config: ExplainerConfig, cache_dir: str | Path | None, local_model: str | Path | None = None
) -> CachedChatModel | ContrastiveExplainer:
    """The configured explainer (a chat one can also judge detection); `local_model`: the folder for kind local."""
    if config.kind == "contrastive":
        return ContrastiveExplainer(config.max_terms, config.min_contexts, config.min_g2, config.markers)
    if config.kind == "openai":
        return OpenAIExplainer(
            config.model,
            base_url=config.base_url,
            temperature=config.temperature,
            max_retries=config.max_retries,
            cache_dir=cache_dir,
            api_key_env=config.api_key_env,
        )
    if config.kind == "local":
        if local_model is None:
            raise ExplainerError(
                "config key `interpret.explainer.kind` is local but no model folder was given"
            )
        return LocalExplainer(local_model, cache_dir=cache_dir, label=config.model)
    raise ExplainerError(
        f"config key `interpret.explainer.kind` must be one of {', '.join(EXPLAINER_KINDS)}, got {config.kind!r}"
    )


def features_to_explain(head_weight: torch.Tensor, contexts: pd.DataFrame, max_features: int) -> list[int]:
    """Features with contexts, by |head weight|: half the largest positive, half the largest negative weights.

    Balanced by sign so that both the positive and the negative feature cards have candidates.
    """
    weight = torch.as_tensor(head_weight).detach().float().cpu().flatten()
    seen = torch.zeros(weight.numel(), dtype=torch.bool)
    seen[torch.as_tensor(contexts["feature"].unique(), dtype=torch.long)] = True
    order = torch.argsort(weight, descending=True)
    positive = order[seen[order] & (weight[order] > 0)].tolist()
    negative = order.flip(0)[seen[order.flip(0)] & (weight[order.flip(0)] < 0)].tolist()
    n_positive = min(len(positive), max(max_features - len(negative), (max_features + 1) // 2))
    chosen = positive[:n_positive] + negative[: max_features - n_positive]
    return sorted(chosen, key=lambda i: -abs(float(weight[i])))


def _feature_contexts(contexts: pd.DataFrame, feature: int, top_contexts: int) -> list[tuple[float, str]]:
    rows = contexts[contexts["feature"] == feature].sort_values("rank").head(top_contexts)
    return list(zip(rows["activation"].astype(float), rows["context"].astype(str), strict=True))


def explain_features(
    contexts: pd.DataFrame,
    feature_ids: list[int],
    explainer: CachedChatModel | ContrastiveExplainer,
    top_contexts: int = 40,
    background: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per feature: who explained it, explanation, score (1..5 or none), status, raw answer.

    Status: ok, no_contexts, unparseable (a chat answer without the two fields), no_distinctive_words or
    no_silent_contexts (contrastive). `background` (background.parquet) is needed by the contrastive explainer, which reads its
    explainer half only (`background_halves`).
    """
    missing = {"feature", "rank", "activation", "context"} - set(contexts.columns)
    if missing:
        raise ValueError(f"feature contexts table lacks column(s) {sorted(missing)}")
    if explainer.needs_background and background is None:
        raise ValueError(f"the {explainer.name} explainer needs the background contexts (background.parquet)")
    explainer_half = background_halves(background)[0] if background is not None else None
    rows = []
    for feature in tqdm(feature_ids, desc="explaining features", unit="feature"):
        shown = _feature_contexts(contexts, int(feature), top_contexts)
        row = {"feature": int(feature), "explainer": explainer.name}
        if not shown:
            rows.append({**row, "explanation": None, "score": None, "status": "no_contexts", "raw": ""})
            continue
        silent = []
        if explainer_half is not None:
            silent = silent_contexts(explainer_half, int(feature), exclude=[text for _, text in shown])
        result = explainer.explain_feature(shown, silent)
        rows.append(
            {
                **row,
                "explanation": result.explanation,
                "score": result.score,
                "status": result.status,
                "raw": result.raw,
            }
        )
    table = pd.DataFrame(rows, columns=EXPLANATION_COLUMNS)
    table["score"] = table["score"].astype("Int64")
    log.info("explained %d features: %s", len(table), table["status"].value_counts().to_dict())
    return table
