"""The payload codec: round trips, compression, corruption detection, thread safety."""

from __future__ import annotations

import json
import pathlib
import pickle
import random
import threading
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pydynflow.errors import CorruptData, PersistenceError, SerializationError
from pydynflow.references import OutputReference
from pydynflow.storage import codec
from pydynflow.storage.codec import COMPRESS_THRESHOLD, FLAG_ZSTD, MAGIC, decode, encode

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(text, children, max_size=6),
    max_leaves=40,
)
references = st.builds(
    OutputReference,
    st.uuids().map(str),
    st.integers(min_value=1, max_value=10_000),
    st.integers(min_value=1, max_value=10_000),
    st.lists(text, max_size=3).map(tuple),
)
values_with_references = st.recursive(
    scalars | references,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(text, children, max_size=6),
    max_leaves=40,
)


def _large_value() -> dict[str, object]:
    return {"lines": [f"line {i}: all is well" for i in range(200)], "ok": True}


@given(json_values)
def test_round_trip_of_json_values(value: object) -> None:
    assert decode(encode(value)) == value


@given(values_with_references)
def test_round_trip_keeps_output_references(value: object) -> None:
    assert decode(encode(value)) == value


def test_output_reference_comes_back_as_a_reference() -> None:
    ref = OutputReference("5b9e5e2a-0000-4000-8000-000000000001", 4, 2, ("a", "b"))
    loaded = decode(encode({"input": {"x": ref, "many": [ref["c"]]}}))
    assert isinstance(loaded["input"]["x"], OutputReference)
    assert loaded["input"]["x"] == ref
    assert loaded["input"]["many"][0] == ref["c"]


def test_a_dict_that_merely_looks_like_a_reference_stays_a_dict() -> None:
    value = {"__output_reference__": {"not": "a reference"}}
    assert decode(encode(value)) == value
    assert decode(encode({"__output_reference__": 5})) == {"__output_reference__": 5}


def test_small_payload_is_plain_json_with_header() -> None:
    blob = encode({"key": "value"})
    assert blob[0] == MAGIC
    assert blob[1] & FLAG_ZSTD == 0
    assert blob[6:] == b'{"key":"value"}'
    assert int.from_bytes(blob[2:6], "big") == zlib.crc32(blob[6:])


def test_large_payload_is_compressed() -> None:
    value = _large_value()
    raw = json.dumps(value, separators=(",", ":")).encode()
    assert len(raw) > COMPRESS_THRESHOLD
    blob = encode(value)
    assert blob[1] & FLAG_ZSTD
    assert len(blob) < len(raw) / 3
    assert decode(blob) == value


def test_compression_never_makes_a_blob_larger() -> None:
    rng = random.Random(7)
    for size in (257, 300, 600, 2000):
        value = "".join(chr(rng.randrange(0x21, 0x7F)) for _ in range(size))
        raw = json.dumps(value, separators=(",", ":")).encode()
        blob = encode(value)
        assert len(blob) <= len(raw) + 6
        assert bool(blob[1] & FLAG_ZSTD) == (len(blob) < len(raw) + 6)
        assert decode(blob) == value


def test_unicode_is_stored_as_utf8_not_escaped() -> None:
    blob = encode({"name": "žluťoučký kůň 🐴"})
    assert "žluťoučký kůň 🐴".encode() in blob
    assert decode(blob) == {"name": "žluťoučký kůň 🐴"}


def test_lone_surrogate_round_trips() -> None:
    assert decode(encode({"s": "a\ud800b"})) == {"s": "a\ud800b"}


@given(values_with_references)
def test_fast_dumper_writes_what_the_json_encoder_writes(value: object) -> None:
    assert codec._dumps(value) == codec._ENCODER.encode(value)


def test_circular_value_raises_serialization_error() -> None:
    looped: list[object] = []
    looped.append(looped)
    with pytest.raises(SerializationError):
        encode(looped)


