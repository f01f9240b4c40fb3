"""A Pareto plot rendered from fabricated records, checked for its content."""

import numpy as np
from PIL import Image

from mgkit.report.analysis import Analysis
from mgkit.report.plots import BASELINE_GID, pareto_figure, save_plot
from mgkit.report.records import Source, to_points

from fabricate import main_records


def test_epg_plot_content(tmp_path):
    points, _ = to_points(Source("mem.json", r) for r in main_records())
    fig = pareto_figure(Analysis(points), "main", "synthetic", "epg")
    axes = {ax.get_title(): ax for ax in fig.axes}
    assert set(axes) == {"resnet18 · ixg · input", "bcos-resnet18 · bcos · input",
                         "resnet18 · ixg · final", "bcos-resnet18 · bcos · final"}
    ax = axes["bcos-resnet18 · bcos · input"]
    fronts = {line.get_gid(): line for line in ax.get_lines() if (line.get_gid() or "").startswith("front:")}
    assert sorted(fronts) == ["front:energy", "front:l1", "front:ppce"]
    # Energy's front: all three candidates, in % and by increasing F1.
    assert list(fronts["front:energy"].get_xdata()) == [70.0, 77.0, 79.5]
    assert list(fronts["front:energy"].get_ydata()) == [80.0, 75.0, 70.0]
    assert fronts["front:energy"].get_color() == "#d62728" and fronts["front:energy"].get_marker() == "o"
    assert fronts["front:l1"].get_marker() == "^"
    base = [c for c in ax.collections if c.get_gid() == BASELINE_GID]
    assert len(base) == 1 and base[0].get_offsets().tolist() == [[80.0, 40.0]]
    shaded = sorted(p.get_gid() for p in ax.patches)
    assert shaded == ["dominated", "dominating"]
    assert ax.get_xlabel() == "F1 (%)" and ax.get_ylabel() == "EPG (%)"
    assert any(t.get_text() == "not measured" for t in axes["resnet18 · ixg · input"].texts)

    paths = save_plot(fig, tmp_path / "pareto-epg")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 10_000 for p in paths)
    img = np.asarray(Image.open(paths[0]).convert("RGB")).astype(int)
    red = (img[..., 0] > 180) & (img[..., 1] < 80) & (img[..., 2] < 80)
    green = (img[..., 1] > 120) & (img[..., 0] < 90) & (img[..., 2] < 90)
    assert red.sum() > 200 and green.sum() > 50  # Energy's curve and L1's triangles were drawn


def test_condition_sweep_plot_has_one_curve_per_condition():
    from fabricate import other_records

    points, _ = to_points(Source("mem.json", r) for r in main_records() + other_records())
    fig = pareto_figure(Analysis(points), "annotations", "synthetic", "epg")
    (ax,) = fig.axes
    lines = {line.get_gid(): line for line in ax.get_lines() if (line.get_gid() or "").startswith("front:")}
    assert sorted(lines) == ["front:energy:0.01", "front:energy:0.1", "front:energy:1.0"]
    assert list(lines["front:energy:0.01"].get_ydata()) == [60.0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["Energy, 1 % boxes", "Energy, 10 % boxes", "Energy, 100 % boxes", "baseline"]
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_error_bars_from_record_intervals():
    points, _ = to_points(Source("mem.json", r) for r in main_records(ci=0.01))
    fig = pareto_figure(Analysis(points), "main", "synthetic", "epg")
    ax = {a.get_title(): a for a in fig.axes}["bcos-resnet18 · bcos · input"]
    bars = {c.get_label()[1:]: c for c in ax.containers if c.get_label().startswith("_errorbars:")}
    assert set(bars) >= {"errorbars:energy", "errorbars:baseline"}
    _, _, (xbars, ybars) = bars["errorbars:energy"].lines
    seg = sorted(ybars.get_segments(), key=lambda s: s[0][0])  # Energy's three front points, ±1 point in EPG
    assert [[tuple(v) for v in s] for s in seg][0] == [(70.0, 79.0), (70.0, 81.0)]
    import matplotlib.pyplot as plt

    plt.close(fig)
