"""Secrets of the local system: one generated password per identity, in files only their owner can read.

`rrr-stack up` keeps them under `.run/secrets/` (the directory mode 0700, each file 0600); the test
fixtures keep theirs in memory. A password is made once (`secrets.token_urlsafe`) and read back on every
later start, so that a restarted server and its clients agree. No password is printed or logged: a URL
that carries one is shown through `rrr.shared.config.redact`, and reaches a process through its
environment or a file, never its command line.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from rrr.shared.errors import RRRError

__all__ = ["SecretsDir", "new_password", "with_userinfo", "write_private"]

# 32 random bytes, URL-safe base64: nothing in it needs quoting in a URL, a nats.conf or SQL.
_PASSWORD_BYTES = 32
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
_PRIVATE_FILE = 0o600
_PRIVATE_DIR = 0o700


class SecretError(RRRError):
    """A secret file is missing, unreadable, or readable by others."""

    def __init__(self, path: Path, expected: str, seen: str) -> None:
        self.path = path
        super().__init__(f"{path}: expected {expected}, but {seen}")


def new_password() -> str:
    """A fresh random password, safe in a URL without quoting."""
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable and writable by its owner only (0600), replacing it atomically.

    The file is created with mode 0600 before anything is written to it, so no other user ever sees its
    content, even briefly.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE_FILE)
    try:
        os.fchmod(fd, _PRIVATE_FILE)  # whatever the umask
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    tmp.replace(path)


def with_userinfo(url: str, user: str, password: str) -> str:
    """``url`` (``nats://host:port``, ``postgresql://host:port/db``) with ``user:password@`` in it."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))


class SecretsDir:
    """A directory of password files, one per identity, created on first use.

    Example:
        secrets = SecretsDir(run_dir / "secrets")
        password = secrets.password("strategy")   # made now, or read back from secrets/strategy
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def password(self, name: str) -> str:
        """The password of ``name``, generated and stored (0600) the first time it is asked for.

        Raises:
            SecretError: the file exists but is empty, or others may read it.
        """
        if not _NAME.fullmatch(name):
            raise ValueError(f"secret name: expected lower-case letters, digits and '_', got {name!r}")
        self._ensure_directory()
        path = self.directory / name
        if not path.exists():
            write_private(path, new_password() + "\n")
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise SecretError(path, "a file only its owner may read (mode 0600)", f"its mode is {mode:04o}")
        password = path.read_text().strip()
        if not password:
            raise SecretError(path, "a password", "the file is empty")
        return password

    def passwords(self, names: Iterable[str]) -> dict[str, str]:
        """The password of each of ``names``, by name."""
        return {name: self.password(name) for name in names}

    def _ensure_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=_PRIVATE_DIR)
        os.chmod(self.directory, _PRIVATE_DIR)

    def __repr__(self) -> str:
        return f"SecretsDir({str(self.directory)!r})"
