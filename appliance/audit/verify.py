"""Verification of a chain: from the database, or from an exported JSONL file off the box.

One streaming pass recomputes each record's hash and link. At the first failure a short diagnosis
names the place and what happened:

    modified     a record's contents do not match its hash, or its hash was recomputed (the next
                 record's prev_hash, a signed checkpoint or the chain head no longer match)
    missing      a seq is absent, or records were deleted and the rest renumbered
    inserted     a record was added (the one after it was written with a lower seq), or beyond
                 the chain head
    reordered    a record sits at another record's seq (the two were swapped)
    truncated    the log ends before a signed checkpoint (or the chain head) says it reached
    bad-signature  a checkpoint's signature does not verify with the audit public key

The reported problem is the one with the lowest seq.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine

from appliance.audit.chain import GENESIS_HASH, canonical_json, record_hash_fast, row_hash
from appliance.audit.checkpoints import Checkpoint
from appliance.audit.keys import AuditKeys
from appliance.audit.query import cef_row
from appliance.audit.store import RowTuple, Snapshot, snapshot
from shared.errors import InputError

__all__ = ["Problem", "VerifyReport", "verify_database", "verify_export", "verify_export_file", "verify_rows"]


@dataclass(frozen=True)
class Problem:
    seq: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.kind}: {self.message}"


@dataclass(frozen=True)
class VerifyReport:
    total: int
    valid: int
    problem: Problem | None
    last_checkpoint: Checkpoint | None
    checkpoints: int = 0

    @property
    def ok(self) -> bool:
        return self.problem is None

    def summary(self) -> str:
        lines = [f"{self.valid}/{self.total} events valid"]
        cp = self.last_checkpoint
        if cp is not None:
            lines.append(
                f"last signed checkpoint: seq {cp.seq} at {cp.time}, head {cp.head_hash[:16]}..., "
                f"key {cp.key_id[:16]}... ({self.checkpoints} checked)"
            )
        else:
            lines.append("no signed checkpoint yet")
        if self.problem is not None:
            lines.append(f"FAILED at {self.problem}")
        return "\n".join(lines)


class RowSource(Protocol):
    """Records in seq order plus the two look-ups the diagnosis needs."""

    def rows(self) -> Iterator[RowTuple]: ...

    def row_at(self, seq: int) -> RowTuple | None: ...

    def seq_of_hash(self, digest: str) -> int | None: ...


def _hash_as(row: RowTuple, seq: int) -> str:
    """The hash ``row`` would have if it had been written at ``seq`` (after its own prev_hash)."""
    return record_hash_fast(seq, *row[1:11])


def _diagnose_contents(source: RowSource, p: int, row: RowTuple) -> Problem:
    """The record at ``p`` does not hash to its stored hash: find out why."""
    candidates: list[int] = []
    prev_hash = row[10]
    claimed = 0 if prev_hash == GENESIS_HASH else source.seq_of_hash(prev_hash)
    if claimed is not None and claimed + 1 != p:
        candidates.append(claimed + 1)
    candidates += [c for c in (p + 1, p - 1) if c >= 1 and c not in candidates]
    for c in candidates:
        if _hash_as(row, c) != row[11]:
            continue
        if c < p:
            return Problem(
                c,
                "inserted",
                f"a record was inserted at seq {c}; the record now at seq {p} was written as seq {c}",
            )
        other = source.row_at(c)
        if other is not None and _hash_as(other, p) == other[11]:
            return Problem(p, "reordered", f"records at seq {p} and seq {c} were swapped")
        return Problem(
            p,
            "missing",
            f"the record now at seq {p} was written as seq {c}: records were deleted and renumbered",
        )
    following = source.row_at(p + 1)
    if following is not None and _hash_as(following, p) == following[11]:
        return Problem(
            p, "inserted", f"a record was inserted at seq {p}; the next one was written as seq {p}"
        )
    return Problem(p, "modified", "contents do not match the record's hash")


def verify_rows(
    source: RowSource,
    *,
    keys: AuditKeys | None,
    checkpoints: Iterable[Checkpoint] = (),
    head: tuple[int, str] | None = None,
    start_prev_hash: str | None = None,
) -> VerifyReport:
    """Verify ``source``; ``keys`` (public half suffices) checks checkpoint signatures.

    ``start_prev_hash`` lets a partial export (``--since``) be checked from its first record on;
    by default the chain must start at seq 1 from the genesis hash.
    """
    cps = sorted(checkpoints, key=lambda c: c.seq)
    wanted = {cp.seq for cp in cps}
    hashes_at: dict[int, str] = {}
    problems: list[Problem] = []
    # Without a start hash the chain must begin at seq 1 from genesis; with one (a partial
    # export) it begins wherever the first row is, trusting that row's prev_hash.
    anchored = start_prev_hash is None
    expected = 1
    prev = GENESIS_HASH
    first_seq: int | None = None
    total = valid = 0
    last_seq = 0
    last_hash = GENESIS_HASH
    for row in source.rows():
        total += 1
        seq = row[0]
        if first_seq is None:
            first_seq = seq
            if not anchored:
                expected, prev = seq, row[10]
        last_seq, last_hash = seq, row[11]
        if problems:
            continue
        if seq != expected:
            if seq > expected:
                gap = f"seq {expected}" if seq == expected + 1 else f"seq {expected} to {seq - 1}"
                problems.append(Problem(expected, "missing", f"{gap} missing (next record is seq {seq})"))
            else:
                problems.append(Problem(seq, "reordered", f"seq {seq} appears after seq {expected - 1}"))
        elif row_hash(row) != row[11]:
            problems.append(_diagnose_contents(source, seq, row))
        elif row[10] != prev:
            if seq == first_seq:
                problems.append(Problem(seq, "modified", "prev_hash does not continue the chain"))
            else:
                problems.append(
                    Problem(
                        seq - 1,
                        "modified",
                        f"its hash was rewritten: seq {seq}'s prev_hash no longer matches it",
                    )
                )
        else:
            valid += 1
            prev = row[11]
            if seq in wanted:
                hashes_at[seq] = row[11]
            expected = seq + 1
    cp_problems, good = _check_checkpoints(cps, keys, hashes_at, last_seq, problems)
    problems += cp_problems
    if head is not None:
        problems += _check_head(head, last_seq, last_hash)
    problem = min(problems, key=_precedence) if problems else None
    if problem is not None:
        valid = min(valid, max(0, problem.seq - (first_seq or 1)))
    return VerifyReport(
        total=total,
        valid=valid,
        problem=problem,
        last_checkpoint=good[-1] if good else None,
        checkpoints=len(cps),
    )


def _precedence(problem: Problem) -> tuple[int, int]:
    # At one seq a specific finding (inserted beyond the head) beats the generic "modified".
    return problem.seq, 1 if problem.kind == "modified" else 0


def _check_checkpoints(
    cps: list[Checkpoint],
    keys: AuditKeys | None,
    hashes_at: dict[int, str],
    last_seq: int,
    chain_problems: list[Problem],
) -> tuple[list[Problem], list[Checkpoint]]:
    """Problems found, and the checkpoints that hold (signed, and matching where checked)."""
    problems: list[Problem] = []
    good: list[Checkpoint] = []
    previous = 0
    for cp in cps:
        if keys is None:
            raise InputError("checkpoints need the audit public key to be verified")
        if not cp.signature_valid(keys):
            why = "signed by another key" if cp.key_id != keys.key_id else "bad signature"
            problems.append(Problem(cp.seq, "bad-signature", f"checkpoint at seq {cp.seq}: {why}"))
        elif cp.seq > last_seq and not chain_problems:
            problems.append(
                Problem(
                    last_seq + 1,
                    "truncated",
                    f"the log ends at seq {last_seq} but a signed checkpoint covers seq {cp.seq}",
                )
            )
        elif cp.seq in hashes_at and hashes_at[cp.seq] != cp.head_hash:
            problems.append(
                Problem(
                    cp.seq,
                    "modified",
                    f"seq {cp.seq} does not match its signed checkpoint: records after seq {previous} "
                    f"up to seq {cp.seq} were rewritten",
                )
            )
        else:
            good.append(cp)
        previous = cp.seq
    return problems, good


def _check_head(head: tuple[int, str], last_seq: int, last_hash: str) -> list[Problem]:
    head_seq, head_hash = head
    if head_seq > last_seq:
        return [
            Problem(
                last_seq + 1,
                "truncated",
                f"the log ends at seq {last_seq} but the chain head is seq {head_seq}",
            )
        ]
    if head_seq < last_seq:
        return [
            Problem(head_seq + 1, "inserted", f"records after the chain head (seq {head_seq}) were added")
        ]
    if head_seq and head_hash != last_hash:
        return [Problem(head_seq, "modified", "the last record does not match the chain head")]
    return []


class _DatabaseSource:
    def __init__(self, snap: Snapshot) -> None:
        self._snap = snap

    def rows(self) -> Iterator[RowTuple]:
        return self._snap.events()

    def row_at(self, seq: int) -> RowTuple | None:
        return self._snap.event_at(seq)

    def seq_of_hash(self, digest: str) -> int | None:
        return self._snap.seq_of_hash(digest)


def verify_database(
    engine: Engine,
    keys: AuditKeys,
    *,
    checkpoint: Checkpoint | None = None,
    checkpoints: Sequence[Checkpoint] = (),
) -> VerifyReport:
    """Verify every record, every stored checkpoint, the chain head and ``checkpoint``/``checkpoints``
    (kept outside the database: an exported file, the witness file)."""
    outside = [c for c in (checkpoint, *checkpoints) if c is not None]
    with snapshot(engine) as snap:
        head = snap.head()
        cps = [Checkpoint.from_row(r) for r in snap.checkpoints()]
        for cp in outside:
            cps = [c for c in cps if c != cp] + [cp]
        cps.sort(key=lambda c: c.seq)
        report = verify_rows(_DatabaseSource(snap), keys=keys, checkpoints=cps, head=head)
    if head is None and report.total and report.problem is None:
        # Appends already refuse to guess a head (they fail closed); verify says why.
        missing = Problem(
            report.total, "modified", "the chain head row is missing: the log's end cannot be checked"
        )
        return dataclasses.replace(report, problem=missing, valid=report.total - 1)
    return report


class _ListSource:
    def __init__(self, rows: list[RowTuple]) -> None:
        self._rows = rows
        self._by_seq = {r[0]: r for r in rows}

    def rows(self) -> Iterator[RowTuple]:
        return iter(self._rows)

    def row_at(self, seq: int) -> RowTuple | None:
        return self._by_seq.get(seq)

    def seq_of_hash(self, digest: str) -> int | None:
        return next((r[0] for r in self._rows if r[11] == digest), None)


_JSONL_FIELDS = ("seq", "time", "actor", "action", "target", "outcome", "request_id", "client_address")


def jsonl_row(line: str, where: str) -> RowTuple:
    """One exported JSONL line as a stored row (details/content back to canonical JSON)."""
    try:
        obj = json.loads(line)
        head = tuple(obj[name] for name in _JSONL_FIELDS)
        content = obj["content"]
        return (
            *head,
            canonical_json(obj["details"]),
            None if content is None else canonical_json(content),
            obj["prev_hash"],
            obj["hash"],
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise InputError(f"{where}: not an exported audit record") from None


def verify_export(
    lines: Iterable[str],
    *,
    keys: AuditKeys | None,
    checkpoint: Checkpoint | None = None,
    partial: bool = False,
    source_name: str = "export",
) -> VerifyReport:
    """Verify an exported file's lines, JSONL or CEF (what a third party does, holding only the
    public key). A whole export must start at seq 1 from genesis; ``partial`` accepts one made with
    ``--since``, checked from its first record on (a checkpoint inside it pins it to the signed
    head) — nothing can tell such a piece from a whole export with its beginning cut off."""
    rows = [
        cef_row(line, f"{source_name}:{n}")
        if line.startswith("CEF:")
        else jsonl_row(line, f"{source_name}:{n}")
        for n, line in enumerate(lines, 1)
        if line.strip()
    ]
    start = rows[0][10] if partial and rows else None
    return verify_rows(
        _ListSource(rows), keys=keys, checkpoints=[checkpoint] if checkpoint else [], start_prev_hash=start
    )


def verify_export_file(
    path: Path, *, keys: AuditKeys | None, checkpoint: Checkpoint | None = None, partial: bool = False
) -> VerifyReport:
    try:
        with open(path, encoding="utf-8", newline="\n") as f:
            return verify_export(f, keys=keys, checkpoint=checkpoint, partial=partial, source_name=str(path))
    except OSError as exc:
        raise InputError(f"{path}: cannot read export: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
