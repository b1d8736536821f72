"""The PNG plots of results.md: accuracy against latency saving, and PF time per method."""

from __future__ import annotations

from pathlib import Path

from edgeprune.deploy.outputs import atomic_path

from .markdown import TABLE_METHODS
from .summary import agg, model_of, models_in, select


def _shifted(result, name: str) -> list[dict]:
    return [r for r in result["rows"] if r["corruption"] != "clean" and model_of(r) == name]


def _accuracy_vs_ls(ax, result, name: str) -> None:
    rows = _shifted(result, name)
    for meth in TABLE_METHODS["main"] + ["TT-MPD+stream_bn", "train-time PF"]:
        pts = []
        for k in result["config"]["ks"]:
            sel = select(rows, method=meth, k=k)
            if sel:
                pts.append((agg([r["latency_saving"] for r in sel])[0], agg([r["accuracy"] for r in sel])[0], k))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=meth)
            for x, y, k in pts:
                ax.annotate(f"k={k}", (x, y), fontsize=7)
    src = agg([r["accuracy"] for r in select(rows, method="source")])[0]
    if src is not None:
        ax.axhline(src, color="grey", ls="--", label="source")
    ax.set_xlabel("latency saving (%) ONNX Runtime CPU")
    ax.set_ylabel("accuracy (%) on corrupted stream")
    ax.legend(fontsize=7)
    ax.set_title(f"{name}: accuracy vs latency saving\n(mean over seeds and corruptions)", fontsize=9)


def _pf_time(ax, result, name: str) -> None:
    rows, ks, methods = _shifted(result, name), result["config"]["ks"], TABLE_METHODS["main"]
    width = 0.8 / max(len(ks), 1)
    for j, k in enumerate(ks):
        vals = [(agg([r["pf_s"] for r in select(rows, method=m, k=k)])[0] or 0.0) for m in methods]
        ax.bar([i + j * width for i in range(len(vals))], vals, width, label=f"k={k}")
    ax.set_xticks([i + width * (len(ks) - 1) / 2 for i in range(len(methods))])
    ax.set_xticklabels(methods, rotation=20, fontsize=7)
    ax.set_ylabel("PF time (s), log scale")
    ax.set_yscale("log")
    ax.set_title(f"{name}: pruning + fine-tuning time", fontsize=9)
    ax.legend()


def render_plots(result, out: Path) -> list[str]:
    """One panel per model in each plot; written atomically into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = models_in(result)
    if not names:
        return []
    made = []
    for filename, draw, height in (("accuracy_vs_ls.png", _accuracy_vs_ls, 5), ("pf_time.png", _pf_time, 4)):
        fig, axes = plt.subplots(1, len(names), figsize=(6.5 * len(names), height), squeeze=False)
        for ax, name in zip(axes[0], names):
            draw(ax, result, name)
        fig.tight_layout()
        with atomic_path(Path(out) / filename) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        made.append(filename)
    return made
