"""Filter normalization, the distance axis, interpolation between two models, plots."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from measure_helpers import ce, class_data, error_rate, least_squares, mse_half, small_cnn

from samkit.measure import (
    direction_between,
    landscape_1d,
    landscape_2d,
    plot_landscape_1d,
    plot_landscape_2d,
    random_direction,
)


def test_each_filter_has_the_norm_of_its_weight_filter():
    model = small_cnn()
    with torch.no_grad():
        model[0].weight[1].zero_()  # a dead filter must give a zero direction, not NaN
        model[0].bias.zero_()
    d = random_direction(model, seed=0)
    for name, w in model.named_parameters():
        if w.dim() <= 1:
            assert torch.count_nonzero(d[name]) == 0, name  # biases and BatchNorm zeroed
            continue
        dn = d[name].flatten(1).norm(dim=1)
        wn = w.detach().flatten(1).norm(dim=1)
        torch.testing.assert_close(dn, wn, rtol=1e-12, atol=0)
        assert torch.isfinite(d[name]).all()
    # the direction is random, not a copy of the weights
    assert not torch.allclose(d["0.weight"], model[0].weight)


def test_bias_bn_options_and_no_normalization():
    model = small_cnn()
    copy = random_direction(model, seed=0, bias_bn="copy")
    torch.testing.assert_close(copy["1.weight"], model[1].weight.detach())
    norm = random_direction(model, seed=0, bias_bn="normalize")
    assert norm["4.bias"].norm().item() == pytest.approx(model[4].bias.norm().item(), rel=1e-12)
    raw = random_direction(model, seed=0, normalization="none", bias_bn="normalize")
    assert raw["0.weight"].flatten(1).norm(dim=1).std() > 0  # rows not rescaled
    # same seed, same direction; other seed, other direction
    a, b = random_direction(model, seed=3), random_direction(model, seed=4)
    assert torch.equal(a["0.weight"], random_direction(model, seed=3)["0.weight"])
    assert not torch.equal(a["0.weight"], b["0.weight"])


def test_1d_curve_is_the_exact_quadratic_along_the_direction():
    # L(w + a d) = L(w) + a g.d + a^2 d^T H d / 2 for least squares.
    model, x, y, h = least_squares()
    w = model.weight.detach().view(-1)
    g = h @ w - x.T @ y / len(y)
    d = torch.linspace(-1, 1, 5, dtype=torch.float64)
    res = landscape_1d(
        model,
        mse_half,
        (x, y),
        direction={"weight": d.view(1, 5)},
        steps=7,
        span=(-2, 1),
        progress=False,
    )
    base = mse_half(model, (x, y)).item()
    expect = base + res.alphas * (g @ d).item() + res.alphas**2 * (d @ h @ d).item() / 2
    np.testing.assert_allclose(res.loss, expect, rtol=1e-12)
    np.testing.assert_allclose(res.distances, res.alphas * d.norm().item(), rtol=1e-12)
    assert res.direction_norm == pytest.approx(d.norm().item())


def test_interpolation_between_two_models_reaches_both_ends():
    a, b = small_cnn(seed=0), small_cnn(seed=1)
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    d = direction_between(a, b)  # parameters and BatchNorm running statistics
    assert "1.running_mean" in d
    res = landscape_1d(
        a, ce, (x, y), direction=d, steps=3, span=(0, 1), error_fn=error_rate, progress=False
    )
    assert res.loss[0] == pytest.approx(ce(a.eval(), (x, y)).item(), rel=1e-12)
    assert res.loss[-1] == pytest.approx(ce(b.eval(), (x, y)).item(), rel=1e-10)
    assert res.error[-1] == pytest.approx(error_rate(b, (x, y)).item())


def test_2d_grid_matches_pointwise_1d_and_plots(tmp_path):
    model = small_cnn()
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 0, 1, 1])
    res = landscape_2d(
        model, ce, (x, y), steps=(3, 4), span=((-1, 1), (-0.5, 0.5)), seed=2, progress=False
    )
    assert res.loss.shape == (3, 4) and abs(res.cosine) < 1
    d1 = random_direction(model, seed=2)
    line = landscape_1d(model, ce, (x, y), direction=d1, steps=3, span=(-1, 1), progress=False)
    # beta = 0 is not on the 4-point grid; the 1-D curve along d1 equals the grid's column at
    # beta = 0 only for grids that contain it, so compare with a grid that does
    res0 = landscape_2d(model, ce, (x, y), steps=3, span=(-1, 1), seed=2, progress=False)
    np.testing.assert_allclose(res0.loss[:, 1], line.loss, rtol=1e-12)
    for kind in ("contour", "surface"):
        out = plot_landscape_2d(res, tmp_path / f"{kind}.png", kind=kind)
        assert out.read_bytes()[:4] == b"\x89PNG"
    out = plot_landscape_1d(line, tmp_path / "line.pdf", distance=True)
    assert out.read_bytes()[:4] == b"%PDF"


def test_direction_checks():
    from samkit.errors import SamkitError

    model = small_cnn()
    x, y = class_data()
    with pytest.raises(SamkitError, match="not a parameter or float buffer"):
        landscape_1d(model, ce, (x, y), direction={"nope": torch.zeros(1)}, progress=False)
    with pytest.raises(SamkitError, match="has shape"):
        landscape_1d(model, ce, (x, y), direction={"0.weight": torch.zeros(2)}, progress=False)
    with pytest.raises(SamkitError, match="low < high"):
        landscape_1d(model, ce, (x, y), span=(1, -1), progress=False)


def _bowl_2d(steps=21, scale=1.0):
    """A Landscape2D of a known bowl (loss = 1 + scale * (a^2 + 2 b^2)), no model needed."""
    from samkit.measure.landscape import Landscape2D

    alphas = betas = np.linspace(-1, 1, steps)
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    return Landscape2D(alphas, betas, 1 + scale * (a**2 + 2 * b**2), None, (1.0, 1.0), 0.0)


def _overlaps(fig):
    """Pairs of tick labels on one axis drawn closer than 3 pixels (unreadable ticks)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis, getattr(ax, "zaxis", None)):
            if axis is None:
                continue
            # the ticks as drawn (get_ticklabels() would re-place 3-D labels in 2-D first)
            lo, hi = sorted(axis.get_view_interval())
            eps = 1e-9 * max(1.0, abs(hi - lo))
            labels = [
                t.label1
                for t in axis.majorTicks
                if lo - eps <= t.get_loc() <= hi + eps and t.label1.get_visible()
                and t.label1.get_text()
            ]
            boxes = [t.get_window_extent(renderer).padded(1.5) for t in labels]
            for i in range(len(boxes)):
                for j in range(i + 1, len(boxes)):
                    if boxes[i].overlaps(boxes[j]):
                        found.append((labels[i].get_text(), labels[j].get_text()))
    return found


