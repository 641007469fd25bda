"""Tests for fastff.tracking.wandb_offline: read back what a real offline W&B run recorded.

One real offline run (in a subprocess, so wandb's global state stays out of the test process) is
checked value by value; hand-built files cover the format's edge cases and damage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from wandb.proto.wandb_internal_pb2 import Record

from fastff.tracking.wandb_offline import (
    BLOCK_SIZE,
    CHUNK_FIRST,
    CHUNK_FULL,
    CHUNK_HEADER,
    CHUNK_LAST,
    CHUNK_MIDDLE,
    FILE_HEADER,
    _iter_payloads,
    chunk_checksum,
    iter_records,
    read_run,
)

CONFIG = {
    "lr": 0.001,
    "seed": 0,
    "use_bias": True,
    "name": "fff",
    "model": {"depth": 3, "activation": "relu", "widths": [8, 16], "tree": {"leaf_width": 4}},
    # ~110 KB of JSON: the run record spans four 32 KiB blocks (FIRST, MIDDLE, ..., LAST chunks).
    "big": list(range(20000)),
}
LATE_CONFIG = {"late": "x"}
ROWS = [
    {"loss": 1.5, "acc": 0.25, "train": {"n": 3}, "grad_norm": float("inf")},
    {"loss": 0.75, "acc": 0.5},
    {"loss": 0.5, "acc": 0.625, "label": "done"},
]
SUMMARY = {"best_acc": 0.625, "final": {"m_a": 0.9, "g_a": 0.8}}

RUN_SCRIPT = """
import json, sys
import wandb

spec = json.loads(sys.argv[2])
run = wandb.init(mode="offline", dir=sys.argv[1], project="t", config=spec["config"])
for row in spec["rows"]:
    run.log(row)
for key, value in spec["summary"].items():
    run.summary[key] = value
run.summary["tmp"] = 1
del run.summary["tmp"]
run.config.update(spec["late_config"])
print(run.id)
run.finish()
"""


@pytest.fixture(scope="module")
def offline_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Run one real offline W&B run; return (the dir= it was given, its run id)."""
    root = tmp_path_factory.mktemp("wandb_offline")
    env = dict(os.environ, WANDB_SILENT="true", WANDB_MODE="offline")
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        env[name] = str(root / name.lower())
        Path(env[name]).mkdir()
    spec = {"config": CONFIG, "rows": ROWS, "summary": SUMMARY, "late_config": LATE_CONFIG}
    done = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT, str(root), json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root, done.stdout.strip().splitlines()[-1]


@pytest.fixture
def run_file(offline_root: tuple[Path, str]) -> Path:
    root, run_id = offline_root
    (path,) = (root / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    return path


@pytest.fixture
def run_copy(run_file: Path, tmp_path: Path) -> Path:
    """A private copy of the real run file, to damage."""
    return Path(shutil.copy(run_file, tmp_path / run_file.name))


def _without_underscored(values: dict) -> dict:
    return {key: value for key, value in values.items() if not key.startswith("_")}


def test_read_run_gives_back_config_history_and_summary(offline_root: tuple[Path, str]) -> None:
    root, run_id = offline_root
    run = read_run(root / "wandb")

    assert run.run_id == run_id
    assert run.project == "t"
    assert run.exit_code == 0 and run.finished
    assert run.config == {**CONFIG, **LATE_CONFIG}
    assert [_without_underscored(row) for row in run.history] == ROWS
    assert [row["_step"] for row in run.history] == [0, 1, 2]
    # W&B's summary starts from the last value of each logged key; explicit values come on top.
    assert _without_underscored(run.summary) == {
        "loss": 0.5,
        "acc": 0.625,
        "label": "done",
        "train": {"n": 3},
        "grad_norm": float("inf"),
        **SUMMARY,
    }
    assert run.summary["_step"] == 2
    assert run.record_counts["history"] == 3
    assert run.record_counts["run"] == 1
    assert run.record_counts["exit"] == 1


def test_read_run_accepts_file_run_dir_wandb_dir_and_parent(
    offline_root: tuple[Path, str], run_file: Path
) -> None:
    root, run_id = offline_root
    for location in (run_file, run_file.parent, root / "wandb", root, str(root)):
        run = read_run(location)
        assert run.path == run_file
        assert run.run_id == run_id
        assert run.config["model"] == CONFIG["model"]


def test_iter_records_reads_every_record_across_blocks(run_file: Path) -> None:
    records = list(iter_records(run_file))
    assert run_file.stat().st_size > 3 * BLOCK_SIZE
    assert [record.num for record in records] == list(range(1, len(records) + 1))
    assert records[0].WhichOneof("record_type") == "header"
    assert records[-1].WhichOneof("record_type") == "exit"


def test_a_flipped_byte_is_a_checksum_error(run_copy: Path) -> None:
    data = bytearray(run_copy.read_bytes())
    data[BLOCK_SIZE + 1000] ^= 0x01  # inside a MIDDLE chunk of the big run record
    run_copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"corrupt: checksum mismatch in the chunk at byte \d+"):
        read_run(run_copy)


