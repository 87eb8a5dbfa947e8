"""Reading text files: UTF-8 only, with an error that names the file and the fix for anything else.

Shared by the text datamodules (`CharText`, `TextClassification`) and by the text techniques' `predict`, which
read a file of their own (prompts, reviews one per line).
"""

from __future__ import annotations

from pathlib import Path

from datamodules.base import DataError, data_root

TEXT_SUFFIXES = (".txt", ".text", ".md")


def read_utf8(path: str | Path, what: str = "text file") -> str:
    """The contents of the UTF-8 file `path` (`$VARS` and `~` expanded), with Windows line ends made `\\n`. Raises
    `DataError` for a missing file, a file that is not UTF-8 (naming the byte offset) or an empty one."""
    resolved = data_root(str(path))
    if not resolved.is_file():
        raise DataError(f"{what} {resolved} does not exist. Give the path of a UTF-8 text file (relative paths start "
                        "at the working directory).")
    raw = resolved.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark, if any, is not text
    except UnicodeDecodeError as err:
        raise DataError(
            f"{what} {resolved} is not UTF-8 (byte {err.start}: {raw[err.start:err.start + 1]!r}). Convert it, for "
            f"example `iconv -f latin1 -t utf-8 {resolved.name} > {resolved.stem}.utf8{resolved.suffix}`."
        ) from None
    text = text.replace("\r\n", "\n")
    if not text.strip():
        raise DataError(f"{what} {resolved} is empty.")
    return text


def text_files(path: str | Path, what: str = "text") -> list[Path]:
    """The file at `path`, or the text files (`.txt`, `.text`, `.md`) anywhere under the folder `path`, sorted."""
    resolved = data_root(str(path))
    if resolved.is_dir():
        files = sorted(p for p in resolved.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise DataError(f"{what} folder {resolved} holds no text files ({', '.join(TEXT_SUFFIXES)}).")
        return files
    if not resolved.is_file():
        raise DataError(f"{what} {resolved} does not exist. Give a UTF-8 text file or a folder of them.")
    return [resolved]


__all__ = ["TEXT_SUFFIXES", "read_utf8", "text_files"]
