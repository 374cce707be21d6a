"""Audit tables on :class:`appliance.db.base.Base`.

``audit_events``      the chained records (one row per event, ``seq`` is the primary key)
``audit_chain_head``  one row (id 1): the last seq and hash; appends lock it to serialize
``audit_checkpoints`` Ed25519-signed (seq, head hash, time) checkpoints
``audit_sealed``      sealed content: ciphertext plus its data key wrapped by the master key;
                      purging sets ``wrapped_key`` to NULL (crypto-shredding), the ciphertext and
                      therefore the chain stay intact
``sealed_read_requests`` an auditor's request to read one sealed ref, and the second auditor's
                      approval (``sealed_read_approvals = 2``); single use, expiring

Times the chain hashes are stored as the exact text that was hashed (see ``chain.format_time``),
so a round trip through a backend's timestamp type can never change a hash.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from appliance.db.base import Base, intpk

__all__ = ["AuditChainHead", "AuditCheckpointRow", "AuditEventRow", "AuditSealedRow", "SealedReadRequest"]

# Lengths are limits the writer checks before it queues an event, so one oversized event can
# never fail the group transaction it would share with others.
ACTOR_LEN = 255
ACTION_LEN = 128
TARGET_LEN = 512
OUTCOME_LEN = 32
REQUEST_ID_LEN = 128
CLIENT_ADDRESS_LEN = 128


class AuditEventRow(Base):
    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[str] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(ACTOR_LEN), index=True)
    action: Mapped[str] = mapped_column(String(ACTION_LEN), index=True)
    target: Mapped[str] = mapped_column(String(TARGET_LEN))
    outcome: Mapped[str] = mapped_column(String(OUTCOME_LEN))
    request_id: Mapped[str] = mapped_column(String(REQUEST_ID_LEN))
    client_address: Mapped[str] = mapped_column(String(CLIENT_ADDRESS_LEN))
    details: Mapped[str] = mapped_column(Text)  # canonical JSON
    content: Mapped[str | None] = mapped_column(Text, nullable=True)  # canonical JSON or NULL
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpointRow(Base):
    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    head_hash: Mapped[str] = mapped_column(String(64))
    time: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


class AuditSealedRow(Base):
    __tablename__ = "audit_sealed"

    ref: Mapped[str] = mapped_column(String(36), primary_key=True)
    time: Mapped[str] = mapped_column(String(32), index=True)
    master_key_id: Mapped[str] = mapped_column(String(64))
    # nonce(12) || AES-GCM(master key, data key); NULL once purged.
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # nonce(12) || AES-GCM(data key, canonical JSON of the redacted content).
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    purged_time: Mapped[str | None] = mapped_column(String(32), nullable=True)


class SealedReadRequest(Base):
    __tablename__ = "sealed_read_requests"

    id: Mapped[intpk]
    ref: Mapped[str] = mapped_column(String(36), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    approver_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    approved_at: Mapped[dt.datetime | None]
    used_at: Mapped[dt.datetime | None]
