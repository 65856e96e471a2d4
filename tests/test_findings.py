"""Every finding on synthetic result tables with a known answer: each gives HOLDS, FAILS,
PARTLY and INCONCLUSIVE (underpowered) where the data say so, and cases outside its scope
decide nothing."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from initlab.report import findings as F
from initlab.report.stats import FAILS, HOLDS, INCONCLUSIVE, PARTLY
from initlab.schema import ReportConfig

CHANCE = 0.1
INITS = ["zero", "uniform", "normal", "xavier", "he", "orthogonal", "lsuv", "rbm"]
ACTIVATIONS = ["sigmoid", "tanh", "relu", "maxout"]


def make_data(accuracy, seeds=5, depths=(2, 20), grad_ratio=None, zero_grad=0.0,
              sigmoid_spread=0.0, thresholds=None, noise=0.01) -> F.StudyData:
    """A study whose grid accuracy is accuracy(activation, init, seed), whose depth sweep has
    accuracy(activation, init, seed, depth) and, at init, a first/last hidden-layer gradient
    ratio grad_ratio(activation, init, depth)."""
    rng = np.random.default_rng(0)
    grad_ratio = grad_ratio or (lambda a, i, d: 1.0)
    rows, layers, histories = [], [], []

    def add(sweep, activation, init, depth, seed, acc):
        run_dir = f"runs/{sweep}/{activation}-{init}-d{depth}"
        acc = float(np.clip(acc + noise * rng.standard_normal(), 0, 1))
        rows.append(dict(sweep=sweep, run_dir=run_dir, activation=activation, init=init,
                         depth=depth, width=8, seed=seed, accuracy=acc, test_accuracy=acc,
                         diverged=False, n_c=acc <= CHANCE + 0.05,
                         init_passes=15 if init == "rbm" else 0))
        for epoch, layer in itertools.product(range(3), range(depth)):
            zero = init == "zero"
            grad = (zero_grad if zero else 1.0) * (
                grad_ratio(activation, init, depth) if layer == 1 else 1.0)
            spread = sigmoid_spread if zero else 0.3
            layers.append(dict(sweep=sweep, run_dir=run_dir, activation=activation, init=init,
                               depth=depth, seed=seed, epoch=epoch, layer=layer,
                               grad_norm=grad, unit_spread=spread, width=8))
        for epoch in range(3):
            histories.append(dict(sweep=sweep, run_dir=run_dir, activation=activation,
                                  init=init, depth=depth, seed=seed, epoch=epoch,
                                  train_loss=2.3 / (1 + epoch * acc), val_accuracy=acc))

    for activation, init, seed in itertools.product(ACTIVATIONS, INITS, range(seeds)):
        add("grid", activation, init, 4, seed, accuracy(activation, init, seed))
    for activation, init, depth, seed in itertools.product(
            ["sigmoid", "relu"], ["normal", "xavier", "he"], depths, range(seeds)):
        add("depth", activation, init, depth, seed, accuracy(activation, init, seed, depth))
    for activation, seed in itertools.product(ACTIVATIONS, range(seeds)):
        add("batchnorm", activation, "he", 4, seed, accuracy(activation, "batchnorm", seed))
    return F.StudyData(pd.DataFrame(rows), pd.DataFrame(layers), pd.DataFrame(histories),
                       CHANCE, thresholds or ReportConfig())


def textbook(activation, init, seed, depth=4):
    """The lecture's world: zero at chance, naive inits worse and erratic, good inits good,
    he beats xavier in deep relu nets, rbm no better than xavier/he."""
    if init == "zero":
        return CHANCE
    if init == "uniform":
        return 0.3 + 0.25 * (seed % 3)  # wide spread across seeds
    if init == "normal":
        return 0.5
    if init == "xavier" and depth >= 20:
        return 0.2
    return 0.9


def inverted(activation, init, seed, depth=4):
    """The opposite world: naive inits beat good ones, uniform is the steady one."""
    if init == "zero":
        return 0.9
    if init in ("uniform", "normal"):
        return 0.9
    if init == "he" and depth >= 20:
        return 0.2
    if init == "xavier":
        return 0.5 + 0.2 * (seed % 3)
    return 0.5


def world(rule, **by_activation):
    """`rule` for every activation but those named, which follow their own."""
    return lambda a, *args: by_activation.get(a, rule)(a, *args)


def vanishing(activation, init, depth):
    return 10.0 ** (-depth / 4) if activation == "sigmoid" else 1.0


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path


def verdict(finding, data, out):
    return finding(data, out).verdict


def test_f1_zero_init(out):
    assert verdict(F.f1_zero_init, make_data(textbook, noise=0), out) == HOLDS
    assert verdict(F.f1_zero_init, make_data(textbook, noise=0, zero_grad=0.5), out) == PARTLY
    assert verdict(F.f1_zero_init, make_data(inverted, noise=0, zero_grad=0.5,
                                             sigmoid_spread=0.1), out) == FAILS
    assert verdict(F.f1_zero_init, make_data(textbook, seeds=2), out) == INCONCLUSIVE


def test_f2_uniform_spread(out):
    assert verdict(F.f2_uniform_spread, make_data(textbook, seeds=10), out) == HOLDS
    steady = lambda a, i, s, d=4: 0.9 if i == "uniform" else inverted(a, "xavier", s)  # noqa
    assert verdict(F.f2_uniform_spread, make_data(steady, seeds=10), out) == FAILS
    partly = F.f2_uniform_spread(make_data(world(textbook, maxout=steady), seeds=10), out)
    assert partly.verdict == PARTLY
    assert partly.headline.startswith("PARTLY: holds for relu; fails for maxout (uniform:")
    underpowered = F.f2_uniform_spread(make_data(textbook, seeds=2), out)
    assert underpowered.verdict == INCONCLUSIVE and "too few" in underpowered.why
    # sigmoid and tanh are outside the scope: whatever they show decides nothing
    outside = F.f2_uniform_spread(make_data(world(textbook, sigmoid=steady, tanh=steady),
                                            seeds=10), out)
    assert outside.verdict == HOLDS and "Outside the scope: fails for sigmoid" in outside.headline


def test_f3_vanishing_gradients(out):
    assert verdict(F.f3_vanishing_gradients, make_data(textbook, grad_ratio=vanishing),
                   out) == HOLDS
    none_vanish = lambda a, i, d: 1e4 if a == "relu" else 1.0  # noqa: E731
    assert verdict(F.f3_vanishing_gradients, make_data(textbook, grad_ratio=none_vanish),
                   out) == FAILS
    not_normal = lambda a, i, d: 1.0 if i == "normal" else vanishing(a, i, d)  # noqa: E731
    partly = F.f3_vanishing_gradients(make_data(textbook, grad_ratio=not_normal), out)
    assert partly.verdict == PARTLY
    assert "fails for sigmoid + normal (+0.0 decades" in partly.headline
    assert verdict(F.f3_vanishing_gradients, make_data(textbook, grad_ratio=vanishing,
                                                       seeds=2), out) == INCONCLUSIVE
    # the input layer's own gradient (layer 0) moves nothing: only hidden layers count
    data = make_data(textbook)
    data.layers.loc[data.layers.layer == 0, "grad_norm"] = 1e3
    assert F.f3_vanishing_gradients(data, out).cases(True)["relu + he"] == HOLDS


def test_f4_good_beats_naive(out):
    assert verdict(F.f4_good_beats_naive, make_data(textbook), out) == HOLDS
    assert verdict(F.f4_good_beats_naive, make_data(inverted), out) == FAILS
    assert verdict(F.f4_good_beats_naive, make_data(world(textbook, tanh=inverted)), out) \
        == PARTLY
    assert verdict(F.f4_good_beats_naive, make_data(textbook, seeds=2), out) == INCONCLUSIVE
    sigmoid_fails = F.f4_good_beats_naive(make_data(world(textbook, sigmoid=inverted)), out)
    assert sigmoid_fails.verdict == HOLDS
    assert "Outside the scope: fails for sigmoid" in sigmoid_fails.headline
    # a small effect in noise: undecided, and it says how many seeds would decide it
    small = lambda a, i, s, d=4: 0.52 if i in F.GOOD_INITS else 0.5  # noqa: E731
    undecided = F.f4_good_beats_naive(make_data(small, noise=0.05), out)
    assert undecided.verdict == INCONCLUSIVE
    assert re.search(r"would need ≈\d+ seeds a group for 80% power", undecided.why)


def test_f5_he_over_xavier_deep(out):
    assert verdict(F.f5_he_over_xavier_deep, make_data(textbook), out) == HOLDS
    assert verdict(F.f5_he_over_xavier_deep, make_data(inverted), out) == FAILS
    at_10 = lambda a, i, s, d=4: {"he": 0.5, "xavier": 0.9}.get(i, 0.9) if d == 10 \
        else textbook(a, i, s, d)  # noqa: E731
    assert verdict(F.f5_he_over_xavier_deep, make_data(at_10, depths=(2, 10, 20)), out) \
        == PARTLY
    assert verdict(F.f5_he_over_xavier_deep, make_data(textbook, seeds=2), out) \
        == INCONCLUSIVE
    shallow = F.f5_he_over_xavier_deep(make_data(textbook, depths=(2, 5)), out)
    assert shallow.verdict == INCONCLUSIVE and "no runs of this study in scope" \
        in shallow.headline


def test_f6_rbm_not_needed(out):
    assert verdict(F.f6_rbm_not_needed, make_data(textbook, noise=0.002), out) == HOLDS
    rbm_wins = lambda a, i, s, d=4: 0.99 if i == "rbm" else textbook(a, i, s, d)  # noqa
    assert verdict(F.f6_rbm_not_needed, make_data(rbm_wins), out) == FAILS
    partly = F.f6_rbm_not_needed(make_data(world(textbook, sigmoid=rbm_wins), noise=0.002),
                                 out)
    assert partly.verdict == PARTLY and "fails for sigmoid" in partly.headline
    assert verdict(F.f6_rbm_not_needed, make_data(textbook, seeds=2), out) == INCONCLUSIVE


def test_f7_frontier(out):
    assert verdict(F.f7_frontier, make_data(textbook, noise=0.002), out) == HOLDS
    worse = lambda a, i, s, d=4: 0.5 if i in F.FRONTIER else textbook(a, i, s, d)  # noqa
    assert verdict(F.f7_frontier, make_data(worse), out) == FAILS
    assert verdict(F.f7_frontier, make_data(world(textbook, maxout=worse), noise=0.002),
                   out) == PARTLY
    assert verdict(F.f7_frontier, make_data(textbook, seeds=2), out) == INCONCLUSIVE
    # each method against each baseline: a failing xavier does not hide behind a good he
    xavier_fails = lambda a, i, s, d=4: 0.1 if i == "xavier" else textbook(a, i, s, d)  # noqa
    checks = F.f7_frontier(make_data(xavier_fails, noise=0.002), out).checks
    assert {c.comparison for c in checks} == {f"{m} − {b}" for m in F.FRONTIER
                                             for b in F.GOOD_INITS}


def test_f8_init_and_nonlinearity(out):
    both = lambda a, i, s, d=4: textbook(a, i, s, d) * (1.0 if a == "relu" else 0.6)  # noqa
    assert verdict(F.f8_init_and_nonlinearity, make_data(both), out) == HOLDS
    neither = lambda a, i, s, d=4: inverted(a, i, s, d) * (0.6 if a == "relu" else 1.0)  # noqa
    assert verdict(F.f8_init_and_nonlinearity, make_data(neither), out) == FAILS
    init_only = lambda a, i, s, d=4: textbook(a, i, s, d) * (0.6 if a == "relu" else 1.0)  # noqa
    partly = F.f8_init_and_nonlinearity(make_data(init_only), out)
    assert partly.verdict == PARTLY
    assert partly.cases(True) == {"the init (relu)": HOLDS, "the non-linearity (xavier)": FAILS,
                                  "the non-linearity (he)": FAILS}
    assert verdict(F.f8_init_and_nonlinearity, make_data(both, seeds=2), out) == INCONCLUSIVE
    # the interaction is stated from its interval, not assumed
    assert "excludes 0" in " ".join(F.f8_init_and_nonlinearity(make_data(both), out).notes)
    additive = lambda a, i, s, d=4: 0.3 + 0.4 * (i == "he") + 0.2 * (a == "relu")  # noqa: E731
    assert "includes 0" in " ".join(F.f8_init_and_nonlinearity(make_data(additive), out).notes)


def test_figures_are_produced_and_non_empty(out):
    data = make_data(textbook, grad_ratio=vanishing)
    for finding in F.FINDINGS:
        result = finding(data, out)
        png = (out / result.figure).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000, result.figure


def test_no_verdict_is_a_literal_in_the_report_code():
    report = Path(F.__file__).parent
    for path in report.glob("*.py"):
        if path.name == "stats.py":  # where the words are defined, once
            continue
        source = path.read_text()
        for word in (HOLDS, FAILS, PARTLY, INCONCLUSIVE, "UNDECIDED"):
            assert not re.search(rf"[\"']{word}[\"']", source), (path.name, word)


def _history(cell: Path, seed: int, losses: list[float]) -> None:
    (cell / f"seed_{seed}").mkdir(parents=True)
    pd.DataFrame({"epoch": range(len(losses)), "train_loss": losses,
                  "val_accuracy": np.linspace(0.1, 0.9, len(losses))}).to_csv(
        cell / f"seed_{seed}" / "history.csv", index=False)


def test_a_cells_curves_on_the_kept_figure_equal_those_on_a_new_one(tmp_path):
    import matplotlib.image

    from initlab.curves import RunCurves

    wide, narrow = tmp_path / "wide", tmp_path / "narrow"  # 3 decades; less than one
    for seed in (0, 1):
        _history(wide, seed, [2.3, 0.5, 0.01 * (seed + 1)])
        _history(narrow, seed, [2.303, 2.31 + 0.001 * seed, 2.305])
    kept = RunCurves()
    kept.draw(wide, [0, 1], tmp_path / "wide.png")
    kept.draw(narrow, [0, 1], tmp_path / "kept.png")
    [(_, loss, _, _)] = kept.figures.values()  # one figure for the two cells' seeds
    low, high = loss.get_ylim()
    assert 2.29 < low < 2.303 and 2.311 < high < 2.32  # the narrow cell's, not the wide one's
    RunCurves().draw(narrow, [0, 1], tmp_path / "new.png")
    kept_pixels, new_pixels = (matplotlib.image.imread(tmp_path / f"{name}.png")
                               for name in ("kept", "new"))
    assert np.array_equal(kept_pixels, new_pixels)
    assert not np.array_equal(kept_pixels, matplotlib.image.imread(tmp_path / "wide.png"))
