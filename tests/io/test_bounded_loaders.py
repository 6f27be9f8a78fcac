"""Loaders read regular files of bounded size, with bounded peak memory.

Issue 24: a FIFO hangs no loader, a link to ``/dev/zero`` or a small
deflated archive declaring gigabytes is refused before anything is
allocated, and a history within the cap loads in a small multiple of its
size.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import zipfile

import numpy as np
import pytest

import layca_optax


QUICK_S = 10.0
LOADERS = {
    "recording": (layca_optax.analysis.RotationRecording.load, "npz"),
    "csv": (layca_optax.RotationHistory.load_csv, "csv"),
    "json": (layca_optax.RotationHistory.load_json, "json"),
}


def refused_quickly(match, fn, *args):
    """``fn(*args)`` raises a ValueError matching ``match`` within
    ``QUICK_S``, run in a thread so that a hang fails instead of blocking
    the suite."""
    outcome = {}

    def target():
        try:
            fn(*args)
        except BaseException as err:  # noqa: BLE001 - reported below
            outcome["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(QUICK_S)
    assert not thread.is_alive(), f"{fn.__qualname__} hangs"
    error = outcome.get("error")
    assert isinstance(error, ValueError), repr(error)
    assert re.search(match, str(error)), str(error)
    return str(error)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
@pytest.mark.parametrize("name", sorted(LOADERS))
def test_fifo_is_refused_without_hanging(tmp_path, name):
    load, ext = LOADERS[name]
    path = tmp_path / f"pipe.{ext}"
    os.mkfifo(path)
    message = refused_quickly(
        f"{re.escape(str(path))}: cannot read it: a FIFO", load, path
    )
    assert "not a regular file" in message


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
@pytest.mark.parametrize("name", sorted(LOADERS))
def test_link_to_a_device_is_refused(tmp_path, name):
    load, ext = LOADERS[name]
    path = tmp_path / f"zero.{ext}"
    path.symlink_to("/dev/zero")
    refused_quickly(
        f"{re.escape(str(path))}: cannot read it: a character device",
        load,
        path,
    )


def test_link_to_a_regular_file_loads(tmp_path):
    rec = layca_optax.analysis.RotationRecording(("a",), np.ones((2, 1)))
    rec.save(tmp_path / "real.npz")
    (tmp_path / "link.npz").symlink_to(tmp_path / "real.npz")
    loaded = layca_optax.analysis.RotationRecording.load(tmp_path / "link.npz")
    np.testing.assert_array_equal(loaded.rates, rec.rates)


def test_recording_folder_is_a_value_error(tmp_path):
    refused_quickly(
        "cannot read it: a directory",
        layca_optax.analysis.RotationRecording.load,
        tmp_path,
    )
    with pytest.raises(FileNotFoundError):
        layca_optax.analysis.RotationRecording.load(tmp_path / "missing.npz")


def deflated(rows, cols=1, dtype="<f8"):
    """A small deflated .npz whose ``rates`` really are ``rows x cols``
    zeros (a zip bomb within the format: each byte what it declares)."""
    paths = io.BytesIO()
    np.save(paths, np.array([f"l{i}" for i in range(cols)]))
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": dtype, "fortran_order": False, "shape": (rows, cols)}
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("paths.npy", paths.getvalue())
        with zf.open("rates.npy", "w", force_zip64=True) as member:
            member.write(head.getvalue())
            chunk = bytes(2**20)
            left = rows * cols * np.dtype(dtype).itemsize
            while left:
                member.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
    return out.getvalue()


@pytest.mark.parametrize(
    "rows, dtype, loaded",
    [(2**25 + 1, "<f8", 268435464), (2**25 + 1, "<f4", 268435464)],
)
def test_deflated_recording_over_the_cap_is_refused(
    tmp_path, rows, dtype, loaded
):
    path = tmp_path / "bomb.npz"
    path.write_bytes(deflated(rows, dtype=dtype))
    assert path.stat().st_size < 2**20  # a deflated 256 MiB
    refused_quickly(
        rf"{re.escape(str(path))}: 'rates' declares \({rows}, 1\) "
        rf"float\d+ \({loaded} bytes as loaded\), more than the 268435456",
        layca_optax.analysis.RotationRecording.load,
        path,
    )


def test_recording_with_too_many_members_is_refused(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for i in range(2000):
            zf.writestr(f"m{i}.npy", b"")
    path = tmp_path / "many.npz"
    path.write_bytes(out.getvalue())
    refused_quickly(
        "a zip directory of 2000 entries",
        layca_optax.analysis.RotationRecording.load,
        path,
    )


def test_recording_file_over_the_cap_is_refused(tmp_path):
    path = tmp_path / "big.npz"
    with open(path, "wb") as f:  # sparse
        f.truncate(2**28 + 1)
    refused_quickly(
        f"{re.escape(str(path))}: 268435457 bytes, more than the "
        "268435456 bytes",
        layca_optax.analysis.RotationRecording.load,
        path,
    )


def test_depth_multipliers_refuses_sizes_no_model_has():
    with pytest.raises(
        ValueError,
        match=r"depth_multipliers\(num_layers=...\)` must be at most "
        r"1000000 .*got 1000000000",
    ):
        layca_optax.depth_multipliers(0.5, 10**9)
    assert len(layca_optax.depth_multipliers(0.5, 1000)) == 1000


# ------------------------------------------------ peak memory of the loaders

MEASURE = textwrap.dedent(
    """
    import sys
    from layca_optax import RotationHistory  # imported before the measure

    def status(field):  # in bytes; VmHWM (unlike ru_maxrss) is this exec's
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

    fmt, path = sys.argv[1], sys.argv[2]
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS, forgetting the imports' peak
    except OSError:
        pass  # then the imports' peak may hide some of the loader's
    before = status("VmRSS")
    history = getattr(RotationHistory, "load_" + fmt)(path)
    grown = status("VmHWM") - before
    print(len(history), len(history.keys), grown)
    """
)


def write_history(path, fmt, rows, cols, short):
    """A history file of ``rows`` records of ``cols`` keys: random floats
    (as ``save_*`` writes them) or ``0`` (the most values per byte)."""
    rng = np.random.default_rng(0)
    keys = [f"rotation/Dense_{i}/kernel" for i in range(cols)]
    with open(path, "w") as f:
        if fmt == "csv":
            f.write(",".join(["step", *keys]) + "\n")
            for r in range(rows):
                row = (
                    ["0"] * cols
                    if short
                    else map(repr, rng.random(cols).tolist())
                )
                f.write(f"{r},{','.join(row)}\n")
            return
        f.write('{"format": "layca_optax.RotationHistory", "records": [')
        for r in range(rows):
            values = [0] * cols if short else rng.random(cols).tolist()
            record = {"step": r, **dict(zip(keys, values, strict=True))}
            f.write(("," if r else "") + json.dumps(record))
        f.write("]}")


@pytest.mark.skipif(
    not os.path.exists("/proc/self/status"), reason="RSS read from /proc"
)
@pytest.mark.parametrize(
    "fmt, rows, cols, short",
    [("csv", 40000, 16, False), ("csv", 100000, 16, True)]
    + [("json", 25000, 16, False), ("json", 40000, 16, True)],
)
@pytest.mark.slow  # 14 s on 2 cores: out of `make test-fast`
def test_history_peak_memory_is_a_small_multiple(
    tmp_path, fmt, rows, cols, short
):
    path = tmp_path / f"history.{fmt}"
    write_history(path, fmt, rows, cols, short)
    size = path.stat().st_size
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, fmt, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    n, k, grown = map(int, out)
    assert (n, k) == (rows, cols)
    loaded = rows * (cols + 1) * 8  # the float64 values and int64 steps
    # CSV: read row by row into arrays grown by doubling: at most twice
    # what is loaded. JSON: the bytes and the decoded text (both the
    # file's size here), the records moved into arrays as parsed.
    bound = 2 * loaded if fmt == "csv" else 2 * size + 2 * loaded
    assert grown < bound + 8 * 2**20, (grown, size, loaded)


CSV_LIMITS = {
    # A row of more fields than keys a history may have: refused before
    # csv splits it into strings (each some 50 bytes).
    "wide.csv": ("step," + "0," * 2**17 + "0\n", "a row of more than 65537"),
    # The same spread over lines joined inside quotes.
    "quoted.csv": (
        'step,"a\n' + '",0,"\n' * 2**16 + '"\n',
        "a row of more than 65537",
    ),
    "long-line.csv": ("step," + "1" * (2**24 + 1), "a line longer than"),
}


@pytest.mark.parametrize("name", sorted(CSV_LIMITS))
def test_csv_rows_are_bounded_before_they_are_split(tmp_path, name):
    content, why = CSV_LIMITS[name]
    path = tmp_path / name
    path.write_text(content)
    refused_quickly(
        f"load_csv`: {re.escape(str(path))}: {why}",
        layca_optax.RotationHistory.load_csv,
        path,
    )


def test_json_records_are_checked_as_parsed(tmp_path):
    fmt = '{"format": "layca_optax.RotationHistory", '
    path = tmp_path / "h.json"
    for content, why in [
        (fmt + '"records": [{"step": 1, "a": 1, "a": 2}]}', "record 0: a key"),
        (fmt + '"records": [], "x": {"step": 1, "a": 1}}', "outside the"),
        (fmt + '"records": [{"step": 1, "a": true}]}', "'a' must be a real"),
        (fmt + '"records": [{"step": 1, "a": 1e999}]}', None),
    ]:
        path.write_text(content)
        if why is None:  # JSON's 1e999 is inf, as Python writes it
            history = layca_optax.RotationHistory.load_json(path)
            assert history.as_array("a").tolist() == [float("inf")]
            continue
        refused_quickly(
            f"load_json`: .*{why}", layca_optax.RotationHistory.load_json, path
        )


def test_append_refuses_more_keys_than_a_file_may_have():
    history = layca_optax.RotationHistory()
    with pytest.raises(ValueError, match=r"append.*65537 keys, more than"):
        history.append(0, {"a": np.zeros(2**16 + 1)})
    assert len(history) == 0


def test_loaded_history_appends_and_saves_again(tmp_path):
    history = layca_optax.RotationHistory()
    for step in range(20):  # past the first growth of the arrays
        history.append(step, {"a": step / 2, "b": -step})
    history.save_csv(tmp_path / "h.csv")
    loaded = layca_optax.RotationHistory.load_csv(tmp_path / "h.csv")
    loaded.append(20, {"b": -20.0, "a": 10.0})
    assert loaded.steps.tolist() == list(range(21))
    assert loaded.as_array("a").tolist() == [s / 2 for s in range(21)]
    loaded.save_json(tmp_path / "h.json")
    again = layca_optax.RotationHistory.load_json(tmp_path / "h.json")
    assert again.keys == ("a", "b") and len(again) == 21
    assert again.as_array("b").tolist() == [-s for s in range(21)]
