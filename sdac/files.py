"""The small files users hand to sdac: JSON tables and configs, .npz arrays. Anything unreadable is one
error naming the file (SdacError), never a traceback: a binary file given as JSON, a JSON list where an
object belongs, a .npy or a text file given as .npz."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .errors import SdacError


def read_json_object(path: str | Path, what: str) -> dict:
    """The JSON object in ``path``; ``what`` names the file's role in messages ("scale table", ...)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SdacError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise SdacError(f"{p}: is a directory, not a {what}") from None
    except (OSError, ValueError) as e:      # (JSONDecodeError and UnicodeDecodeError are ValueErrors)
        raise SdacError(f"{p}: not a readable {what} ({type(e).__name__}: {e})") from None
    except RecursionError:
        raise SdacError(f"{p}: not a readable {what} (JSON nested too deeply)") from None
    if not isinstance(doc, dict):
        raise SdacError(f"{p}: not a {what}: a JSON object was expected, the file holds a {type(doc).__name__}")
    return doc


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz archive, by name (no pickled objects)."""
    p = Path(path)
    if not p.exists():
        raise SdacError(f"{p}: no such file")
    try:
        with open(p, "rb") as f:
            head = f.read(6)
    except OSError as e:
        raise SdacError(f"{p}: cannot read ({e.strerror})") from None
    if head[:4] != b"PK\x03\x04" and head != b"\x93NUMPY":     # (numpy would try it as a pickle)
        raise SdacError(f"{p}: not an .npz archive of named arrays (np.savez)")
    try:
        z = np.load(p, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise SdacError(f"{p}: not a readable .npz archive ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise SdacError(f"{p}: a single array (.npy), not an .npz archive of named arrays (np.savez)")
    try:
        with z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise SdacError(f"{p}: not a readable .npz archive ({e})") from None
    other = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]     # (a zip of other files)
    if other:
        raise SdacError(f"{p}: not a readable .npz archive (member {other[0]!r} is not a .npy array)")
    return arrays
