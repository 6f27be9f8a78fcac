"""Dataset loaders, on small files written here in the real formats."""

import builtins
import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

from layca_optax.experiments.data import (
    ENV_VAR,
    Dataset,
    DatasetError,
    load_cifar,
    load_digits,
    load_mnist,
    resolve_data_dir,
    safe_unpickle,
    take_per_class,
    validation_split,
)


RNG = np.random.default_rng(0)

# --------------------------------------------------------------------- MNIST

MNIST_FILES = {
    "train-images-idx3-ubyte": (0x803, RNG.integers(0, 256, (5, 28, 28))),
    "train-labels-idx1-ubyte": (0x801, np.array([0, 9, 3, 3, 7])),
    "t10k-images-idx3-ubyte": (0x803, RNG.integers(0, 256, (3, 28, 28))),
    "t10k-labels-idx1-ubyte": (0x801, np.array([1, 2, 8])),
}


def idx_bytes(magic, array):
    """An IDX file: big-endian magic and dimensions, then unsigned bytes."""
    array = np.asarray(array, np.uint8)
    dims = struct.pack(f">{array.ndim}I", *array.shape)
    return struct.pack(">I", magic) + dims + array.tobytes()


def write_mnist(folder, gz=(), **replace):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (magic, array) in MNIST_FILES.items():
        raw = replace.get(name, idx_bytes(magic, array))
        if name in gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return folder


def test_mnist_round_trip(tmp_path):
    data = load_mnist(write_mnist(tmp_path))
    assert isinstance(data, Dataset)
    assert (data.name, data.num_classes) == ("mnist", 10)
    assert data.x_train.shape == (5, 28, 28, 1)
    assert data.x_train.dtype == np.float32
    assert data.y_train.dtype == np.int32
    _, images = MNIST_FILES["train-images-idx3-ubyte"]
    np.testing.assert_allclose(data.x_train[..., 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_train, [0, 9, 3, 3, 7])
    _, images = MNIST_FILES["t10k-images-idx3-ubyte"]
    np.testing.assert_allclose(data.x_test[..., 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_test, [1, 2, 8])
    assert not data.x_train.flags.writeable


def test_mnist_gzip_and_torchvision_layout(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", gz=set(MNIST_FILES) - {"x"})
    gz = load_mnist(tmp_path)
    plain = load_mnist(write_mnist(tmp_path / "plain"))
    for a, b in zip(gz[:4], plain[:4], strict=True):
        np.testing.assert_array_equal(a, b)


def test_mnist_from_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(write_mnist(tmp_path / "mnist")))
    assert load_mnist().x_test.shape == (3, 28, 28, 1)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))  # finds the mnist/ subfolder
    assert load_mnist().x_test.shape == (3, 28, 28, 1)


_IMAGES = idx_bytes(0x803, MNIST_FILES["train-images-idx3-ubyte"][1])


@pytest.mark.parametrize(
    ("name", "raw", "why"),
    [
        ("train-images-idx3-ubyte", _IMAGES[:-1], "truncated"),
        ("train-images-idx3-ubyte", _IMAGES + b"\0", "data after the end"),
        ("train-images-idx3-ubyte", _IMAGES[:9], "shorter than its header"),
        ("train-images-idx3-ubyte", b"\0\0\x08\x01" + _IMAGES[4:], "magic"),
        ("t10k-labels-idx1-ubyte", idx_bytes(0x803, np.zeros((3, 1, 1))), "m"),
        (
            "train-images-idx3-ubyte",
            idx_bytes(0x803, np.zeros((5, 27, 28))),
            r"dimensions \(5, 27, 28\)",
        ),
        ("train-labels-idx1-ubyte", idx_bytes(0x801, [0, 1, 2]), "3 labels"),
        ("t10k-labels-idx1-ubyte", idx_bytes(0x801, [1, 2, 10]), "up to 10"),
    ],
)
def test_mnist_corrupt_files_name_the_path(tmp_path, name, raw, why):
    write_mnist(tmp_path, **{name: raw})
    with pytest.raises(DatasetError, match=why) as info:
        load_mnist(tmp_path)
    assert str(tmp_path / name) in str(info.value)
    assert "load_mnist" in str(info.value)


