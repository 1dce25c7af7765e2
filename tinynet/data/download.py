"""Downloading data files: verified by SHA-256, and never left half-written.

``download_file`` streams a URL into a temporary file beside the target while hashing it, checks
the byte count against Content-Length and the digest against the expected SHA-256, flushes it to
disk, and only then renames it into place. A refused connection, an HTTP error, a transfer cut
off, a checksum mismatch, Ctrl-C or any other exception deletes the temporary file and raises
``DownloadError`` naming the URL and what went wrong. ``fetch`` tries a list of mirrors in turn:
any of those failures, a malformed URL included, moves on to the next mirror.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

from tinynet.io import atomic_write

CHUNK = 1 << 20  # bytes read and hashed at a time
USER_AGENT = "tinynet-data/0.1 (Python urllib)"

# progress(bytes_so_far, total_bytes_or_None), called after every chunk.
Progress = Callable[[int, "int | None"], None]


class DownloadError(RuntimeError):
    """A file could not be downloaded intact; the message names the URL and the problem."""


def sha256_file(path) -> str:
    """The hex SHA-256 digest of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    url: str,
    path,
    sha256: str,
    *,
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> Path:
    """Download ``url`` to ``path`` if its SHA-256 is ``sha256``; return the path.

    Nothing appears at ``path`` unless the whole file arrived and matched: on any failure the
    temporary file (``.NAME.*.tmp`` beside it) is removed and ``DownloadError`` raised.
    ``timeout`` bounds each blocking network operation, in seconds.
    """
    path = Path(path)
    expected = sha256.lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ValueError(f"download_file: sha256 must be 64 hex digits; got {sha256!r}")
    with atomic_write(path) as file:
        digest, received, total = _stream(url, file, timeout, progress)
        if total is not None and received < total:
            raise DownloadError(
                f"{url}: transfer cut off after {received} of {total} bytes (Content-Length)"
            )
        if digest != expected:
            raise DownloadError(
                f"{url}: SHA-256 mismatch: got {digest}, expected {expected} ({received} bytes "
                f"received); the file was not saved"
            )
    return path


def _stream(url, file, timeout, progress) -> tuple[str, int, int | None]:
    """Copy the response body of ``url`` into ``file``: (hex sha256, bytes, Content-Length)."""
    digest, received = hashlib.sha256(), 0
    try:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
            while chunk := response.read(CHUNK):
                file.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, total)
    except urllib.error.HTTPError as error:
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    except urllib.error.URLError as error:
        raise DownloadError(f"{url}: cannot connect ({error.reason})") from error
    except http.client.IncompleteRead as error:
        raise DownloadError(
            f"{url}: transfer cut off after {received + len(error.partial)} bytes "
            f"({error.expected} more were announced)"
        ) from error
    except (ValueError, http.client.InvalidURL) as error:  # unknown scheme, bad port or host
        raise DownloadError(f"{url}: not a usable URL ({error})") from error
    except (http.client.HTTPException, OSError) as error:
        raise DownloadError(
            f"{url}: connection failed after {received} bytes ({type(error).__name__}: {error})"
        ) from error
    return digest.hexdigest(), received, total


def fetch(
    filename: str,
    data_dir,
    mirrors: Sequence[str],
    sha256: str,
    *,
    timeout: float = 60.0,
    progress: Progress | None = None,
) -> Path:
    """Download ``filename`` into ``data_dir`` from the first of ``mirrors`` (base URLs, the
    file name appended) that delivers it intact; ``DownloadError`` lists each mirror's failure
    when none does."""
    if isinstance(mirrors, str) or not mirrors or not all(isinstance(m, str) for m in mirrors):
        raise ValueError(f"fetch: mirrors must be a non-empty list of base URLs; got {mirrors!r}")
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        try:
            return download_file(
                url, Path(data_dir) / filename, sha256, timeout=timeout, progress=progress
            )
        except DownloadError as error:
            failures.append(str(error))
    raise DownloadError(
        f"could not download {filename} into {data_dir}: " + "; ".join(failures)
        if len(failures) > 1
        else failures[0]
    )
