"""Read W&B offline run files (``run-<id>.wandb``) without a W&B server.

An offline run (``wandb.init(mode="offline")``) writes everything it records to
``wandb/offline-run-<YYYYMMDD_HHMMSS>-<id>/run-<id>.wandb``, the file ``wandb sync`` uploads later.
wandb ships no public reader for it; this module reads it so the report
(``fastff-report --wandb-offline PATH``, :mod:`fastff.report.wandb_source`), tests and scripts
can read what a run recorded (config, summary, history) offline.

File format (written by wandb-core's ``leveldb`` package, a LevelDB log with a W&B header):

- File header, 7 bytes: ident ``b":W&B"``, magic ``0xBEE1`` (uint16, little-endian), version
  ``0`` (uint8).
- The file is cut into 32 KiB blocks counted from the start of the file, so the first block holds
  the file header followed by chunks.
- Each record (one serialized ``wandb_internal_pb2.Record``) is split into chunks that never cross
  a block boundary. A chunk is a 7-byte header (checksum uint32, payload length uint16, chunk type
  uint8; little-endian) followed by the payload. Types: 1 FULL (a whole record), 2 FIRST,
  3 MIDDLE, 4 LAST. A FIRST chunk may have an empty payload (when exactly 7 bytes were left).
- When fewer than 7 bytes are left in a block, they are zero padding and the next chunk starts at
  the next block.
- The checksum is the plain CRC-32 (IEEE, ``zlib.crc32``) of the type byte followed by the payload,
  not LevelDB's masked CRC-32C (wandb-core writes with ``CRCAlgoIEEE``).

Truncation: a run that is still being written (or was killed) can end in the middle of a record.
By default that is an error like any other damage; ``allow_truncated_tail=True`` drops that last
incomplete record silently and keeps everything before it. Damage anywhere else (a bad checksum, a
chunk out of order, non-zero padding, an unknown chunk type) is always a ``ValueError``.

Values: W&B stores every config, summary and history value as JSON (``value_json``), with a key
path (``nested_key``) for values inside nested dicts; :func:`read_run` decodes the JSON and rebuilds
the nesting, so the result looks like what was passed to ``wandb.init(config=...)``,
``run.log(...)`` and ``run.summary``. W&B's own bookkeeping key ``_wandb`` is left out of config
and summary; ``_step``, ``_runtime`` and ``_timestamp`` are kept.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from google.protobuf.message import DecodeError
from wandb.proto.wandb_internal_pb2 import Record

__all__ = ["OfflineRun", "iter_records", "read_run"]

FILE_IDENT = b":W&B"
FILE_MAGIC = 0xBEE1
FILE_VERSION = 0
FILE_HEADER = struct.Struct("<4sHB")
BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")
CHUNK_FULL, CHUNK_FIRST, CHUNK_MIDDLE, CHUNK_LAST = 1, 2, 3, 4

WANDB_INTERNAL_KEY = "_wandb"


class _TruncatedError(ValueError):
    """The file ends inside a record (what a run still being written looks like)."""


def chunk_checksum(chunk_type: int, payload: bytes) -> int:
    """Return the checksum wandb-core stores in a chunk header: CRC-32 of type byte + payload."""
    return zlib.crc32(payload, zlib.crc32(bytes((chunk_type,))))


def _check_file_header(header: bytes, path: Path) -> None:
    if len(header) < FILE_HEADER.size:
        raise ValueError(
            f"{path} is not a W&B run file: {len(header)} bytes, shorter than the "
            f"{FILE_HEADER.size}-byte ':W&B' header"
        )
    ident, magic, version = FILE_HEADER.unpack(header[: FILE_HEADER.size])
    if ident != FILE_IDENT or magic != FILE_MAGIC:
        raise ValueError(
            f"{path} is not a W&B run file: it starts with {header[: FILE_HEADER.size]!r}, "
            f"expected {FILE_IDENT!r} followed by magic 0x{FILE_MAGIC:04X}"
        )
    if version != FILE_VERSION:
        raise ValueError(
            f"{path} is W&B run file format version {version}; this reader supports version "
            f"{FILE_VERSION} only"
        )


def _iter_chunks(file: BinaryIO, path: Path) -> Iterator[tuple[int, bytes, int]]:
    """Yield ``(chunk_type, payload, file_offset)`` for every checksum-verified chunk."""
    block_start = 0
    block = file.read(BLOCK_SIZE)
    _check_file_header(block, path)
    pos = FILE_HEADER.size
    while True:
        if pos == len(block) < BLOCK_SIZE:
            return
        if pos + CHUNK_HEADER.size > BLOCK_SIZE:
            if any(block[pos:]):
                raise ValueError(
                    f"{path} is corrupt: non-zero padding at the end of the block at byte "
                    f"{block_start}"
                )
            block_start += BLOCK_SIZE
            block = file.read(BLOCK_SIZE)
            pos = 0
            continue
        offset = block_start + pos
        if pos + CHUNK_HEADER.size > len(block):
            raise _TruncatedError(f"{path} is truncated: it ends inside a chunk header at {offset}")
        checksum, length, chunk_type = CHUNK_HEADER.unpack_from(block, pos)
        start, end = pos + CHUNK_HEADER.size, pos + CHUNK_HEADER.size + length
        if end > BLOCK_SIZE:
            raise ValueError(
                f"{path} is corrupt: the chunk at byte {offset} claims {length} bytes, more than "
                f"are left in its 32 KiB block"
            )
        if end > len(block):
            raise _TruncatedError(
                f"{path} is truncated: the chunk at byte {offset} needs {length} bytes, the file "
                f"has {len(block) - start}"
            )
        payload = bytes(block[start:end])
        if chunk_checksum(chunk_type, payload) != checksum:
            raise ValueError(f"{path} is corrupt: checksum mismatch in the chunk at byte {offset}")
        if chunk_type not in (CHUNK_FULL, CHUNK_FIRST, CHUNK_MIDDLE, CHUNK_LAST):
            raise ValueError(f"{path} is corrupt: unknown chunk type {chunk_type} at byte {offset}")
        yield chunk_type, payload, offset
        pos = end


def _iter_payloads(file: BinaryIO, path: Path) -> Iterator[tuple[bytes, int]]:
    """Reassemble chunks into ``(record_bytes, file_offset_of_first_chunk)``."""
    parts: list[bytes] = []
    record_offset = -1
    for chunk_type, payload, offset in _iter_chunks(file, path):
        starts_record = chunk_type in (CHUNK_FULL, CHUNK_FIRST)
        if starts_record == bool(parts):
            expected = "a MIDDLE or LAST chunk" if parts else "a FULL or FIRST chunk"
            raise ValueError(
                f"{path} is corrupt: chunk of type {chunk_type} at byte {offset}, "
                f"expected {expected}"
            )
        if starts_record:
            record_offset = offset
        if chunk_type == CHUNK_FULL:
            yield payload, offset
            continue
        parts.append(payload)
        if chunk_type == CHUNK_LAST:
            yield b"".join(parts), record_offset
            parts = []
    if parts:
        raise _TruncatedError(
            f"{path} is truncated: the record starting at byte {record_offset} has no LAST chunk"
        )


def iter_records(path: str | Path, *, allow_truncated_tail: bool = False) -> Iterator[Record]:
    """Yield every ``wandb_internal_pb2.Record`` stored in a ``.wandb`` file, in order.

    Args:
        path: the ``run-<id>.wandb`` file.
        allow_truncated_tail: if True, a file that ends inside its last record (a run still being
            written) yields every complete record and stops; if False that raises ValueError.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a W&B run file, is corrupt (checksum mismatch, chunks out
            of order, bad padding, undecodable record) or is truncated (unless allowed).
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"path must be a .wandb file, got the directory {path}; see read_run")
    with path.open("rb") as file:
        try:
            for payload, offset in _iter_payloads(file, path):
                record = Record()
                try:
                    record.ParseFromString(payload)
                except DecodeError as error:
                    raise ValueError(
                        f"{path} is corrupt: the record at byte {offset} is not a W&B Record "
                        f"({error})"
                    ) from error
                yield record
        except _TruncatedError:
            if not allow_truncated_tail:
                raise


