"""Reports of a cycle-model estimate: text tables, a self-contained HTML page, matplotlib PNGs.

Everything here reads a ``Report`` (sdac/perf/model.py); nothing re-times.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from ..errors import SdacError
from .model import Report
from .timing import QUEUES

# SDA (FPL 2024): SD-v1.5 UNet, W4A8, ZCU102, 20x10 PEs @ 250 MHz.
SDA_PAPER = {"iters_per_s": 0.389, "gops": 332.5, "gop_per_iter": 854.8, "array": "20x10", "clock_mhz": 250.0,
             "power_w": 9.98}
SD15_GMAC = 402.0        # SD-v1.5 UNet, batch 1, 64x64 latent (counted from diffusers' model)
QUEUE_NAMES = {"ld": "load DMA", "cmp": "array", "sfu": "SFU", "st": "store DMA"}
SPLIT_COLORS = {"array at peak": "#2b8a3e", "array overhead": "#8ce99a", "load": "#1c7ed6", "sfu": "#f08c00",
                "store": "#ae3ec9", "other": "#adb5bd"}
PALETTE = ["#4263eb", "#e8590c", "#2f9e44", "#c2255c", "#1098ad", "#f59f00", "#7048e8", "#66a80f", "#d6336c",
           "#0b7285"]


def _n(v: int) -> str:
    return f"{v:,}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _table(rows: list[list[str]], header: list[str], align: str | None = None) -> str:
    w = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    align = align or "l" + "r" * (len(header) - 1)
    fmt = lambda r: "  ".join(str(c).ljust(w[i]) if align[i] == "l" else str(c).rjust(w[i])  # noqa: E731
                              for i, c in enumerate(r))
    body = [fmt(r).rstrip() for r in rows]
    if not any(header):
        return "\n".join(body)
    return "\n".join([fmt(header).rstrip(), "  ".join("-" * x for x in w), *body])


# ---------------------------------------------------------------------- text

def summary_rows(r: Report) -> list[list[str]]:
    t = r.timing
    u = r.utilisation()
    return [
        ["machine", f"{t.array_rows}x{t.array_cols} PEs, L={t.lanes}, {t.clock_mhz:g} MHz, "
                    f"peak {t.peak_macs_per_cycle} MAC/cycle ({2 * t.peak_macs_per_cycle * t.clock_mhz / 1e3:.0f} "
                    f"GOP/s), DMA {t.dma_bytes_per_cycle} B/cycle per direction"],
        ["instructions", _n(r.instructions)],
        ["total", f"{_n(r.total_cycles)} cycles = {r.seconds * 1e3:.3f} ms"],
        ["UNet iterations/s", f"{r.iters_per_s:.4g}"],
        ["achieved", f"{r.gops:.1f} GOP/s ({r.macs / 1e9:.3f} GMAC, {r.pass_macs / 1e9:.3f} GMAC x passes)"],
        ["roofline bound", f"{_n(r.roofline_cycles)} cycles = {r.roofline_iters_per_s:.4g} iter/s ({r.bound_by} bound; "
                           f"compute {_n(r.compute_bound)}, memory {_n(r.memory_bound)} cycles)"],
        ["fraction of roofline", _pct(r.roofline_fraction)],
        ["DRAM", f"{r.dram_read / 1e6:.2f} MB read, {r.dram_written / 1e6:.2f} MB written"],
        ["SFU", f"{r.sfu_elems / 1e6:.2f} M elements"],
        ["utilisation", ", ".join(f"{k} {_pct(v)}" for k, v in u.items())],
        ["busy cycles", ", ".join(f"{QUEUE_NAMES[q]} {_n(r.busy[q])}" for q in QUEUES)],
        ["where the time goes", ", ".join(f"{k} {_pct(v / max(1, r.total_cycles))}" for k, v in r.time_split.items())],
    ]


def kernel_rows(r: Report, top: int = 0) -> list[list[str]]:
    ks = sorted(r.kernels, key=lambda k: -k.attributed)
    if top:
        ks = ks[:top]
    peak = r.timing.peak_macs_per_cycle
    rows = []
    for k in ks:
        util = k.pass_macs / (peak * k.attributed) if k.attributed else 0.0
        rows.append([k.name, k.kind, _n(k.attributed), _pct(k.attributed / max(1, r.total_cycles)),
                     _pct(min(util, 1.0)) if k.pass_macs else "-", f"{k.macs / 1e6:.1f}",
                     f"{k.dram_bytes / 1e6:.2f}", *(_n(k.busy[q]) for q in QUEUES)])
    return rows


def kind_rows(r: Report) -> list[list[str]]:
    """Per kernel kind: cycles added, share, array utilisation, and the cycles beyond the array at peak."""
    peak = r.timing.peak_macs_per_cycle
    agg: dict[str, list[int]] = {}
    for k in r.kernels:
        a = agg.setdefault(k.kind or "?", [0, 0, 0, 0])
        a[0] += 1
        a[1] += k.attributed
        a[2] += k.pass_macs
        a[3] += k.dram_bytes
    rows = []
    for kind, (n, cyc, pm, nb) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        ideal = min(cyc, -(-pm // peak))
        rows.append([kind, str(n), _n(cyc), _pct(cyc / max(1, r.total_cycles)), _pct(pm / (peak * cyc)) if cyc and pm
                     else "-", _n(ideal), _n(cyc - ideal), _pct((cyc - ideal) / max(1, r.total_cycles)),
                     f"{nb / 1e6:.1f}"])
    return rows


KIND_HEADER = ["kind", "kernels", "cycles", "share", "array util", "at peak", "beyond peak", "of total", "DRAM MB"]


KERNEL_HEADER = ["kernel", "kind", "cycles", "share", "array util", "MMAC", "DRAM MB", "ld busy", "cmp busy",
                 "sfu busy", "st busy"]


def sda_rows(r: Report) -> list[list[str]]:
    p = SDA_PAPER
    t = r.timing
    gop = 2 * r.macs / 1e9
    rows = [["array", f"{t.array_rows}x{t.array_cols} @ {t.clock_mhz:g} MHz", f"{p['array']} @ {p['clock_mhz']:g} MHz",
             ""],
            ["GOP per iteration", f"{gop:.1f}", f"{p['gop_per_iter']}", f"{gop / p['gop_per_iter']:.2f}x"],
            ["UNet iterations/s", f"{r.iters_per_s:.4g}", f"{p['iters_per_s']}", f"{r.iters_per_s / p['iters_per_s']:.2f}x"],
            ["GOP/s", f"{r.gops:.1f}", f"{p['gops']}", f"{r.gops / p['gops']:.2f}x"],
            ["roofline iterations/s", f"{r.roofline_iters_per_s:.4g}", "-", ""],
            ["fraction of roofline", _pct(r.roofline_fraction), f"~78% (of ~0.50 iter/s)", ""]]
    return rows


def sda_note(r: Report) -> str:
    gmac = r.macs / 1e9
    if abs(gmac - SD15_GMAC) / SD15_GMAC > 0.15:
        return (f"note: this program does {gmac:.3g} GMAC per iteration, SD-v1.5 does about {SD15_GMAC:.0f}; "
                "the comparison is only meaningful for an SD-v1.5 bundle. The paper counts W4A8 OPs differently "
                "(854.8 GOP per iteration).")
    return "note: the paper counts 854.8 GOP per W4A8 iteration; sdac counts 2 x MACs (about 804 GOP)."


def text_report(r: Report, name: str = "", top: int = 25, compare_sda: bool = False) -> str:
    out = [f"{name}: cycle model" if name else "cycle model", _table(summary_rows(r), ["", ""], "ll")]
    if r.kernels:
        out += ["", "per kernel kind", _table(kind_rows(r), KIND_HEADER, "l" + "r" * 8)]
        shown = min(top, len(r.kernels)) if top else len(r.kernels)
        out += ["", f"per kernel ({shown} of {len(r.kernels)}, by cycles added to the total)",
                _table(kernel_rows(r, top), KERNEL_HEADER, "ll" + "r" * 9)]
    if compare_sda:
        out += ["", "against the SDA paper (SD-v1.5, W4A8, ZCU102)",
                _table(sda_rows(r), ["", "sdac (model)", "SDA paper", "ratio"], "lrrr"), sda_note(r)]
    return "\n".join(out)


# ---------------------------------------------------------------------- timeline data

def busy_bins(r: Report, queue: str, nbins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per bin of the total time: busy fraction of the queue's unit and an instruction running in the bin (-1)."""
    s, w = r.schedule, r.work
    T = max(1, r.total_cycles)
    m = w.queue == QUEUES.index(queue)
    idx = np.nonzero(m)[0]
    starts, ends = s.start[idx], s.end[idx]
    o = np.argsort(starts, kind="stable")
    starts, ends, idx = starts[o], ends[o], idx[o]
    edges = np.linspace(0, T, nbins + 1)
    if idx.size == 0:
        return np.zeros(nbins), np.full(nbins, -1)
    prefix = np.concatenate([[0], np.cumsum(ends - starts)])
    k = np.searchsorted(starts, edges, "right")          # intervals started by each edge
    last_end = np.where(k > 0, ends[np.maximum(k - 1, 0)], 0)
    B = prefix[k] - np.maximum(0, last_end - edges)
    frac = np.diff(B) / np.diff(edges)
    j = np.searchsorted(starts, edges[1:], "left") - 1     # the last instruction starting inside or before the bin
    inside = (j >= 0) & (ends[np.maximum(j, 0)] > edges[:-1])
    who = np.where(inside, idx[np.maximum(j, 0)], -1)
    return np.clip(frac, 0, 1), who


