"""Dataset zips from strangers: checked before anything is written, then extracted file by file.

:func:`check_archive` refuses a zip from its directory alone (names, kinds, sizes, compression
ratios); :func:`extract_archive` writes only regular files inside the target folder and lists,
rather than fails on, members it cannot write (a name too long, two names for one file) or read
(a bad checksum, corrupt compressed data, encryption).
"""

from __future__ import annotations

import shutil
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

MAX_MEMBERS = 50_000
MAX_TOTAL_BYTES = 4 * 1024**3  # uncompressed
# Photos and PNG masks barely compress; a zip that shrinks more than this, as a whole or in one
# large member, is a bomb (a ratio alone would let 20 members of 49 MiB of zeros through).
MAX_RATIO, RATIO_FROM_BYTES = 100, 50 * 1024**2
MAX_NAME_BYTES = 255  # a file name on Linux file systems


class UnsafeArchive(ValueError):
    """A zip that is refused; the message says why."""


def check_archive(
    members: list[zipfile.ZipInfo], max_members: int = MAX_MEMBERS, max_total_bytes: int = MAX_TOTAL_BYTES
) -> None:
    """Refuse an archive before extracting anything.

    Refused: more than ``max_members`` entries; absolute names or names with ``..``; links and
    other special files; more than ``max_total_bytes`` uncompressed; a member, or the whole zip,
    of at least ``RATIO_FROM_BYTES`` that compresses more than ``MAX_RATIO``:1 (a zip bomb).

    Raises:
        UnsafeArchive: the first reason found.
    """
    if len(members) > max_members:
        raise UnsafeArchive(f"too many files in the zip ({len(members)}; the limit is {max_members})")
    total = compressed = 0
    for info in members:
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise UnsafeArchive(f"absolute path in the zip: {info.filename!r}")
        if ".." in PurePosixPath(name).parts:
            raise UnsafeArchive(f"path leaving the folder ('..') in the zip: {info.filename!r}")
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix file type recorded (e.g. made on Windows)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            kind = "link" if kind == stat.S_IFLNK else "special file"
            raise UnsafeArchive(f"{kind} in the zip: {info.filename!r} (only plain files and folders are accepted)")
        total += info.file_size
        compressed += info.compress_size
        if total > max_total_bytes:
            raise UnsafeArchive(f"the zip unpacks to more than {max_total_bytes / 1024**3:.1f} GiB")
        _check_ratio(info.file_size, info.compress_size, repr(info.filename))
    _check_ratio(total, compressed, "the zip")


def _check_ratio(size: int, compressed: int, what: str) -> None:
    if size >= RATIO_FROM_BYTES and size > MAX_RATIO * max(compressed, 1):
        ratio = size / max(compressed, 1)
        raise UnsafeArchive(f"zip bomb: {what} expands {ratio:.0f}:1 to {size / 1024**2:.0f} MiB")


def extract_archive(zip_path: str | Path, dest: Path) -> tuple[Path, list[tuple[str, str]]]:
    """Check and extract a zip into ``dest``.

    Returns:
        ``(root, problems)``: the dataset root (``dest``, or its only folder when the zip wraps
        everything in one) and ``(member name, what is wrong)`` for members that were skipped.

    Raises:
        UnsafeArchive: see :func:`check_archive`; also a zip that is not a zip.
    """
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise UnsafeArchive(f"not a readable zip file ({err.__class__.__name__})") from None
    problems: list[tuple[str, str]] = []
    files: set[PurePosixPath] = set()
    folders: set[PurePosixPath] = set()
    with zf:
        members = [m for m in zf.infolist() if not m.filename.startswith("__MACOSX/")]
        check_archive(members)
        for info in members:
            rel = PurePosixPath(info.filename.replace("\\", "/"))
            if problem := _name_problem(rel, info.is_dir(), files, folders):
                problems.append((info.filename[:300], problem))
                continue
            target = dest.joinpath(*rel.parts)
            if not target.resolve().is_relative_to(dest.resolve()):  # belt and braces after check_archive
                raise UnsafeArchive(f"path leaving the folder in the zip: {info.filename!r}")
            folders.update(rel.parents)
            if info.is_dir():
                folders.add(rel)
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if damage := _extract_member(zf, info, target):
                problems.append((info.filename[:300], f"cannot be read from the zip: {damage}"))
                continue
            files.add(rel)
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    return (entries[0] if len(entries) == 1 and entries[0].is_dir() else dest), problems


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> str | None:
    """Write one member to ``target``; what is wrong with it (nothing left at ``target``) or None."""
    if info.flag_bits & 0x1:
        return "it is encrypted"
    try:
        with zf.open(info) as src, open(target, "wb") as dst:  # zipfile stops at the declared size
            shutil.copyfileobj(src, dst)
        return None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:
        target.unlink(missing_ok=True)
        return _DAMAGE.get(type(err), "it is damaged")


# What each error of a damaged member means, in a person's words.
_DAMAGE = {
    zipfile.BadZipFile: "its checksum does not match (a damaged download?)",
    zlib.error: "its compressed data are corrupt",
    EOFError: "it is cut short",
    NotImplementedError: "it is compressed with a method this server does not read",
}


def _name_problem(rel: PurePosixPath, is_dir: bool, files: set, folders: set) -> str | None:
    """Why a member cannot be written where its name says, or None."""
    if any(len(part.encode()) > MAX_NAME_BYTES for part in rel.parts):
        return f"a name longer than {MAX_NAME_BYTES} bytes"
    if rel in files or (not is_dir and rel in folders) or any(p in files for p in rel.parents):
        return "its name clashes with another member of the zip"
    return None
