"""The router's request rewriting (pure): what goes to the encoder, P, and D."""

from __future__ import annotations

import json

import pytest

from epd_connector.router import protocol

IMG = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
BODY = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "a"},
                IMG,
                {"type": "input_audio", "input_audio": {"data": "x"}},
            ],
        },
        {"role": "user", "content": [IMG]},
    ],
    "stream": True,
    "stream_options": {"include_usage": True},
    "max_tokens": 50,
    "mm_processor_kwargs": {"fps": 1},
}


def test_media_refs_in_prompt_order_with_content_keys() -> None:
    refs = protocol.media_refs(BODY)
    assert [r.index for r in refs] == [0, 1, 2]
    assert [r.part["type"] for r in refs] == ["image_url", "input_audio", "image_url"]
    assert refs[0].content_key == refs[2].content_key != refs[1].content_key


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": "x"},
        {"messages": [{"content": "text"}]},
        {"messages": [None, {"content": [1, "a"]}]},
    ],
)
def test_no_media_refs(body: dict) -> None:
    assert protocol.media_refs(body) == []


def test_encoder_request_is_one_item_non_streaming_with_ec_target() -> None:
    ref = protocol.media_refs(BODY)[1]
    req = protocol.encoder_request(BODY, ref, "tcp://10.0.0.7:15001", "tid-1")
    assert req == {
        "model": "m",
        "messages": [{"role": "user", "content": [ref.part]}],
        "stream": False,
        "ec_transfer_params": {
            "consumer_zmq": "tcp://10.0.0.7:15001",
            "ec_items": [{"transfer_id": "tid-1"}],
        },
        "mm_processor_kwargs": {"fps": 1},
    }


def test_transfer_ids_are_fresh() -> None:
    assert len({protocol.new_transfer_id() for _ in range(100)}) == 100


ENCODER_ANSWERS = [
    ({"ec_transfer_params": {"h1": {"transfer_id": "t"}, "h2": {"transfer_id": "u"}}}, "t", "h1"),
    ({"ec_transfer_params": {"h1": {"transfer_id": "x"}, "h2": {"transfer_id": "t"}}}, "t", "h2"),
    ({"ec_transfer_params": {"only": {"modality": "image"}}}, "t", "only"),
]


@pytest.mark.parametrize(("answer", "tid", "want"), ENCODER_ANSWERS)
def test_encoded_mm_hash(answer: dict, tid: str, want: str) -> None:
    assert protocol.encoded_mm_hash(answer, tid) == want


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"ec_transfer_params": None},
        {"ec_transfer_params": {}},
        {"ec_transfer_params": {"a": {"transfer_id": "x"}, "b": {"transfer_id": "y"}}},
    ],
)
def test_encoded_mm_hash_rejects_answers_without_our_item(answer: dict) -> None:
    with pytest.raises(ValueError, match=r"ec_transfer_params|transfer_id"):
        protocol.encoded_mm_hash(answer, "t")


def test_consumer_request_keeps_media_and_lists_items_in_order() -> None:
    req = protocol.with_ec_items(BODY, [("h0", "t0"), ("h1", "t1"), ("h0", "t2")])
    assert req["messages"] == BODY["messages"]
    assert req["ec_transfer_params"] == {
        "ec_items": [
            {"mm_hash": "h0", "transfer_id": "t0"},
            {"mm_hash": "h1", "transfer_id": "t1"},
            {"mm_hash": "h0", "transfer_id": "t2"},
        ]
    }
    assert "ec_transfer_params" not in BODY  # the original is not modified


def test_prefill_request_is_one_token_non_streaming() -> None:
    body = dict(BODY, max_completion_tokens=70)
    req = protocol.prefill_request(body, protocol.mooncake_prefill_params("t9"))
    assert (req["max_tokens"], req["max_completion_tokens"], req["stream"]) == (1, 1, False)
    assert "stream_options" not in req
    assert req["kv_transfer_params"] == {
        "do_remote_decode": True,
        "do_remote_prefill": False,
        "transfer_id": "t9",
    }
    assert body["stream"] is True  # the caller's body is not modified
    assert body["max_tokens"] == 50


def test_kv_parameters_for_decode() -> None:
    assert protocol.mooncake_decode_params("http://10.0.0.3:8998", "eng", "t9") == {
        "do_remote_decode": False,
        "do_remote_prefill": True,
        "remote_bootstrap_addr": "http://10.0.0.3:8998",
        "remote_engine_id": "eng",
        "transfer_id": "t9",
    }
    assert protocol.nixl_prefill_params()["do_remote_decode"] is True
    req = protocol.decode_request({**BODY, "ec_transfer_params": {"x": 1}}, {"k": 1})
    assert req["kv_transfer_params"] == {"k": 1}
    assert "ec_transfer_params" not in req
    assert req["stream"] is True


def test_final_prefill_answer_as_sse() -> None:
    answer = {
        "id": "c1",
        "created": 5,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
    }
    events = protocol.as_sse(answer).decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunk = json.loads(events[0].removeprefix("data: "))
    assert chunk["object"] == "chat.completion.chunk"
    assert chunk["choices"][0]["delta"] == {"role": "assistant", "content": "hi"}
    assert chunk["choices"][0]["finish_reason"] == "stop"
    assert protocol.finish_reason(answer) == "stop"
    assert protocol.finish_reason({"choices": []}) is None