def kernel_of(r: Report) -> np.ndarray:
    """Kernel number of every instruction (-1 outside every kernel)."""
    n = len(r.work.latency)
    out = np.full(n, -1, dtype=np.int64)
    for j, k in enumerate(r.kernels):
        out[k.first:k.last + 1] = j
    return out


# ---------------------------------------------------------------------- HTML

def _svg_timeline(r: Report, width: int = 1000) -> str:
    rowh, top, left = 26, 34, 80
    kof = kernel_of(r)
    T = max(1, r.total_cycles)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 10}" height="{top + 5 * rowh + 30}" '
             f'font-family="sans-serif" font-size="12">']
    # kernel band: attributed spans
    prev = 0
    for j, k in enumerate(r.kernels):
        x0, x1 = left + width * prev / T, left + width * (prev + k.attributed) / T
        prev += k.attributed
        if x1 - x0 <= 0:
            continue
        parts.append(f'<rect x="{x0:.2f}" y="{top - 24}" width="{x1 - x0:.2f}" height="16" '
                     f'fill="{PALETTE[j % len(PALETTE)]}"><title>{html.escape(k.name)} ({k.kind}): '
                     f'{_n(k.attributed)} cycles</title></rect>')
    parts.append(f'<text x="4" y="{top - 12}">kernels</text>')
    for row, q in enumerate(QUEUES):
        y = top + row * rowh
        frac, who = busy_bins(r, q, width)
        parts.append(f'<text x="4" y="{y + 17}">{QUEUE_NAMES[q]}</text>')
        parts.append(f'<rect x="{left}" y="{y + 2}" width="{width}" height="{rowh - 4}" fill="#f1f3f5"/>')
        for x in np.nonzero(frac > 0)[0]:
            kj = kof[who[x]] if who[x] >= 0 else -1
            col = PALETTE[kj % len(PALETTE)] if kj >= 0 else "#495057"
            parts.append(f'<rect x="{left + x}" y="{y + 2}" width="1" height="{rowh - 4}" fill="{col}" '
                         f'fill-opacity="{max(0.15, float(frac[x])):.2f}"/>')
    y = top + 4 * rowh + 14
    for i in range(6):
        x = left + width * i / 5
        parts.append(f'<text x="{x:.0f}" y="{y}" text-anchor="middle">{T * i / 5 / r.clock_hz * 1e3:.3g} ms</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _svg_split(r: Report, width: int = 1000) -> str:
    T = max(1, r.total_cycles)
    x = 0.0
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 10}" height="50" font-family="sans-serif" '
             f'font-size="12">']
    for k, v in r.time_split.items():
        w = width * v / T
        parts.append(f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="22" fill="{SPLIT_COLORS[k]}">'
                     f'<title>{k}: {_n(v)} cycles ({_pct(v / T)})</title></rect>')
        x += w
    x = 0
    for k in r.time_split:
        parts.append(f'<rect x="{x}" y="30" width="12" height="12" fill="{SPLIT_COLORS[k]}"/>'
                     f'<text x="{x + 16}" y="41">{k}</text>')
        x += 16 + 8 * len(k) + 20
    parts.append("</svg>")
    return "\n".join(parts)