@pytest.mark.parametrize("kind", ["contour", "surface"])
def test_2d_figures_have_readable_ticks_and_mark_the_model(kind):
    from samkit.measure.landscape import _figure_2d

    fig = _figure_2d(_bowl_2d(), kind, 30, "")
    try:
        assert _overlaps(fig) == []
        ax = fig.axes[0]
        assert "direction 1" in ax.get_xlabel() and "direction 2" in ax.get_ylabel()
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["the model (0, 0)"]
    finally:
        fig.clf()


def test_contour_of_a_steep_landscape_uses_log_levels():
    from samkit.measure.landscape import _figure_2d

    fig = _figure_2d(_bowl_2d(scale=500.0), "contour", 30, "")  # loss from 1 to 1501
    try:
        assert fig.axes[1].get_yscale() == "log"  # the colorbar: the basin is not one colour
        assert "log" in fig.axes[1].get_ylabel()
    finally:
        fig.clf()


def test_1d_figure_has_a_legend_for_loss_and_error():
    from samkit.measure.landscape import Landscape1D, _figure_1d

    alphas = np.linspace(-1, 1, 21)
    res = Landscape1D(alphas, 2 * alphas, 1 + alphas**2, 0.1 + 0.2 * np.abs(alphas), 2.0)
    fig = _figure_1d(res, False, "")
    try:
        assert _overlaps(fig) == []
        legend = fig.axes[0].get_legend() or fig.legends[0]
        texts = [t.get_text() for t in legend.get_texts()]
        assert texts == ["loss (left axis)", "error (right axis)", "the model (alpha = 0)"]
    finally:
        fig.clf()
