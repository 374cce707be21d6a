"""Audit key files: created 0600, refused when exposed or overwritten, loaded back."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from appliance.audit import create_audit_keys, load_audit_keys, load_public_key
from appliance.audit.keys import HMAC_KEY_FILE, MASTER_KEY_FILE, SIGNING_KEY_FILE, SIGNING_PUB_FILE
from appliance.config import load_settings
from shared.errors import ConfigError, ConflictError


def test_created_private_files_are_0600_and_load_back(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    made = create_audit_keys(keys_dir)
    for name in (SIGNING_KEY_FILE, HMAC_KEY_FILE, MASTER_KEY_FILE):
        assert stat.S_IMODE((keys_dir / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((keys_dir / SIGNING_PUB_FILE).stat().st_mode) == 0o644
    loaded = load_audit_keys(load_settings(tmp_path, environ={}))
    assert loaded.key_id == made.key_id
    assert loaded.hmac_key == made.hmac_key and loaded.master_key == made.master_key
    assert (
        load_public_key(keys_dir / SIGNING_PUB_FILE).public_bytes_raw() == made.public_key.public_bytes_raw()
    )
    message = b"checkpoint"
    assert made.verify(loaded.sign(message), message)
    assert not made.verify(loaded.sign(message), b"another")


def test_existing_keys_are_never_overwritten(tmp_path: Path) -> None:
    create_audit_keys(tmp_path)
    before = (tmp_path / SIGNING_KEY_FILE).read_bytes()
    with pytest.raises(ConflictError, match="already exist"):
        create_audit_keys(tmp_path)
    assert (tmp_path / SIGNING_KEY_FILE).read_bytes() == before


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    create_audit_keys(tmp_path)
    os.chmod(tmp_path / MASTER_KEY_FILE, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_audit_keys(tmp_path)


def test_missing_or_mismatched_keys_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run `enclave init`"):
        load_audit_keys(tmp_path)
    create_audit_keys(tmp_path / "a")
    create_audit_keys(tmp_path / "b")
    (tmp_path / "a" / SIGNING_PUB_FILE).write_bytes((tmp_path / "b" / SIGNING_PUB_FILE).read_bytes())
    with pytest.raises(ConfigError, match="does not match"):
        load_audit_keys(tmp_path / "a")