def test_mnist_missing_and_bad_gzip(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DatasetError, match="not found.*expected the MNIST"):
        load_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="cannot read .*idx3-ubyte.gz"):
        load_mnist(tmp_path)


# --------------------------------------------------------------------- CIFAR


class Py2Pickler(pickle._Pickler):
    """Writes protocol 2 as Python 2's cPickle did for the CIFAR files.

    Strings become 8-bit strings (read back as bytes with
    ``encoding="bytes"``) and NumPy's globals use the ``numpy.core`` names.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_str8(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("latin1")
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)

    dispatch[bytes] = save_str8
    dispatch[str] = save_str8

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{obj.__qualname__}\n".encode())


def py2_pickle(obj):
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


def cifar_batch(n, num_classes=10, label_key=b"labels", seed=0):
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"training batch 1 of 5",
        label_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    if num_classes == 100:
        batch[b"coarse_labels"] = [v // 5 for v in batch[label_key]]
    return batch


CIFAR10 = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4"]
CIFAR10 = [*CIFAR10, "data_batch_5", "test_batch"]


def write_cifar10(folder, **replace):
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate(CIFAR10):
        batches[name] = cifar_batch(3 + i, seed=i)
        raw = replace.get(name, py2_pickle(batches[name]))
        (folder / name).write_bytes(raw)
    return batches


def test_py2_pickles_look_like_the_real_files():
    raw = py2_pickle(cifar_batch(2))
    assert raw.startswith(b"\x80\x02}")
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    assert b"U\x04data" in raw  # a Python 2 str, read back as bytes
    assert b"_codecs" not in raw


def test_cifar10_round_trip(tmp_path):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py")
    data = load_cifar(tmp_path)
    assert (data.name, data.num_classes) == ("cifar10", 10)
    assert data.x_train.shape == (3 + 4 + 5 + 6 + 7, 32, 32, 3)
    assert data.x_test.shape == (8, 32, 32, 3)
    train = [batches[n] for n in CIFAR10[:5]]
    raw = np.concatenate([b[b"data"] for b in train])
    labels = np.concatenate([b[b"labels"] for b in train])
    np.testing.assert_array_equal(data.y_train, labels)
    np.testing.assert_array_equal(data.y_test, batches["test_batch"][b"labels"])
    # Row layout: 1024 red, then green, then blue pixels, row-major.
    i, h, w, c = 7, 5, 30, 2
    assert data.x_train[i, h, w, c] == np.float32(
        raw[i, c * 1024 + h * 32 + w] / 255
    )
    np.testing.assert_allclose(
        data.x_train.transpose(0, 3, 1, 2).reshape(len(raw), -1),
        raw / 255.0,
        rtol=1e-6,
    )
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int32


def test_cifar10_standardize_and_archive(tmp_path, monkeypatch):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py")
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", "cifar-10-batches-py")
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    (tmp_path / "cifar-10-python.tar.gz").rename(
        archive_dir / "cifar-10-python.tar.gz"
    )
    monkeypatch.setenv(ENV_VAR, str(archive_dir))
    data = load_cifar(standardize=True)
    raw = np.concatenate([batches[n][b"data"] for n in CIFAR10[:5]])
    mean, std = raw.astype(np.float64).mean(), raw.astype(np.float64).std()
    np.testing.assert_allclose(data.x_train.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(data.x_train.std(), 1.0, rtol=1e-5)
    test = batches["test_batch"][b"data"][0, 1024 + 32 * 3 + 4]  # green
    np.testing.assert_allclose(
        data.x_test[0, 3, 4, 1], (test - mean) / std, rtol=1e-5
    )


def write_cifar100(folder, n_train=6, n_test=4):
    """The CIFAR-100 python files as Python 3 writes them (protocol 4:
    ``numpy._core`` names, bytes keys); returns the train and test batches."""
    folder.mkdir(parents=True)
    train = cifar_batch(n_train, 100, b"fine_labels", seed=1)
    test = cifar_batch(n_test, 100, b"fine_labels", seed=2)
    for name, batch in (("train", train), ("test", test)):
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=4)
    return train, test


def test_cifar100_python3_pickles(tmp_path):
    train, test = write_cifar100(tmp_path / "cifar-100-python")
    data = load_cifar(tmp_path, 100)
    assert (data.name, data.num_classes) == ("cifar100", 100)
    np.testing.assert_array_equal(data.y_train, train[b"fine_labels"])
    np.testing.assert_array_equal(data.y_test, test[b"fine_labels"])
    assert data.x_test.shape == (4, 32, 32, 3)
    with pytest.raises(DatasetError, match="num_classes must be 10 or 100"):
        load_cifar(tmp_path, 20)


def bad_batch(**changes):
    batch = cifar_batch(4, seed=9)
    batch.update({k.encode(): v for k, v in changes.items()})
    return py2_pickle({k: v for k, v in batch.items() if v is not None})


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (py2_pickle(cifar_batch(4))[:-40], "not a CIFAR pickle"),
        (b"", "not a CIFAR pickle"),
        (b"\x80\x02garbage", "not a CIFAR pickle"),
        (py2_pickle([1, 2]), "a pickled list, not a dict"),
        (bad_batch(data=None), r"'data' is NoneType"),
        (
            bad_batch(data=np.zeros((4, 3071), np.uint8)),
            r"'data' is \(4, 3071\)",
        ),
        (bad_batch(data=np.zeros((4, 3072))), "'data' is"),
        (bad_batch(labels=None), "no 'labels' list"),
        (bad_batch(labels=[1, 2, 3]), "holds 3 labels for 4 images"),
        (bad_batch(labels=[1, 2, 3, 10]), "in 0..9"),
        (bad_batch(labels=[1, 2, 3, -1]), "in 0..9"),
        (bad_batch(labels=[1.0, 2.0, 3.0, 4.0]), r"'labels'\[0\] is a float"),
    ],
)
def test_cifar_corrupt_batches_name_the_path(tmp_path, raw, why):
    write_cifar10(tmp_path, data_batch_3=raw)
    with pytest.raises(DatasetError, match=why) as info:
        load_cifar(tmp_path)
    message = str(info.value)
    assert message.startswith(f"load_cifar: {tmp_path / 'data_batch_3'}: ")
    assert "expected the CIFAR-10 python batches" in message


def test_cifar_missing_files(tmp_path):
    with pytest.raises(DatasetError, match="no data_batch_1 in .*expected"):
        load_cifar(tmp_path)
    write_cifar10(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(DatasetError, match="test_batch not found"):
        load_cifar(tmp_path)
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"not a tar file")
    with pytest.raises(DatasetError, match="cannot read .*cifar-100-python"):
        load_cifar(tmp_path, 100)


# ------------------------------------------------------ malicious pickles


class Payload:
    """Pickles as a call of ``fn(arg)``, as an attacker's file would."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