@dataclass
class OfflineRun:
    """What an offline W&B run recorded, decoded from its ``.wandb`` file.

    Attributes:
        path: the ``.wandb`` file read.
        run_id, project, entity: from the run record (None/"" if the file has none).
        config: key -> value, as passed to ``wandb.init(config=...)`` and ``config.update``.
        summary: key -> final summary value (later summary records update earlier ones).
        history: one dict per history row (``run.log`` call), including ``_step``.
        record_counts: record type name (``"history"``, ``"summary"``, ...) -> count.
        exit_code: the exit record's code; None when the run has not finished (no exit record).
    """

    path: Path
    run_id: str | None = None
    project: str | None = None
    entity: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    record_counts: dict[str, int] = field(default_factory=dict)
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        """True if the run wrote its exit record (``run.finish()`` completed)."""
        return self.exit_code is not None


def _item_path(item: Any) -> list[str]:
    return list(item.nested_key) if item.nested_key else [item.key]


def _item_value(item: Any) -> Any:
    if item.value_json or not item.DESCRIPTOR.oneofs_by_name.get("value"):
        return json.loads(item.value_json)
    kind = item.WhichOneof("value")
    if kind is None or kind == "none":
        return None
    if kind == "json":
        return json.loads(item.json)
    return getattr(item, kind)


