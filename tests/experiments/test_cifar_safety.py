"""CIFAR's files are data (issue 24): no crafted batch or archive crashes
the process, allocates much more than the real files, or hangs.

Each crafted file once did: a 122-byte pickle made NumPy's
``ndarray.__setstate__`` read past a list (SIGSEGV), a 67-byte one made
``_reconstruct`` zero-fill 2 GB of objects, and a tar.gz header declaring
a 2 GB PAX (``x``) or GNU long-name (``L``) entry made ``tarfile`` allocate
it. The crashes and the memory are checked in a subprocess.
"""

import gzip
import io
import os
import pickle
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest

from layca_optax.experiments.data import DatasetError, load_cifar, safe_unpickle


TIMEOUT_S = 120
PY_10 = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
BIN_10 = [f"{name}.bin" for name in PY_10]

# _reconstruct(ndarray, (0,), b'b'), then BUILD (1, (1,), dtype('O8'),
# False, []): an object array over an empty list (SIGSEGV in NumPy).
SEGFAULT = (
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    b"K\x00\x85C\x01b\x87R(K\x01K\x01\x85cnumpy\ndtype\nX\x02\x00\x00\x00O8"
    b"\x89\x88\x87R(K\x03X\x01\x00\x00\x00|NNNJ\xff\xff\xff\xffJ\xff\xff"
    b"\xff\xffK?tb\x89]tb."
)
# _reconstruct(ndarray, (2**28,), b'O'): 2 GB of object pointers.
OBJECT_BOMB = (
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    b"J\x00\x00\x00\x10\x85C\x01O\x87R."
)

LOAD = textwrap.dedent(
    """
    import resource, sys
    from layca_optax.experiments.data import DatasetError, load_cifar
    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    before = peak()
    try:
        data = load_cifar(sys.argv[1], int(sys.argv[2]))
        print("LOADED", data.x_train.shape)
    except DatasetError as err:
        print("ERROR", err)
    print("GROWTH_MB", peak() - before)
    """
)


