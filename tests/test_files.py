"""Files users hand to sdac (JSON tables and configs, .npz arrays): one error naming the file, whatever they hold."""
import json
import zipfile

import numpy as np
import pytest

from sdac.cli import main
from sdac.errors import SdacError
from sdac.files import read_json_object, read_npz


def test_json_object_or_one_clear_error(tmp_path):
    good = tmp_path / "t.json"
    good.write_text(json.dumps({"a": 1}))
    assert read_json_object(good, "scale table") == {"a": 1}
    cases = {"bin.json": (b"\x89PNG\xff\x00", "not a readable scale table"),
             "bad.json": (b"{\"a\": ", "not a readable scale table"),
             "list.json": (b"[1, 2]", "a JSON object was expected, the file holds a list"),
             "deep.json": (b"[" * 100000, "")}
    for name, (blob, words) in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(SdacError, match=f"{name}: .*{words}"):
            read_json_object(tmp_path / name, "scale table")
    with pytest.raises(SdacError, match="no such file"):
        read_json_object(tmp_path / "missing.json", "scale table")
    with pytest.raises(SdacError, match="is a directory"):
        read_json_object(tmp_path, "scale table")


def test_npz_or_one_clear_error(tmp_path):
    np.savez(tmp_path / "ok.npz", x=np.arange(3), y=np.ones((2, 2)))
    got = read_npz(tmp_path / "ok.npz")
    assert set(got) == {"x", "y"} and np.array_equal(got["x"], np.arange(3))
    np.save(tmp_path / "one.npy", np.zeros(3))
    (tmp_path / "text.npz").write_text("x = 1\n")
    with zipfile.ZipFile(tmp_path / "zip.npz", "w") as z:     # a zip, but not of arrays
        z.writestr("readme.txt", "hello")
    for name, words in (("one.npy", "a single array"), ("text.npz", "not an .npz archive"),
                        ("zip.npz", "not a readable .npz archive"), ("missing.npz", "no such file")):
        with pytest.raises(SdacError, match=f"{name}: {words}"):
            read_npz(tmp_path / name)


def test_cli_reports_unreadable_files_in_one_line(tmp_path, capsys):
    bad = tmp_path / "scales.json"
    bad.write_bytes(b"\xff\xfe\x00binary")
    from sdac.diffusion import DIGITS_ONNX
    assert main(["compile", str(DIGITS_ONNX), "-o", str(tmp_path / "m.sdab"), "--step-scales", str(bad)]) == 2
    err = capsys.readouterr().err       # (after the progress line naming the model)
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("sdac compile: error: ") and \
        "scales.json: not a readable scale table" in last