def _set_path(target: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        child = target.get(key)
        if not isinstance(child, dict):
            child = target[key] = {}
        target = child
    target[keys[-1]] = value


def _remove_path(target: dict[str, Any], keys: list[str]) -> None:
    for key in keys[:-1]:
        target = target.get(key)
        if not isinstance(target, dict):
            return
    target.pop(keys[-1], None)


def _apply(target: dict[str, Any], updates: Iterable[Any], removals: Iterable[Any] = ()) -> None:
    for item in updates:
        keys = _item_path(item)
        try:
            value = _item_value(item)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"the value of {'.'.join(keys)!r} is not valid JSON: {item.value_json[:80]!r}"
            ) from error
        _set_path(target, keys, value)
    for item in removals:
        _remove_path(target, _item_path(item))


def _is_wrapped(value: Any) -> bool:
    return isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}


def _unwrap_config(config: dict[str, Any]) -> dict[str, Any]:
    """Undo the ``{key: {"value": v, "desc": ...}}`` layout of W&B's config.yaml, if used.

    Only when every entry has that layout, so a user value that happens to be ``{"value": 1}``
    in an ordinary config is kept as it is.
    """
    if config and all(_is_wrapped(value) for value in config.values()):
        return {key: value["value"] for key, value in config.items()}
    return config


def _find_run_file(location: Path) -> Path:
    if location.is_file():
        return location
    run_files = sorted(location.glob("run-*.wandb"))
    if len(run_files) == 1:
        return run_files[0]
    if len(run_files) > 1:
        raise ValueError(
            f"path_or_run_dir {location} holds several .wandb files "
            f"({', '.join(p.name for p in run_files)}); pass one of them"
        )
    wandb_dir = location
    run_dirs = [d for d in wandb_dir.glob("offline-run-*") if d.is_dir()]
    if not run_dirs and (location / "wandb").is_dir():
        wandb_dir = location / "wandb"
        run_dirs = [d for d in wandb_dir.glob("offline-run-*") if d.is_dir()]
    if not run_dirs:
        raise ValueError(
            f"path_or_run_dir {location} holds no W&B offline run: expected a run-*.wandb file, "
            "an offline-run-* directory, a wandb/ directory holding offline-run-* directories, "
            "or a directory holding such a wandb/ directory"
        )
    # Names are offline-run-<YYYYMMDD_HHMMSS>-<id>: order by the start time, then by mtime.
    latest = max(run_dirs, key=lambda d: (d.name.split("-")[2], d.stat().st_mtime))
    return _find_run_file(latest)


def read_run(path_or_run_dir: str | Path, *, allow_truncated_tail: bool = False) -> OfflineRun:
    """Decode an offline W&B run: its config, summary, history, id, project and exit code.

    Args:
        path_or_run_dir: a ``run-<id>.wandb`` file, its ``offline-run-*`` directory, a ``wandb/``
            directory (its latest offline run is read, by the start time in the directory name),
            or a directory holding such a ``wandb/`` directory (e.g. a Hydra run dir).
        allow_truncated_tail: passed to :func:`iter_records`.

    Raises:
        FileNotFoundError: if ``path_or_run_dir`` does not exist.
        ValueError: if no offline run is found there, or its file is not a valid W&B run file.
    """
    location = Path(path_or_run_dir)
    if not location.exists():
        raise FileNotFoundError(f"path_or_run_dir {location} does not exist")
    run_file = _find_run_file(location)
    run = OfflineRun(path=run_file)
    counts: Counter[str] = Counter()
    for record in iter_records(run_file, allow_truncated_tail=allow_truncated_tail):
        kind = record.WhichOneof("record_type") or "unset"
        counts[kind] += 1
        try:
            _apply_record(run, kind, record)
        except ValueError as error:
            raise ValueError(f"{run_file} is corrupt: record {record.num}: {error}") from error
    run.config.pop(WANDB_INTERNAL_KEY, None)
    run.summary.pop(WANDB_INTERNAL_KEY, None)
    run.config = _unwrap_config(run.config)
    run.record_counts = dict(counts)
    return run


def _apply_record(run: OfflineRun, kind: str, record: Record) -> None:
    """Fold one record into ``run``."""
    if kind == "run":
        run.run_id = record.run.run_id or run.run_id
        run.project = record.run.project or run.project
        run.entity = record.run.entity or run.entity
        _apply(run.config, record.run.config.update, record.run.config.remove)
        _apply(run.summary, record.run.summary.update, record.run.summary.remove)
    elif kind == "config":
        _apply(run.config, record.config.update, record.config.remove)
    elif kind == "summary":
        _apply(run.summary, record.summary.update, record.summary.remove)
    elif kind == "history":
        row: dict[str, Any] = {}
        _apply(row, record.history.item)
        run.history.append(row)
    elif kind == "exit":
        run.exit_code = record.exit.exit_code