def load_in_subprocess(folder, num_classes=10):
    """``(stdout, peak MB growth)`` of ``load_cifar`` in a fresh process,
    which must exit normally (no signal) within ``TIMEOUT_S``."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(folder), str(num_classes)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    out = done.stdout
    return out, int(out.rsplit("GROWTH_MB", 1)[1])


def images(n, seed, k=10):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return data, [int(v) for v in rng.integers(0, k, n)]


def py_batch(data, labels, key=b"labels"):
    batch = {b"batch_label": b"batch", key: labels, b"data": data}
    batch[b"filenames"] = [b"img_%d.png" % i for i in range(len(labels))]
    if key == b"fine_labels":
        batch[b"coarse_labels"] = [v // 5 for v in labels]
    return pickle.dumps(batch, protocol=3 if len(labels) % 2 else 4)


def bin_records(data, labels, k=10):
    labels = np.asarray(labels, np.uint8)[:, None]
    if k == 100:
        labels = np.concatenate([labels // 5, labels], axis=1)
    return np.concatenate([labels, data], axis=1).tobytes()


def write_tgz(path, folder, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def both_formats(tmp_path, k=10):
    """The same tiny dataset as a binary and as a python archive, each in
    its own folder; returns the two folders."""
    names = PY_10 if k == 10 else ["train", "test"]
    key = b"labels" if k == 10 else b"fine_labels"
    py, bn = {}, {}
    for i, name in enumerate(names):
        data, labels = images(3 + i, i, k)
        py[name] = py_batch(data, labels, key)
        bn[f"{name}.bin"] = bin_records(data, labels, k)
    folders = tmp_path / "py", tmp_path / "bin"
    for folder in folders:
        folder.mkdir()
    prefix = "cifar-10" if k == 10 else "cifar-100"
    py_dir = "cifar-10-batches-py" if k == 10 else "cifar-100-python"
    bin_dir = "cifar-10-batches-bin" if k == 10 else "cifar-100-binary"
    write_tgz(folders[0] / f"{prefix}-python.tar.gz", py_dir, py)
    write_tgz(folders[1] / f"{prefix}-binary.tar.gz", bin_dir, bn)
    return folders


@pytest.mark.parametrize("k", [10, 100])
def test_binary_and_python_archives_load_the_same_arrays(tmp_path, k):
    py, bn = both_formats(tmp_path, k)
    a, b = load_cifar(py, k), load_cifar(bn, k)
    for x, y in zip(a[:4], b[:4], strict=True):
        assert x.shape == y.shape and x.shape[0] > 0
        np.testing.assert_array_equal(x, y)
    assert a.name == b.name == f"cifar{k}"


def test_binary_preferred_and_read_from_a_folder(tmp_path):
    py, bn = both_formats(tmp_path)
    expected = load_cifar(bn)
    # Both archives in one folder: the binary one is read (the python one
    # here is not even a tar file).
    (bn / "cifar-10-python.tar.gz").write_bytes(b"not a tar file")
    np.testing.assert_array_equal(load_cifar(bn).x_train, expected.x_train)
    with tarfile.open(bn / "cifar-10-binary.tar.gz") as tar:
        tar.extractall(bn, filter="data")
    (bn / "cifar-10-binary.tar.gz").unlink()
    assert (bn / "cifar-10-batches-bin" / "test_batch.bin").is_file()
    np.testing.assert_array_equal(load_cifar(bn).y_test, expected.y_test)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (bytes(3073 * 2 + 1), "6147 bytes: not a whole number of 3073-byte"),
        (bytes([10]) + bytes(3072), "record 0's label is 10, not in 0..9"),
        (bytes(3073 * 10001), r"has 30733073 bytes, more than a file of"),
    ],
)
def test_binary_files_are_checked(tmp_path, raw, why):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    for name in BIN_10:
        (folder / name).write_bytes(bytes(3073))
    (folder / "data_batch_4.bin").write_bytes(raw)
    with pytest.raises(DatasetError, match=why) as info:
        load_cifar(tmp_path)
    assert str(folder / "data_batch_4.bin") in str(info.value)


def python_folder(tmp_path, **replace):
    for i, name in enumerate(PY_10):
        raw = replace.get(name) or py_batch(*images(2, i))
        (tmp_path / name).write_bytes(raw)
    return tmp_path


def test_segfault_pickle_is_refused(tmp_path):
    assert len(SEGFAULT) < 130
    python_folder(tmp_path, data_batch_1=SEGFAULT)
    out, _ = load_in_subprocess(tmp_path)
    assert "ERROR load_cifar: " in out and "data_batch_1" in out
    assert "dtype 'O8' is not a numeric dtype" in out
    with pytest.raises(pickle.UnpicklingError, match="not a numeric dtype"):
        safe_unpickle(io.BytesIO(SEGFAULT))


def test_object_dtype_bomb_is_refused_before_allocating(tmp_path):
    assert len(OBJECT_BOMB) < 70
    python_folder(tmp_path, test_batch=OBJECT_BOMB)
    out, growth = load_in_subprocess(tmp_path)
    assert "ERROR" in out and "_reconstruct is allowed only as" in out
    assert growth < 64, out


@pytest.mark.parametrize(
    ("kind", "why"),
    [
        (
            tarfile.XHDTYPE,
            r"extended header \(x\) at byte 0 declares 2147483648",
        ),
        (tarfile.GNUTYPE_LONGNAME, r"extended header \(L\) at byte 0 declares"),
    ],
)
def test_huge_extended_tar_headers_are_refused(tmp_path, kind, why):
    # A header declaring 2 GB of PAX records or long name; the data is
    # absent: tarfile.open used to allocate it (2.2 to 4.3 GB).
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = kind, 2**31
    raw = info.tobuf(tarfile.USTAR_FORMAT) + bytes(1024)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(DatasetError, match=why):
        load_cifar(tmp_path)
    out, growth = load_in_subprocess(tmp_path)
    assert "ERROR load_cifar: cannot read" in out and "65536" in out
    assert growth < 64, out


def test_pax_headers_of_a_real_archive_are_read(tmp_path):
    # Python writes a PAX header (mtime, long names) before each member.
    py, _ = both_formats(tmp_path)
    archive = py / "cifar-10-python.tar.gz"
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar}
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, raw in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(raw), 1.5
            info.pax_headers = {"comment": "é" * 200}
            tar.addfile(info, io.BytesIO(raw))
    assert load_cifar(py).x_train.shape == (3 + 4 + 5 + 6 + 7, 32, 32, 3)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
@pytest.mark.parametrize("name", ["data_batch_3", "cifar-10-binary.tar.gz"])
def test_fifo_is_refused_without_hanging(tmp_path, name):
    if name.endswith(".gz"):
        os.mkfifo(tmp_path / name)
    else:
        python_folder(tmp_path)
        (tmp_path / name).unlink()
        os.mkfifo(tmp_path / name)
    out, _ = load_in_subprocess(tmp_path)  # a hang fails on the timeout
    assert "ERROR load_cifar: cannot read" in out
    assert "is not a regular file" in out and name in out


def test_safe_unpickle_reads_numeric_arrays_only():
    for dtype in ("u1", "<i8", ">i4", "<f4", ">f8"):
        array = np.arange(12, dtype=dtype).reshape(3, 4)
        for protocol in (3, 4):
            raw = pickle.dumps({"a": [array, array]}, protocol=protocol)
            got = safe_unpickle(io.BytesIO(raw))["a"]
            assert got[0] is got[1] and got[0].dtype == array.dtype
            np.testing.assert_array_equal(got[0], array)
    for bad in (np.array(["a"]), np.array([1], object), np.array([True])):
        with pytest.raises(pickle.UnpicklingError, match="not a numeric"):
            safe_unpickle(io.BytesIO(pickle.dumps(bad, protocol=4)))
    many = pickle.dumps([[] for _ in range(100)], protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="more objects"):
        safe_unpickle(io.BytesIO(many), max_objects=50)


def test_tar_members_are_checked(tmp_path):
    py, bn = both_formats(tmp_path)
    archive = bn / "cifar-10-binary.tar.gz"
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar}
    # A long-named extra entry (a small GNU 'L' header) is read past.
    with tarfile.open(archive, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/" + "x" * 300)
        tar.addfile(info, io.BytesIO(b""))
        for name, raw in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    assert load_cifar(bn).x_test.shape == (8, 32, 32, 3)
    # A wanted member that is a link (here to /dev/zero) is refused.
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        info.type, info.linkname = tarfile.SYMTYPE, "/dev/zero"
        tar.addfile(info)
    with pytest.raises(DatasetError, match="data_batch_1.bin is not a regular"):
        load_cifar(bn)
    # A corrupt header checksum, a truncated archive.
    raw = bytearray(
        gzip.decompress((py / "cifar-10-python.tar.gz").read_bytes())
    )
    raw[148:156] = b"0000000\0"
    (py / "cifar-10-python.tar.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DatasetError, match="bad header checksum at byte 0"):
        load_cifar(py)
    raw[148:156] = tarfile.TarInfo().tobuf()[148:156]  # any other: bad
    (py / "cifar-10-python.tar.gz").write_bytes(
        gzip.compress(bytes(raw[:2000]))
    )
    with pytest.raises(DatasetError, match="cannot read"):
        load_cifar(py)


def test_cifar100_binary_coarse_labels_are_checked(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    (folder / "train.bin").write_bytes(bytes([20, 99]) + bytes(3072))
    (folder / "test.bin").write_bytes(bytes(3074))
    with pytest.raises(DatasetError, match="record 0's coarse label is 20"):
        load_cifar(tmp_path, 100)
