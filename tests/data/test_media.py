"""check_media_file: the one pre-decode check every media kind shares."""

import pickle

import pytest

from longrl.data.image import ImageError
from longrl.data.media import MediaError, check_media_file
from longrl.data.video import VideoError


@pytest.mark.parametrize("error_cls,key", [(ImageError, "data.image_dir"), (VideoError, "data.video_dir")])
def test_missing_dir_and_empty_files_are_named(tmp_path, error_cls, key):
    with pytest.raises(error_cls, match=f"{error_cls.kind} .*nope: file not found; check {key}"):
        check_media_file(str(tmp_path / "nope"), error_cls, key)
    with pytest.raises(error_cls, match="is a directory"):
        check_media_file(str(tmp_path), error_cls, key)
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    with pytest.raises(error_cls, match="empty.bin: file is empty"):
        check_media_file(str(empty), error_cls, key)
    full = tmp_path / "full.bin"
    full.write_bytes(b"x")
    check_media_file(str(full), error_cls, key)  # no error


def test_media_errors_pickle_with_name_and_reason():
    err = pickle.loads(pickle.dumps(ImageError("a.png", "truncated")))
    assert isinstance(err, MediaError) and (err.name, err.reason) == ("a.png", "truncated")
    assert str(err) == "image a.png: truncated"
    assert VideoError("v.mp4", "x").path == "v.mp4"
