"""The router's request rewriting (pure): what goes to the encoder, P, and D."""

from __future__ import annotations

import json
from typing import Any

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
def test_no_media_refs(body: dict[str, Any]) -> None:
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
def test_encoded_item_is_found_by_transfer_id(answer: dict[str, Any], tid: str, want: str) -> None:
    ref = protocol.media_refs(BODY)[0]
    assert protocol.encoded_item(answer, ref, tid).mm_hash == want


def test_encoded_item_carries_metadata_and_modality() -> None:
    ref = protocol.media_refs(BODY)[0]
    answer = {
        "ec_transfer_params": {
            "h": {
                "modality": "image",
                "metadata": {"image_grid_thw": [[1, 4, 4]]},
                "transfer_id": "t",
            }
        }
    }
    assert protocol.encoded_item(answer, ref, "t") == protocol.Encoded(
        "h", "t", "image", {"image_grid_thw": [[1, 4, 4]]}
    )
    bare = protocol.encoded_item({"ec_transfer_params": {"h": {}}}, ref, "t")
    assert (bare.modality, bare.metadata) == ("image", {})  # the part's type names the modality


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"ec_transfer_params": None},
        {"ec_transfer_params": {}},
        {"ec_transfer_params": {"a": {"transfer_id": "x"}, "b": {"transfer_id": "y"}}},
    ],
)
def test_encoded_item_rejects_answers_without_our_item(answer: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"ec_transfer_params|transfer_id"):
        protocol.encoded_item(answer, protocol.media_refs(BODY)[0], "t")


def _enc(i: int, metadata: dict[str, Any] | None, modality: str = "image") -> protocol.Encoded:
    return protocol.Encoded(f"h{i}", f"t{i}", modality, metadata or {})


GRID = {"image_grid_thw": [[1, 4, 6]]}
IMAGES: dict[str, Any] = {
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, IMG, IMG]},
    ],
}


def test_encoder_request_names_the_item_by_uuid_in_reference_mode() -> None:
    ref = protocol.media_refs(BODY)[0]
    req = protocol.encoder_request(BODY, ref, None, "t", with_uuid=True)
    assert req["messages"][0]["content"] == [{**IMG, "uuid": ref.content_key}]
    given = protocol.media_refs({"messages": [{"content": [{**IMG, "uuid": "mine"}]}]})[0]
    assert (
        protocol.encoder_request(BODY, given, None, "t", with_uuid=True)["messages"][0]["content"][
            0
        ]["uuid"]
        == "mine"
    )  # a client's own uuid wins
    assert (
        "uuid" not in protocol.encoder_request(BODY, ref, None, "t")["messages"][0]["content"][0]
    )  # raw mode: the consumer hashes the content, so must the encoder


def test_by_reference_replaces_pixels_with_metadata_and_uuid() -> None:
    refs = protocol.media_refs(IMAGES)
    out = protocol.by_reference(IMAGES, refs, [_enc(0, GRID), _enc(1, GRID)])
    assert out["messages"][0] == IMAGES["messages"][0]
    text, first, second = out["messages"][1]["content"]
    assert text == {"type": "text", "text": "a"}
    assert first == {
        "type": "image_embeds",
        "image_embeds": {"image_grid_thw": [1, 4, 6]},
        "uuid": refs[0].uuid,
    }
    assert second == first  # the same image twice: the same identifier, the same metadata
    assert "data:" not in json.dumps(out)
    assert IMAGES["messages"][1]["content"][1] is IMG  # the original is not modified


def test_by_reference_keeps_an_item_without_metadata_raw_with_its_uuid() -> None:
    refs = protocol.media_refs(IMAGES)
    out = protocol.by_reference(IMAGES, refs, [_enc(0, None), _enc(1, GRID)])
    first, second = out["messages"][1]["content"][1:]
    assert first == {**IMG, "uuid": refs[0].uuid}
    assert second["type"] == "image_embeds"


def test_by_reference_keeps_an_audio_request_raw_when_any_item_lacks_metadata() -> None:
    refs = protocol.media_refs(BODY)
    encoded = [_enc(0, GRID), _enc(1, None, "audio"), _enc(2, GRID)]
    out = protocol.by_reference(BODY, refs, encoded)
    parts = [p for m in out["messages"] if isinstance(m["content"], list) for p in m["content"]]
    assert [p["type"] for p in parts] == ["text", "image_url", "input_audio", "image_url"]
    assert all(p["uuid"] == r.uuid for p, r in zip(parts[1:], refs, strict=True))
    full = [_enc(0, GRID), _enc(1, {"audio_num_tokens": [30]}, "audio"), _enc(2, GRID)]
    out = protocol.by_reference(BODY, refs, full)
    parts = [p for m in out["messages"] if isinstance(m["content"], list) for p in m["content"]]
    assert [p["type"] for p in parts] == ["text", "image_embeds", "audio_embeds", "image_embeds"]
    assert parts[2]["audio_embeds"] == {"audio_num_tokens": [30]}


def test_by_reference_leaves_client_embeds_alone() -> None:
    embeds = {"type": "image_embeds", "image_embeds": "b64", "uuid": "u"}
    body = {"messages": [{"role": "user", "content": [embeds, IMG]}]}
    refs = protocol.media_refs(body)
    out = protocol.by_reference(body, refs, [_enc(0, GRID), _enc(1, GRID)])
    assert out["messages"][0]["content"][0] is embeds
    assert out["messages"][0]["content"][1]["type"] == "image_embeds"


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
