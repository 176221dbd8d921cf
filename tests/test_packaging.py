"""The distribution installs exactly one top-level name, `sdac`, and lists every package."""
import importlib
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_is_listed():
    cfg = _pyproject()
    pkg_dir = cfg["package-dir"]
    listed = set(cfg["packages"])
    found = set()
    for name, folder in pkg_dir.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            sub = ".".join((name, *rel.parts)) if rel.parts else name
            # a subfolder that is itself mapped elsewhere is not a child here
            if sub in pkg_dir and pkg_dir[sub] != str(Path(folder, *rel.parts)):
                continue
            found.add(sub)
    assert found == listed, f"pyproject packages differ: missing {found - listed}, stale {listed - found}"


def test_no_generic_top_level_names():
    for generic in ("isa", "runtime", "hw"):
        assert generic not in sys.modules
    for mapped in ("sdac.isa", "sdac.runtime", "sdac.hw"):
        importlib.import_module(mapped)
    for generic in ("isa", "runtime", "hw"):
        try:
            mod = importlib.import_module(generic)
        except ImportError:
            continue
        # importable only when pytest runs from the repo root; never from site-packages
        assert Path(mod.__file__).resolve().is_relative_to(ROOT), generic