@pytest.mark.parametrize("value", [object(), {"x": {1, 2}}, float("nan"), {"x": float("inf")}])
def test_unencodable_values_raise_serialization_error(value: object) -> None:
    with pytest.raises(SerializationError):
        encode(value)


@settings(max_examples=300)
@given(
    st.sampled_from([{"k": "v"}, _large_value(), [1, 2, 3], "text", None]),
    st.data(),
)
def test_flipping_any_byte_is_detected(value: object, data: st.DataObject) -> None:
    blob = bytearray(encode(value))
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="index")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    blob[index] ^= mask
    with pytest.raises(CorruptData):
        decode(bytes(blob))


@given(st.sampled_from([{"k": "v"}, _large_value(), "x" * 1000]), st.data())
def test_truncation_at_any_length_is_detected(value: object, data: st.DataObject) -> None:
    blob = encode(value)
    length = data.draw(st.integers(min_value=0, max_value=len(blob) - 1), label="length")
    with pytest.raises(CorruptData):
        decode(blob[:length])


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_pickle_is_rejected(protocol: int) -> None:
    blob = pickle.dumps({"key": "value", "n": [1, 2]}, protocol=protocol)
    with pytest.raises(CorruptData):
        decode(blob)


@given(st.binary(max_size=300))
def test_random_bytes_are_rejected(blob: bytes) -> None:
    with pytest.raises(CorruptData):
        decode(blob)


@pytest.mark.parametrize(
    ("blob", "words"),
    [
        (b"", "truncated"),
        (b"\xd7\x01\x00", "truncated"),
        (b"\x80\x04\x95" + b"\x00" * 10, "bad magic"),
        (bytes([MAGIC, 0x02, 0, 0, 0, 0]) + b"{}", "unknown version"),
        (bytes([MAGIC, 0x41, 0, 0, 0, 0]) + b"{}", "unknown version"),
        (bytes([MAGIC, 0x01]) + (12345).to_bytes(4, "big") + b"{}", "checksum mismatch"),
    ],
)
def test_errors_say_what_is_wrong(blob: bytes, words: str) -> None:
    with pytest.raises(CorruptData, match=words):
        decode(blob)


def _framed(flags: int, payload: bytes) -> bytes:
    return bytes([MAGIC, flags]) + zlib.crc32(payload).to_bytes(4, "big") + payload


def test_bad_zstd_bad_utf8_and_bad_json_are_named() -> None:
    with pytest.raises(CorruptData, match="zstd"):
        decode(_framed(0x01 | FLAG_ZSTD, b"not a zstd frame"))
    with pytest.raises(CorruptData, match="UTF-8"):
        decode(_framed(0x01, b"\xff\xfe"))
    with pytest.raises(CorruptData, match="JSON"):
        decode(_framed(0x01, b'{"unterminated": '))


def test_corrupt_data_is_a_persistence_error() -> None:
    assert issubclass(CorruptData, PersistenceError)


def test_decode_accepts_memoryview_and_bytearray_but_not_str() -> None:
    blob = encode({"a": [1, 2]})
    assert decode(memoryview(blob)) == {"a": [1, 2]}
    assert decode(bytearray(blob)) == {"a": [1, 2]}
    with pytest.raises(CorruptData, match="not bytes"):
        decode(blob.decode("latin-1"))  # type: ignore[arg-type]


def test_codec_concurrently_from_eight_threads() -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def work(n: int) -> None:
        try:
            barrier.wait()
            for i in range(300):
                value = {"thread": n, "i": i, "data": [f"item {n}-{i}-{j}" for j in range(160)]}
                blob = encode(value)
                assert len(json.dumps(value)) >= 2048
                assert blob[1] & FLAG_ZSTD
                assert decode(blob) == value
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_storage_package_never_uses_pickle_marshal_or_eval() -> None:
    package = pathlib.Path(codec.__file__).parent
    for path in package.glob("*.py"):
        source = path.read_text()
        for forbidden in ("import pickle", "import marshal", "eval(", "exec(", "__import__("):
            assert forbidden not in source, f"{path.name} uses {forbidden}"