def test_a_truncated_file_is_an_error_unless_allowed(run_copy: Path) -> None:
    data = run_copy.read_bytes()
    run_copy.write_bytes(data[:-3])  # inside the exit record
    with pytest.raises(ValueError, match="truncated"):
        read_run(run_copy)
    unfinished = read_run(run_copy, allow_truncated_tail=True)
    assert unfinished.exit_code is None and not unfinished.finished
    assert [_without_underscored(row) for row in unfinished.history] == ROWS

    # Inside a chunk of the big run record, then at a block end between two of its chunks.
    for end, message in ((BLOCK_SIZE + 100, "needs 32761 bytes"), (BLOCK_SIZE, "no LAST chunk")):
        run_copy.write_bytes(data[:end])
        with pytest.raises(ValueError, match=f"is truncated: .*{message}"):
            list(iter_records(run_copy))
        records = iter_records(run_copy, allow_truncated_tail=True)
        assert [record.WhichOneof("record_type") for record in records] == ["header"]


@pytest.mark.parametrize(
    "content",
    [b"", b":W&B", b"hello, this is a plain text file\n" * 20, b"PK\x03\x04" + bytes(100)],
)
def test_a_file_that_is_not_a_wandb_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "run-x.wandb"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="is not a W&B run file"):
        list(iter_records(path))


def test_an_unknown_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run-x.wandb"
    path.write_bytes(FILE_HEADER.pack(b":W&B", 0xBEE1, 1))
    with pytest.raises(ValueError, match="format version 1"):
        list(iter_records(path))


# --- hand-built files -------------------------------------------------------------------------


def _chunk(chunk_type: int, payload: bytes) -> bytes:
    header = CHUNK_HEADER.pack(chunk_checksum(chunk_type, payload), len(payload), chunk_type)
    return header + payload


def _write_log(path: Path, payloads: list[bytes]) -> Path:
    """Write records the way wandb-core's leveldb writer does (the header counts in block 0)."""
    out = bytearray(FILE_HEADER.pack(b":W&B", 0xBEE1, 0))
    for payload in payloads:
        first = True
        while True:
            left = BLOCK_SIZE - len(out) % BLOCK_SIZE
            if left < CHUNK_HEADER.size:
                out += bytes(left)
                continue
            piece, payload = (
                payload[: left - CHUNK_HEADER.size],
                payload[left - CHUNK_HEADER.size :],
            )
            if not payload:
                out += _chunk(CHUNK_FULL if first else CHUNK_LAST, piece)
                break
            out += _chunk(CHUNK_FIRST if first else CHUNK_MIDDLE, piece)
            first = False
    path.write_bytes(bytes(out))
    return path


def _record_of_size(size: int, num: int) -> bytes:
    """A serialized Record of exactly ``size`` bytes (size >= 300)."""
    for length in range(size, size - 12, -1):
        payload = Record(num=num, uuid="x" * length).SerializeToString()
        if len(payload) == size:
            return payload
    raise AssertionError(f"no Record serializes to {size} bytes")


def test_the_test_writer_reproduces_the_real_file_byte_for_byte(
    run_file: Path, tmp_path: Path
) -> None:
    with run_file.open("rb") as file:
        payloads = [payload for payload, _ in _iter_payloads(file, run_file)]
    rebuilt = _write_log(tmp_path / "rebuilt.wandb", payloads)
    assert rebuilt.read_bytes() == run_file.read_bytes()


