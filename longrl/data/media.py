"""What every media file (image, video, audio) shares: the error that names it and the checks done
before a decoder sees it (a decoder's own message for a missing or empty file is rarely clear)."""

from __future__ import annotations

import os


class MediaError(Exception):
    """A media file that cannot be used: names the file (or embedded item) and the reason."""

    kind = "media"

    def __init__(self, name: str | os.PathLike, reason: str):
        super().__init__(str(name), reason)  # both in args, so the error pickles across Ray
        self.name = str(name)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.reason}"


def check_media_file(path: str, error_cls: type[MediaError], dir_key: str) -> None:
    """Raise `error_cls` naming `path` if it is missing, a directory or empty; `dir_key` is the config
    key that locates such files (data.video_dir, data.image_dir), named in the missing-file message."""
    kind = error_cls.kind
    if not os.path.exists(path):
        raise error_cls(path, f"file not found; check {dir_key} and the data set's {kind} paths")
    if os.path.isdir(path):
        raise error_cls(path, "is a directory, not a file")
    if os.path.getsize(path) == 0:
        raise error_cls(path, "file is empty (0 bytes); re-create or remove it")
