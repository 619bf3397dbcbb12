"""The RD plot: PSNR against bpp, one curve per codec, drawn from a `mixinr compare` results dict.

mixinr is drawn thick and black on top; classical codecs in colour, each legend entry carrying
mixinr's BD-rate against it: fixed quality solid, allocated (per-image quality within the group's
bytes, mixinr.compare.allocated_curve) dashed in the same colour. The bpp axis is logarithmic because header floors put 32x32 images
of some formats (JPEG, HEIC) at 4-9 bpp while others reach 0.5 bpp.
"""

from __future__ import annotations

import io
from pathlib import Path

from mixinr.images import atomic_write
from mixinr.progress import plural

_STYLE = {  # name -> (colour, marker); stable so plots of different runs compare by eye
    "jpeg": ("tab:red", "s"),
    "webp": ("tab:green", "^"),
    "avif": ("tab:purple", "D"),
    "heic": ("tab:orange", "v"),
    "jpegxl": ("tab:blue", "P"),
    "jpeg2000": ("tab:brown", "X"),
}
_METRIC_LABEL = {"psnr-rgb": "PSNR (RGB) [dB]", "ms-ssim": "MS-SSIM", "ssim": "SSIM (single scale)"}


def _title(results: dict) -> str:
    imgs = results.get("images", [])
    sizes = sorted({(im["width"], im["height"]) for im in imgs})
    size = f"{sizes[0][0]}x{sizes[0][1]}" if len(sizes) == 1 else "mixed sizes"
    return f"{plural(len(imgs), 'image')}, {size}"


def _bd_label(results: dict, name: str, metric: str) -> str:
    for b in results.get("bd", []):
        if b["anchor"] == name and b["metric"] == metric and b.get("bd-rate") is not None:
            thin = any(n.startswith("BD-rate over only") for n in b.get("notes", []))
            return f"  (mixinr BD-rate {b['bd-rate']:+.0f}%{'*' if thin else ''})"
    return ""


def render(results: dict, metric: str = "psnr-rgb"):
    """A matplotlib Figure of `metric` against bpp (Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator

    fig = Figure(figsize=(8.4, 4.6), dpi=100)
    ax = fig.add_subplot()
    extra = iter(["tab:gray", "tab:pink", "tab:olive", "tab:cyan"])
    colours: dict[str, tuple[str, str]] = {}  # codecs without a style: one colour for both their curves
    for c in results["codecs"]:
        pts = [(b, q) for b, q in zip(c["results"]["bpp"], c["results"][metric]) if q is not None]
        if not pts:
            continue
        pts.sort()
        xs, ys = zip(*pts)
        if c["name"] == "mixinr":
            ax.plot(xs, ys, color="black", marker="o", markersize=7, linewidth=2.6, zorder=10,
                    label="mixinr")
        elif c.get("allocated") not in (None, metric):
            continue  # an allocation for the other metric: not this plot's curve
        else:
            base = c["name"].split("-allocated")[0]
            colour, marker = _STYLE.get(base) or colours.setdefault(base, (next(extra, "tab:gray"), "o"))
            allocated = c.get("allocated") is not None
            label = (c["description"].split(" (")[0] + (", allocated" if allocated else "")
                     + _bd_label(results, c["name"], metric))
            ax.plot(xs, ys, color=colour, marker=marker, markersize=4.5, linewidth=1.4,
                    linestyle="--" if allocated else "-", markerfacecolor="none" if allocated else colour,
                    label=label)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel("bits per pixel (real file bytes, log scale)")
    ax.set_ylabel(_METRIC_LABEL.get(metric, metric))
    ax.set_title(f"Rate-distortion: {_title(results)}")
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    # Outside the axes: a legend must never hide a curve.
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8.5, frameon=False)
    if any(t.get_text().endswith("*)") for t in ax.get_legend().get_texts()):
        fig.text(0.01, 0.01, "* BD-rate over less than 75% of the joint quality range",
                 ha="left", va="bottom", fontsize=7.5, color="0.35")
    fig.tight_layout()
    return fig


def plot_rd(results: dict, path, metric: str = "psnr-rgb") -> list[Path]:
    """Write the plot as PNG at `path` and as SVG beside it (same stem); returns both paths."""
    path = Path(path)
    png = path if path.suffix.lower() == ".png" else path.with_suffix(".png")
    svg = png.with_suffix(".svg")
    fig = render(results, metric)
    for target, fmt in ((png, "png"), (svg, "svg")):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
        atomic_write(target, buf.getvalue())
    return [png, svg]
