"""Files from users are data: crafted files fail fast, with the loader's
own error naming the file, and never allocate more than the format holds.

Each crafted file here once made a loader allocate gigabytes (stride-0
arrays, shared nested lists, gzip bombs), raise an error of another type
(``UnicodeDecodeError``, ``RecursionError``, ``FileNotFoundError``,
``TypeError``, ``EOFError``, ``BadZipFile``) or load a wrong value (a step
past int64, complex rates without their imaginary part). None allocates
much now: the checks run on the declared sizes, before any allocation.
"""

import gzip
import io
import json
import pickle
import re
import struct
import tarfile
import time
import zipfile

import numpy as np
import pytest

import layca_optax
from layca_optax.experiments.data import DatasetError, load_cifar, load_mnist


QUICK_S = 10.0  # each rejection takes milliseconds; generous for slow CI


def raises_quickly(error, match, fn, *args):
    """``fn(*args)`` raises ``error`` matching ``match``, in ``QUICK_S``."""
    start = time.perf_counter()
    with pytest.raises(error, match=match) as info:
        fn(*args)
    assert time.perf_counter() - start < QUICK_S
    return str(info.value)


class Call:
    """Pickles as ``fn(*args)``: how a crafted pickle calls an allowed
    global (here ``numpy.ndarray``) with arguments of its choice."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


# --------------------------------------------------------------------- CIFAR

CIFAR10 = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
U8 = np.dtype(np.uint8)


def cifar_batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar10(folder, **replace):
    """Small valid batches in ``folder``, ``replace`` giving raw files."""
    for i, name in enumerate(CIFAR10):
        raw = replace.get(name)
        if raw is None:
            raw = pickle.dumps(cifar_batch(seed=i), protocol=4)
        (folder / name).write_bytes(raw)
    return folder


def crafted_batch(**changes):
    batch = cifar_batch()
    batch.update({k.encode(): v for k, v in changes.items()})
    return pickle.dumps(batch, protocol=4)


def shared_nested_lists(n):
    """``n`` labels, each a reference to one list of lists of lists: a few
    KB of pickle that NumPy expands to ``n * 175 * 1000 * 1000`` ints."""
    level = [0] * 1000
    level = [level] * 1000
    level = [level] * 175
    return [level] * n


CIFAR_CRAFTED = {
    # 10,000 rows x 3,072 pixels, all read from one byte (strides 0):
    # under 200 bytes of pickle; the loader used to allocate 1.6 GB.
    "stride0": (
        crafted_batch(
            data=Call(np.ndarray, (10000, 3072), U8, b"\0", 0, (0, 0)),
            labels=[0] * 10000,
        ),
        "not a bytes-backed",
    ),
    # One row repeated: right shape, wrong strides.
    "stride0-rows": (
        crafted_batch(
            data=Call(np.ndarray, (4, 3072), U8, bytes(3072), 0, (0, 1))
        ),
        "not a bytes-backed",
    ),
    # Rows in reverse order from the end of a buffer: negative strides.
    "negative-strides": (
        crafted_batch(
            data=Call(
                np.ndarray,
                (4, 3072),
                U8,
                bytes(4 * 3072),
                3 * 3072,
                (-3072, 1),
            )
        ),
        "not a bytes-backed",
    ),
    # An array of uninitialised memory: no bytes behind it at all.
    "unbacked": (
        crafted_batch(data=Call(np.ndarray, (4, 3072), U8)),
        "not a bytes-backed",
    ),
    # A view of the first rows of a larger buffer.
    "larger-buffer": (
        crafted_batch(data=Call(np.ndarray, (4, 3072), U8, bytes(9 * 3072), 0)),
        "not a bytes-backed",
    ),
    # Four labels that NumPy would expand to 5.6 GB (a bare MemoryError).
    "shared-nested-labels": (
        crafted_batch(labels=shared_nested_lists(4)),
        r"'labels'\[0\] is a list, not an int in 0..9",
    ),
    # A key that is not text.
    "non-utf8-key": (
        pickle.dumps(cifar_batch() | {b"\xff\xfe": 1}, protocol=4),
        r"key b'\\xff\\xfe' is not text",
    ),
    # A label past int64: an OverflowError in NumPy.
    "huge-label": (
        crafted_batch(labels=[0, 1, 2, 10**30]),
        r"'labels'\[3\] is not an int in 0..9",
    ),
    # A bool is an int in Python, not a label.
    "bool-labels": (
        crafted_batch(labels=[True, False, True, 1]),
        r"'labels'\[0\] is a bool, not an int",
    ),
}


@pytest.mark.parametrize("name", sorted(CIFAR_CRAFTED))
def test_cifar_crafted_batches_fail_fast(tmp_path, name):
    raw, why = CIFAR_CRAFTED[name]
    assert len(raw) < 64_000  # a few KB: every one is tiny
    write_cifar10(tmp_path, data_batch_2=raw)
    message = raises_quickly(DatasetError, why, load_cifar, tmp_path)
    assert message.startswith(f"load_cifar: {tmp_path / 'data_batch_2'}: ")


def test_cifar_more_images_than_a_batch_holds(tmp_path):
    # A real, bytes-backed array of 10,001 rows: one more than a batch has.
    rows = np.zeros((10001, 3072), np.uint8)
    raw = crafted_batch(data=rows, labels=[0] * 10001)
    write_cifar10(tmp_path, test_batch=raw)
    raises_quickly(
        DatasetError,
        "10001 images: more than the 10000 of a CIFAR-10 batch",
        load_cifar,
        tmp_path,
    )


def test_cifar_file_larger_than_a_batch_is_not_read(tmp_path):
    write_cifar10(tmp_path)
    with open(tmp_path / "data_batch_1", "r+b") as f:  # sparse: no disk used
        f.truncate(2**30)
    raises_quickly(
        DatasetError,
        r"data_batch_1 has 1073741824 bytes, more than .* can hold",
        load_cifar,
        tmp_path,
    )


@pytest.mark.parametrize(
    ("name", "why"),
    [
        (
            "data_batch_1",
            r"data_batch_1 has 1099511627776 bytes, more than .* can hold",
        ),
        (  # an entry not read, but skipping it would gunzip 1 TB
            "readme.html",
            r"readme.html ends at byte 1099511628288, past the 246808576 ",
        ),
    ],
)
def test_cifar_archive_member_larger_than_a_batch_is_not_read(
    tmp_path, name, why
):
    member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
    member.size = 2**40  # declared in the header; the data is absent
    archive = member.tobuf(tarfile.GNU_FORMAT) + bytes(1024)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(gzip.compress(archive))
    raises_quickly(DatasetError, why, load_cifar, tmp_path)


# --------------------------------------------------------------------- MNIST

MNIST = {
    "train-images-idx3-ubyte": (0x803, np.zeros((5, 28, 28))),
    "train-labels-idx1-ubyte": (0x801, np.array([0, 9, 3, 3, 7])),
    "t10k-images-idx3-ubyte": (0x803, np.zeros((3, 28, 28))),
    "t10k-labels-idx1-ubyte": (0x801, np.array([1, 2, 8])),
}


def idx_header(magic, dims):
    return struct.pack(f">I{len(dims)}I", magic, *dims)


def write_mnist(folder):
    for name, (magic, array) in MNIST.items():
        raw = idx_header(magic, array.shape) + array.astype(np.uint8).tobytes()
        (folder / name).write_bytes(raw)
    return folder


def test_mnist_gzip_bomb_stops_after_the_declared_size(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    # A valid test set (10,000 x 28 x 28), then 6.4 GB of zeros more, in
    # 7 MB of gzip: members of 64 MB of zeros each.
    head = gzip.compress(idx_header(0x803, (10000, 28, 28)) + bytes(7840000))
    zeros = gzip.compress(bytes(2**26), compresslevel=9)
    bomb = head + zeros * 100
    assert len(bomb) < 16 * 2**20
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(bomb)
    message = raises_quickly(
        DatasetError,
        r"more than the 7840016 bytes of dimensions \(10000, 28, 28\)",
        load_mnist,
        tmp_path,
    )
    assert str(tmp_path / "t10k-images-idx3-ubyte.gz") in message


@pytest.mark.parametrize(
    ("name", "dims", "why"),
    [
        (
            "train-images-idx3-ubyte",
            (60001, 28, 28),
            "60001 images: more than the 60000 of MNIST's train set",
        ),
        (
            "t10k-labels-idx1-ubyte",
            (10001,),
            "10001 labels: more than the 10000 of MNIST's test set",
        ),
        (
            "t10k-images-idx3-ubyte",
            (2**32 - 1, 28, 28),
            "4294967295 images: more than the 10000",
        ),
    ],
)
def test_mnist_header_larger_than_the_dataset(tmp_path, name, dims, why):
    write_mnist(tmp_path)
    magic = MNIST[name][0]
    head = idx_header(magic, dims)
    with open(tmp_path / name, "wb") as f:  # sparse: as long as declared
        f.write(head)
        f.truncate(min(len(head) + int(np.prod(dims)), 2**30))
    message = raises_quickly(DatasetError, why, load_mnist, tmp_path)
    assert str(tmp_path / name) in message


# ------------------------------------------------------- RotationHistory

FORMAT = "layca_optax.RotationHistory"
HUGE_STEP = json.dumps(
    {"format": FORMAT, "records": [{"step": 10**30, "a": 1}]}
)
HISTORY_CRAFTED = {
    "deep.json": ("[" * 10000, "nested too deeply"),
    "deep-record.json": (
        json.dumps({"format": FORMAT, "records": []})[:-2] + "[" * 5000,
        "nested too deeply",
    ),
    "huge-step.json": (HUGE_STEP, r"record 0: .*fit in int64, got 10{30}"),
    "huge-step.csv": (
        f"step,a\n{10**30},0.5\n",
        r"line 2: .*fit in int64, got 10{30}",
    ),
    "negative-step.csv": (
        f"step,a\n{-(2**63) - 1},0.5\n",
        r"line 2: .*fit in int64",
    ),
}


@pytest.mark.parametrize("name", sorted(HISTORY_CRAFTED))
def test_history_crafted_files(tmp_path, name):
    content, why = HISTORY_CRAFTED[name]
    path = tmp_path / name
    path.write_text(content)
    load = getattr(layca_optax.RotationHistory, f"load_{name.split('.')[1]}")
    raises_quickly(
        ValueError, f"load_.*{re.escape(str(path))}: .*{why}", load, path
    )


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_history_missing_file_or_folder_is_a_value_error(tmp_path, fmt):
    load = getattr(layca_optax.RotationHistory, f"load_{fmt}")
    missing = tmp_path / f"missing.{fmt}"
    for path, why in ((missing, "No such file"), (tmp_path, "directory")):
        raises_quickly(
            ValueError,
            f"`RotationHistory.load_{fmt}`: {re.escape(str(path))}: "
            f"cannot read .*{why}",
            load,
            path,
        )


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_history_file_larger_than_the_cap_is_not_read(tmp_path, fmt):
    path = tmp_path / f"big.{fmt}"
    with open(path, "wb") as f:  # sparse: no disk used
        f.truncate(2**30)
    load = getattr(layca_optax.RotationHistory, f"load_{fmt}")
    raises_quickly(
        ValueError,
        f"{re.escape(str(path))}: 1073741824 bytes, more than the "
        f"268435456 bytes .* history file",
        load,
        path,
    )


def test_history_append_step_past_int64():
    history = layca_optax.RotationHistory()
    with pytest.raises(ValueError, match=r"step_or_epoch.*fit in int64"):
        history.append(2**63, {"a": 1.0})
    history.append(2**63 - 1, {"a": 1.0})
    assert history.steps.tolist() == [2**63 - 1]


# ----------------------------------------------------- RotationRecording


def npz(**arrays):
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def npy(array):
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def huge_member():
    """An .npz whose ``rates`` header says 10^5 x 10^5 floats (80 GB) over
    a few bytes of data."""
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head,
        {"descr": "<f8", "fortran_order": False, "shape": (10**5, 10**5)},
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("paths.npy", npy(np.array(["w"])))
        zf.writestr("rates.npy", head.getvalue() + bytes(8))
    return out.getvalue()


GOOD = npz(paths=np.array(["a", "b"]), rates=np.zeros((3, 2)))
RECORDING_CRAFTED = {
    "scalar-paths": (
        npz(paths=np.array("a"), rates=np.zeros((3, 1))),
        r"'paths' is a \(\) <U1 array, not a 1-d array of str",
    ),
    "scalar-rates": (
        npz(paths=np.array(["a"]), rates=np.array(0.5)),
        r"'rates' is a \(\) float64 array, not a 2-d array of real floats",
    ),
    "npy": (npy(np.zeros((3, 2))), "a .npy file, not an .npz archive"),
    "empty": (b"", "an empty file, not an .npz archive"),
    "truncated": (GOOD[: len(GOOD) // 2], "not a readable .npz archive"),
    "complex": (
        npz(paths=np.array(["a"]), rates=np.ones((3, 1)) * 1j),
        r"'rates' is a \(3, 1\) complex128 array, not .* real floats",
    ),
    "object": (
        npz(paths=np.array(["a"]), rates=np.array([[None]] * 3)),
        "'rates' holds Python objects",
    ),
    "paths-2d": (
        npz(paths=np.array([["a", "b"]]), rates=np.zeros((3, 1))),
        r"'paths' is a \(1, 2\) <U1 array, not a 1-d array of str",
    ),
    "columns": (
        npz(paths=np.array(["a", "b"]), rates=np.zeros((3, 3))),
        r"2 paths for 3 columns of rates",
    ),
    "huge-header": (
        huge_member(),
        r"'rates' declares \(100000, 100000\) float64 .* member has 8",
    ),
}


@pytest.mark.parametrize("name", sorted(RECORDING_CRAFTED))
def test_recording_crafted_files(tmp_path, name):
    content, why = RECORDING_CRAFTED[name]
    path = tmp_path / f"{name}.npz"
    path.write_bytes(content)
    message = raises_quickly(
        ValueError,
        f"`RotationRecording.load`: {re.escape(str(path))}: .*{why}",
        layca_optax.analysis.RotationRecording.load,
        path,
    )
    assert "allow_pickle" not in message


def test_recording_round_trip_still_loads(tmp_path):
    path = tmp_path / "good.npz"
    path.write_bytes(GOOD)
    rec = layca_optax.analysis.RotationRecording.load(path)
    assert rec.paths == ("a", "b") and rec.rates.shape == (3, 2)
    assert rec.rates.dtype == np.float64 and rec.rates.flags.writeable
    # Compressed, Fortran order, float32: still a recording.
    rates = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(3, 2))
    np.savez_compressed(path, paths=np.array(["a", "b"]), rates=rates)
    rec = layca_optax.analysis.RotationRecording.load(path)
    np.testing.assert_array_equal(rec.rates, rates)
    # A path twice: the constructor's error, naming the file.
    path.write_bytes(npz(paths=np.array(["a", "a"]), rates=np.zeros((1, 2))))
    with pytest.raises(ValueError, match=r"load`: .*good.npz: .*duplicates"):
        layca_optax.analysis.RotationRecording.load(path)
