"""benchmarks.decode's curves, drawn from the results JSON's rows."""

from __future__ import annotations

from benchmarks import common


def plot_curves(data: dict, args) -> list[str]:
    """decode_batch.png (tokens/s vs batch: AR, chain, tree, T = 0) and decode_k.png (tokens/s vs K, chain SD,
    batch 1, T = 0, with AR and tree as references), from the rows this run (or the JSON) holds."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {row["name"]: row for row in data.get("decode", [])}
    paths = []
    series = {}
    for name, row in rows.items():
        if row["temperature"] == 0 and not name.startswith("draft"):
            label = {"ar": "AR", "tree": "tree SD"}.get(row["mode"]) or f"chain SD, K = {row.get('draft_len')}"
            series.setdefault(label, {})[row["batch"]] = row["tokens_per_s"]
    curves = {label: points for label, points in series.items() if len(points) > 1}
    if curves:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, points in sorted(curves.items()):
            xs = sorted(points)
            ax.plot(xs, [points[b] for b in xs], "o-", label=label)
        ax.set(xscale="log", yscale="log", xlabel="batch", ylabel="tokens/s (all sequences)",
               title=f"greedy decoding, {data.get('device_kind', '')}")
        ax.set_xticks(sorted({b for points in curves.values() for b in points}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_xaxis().set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend()
        paths.append(common.result_path(args, "decode_batch", "png"))
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
        plt.close(fig)
    ks = {row["draft_len"]: row["tokens_per_s"] for name, row in rows.items()
          if row["mode"] == "chain" and row["batch"] == 1 and row["temperature"] == 0}
    if ks:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        xs = sorted(ks)
        ax.plot(xs, [ks[k] for k in xs], "o-", label="chain SD")
        for name, style, label in (("ar_T0_b1", "--", "AR"), ("tree_T0_b1", ":", "tree SD")):
            if name in rows:
                ax.axhline(rows[name]["tokens_per_s"], ls=style, color="gray" if label == "AR" else "C2", label=label)
        ax.set(xlabel="draft length K", ylabel="tokens/s", title="batch 1, T = 0", xticks=xs)
        ax.legend()
        paths.append(common.result_path(args, "decode_k", "png"))
        fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
        plt.close(fig)
    return paths