def _svg_roofline(r: Report, size: tuple[int, int] = (520, 340)) -> str:
    """Log-log roofline: GOP/s against operational intensity (OP per DRAM byte), kernels as dots."""
    W, H = size
    pad = 50
    t = r.timing
    peak = 2 * t.peak_macs_per_cycle * t.clock_mhz / 1e3          # GOP/s
    bw = t.dma_bytes_per_cycle * t.clock_mhz / 1e3                # GB/s per direction
    pts = [(2 * k.macs / max(1, k.dram_bytes), 2 * k.macs / (k.attributed / r.clock_hz) / 1e9, k.name)
           for k in r.kernels if k.macs and k.attributed]
    total_i = 2 * r.macs / max(1, r.dram_read + r.dram_written)
    pts_all = [(total_i, r.gops, "whole program")]
    xs = [p[0] for p in pts + pts_all] + [peak / bw]
    x_lo, x_hi = 10 ** math.floor(math.log10(max(1e-2, min(xs)) / 2)), 10 ** math.ceil(math.log10(max(xs) * 2))
    y_hi = 10 ** math.ceil(math.log10(peak * 1.5))
    y_lo = y_hi / 1e4
    X = lambda v: pad + (W - 2 * pad) * (math.log10(v) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo))  # noqa
    Y = lambda v: H - pad - (H - 2 * pad) * (math.log10(max(v, y_lo)) - math.log10(y_lo)) / 4  # noqa: E731
    ridge = peak / bw
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
             f'font-size="11">',
             f'<rect x="{pad}" y="{pad}" width="{W - 2 * pad}" height="{H - 2 * pad}" fill="none" stroke="#868e96"/>',
             f'<polyline fill="none" stroke="#c92a2a" stroke-width="2" points="{X(x_lo):.1f},{Y(bw * x_lo):.1f} '
             f'{X(ridge):.1f},{Y(peak):.1f} {X(x_hi):.1f},{Y(peak):.1f}"/>',
             f'<text x="{X(x_hi) - 4:.0f}" y="{Y(peak) - 4:.0f}" text-anchor="end">peak {peak:.0f} GOP/s</text>',
             f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">OP per DRAM byte</text>',
             f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">GOP/s</text>']
    for v in (x_lo, x_hi):
        parts.append(f'<text x="{X(v):.0f}" y="{H - pad + 14}" text-anchor="middle">{v:g}</text>')
    for v in (y_lo, y_hi):
        parts.append(f'<text x="{pad - 4}" y="{Y(v) + 4:.0f}" text-anchor="end">{v:g}</text>')
    for i, g, name in pts:
        parts.append(f'<circle cx="{X(i):.1f}" cy="{Y(g):.1f}" r="3" fill="#4263eb" fill-opacity="0.6">'
                     f'<title>{html.escape(name)}: {g:.1f} GOP/s at {i:.1f} OP/B</title></circle>')
    for i, g, name in pts_all:
        parts.append(f'<circle cx="{X(i):.1f}" cy="{Y(g):.1f}" r="6" fill="#2b8a3e"><title>{name}: {g:.1f} GOP/s'
                     f'</title></circle><text x="{X(i) + 8:.0f}" y="{Y(g) + 4:.0f}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _html_table(rows, header=None) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header) if header else ""
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table>{'<tr>' + h + '</tr>' if h else ''}{body}</table>"


def html_report(r: Report, name: str = "", compare_sda: bool = False) -> str:
    if r.schedule is None:
        raise SdacError("html report: the estimate was made without keep_schedule")
    title = f"sdac cycle model: {name}" if name else "sdac cycle model"
    sections = [f"<h1>{html.escape(title)}</h1>", "<h2>Summary</h2>", _html_table(summary_rows(r)),
                "<h2>Where the time goes</h2>", _svg_split(r),
                "<h2>Queue timeline</h2><p>Colour: the kernel of the running instruction; opacity: busy fraction "
                "of the unit in that pixel. Top band: cycles each kernel adds to the total.</p>", _svg_timeline(r),
                "<h2>Roofline</h2>", _svg_roofline(r)]
    if compare_sda:
        sections += ["<h2>Against the SDA paper</h2>",
                     _html_table(sda_rows(r), ["", "sdac (model)", "SDA paper", "ratio"]),
                     f"<p>{html.escape(sda_note(r))}</p>"]
    if r.kernels:
        sections += ["<h2>Per kernel kind</h2>", _html_table(kind_rows(r), KIND_HEADER)]
        sections += [f"<h2>Per kernel ({len(r.kernels)})</h2>", _html_table(kernel_rows(r, 0), KERNEL_HEADER)]
    sections += ["<h2>Timing parameters</h2>", _html_table([[k, str(v)] for k, v in r.timing.to_dict().items()])]
    style = ("body{font-family:sans-serif;margin:20px;max-width:1100px}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #dee2e6;padding:2px 6px;text-align:left}"
             "th{background:#f1f3f5}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(sections)}</body></html>\n")


# ---------------------------------------------------------------------- PNG (matplotlib)

def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SdacError("--plots needs matplotlib (pip install 'sdac[torch]' or pip install matplotlib)") from None
    return plt


def write_plots(r: Report, out_dir: str | Path, name: str = "") -> list[Path]:
    """timeline.png, roofline.png, kernels.png in out_dir; returns the paths."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    ms = 1e3 / r.clock_hz
    # timeline
    nb = 1200
    fig, ax = plt.subplots(figsize=(12, 3.2))
    kof = kernel_of(r)
    edges = np.linspace(0, r.total_cycles * ms, nb + 1)
    from matplotlib.colors import to_rgb
    img = np.ones((4, nb, 3))
    for row, q in enumerate(QUEUES):          # one image row per queue: colour = kernel, fading = busy fraction
        frac, who = busy_bins(r, q, nb)
        for x in np.nonzero(frac > 0)[0]:
            kj = kof[who[x]] if who[x] >= 0 else -1
            c = np.array(to_rgb(PALETTE[kj % len(PALETTE)] if kj >= 0 else "#495057"))
            img[row, x] = 1 - max(0.15, frac[x]) * (1 - c)
    ax.imshow(img, aspect="auto", interpolation="nearest", extent=(0, edges[-1], 3.5, -0.5))
    ax.set_yticks(range(4), [QUEUE_NAMES[q] for q in QUEUES])
    ax.set_xlabel("ms")
    ax.set_title(f"queue timeline {name} ({r.total_cycles:,} cycles, {r.iters_per_s:.3g} iter/s)")
    fig.tight_layout()
    paths.append(out / "timeline.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # roofline
    t = r.timing
    peak = 2 * t.peak_macs_per_cycle * t.clock_mhz / 1e3
    bw = t.dma_bytes_per_cycle * t.clock_mhz / 1e3
    fig, ax = plt.subplots(figsize=(6, 4.2))
    xs = np.logspace(-1, 4, 200)
    ax.loglog(xs, np.minimum(peak, bw * xs), color="#c92a2a", label=f"roof: {peak:.0f} GOP/s, {bw:.0f} GB/s")
    ks = [k for k in r.kernels if k.macs and k.attributed and k.dram_bytes]
    if ks:
        ax.scatter([2 * k.macs / k.dram_bytes for k in ks], [2 * k.macs / (k.attributed / r.clock_hz) / 1e9 for k in ks],
                   s=10, alpha=0.6, label="kernels")
    if r.macs:
        ax.scatter([2 * r.macs / max(1, r.dram_read + r.dram_written)], [r.gops], s=60, color="#2b8a3e",
                   label=f"program: {r.gops:.0f} GOP/s")
    ax.set_xlabel("OP per DRAM byte")
    ax.set_ylabel("GOP/s")
    ax.set_title("roofline")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "roofline.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    # per-kernel time
    ks = sorted(r.kernels, key=lambda k: -k.attributed)[:30]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.25 * len(ks) + 1)))
    y = np.arange(len(ks))[::-1]
    peak_c = t.peak_macs_per_cycle
    ideal = [min(k.attributed, k.pass_macs / peak_c) * ms for k in ks]
    ax.barh(y, [k.attributed * ms for k in ks], color="#adb5bd", label="time added")
    ax.barh(y, ideal, color="#2b8a3e", label="array at peak")
    ax.set_yticks(y, [k.name for k in ks], fontsize=7)
    ax.set_xlabel("ms")
    ax.set_title("per-kernel time (top 30)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "kernels.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
