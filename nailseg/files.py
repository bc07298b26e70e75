"""Small file helpers every stage shares: atomic writes, zips, safe names, folder sizes."""

from __future__ import annotations

import os
import re
import secrets
import zipfile
from pathlib import Path

_UNSAFE = re.compile(r"[^\w.+-]+")


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Readers see the old file or the new one, never half of one; two writers never share a temp name.
    The file gets the mode any new file gets (0644 under the usual umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


_COMPRESSED = frozenset({".png", ".jpg", ".jpeg", ".webp"})


def write_zip(folder: Path, zip_path: Path) -> Path:
    """Zip every file under ``folder`` (paths relative to it) into ``zip_path``.

    Images are stored as they are (PNG and JPEG are compressed already: deflating them again costs
    time for nothing); text files (JSON, CSV) are deflated.
    """
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            stored = file.suffix.lower() in _COMPRESSED
            zf.write(file, file.relative_to(folder).as_posix(), zipfile.ZIP_STORED if stored else None)
    return zip_path


def _plain(text: str, max_len: int) -> str:
    """``text`` with each run of odd characters as ``_``, no leading or trailing dot, at most
    ``max_len`` characters; ``photo`` if nothing is left."""
    return _UNSAFE.sub("_", text).strip("._")[:max_len] or "photo"


def safe_stem(name: str, max_len: int = 80) -> str:
    """A file stem safe to use in our own output names: the name's stem, odd characters replaced."""
    return _plain(Path(name.replace("\\", "/")).stem, max_len)


_PLAIN = re.compile(r"[A-Za-z0-9][\w.+-]*")


def output_stem(path: str, max_len: int = 80) -> str:
    """The stem of a photo's output files, from the photo's path within its run alone.

    ``path`` is relative (``/`` between folders): a folder's photo relative to the folder given, a
    photo given on its own by its name. Each part is kept as it is, suffix included
    (``a.jpg`` and ``a.png`` stay apart), and folders stay folders. A part that is not plain
    (odd characters, a leading dot, over ``max_len``) is made so and gets ``~`` and 8 hex digits of
    its own hash: no plain part has a ``~``, so two paths never give one stem, and adding photos to a
    folder never changes another photo's stem.
    """
    import hashlib

    parts = []
    for part in path.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if len(part) <= max_len and _PLAIN.fullmatch(part):
            parts.append(part)
            continue
        digest = hashlib.sha1(part.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        parts.append(f"{_plain(part, max_len - 9)}~{digest}")
    return "/".join(parts) or "photo"


def unique_names(names: list[str]) -> list[str]:
    """``names``, each repeat with ``-2``, ``-3``... before its suffix: ``image.jpg, image.jpg`` ->
    ``image.jpg, image-2.jpg`` (phones name every pasted photo ``image.jpg``). A numbered name is
    never one of ``names`` nor one given before: ``a.jpg, a.jpg, a-2.jpg`` -> ``a.jpg, a-3.jpg, a-2.jpg``."""
    taken = set(names)
    seen: set[str] = set()
    unique = []
    for name in names:
        stem, dot, suffix = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
        new, k = name, 1
        while new in seen:
            k += 1
            new = f"{stem}-{k}{dot}{suffix}"
            if new in taken:
                new = name  # someone else's name: keep counting
        seen.add(new)
        unique.append(new)
    return unique


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def remove_older_than(root: Path, hours: float, keep: tuple[Path, ...] = ()) -> list[Path]:
    """Remove the folders directly under ``root`` last modified more than ``hours`` ago (not ``keep``)."""
    import shutil
    import time

    removed = []
    cutoff = time.time() - hours * 3600
    for folder in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        try:
            if folder.is_dir() and not folder.is_symlink() and folder not in keep and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        except FileNotFoundError:  # removed by someone else meanwhile
            continue
    return removed