def test_block_padding_and_an_empty_first_chunk(tmp_path: Path) -> None:
    header, chunk = FILE_HEADER.size, CHUNK_HEADER.size
    payloads = [
        _record_of_size(BLOCK_SIZE - header - chunk - 3, 1),  # leaves 3 bytes: zero padding
        _record_of_size(BLOCK_SIZE - chunk - chunk, 2),  # leaves 7 bytes: an empty FIRST chunk
        _record_of_size(500, 3),
        _record_of_size(300, 4),
    ]
    path = _write_log(tmp_path / "run-x.wandb", payloads)
    data = path.read_bytes()
    assert data[BLOCK_SIZE - 3 : BLOCK_SIZE] == bytes(3)
    assert CHUNK_HEADER.unpack_from(data, 2 * BLOCK_SIZE - chunk)[1:] == (0, CHUNK_FIRST)

    records = list(iter_records(path))
    assert [record.SerializeToString() for record in records] == payloads

    damaged = bytearray(data)
    damaged[BLOCK_SIZE - 2] = 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="non-zero padding"):
        list(iter_records(path))


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([(CHUNK_LAST, b"\x18\x01")], "expected a FULL or FIRST chunk"),
        ([(CHUNK_MIDDLE, b"\x18\x01")], "expected a FULL or FIRST chunk"),
        ([(CHUNK_FIRST, b"\x18"), (CHUNK_FULL, b"\x18\x01")], "expected a MIDDLE or LAST chunk"),
        ([(7, b"\x18\x01")], "unknown chunk type 7"),
        ([(CHUNK_FULL, b"\xff\xff\xff")], "is not a W&B Record"),
    ],
)
def test_chunks_out_of_order_or_undecodable_are_errors(
    tmp_path: Path, chunks: list[tuple[int, bytes]], message: str
) -> None:
    path = tmp_path / "run-x.wandb"
    body = b"".join(_chunk(kind, payload) for kind, payload in chunks)
    path.write_bytes(FILE_HEADER.pack(b":W&B", 0xBEE1, 0) + body)
    with pytest.raises(ValueError, match=message):
        list(iter_records(path))


def test_a_chunk_longer_than_its_block_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "run-x.wandb"
    path.write_bytes(
        FILE_HEADER.pack(b":W&B", 0xBEE1, 0)
        + CHUNK_HEADER.pack(0, BLOCK_SIZE - 10, CHUNK_FULL)
        + bytes(BLOCK_SIZE)
    )
    with pytest.raises(ValueError, match="more than are left in its 32 KiB block"):
        list(iter_records(path))


def _run_record(run_id: str, config: dict[str, str], num: int = 1) -> bytes:
    record = Record(num=num)
    record.run.run_id = run_id
    for key, value_json in config.items():
        record.run.config.update.add(key=key, value_json=value_json)
    return record.SerializeToString()


def test_typed_history_values_are_decoded(tmp_path: Path) -> None:
    record = Record(num=1)
    record.history.item.add(key="x", number=2.5)
    record.history.item.add(key="n", integer=-3)
    record.history.item.add(key="t", text="hi")
    record.history.item.add(key="b", boolean=True)
    record.history.item.add(key="j", json='{"a": [1]}')
    record.history.item.add(key="z", none=0)
    record.history.item.add(nested_key=["deep", "v"], value_json="1e-3")
    path = _write_log(tmp_path / "run-x.wandb", [record.SerializeToString()])
    assert read_run(path).history == [
        {"x": 2.5, "n": -3, "t": "hi", "b": True, "j": {"a": [1]}, "z": None, "deep": {"v": 1e-3}}
    ]


def test_config_in_value_wrapped_layout_is_unwrapped_only_when_every_key_is(
    tmp_path: Path,
) -> None:
    wrapped = {"a": '{"value": 1, "desc": null}', "b": '{"value": {"c": 2}}'}
    path = _write_log(tmp_path / "w.wandb", [_run_record("r", wrapped)])
    assert read_run(path).config == {"a": 1, "b": {"c": 2}}

    mixed = {"a": '{"value": 1}', "b": "2"}
    path = _write_log(tmp_path / "m.wandb", [_run_record("r", mixed)])
    assert read_run(path).config == {"a": {"value": 1}, "b": 2}


def test_config_value_that_is_not_json_is_an_error(tmp_path: Path) -> None:
    path = _write_log(tmp_path / "run-x.wandb", [_run_record("r", {"a": "{not json"})])
    with pytest.raises(ValueError, match="record 1: the value of 'a' is not valid JSON"):
        read_run(path)


def test_a_wandb_dir_gives_its_latest_offline_run(tmp_path: Path) -> None:
    for name in ("offline-run-20240101_000000-old", "offline-run-20250101_000000-new"):
        run_id = name.rsplit("-", 1)[1]
        (tmp_path / name).mkdir()
        _write_log(tmp_path / name / f"run-{run_id}.wandb", [_run_record(run_id, {})])
    assert read_run(tmp_path).run_id == "new"


def test_bad_locations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_run(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds no W&B offline run"):
        read_run(tmp_path)
    for run_id in ("a", "b"):
        _write_log(tmp_path / f"run-{run_id}.wandb", [_run_record(run_id, {})])
    with pytest.raises(ValueError, match=r"several \.wandb files"):
        read_run(tmp_path)
    with pytest.raises(ValueError, match=r"must be a \.wandb file"):
        list(iter_records(tmp_path))
