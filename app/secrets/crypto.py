"""The key that encrypts pair secrets, and encryption itself (Fernet, from `cryptography`).

TANDEM_SECRET_KEY holds one or more Fernet keys, comma-separated: the first encrypts, every
one decrypts (MultiFernet). To rotate: put a new key first and keep the old ones after it,
restart, run `tandem secrets rotate` (every secret re-encrypted with the first key), then
drop the old keys. Unset, the key is DATA_DIR/secret-key: generated on the first start
(mode 0600), reused on every later one. Every API process and worker must use the same
keys; a file of one machine's own is only right when they all share its data directory.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.config import Settings, fernet_key

KEY_FILE = "secret-key"

log = logging.getLogger("tandem.secrets")

__all__ = [
    "InvalidToken",
    "MultiFernet",
    "SecretKeyError",
    "cipher",
    "decrypt",
    "embedded_key",
    "load_keys",
    "encrypt",
    "new_key",
    "reencrypt",
]


class SecretKeyError(RuntimeError):
    """The keys cannot be read or are not Fernet keys: Tandem does not start."""


def cipher(settings: Settings) -> MultiFernet:
    """The keys of TANDEM_SECRET_KEY, or else of DATA_DIR/secret-key (made if absent)."""
    if settings.secret_key is None and settings.database_url is not None:
        # A shared database with a key of this machine's own: another host's processes
        # would make secrets this one cannot read.
        log.warning(
            "TANDEM_SECRET_KEY is not set: pair secrets are encrypted with the key in %s; "
            "every API process and worker must have the same one (set TANDEM_SECRET_KEY)",
            (settings.data_dir / KEY_FILE).resolve(),
        )
    return _multi(load_keys(settings))


def load_keys(settings: Settings) -> list[str]:
    """The keys, checked: TANDEM_SECRET_KEY's, or else DATA_DIR/secret-key's (made if absent).

    Raises SecretKeyError when they cannot be read or are not Fernet keys."""
    if settings.secret_key is None:
        return [embedded_key(settings.data_dir)]
    return [k.strip() for k in settings.secret_key.get_secret_value().split(",")]


def _multi(keys: list[str]) -> MultiFernet:
    if not keys or not all(fernet_key(k) for k in keys):
        raise SecretKeyError("the secret key is not a Fernet key (32 bytes in url-safe base64)")
    return MultiFernet([Fernet(k) for k in keys])


def embedded_key(data_dir: Path) -> str:
    """The key in `data_dir`/secret-key; on the first call, a new key written there (0600).

    Processes that start together (an API and its workers) all get the one key: each
    writes its candidate to a file of its own and links it into place, which only the
    first does; the others then read the winner's.
    """
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        candidate = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(Fernet.generate_key().decode() + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(candidate, path)
                log.warning("generated the key that encrypts pair secrets: %s", path.resolve())
            except FileExistsError:
                pass
        finally:
            candidate.unlink(missing_ok=True)
    return _read_key(path)


def _read_key(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        key = path.read_text().strip()
    except OSError as exc:
        raise SecretKeyError(f"cannot read the secret key {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s can be read by other users: chmod 600 it", path.resolve())
    if not fernet_key(key):
        raise SecretKeyError(
            f"{path} does not hold a Fernet key (32 bytes in url-safe base64); "
            "restore it from a backup, or set TANDEM_SECRET_KEY"
        )
    return key


def new_key() -> str:
    return Fernet.generate_key().decode()


def encrypt(keys: MultiFernet, value: str) -> str:
    return keys.encrypt(value.encode("utf-8")).decode("ascii")


def decrypt(keys: MultiFernet, ciphertext: str) -> str:
    """The value; raises InvalidToken when none of the keys made `ciphertext`."""
    return keys.decrypt(ciphertext.encode("ascii")).decode("utf-8")


def reencrypt(keys: MultiFernet, ciphertext: str) -> str:
    """`ciphertext` encrypted again with the first key (InvalidToken as decrypt)."""
    return keys.rotate(ciphertext.encode("ascii")).decode("ascii")