def payloads(marker):
    touch = f"open({str(marker)!r}, 'w').close()"
    return [
        Payload(os.system, f"touch {marker}"),
        Payload(builtins.eval, touch),
        Payload(builtins.exec, touch),
    ]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_malicious_batches_are_rejected_without_running(tmp_path, which):
    marker = tmp_path / "pwned"
    evil = payloads(marker)[which]
    for protocol in (2, 4):  # a whole batch, or hidden in the labels
        for batch in ({b"data": evil}, cifar_batch(4) | {b"labels": [evil]}):
            write_cifar10(tmp_path, data_batch_1=pickle.dumps(batch, protocol))
            with pytest.raises(DatasetError, match="is not allowed") as info:
                load_cifar(tmp_path)
            assert str(tmp_path / "data_batch_1") in str(info.value)
    assert not marker.exists()
    pickle.loads(pickle.dumps(evil))  # the payload does work
    assert marker.exists()


@pytest.mark.parametrize(
    "name",
    [
        "posix\nsystem",
        "builtins\neval",
        "__builtin__\neval",
        "numpy\nload",
        "numpy.core.multiarray\nscalar",
        "numpy._core.numeric\n_frombuffer",
        "copyreg\n_reconstructor",
        "_codecs\nencode",
        "subprocess\nPopen",
    ],
)
def test_safe_unpickle_admits_no_other_global(name):
    raw = b"\x80\x02c" + name.encode() + b"\n."
    with pytest.raises(pickle.UnpicklingError, match="is not allowed"):
        safe_unpickle(io.BytesIO(raw))


def test_safe_unpickle_admits_numpy_arrays():
    for name in ("numpy\nndarray", "numpy\ndtype"):
        raw = b"\x80\x02c" + name.encode() + b"\n."
        assert safe_unpickle(io.BytesIO(raw)) in (np.ndarray, np.dtype)
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for raw in (py2_pickle(array), pickle.dumps(array, protocol=4)):
        np.testing.assert_array_equal(safe_unpickle(io.BytesIO(raw)), array)
    with pytest.raises(pickle.UnpicklingError):  # persistent ids
        safe_unpickle(io.BytesIO(b"\x80\x02X\x01\x00\x00\x00aQ."))


# ------------------------------------------------------- digits and splits


def test_digits_shapes_range_and_stratified_split():
    data = load_digits()
    assert (data.name, data.num_classes) == ("digits", 10)
    assert data.x_train.shape == (1438, 8, 8, 1)
    assert data.x_test.shape == (359, 8, 8, 1)
    assert data.x_train.dtype == np.float32 and data.y_test.dtype == np.int32
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    counts = np.bincount(data.y_train) + np.bincount(data.y_test)
    np.testing.assert_array_equal(
        np.bincount(data.y_test), [round(0.2 * c) for c in counts]
    )
    assert not data.x_train.flags.writeable


def test_digits_is_deterministic_and_seeded():
    fresh = load_digits.__wrapped__()
    for a, b in zip(fresh[:4], load_digits()[:4], strict=True):
        np.testing.assert_array_equal(a, b)
    other = load_digits(seed=1)
    assert not np.array_equal(other.y_test, fresh.y_test)
    with pytest.raises(DatasetError, match="load_digits: test_fraction"):
        load_digits(test_fraction=1.0)


def test_validation_split_matches_the_papers_get_val_split():
    data = load_digits()
    val = validation_split(data)
    n, k = len(data.y_train), int(0.1 * len(data.y_train))
    state = np.random.get_state()
    np.random.seed(1)  # the authors' notebooks
    index = np.random.permutation(n)
    np.random.set_state(state)
    np.testing.assert_array_equal(val.y_test, data.y_train[index[:k]])
    np.testing.assert_array_equal(val.x_train, data.x_train[index[k:]])
    assert (val.name, val.num_classes) == ("digits-val", 10)
    with pytest.raises(DatasetError, match="validation_split: fraction 0"):
        validation_split(data, 0.0)


def test_take_per_class():
    data = load_digits()
    small = take_per_class(data, 20, seed=3)
    np.testing.assert_array_equal(np.bincount(small.y_train), [20] * 10)
    assert small.x_test is data.x_test
    again = take_per_class(data, 20, seed=3)
    np.testing.assert_array_equal(small.x_train, again.x_train)
    with pytest.raises(DatasetError, match="take_per_class: samples_per"):
        take_per_class(data, 1000)


class TestMisuse:
    """No data folder, or a missing one: a DatasetError naming the loader
    the user called."""

    def test_data_dir_resolution_errors(self, tmp_path, monkeypatch):
        monkeypatch.delenv(ENV_VAR, raising=False)
        with pytest.raises(DatasetError, match=f"load_mnist: .*{ENV_VAR}"):
            load_mnist()
        missing = tmp_path / "nowhere"
        with pytest.raises(DatasetError, match="load_cifar: .*nowhere"):
            load_cifar(missing)
        monkeypatch.setenv(ENV_VAR, str(tmp_path))
        assert resolve_data_dir() == tmp_path
        assert resolve_data_dir(missing.parent) == tmp_path
        assert issubclass(DatasetError, ValueError)

    def test_data_folder_errors_name_the_loader_called(
        self, tmp_path, monkeypatch
    ):
        monkeypatch.delenv(ENV_VAR, raising=False)
        for fn, name in (
            (load_mnist, "load_mnist"),
            (load_cifar, "load_cifar"),
            (resolve_data_dir, "resolve_data_dir"),
        ):
            with pytest.raises(
                DatasetError, match=f"^{name}: no data directory"
            ):
                fn()
            with pytest.raises(DatasetError, match=f"^{name}: data_dir .* no "):
                fn(tmp_path / "missing")
