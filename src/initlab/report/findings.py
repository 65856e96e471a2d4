"""The lecture's claims, each tested on the study's runs.

A finding is a list of checks; each check measures one number (an interval or a test) against
a threshold from `ReportConfig` and gets a verdict from the rules in `initlab.report.stats`.
The finding's verdict combines its checks, and its sentence is one template fed by the
counts, so no verdict is written by hand anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from initlab.activations import ACTIVATIONS
from initlab.report import figures, stats
from initlab.report.stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Interval

GOOD_INITS = ("xavier", "he")  # the lecture's fixes
NAIVE_INITS = ("uniform", "normal")  # the lecture's "random" inits

SENTENCE = ("**{verdict}**: {supported} of {total} checks support the claim, "
            "{contradicted} contradict it and {undecided} cannot decide.")


@dataclass
class Check:
    case: str
    measure: str
    estimate: float
    low: float
    high: float
    threshold: str
    n: int
    verdict: str

    @classmethod
    def interval(cls, case, measure, interval: Interval, threshold: str, verdict: str):
        return cls(case, measure, interval.estimate, interval.low, interval.high, threshold,
                   interval.n, verdict)


@dataclass
class Finding:
    key: str
    title: str
    claim: str
    scope: str  # which runs it used
    checks: list[Check]
    figure: str | None = None
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    verdict: str = ""
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # extra numbers

    def __post_init__(self):
        if not self.verdict:
            self.verdict = stats.combine([c.verdict for c in self.checks])

    @property
    def sentence(self) -> str:
        counts = pd.Series([c.verdict for c in self.checks]).value_counts()
        return SENTENCE.format(verdict=self.verdict, total=len(self.checks),
                               supported=counts.get(REPRODUCED, 0),
                               contradicted=counts.get(NOT_REPRODUCED, 0),
                               undecided=counts.get(INCONCLUSIVE, 0))

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([vars(c) for c in self.checks],
                            columns=[f.name for f in fields(Check)]).set_index("case")


@dataclass
class StudyData:
    """What the findings read: results.csv with `accuracy` (test accuracy, a diverged run
    counted at the chance level), the per-layer probe rows and the per-epoch histories."""
    results: pd.DataFrame
    layers: pd.DataFrame
    histories: pd.DataFrame
    chance: float
    thresholds: object

    def sweep(self, name: str) -> pd.DataFrame:
        return self.results[self.results.sweep == name]

    def accuracies(self, sweep: str, **where) -> np.ndarray:
        frame = self.sweep(sweep)
        for column, value in where.items():
            frame = frame[frame[column].isin(value if isinstance(value, (list, tuple))
                                             else [value])]
        return frame["accuracy"].to_numpy()


def _p_check(case, measure, p, n, verdict, alpha) -> Check:
    """A test's check: its estimate is the p-value."""
    return Check(case, f"p-value: {measure}", p, float("nan"), float("nan"), f"p < {alpha}", n,
                 verdict)


def f1_zero_init(data: StudyData, out: Path) -> Finding:
    t, grid = data.thresholds, data.sweep("grid")
    checks = []
    for activation in grid[grid.init == "zero"].activation.unique():
        runs = data.layers[(data.layers.sweep == "grid") & (data.layers.init == "zero")
                           & (data.layers.activation == activation)]
        hidden = runs[runs.layer < runs.depth - 1]
        act = ACTIVATIONS[activation]
        if float(act.fn(torch.zeros(act.pieces))) == 0.0:
            # act(0) = 0: the chain rule gives exactly zero weight gradients everywhere ...
            largest = float(runs.grad_norm.max())
            checks.append(Check(activation, "largest weight-gradient norm, any layer/epoch",
                                largest, largest, largest, "== 0", runs.seed.nunique(),
                                REPRODUCED if largest == 0 else NOT_REPRODUCED))
            # ... and the net stays at the majority-class rate.
            accuracy = stats.bootstrap_mean(data.accuracies("grid", init="zero",
                                                            activation=activation), t)
            bound = data.chance + t.chance_margin
            checks.append(Check.interval(activation, "test accuracy (chance = majority rate "
                                         f"{data.chance:.3f})", accuracy, f"<= {bound:.3f}",
                                         stats.below(accuracy, bound, t)))
        else:
            # act(0) != 0 (sigmoid: 0.5): gradients flow, but every unit stays identical.
            spread = float(hidden.unit_spread.max())
            checks.append(Check(activation, "largest spread across a hidden layer's units",
                                spread, spread, spread, "== 0 (symmetric)", runs.seed.nunique(),
                                REPRODUCED if spread == 0 else NOT_REPRODUCED))
    figures.zero_init(grid[grid.init == "zero"],
                      data.layers[(data.layers.sweep == "grid") & (data.layers.init == "zero")],
                      data.chance, out / "f1_zero_init.png")
    return Finding(
        "F1", "Zero init stops learning",
        "With all weights 0, every gradient behind the output is 0 (act(0) = 0), so nothing "
        "learns; with sigmoid (act(0) = 0.5) gradients flow but the units of a layer stay "
        "identical.", "grid sweep, init `zero`", checks, "f1_zero_init.png",
        "Zero init: test accuracy against the majority-class rate, and the largest hidden "
        "weight-gradient norm per epoch.")


def f2_uniform_spread(data: StudyData, out: Path) -> Finding:
    t, grid = data.thresholds, data.sweep("grid")
    checks = []
    for activation in grid.activation.unique():
        uniform = data.accuracies("grid", init="uniform", activation=activation)
        for good in GOOD_INITS:
            other = data.accuracies("grid", init=good, activation=activation)
            if len(uniform) and len(other):
                p, verdict = stats.spread_test(uniform, other, t)
                checks.append(_p_check(
                    activation, f"Brown-Forsythe: accuracy sd uniform {uniform.std():.4f} "
                    f"vs {good} {other.std():.4f}", p, min(len(uniform), len(other)), verdict,
                    t.alpha))
    figures.seed_spread(data.histories[(data.histories.sweep == "grid")
                                       & data.histories.init.isin(["uniform", *GOOD_INITS])],
                        out / "f2_seed_spread.png")
    return Finding(
        "F2", "U[-1, 1] gives a different result every run",
        "Across seeds, final accuracy varies more under `uniform` than under xavier and he.",
        "grid sweep, every seed", checks, "f2_seed_spread.png",
        "Training loss of every seed (one line each): uniform against xavier and he.")


def f3_vanishing_gradients(data: StudyData, out: Path) -> Finding:
    t = data.thresholds
    at_init = data.layers[(data.layers.sweep == "depth") & (data.layers.epoch == 0)]
    first = at_init[at_init.layer == 0].set_index(["run_dir", "seed"]).grad_norm
    last = at_init[at_init.layer == at_init.depth - 1].set_index(["run_dir", "seed"]).grad_norm
    ratios = np.log10(first / last).rename("log10_ratio").reset_index().merge(
        data.sweep("depth")[["run_dir", "seed", "activation", "init", "depth"]])
    checks = []
    if len(ratios):
        deepest = ratios.depth.max()
        at_depth = ratios[ratios.depth == deepest]
        for (activation, init), group in at_depth.groupby(["activation", "init"]):
            ratio = stats.bootstrap_mean(group.log10_ratio, t)
            if activation == "sigmoid":
                checks.append(Check.interval(
                    f"sigmoid + {init}, depth {deepest}", "log10(first/last grad norm)",
                    ratio, f"<= -{t.vanishing_decades}",
                    stats.below(ratio, -t.vanishing_decades, t)))
            elif activation == "relu" and init == "he":
                inside = stats.combine([stats.above(ratio, -t.stable_decades, t),
                                        stats.below(ratio, t.stable_decades, t)])
                checks.append(Check.interval(
                    f"relu + he, depth {deepest}", "log10(first/last grad norm)", ratio,
                    f"within ±{t.stable_decades}", inside))
    figures.gradients_by_depth(at_init, ratios, out / "f3_gradients_by_depth.png")
    return Finding(
        "F3", "Sigmoid gradients vanish with depth",
        f"At init, the first layer's gradient is at least {t.vanishing_decades:g} orders of "
        f"magnitude below the last layer's under sigmoid in the deepest nets; under relu + he "
        f"it stays within {t.stable_decades:g}.", "depth sweep, at initialization", checks,
        "f3_gradients_by_depth.png",
        "Weight-gradient norm by layer at init (log scale), and the first/last ratio against "
        "depth (mean over seeds).")


def _difference_checks(data, sweep, groups, baseline, baseline_name, threshold, rule,
                       measure) -> list[Check]:
    t = data.thresholds
    checks = []
    for activation in data.sweep(sweep).activation.unique():
        base = data.accuracies(sweep, init=list(baseline), activation=activation)
        for name, (group_sweep, where) in groups.items():
            values = data.accuracies(group_sweep, activation=activation, **where)
            if len(values) and len(base):
                diff = stats.bootstrap_difference(values, base, t)
                checks.append(Check.interval(f"{activation}: {name} − {baseline_name}",
                                             measure, diff, f"{threshold:+g}",
                                             rule(diff, threshold, t)))
    return checks


def f4_good_beats_naive(data: StudyData, out: Path) -> Finding:
    checks = _difference_checks(
        data, "grid", {"xavier/he": ("grid", {"init": list(GOOD_INITS)})}, NAIVE_INITS,
        "uniform/normal", 0.0, stats.above, "test accuracy difference")
    figures.differences(checks, "accuracy difference (xavier/he − uniform/normal)",
                        out / "f4_good_vs_naive.png")
    return Finding(
        "F4", "Xavier and He beat the naive inits",
        "For every activation, mean accuracy under xavier/he exceeds that under "
        "uniform/normal.", "grid sweep", checks, "f4_good_vs_naive.png",
        "Mean accuracy difference with its bootstrap confidence interval, per activation.")


def f5_he_over_xavier_deep(data: StudyData, out: Path) -> Finding:
    t, depth = data.thresholds, data.sweep("depth")
    checks = []
    for d in sorted(depth.depth.unique()):
        he = data.accuracies("depth", init="he", activation="relu", depth=d)
        xavier = data.accuracies("depth", init="xavier", activation="relu", depth=d)
        if len(he) and len(xavier):
            diff = stats.bootstrap_difference(he, xavier, t)
            checks.append(Check.interval(f"relu, depth {d}", "accuracy he − xavier", diff,
                                         "> 0", stats.above(diff, 0.0, t)))
    figures.accuracy_by_depth(depth, out / "f5_accuracy_by_depth.png")
    deepest = int(depth.depth.max()) if len(depth) else 0
    notes, verdict = [], ""
    if checks:
        verdict = checks[-1].verdict  # the claim is about the deepest nets
    if deepest < t.he_regime_depth:
        notes.append(f"Our deepest net has {deepest} weight layers; He et al. 2015 saw Xavier "
                     f"stall from {t.he_regime_depth} on, so these depths do not reach that "
                     "regime (the `full` preset goes deeper).")
        if verdict != REPRODUCED:
            verdict = INCONCLUSIVE
    return Finding(
        "F5", "He over Xavier for deep ReLU nets",
        "In deep relu nets, He's init trains where Xavier's stalls (He et al. 2015: at 30 "
        "layers).", "depth sweep, relu", checks, "f5_accuracy_by_depth.png",
        "Test accuracy against depth per init (mean and range over seeds).", notes,
        verdict or INCONCLUSIVE)


def f6_rbm_not_needed(data: StudyData, out: Path) -> Finding:
    t = data.thresholds
    checks = _difference_checks(
        data, "grid", {"xavier/he": ("grid", {"init": list(GOOD_INITS)})}, ("rbm",), "rbm",
        -t.accuracy_margin, stats.above, "test accuracy difference (non-inferiority)")
    cost = data.sweep("grid").groupby("init")[["init_seconds", "train_seconds"]].mean()
    figures.accuracy_vs_cost(data.sweep("grid"), out / "f6_rbm_cost.png")
    notes = []
    if {"rbm", *GOOD_INITS} <= set(cost.index):
        notes.append(
            f"Wall-clock cost per run: rbm pre-training {cost.init_seconds['rbm']:.2f} s "
            f"against {cost.init_seconds['xavier']:.4f} s (xavier) and "
            f"{cost.init_seconds['he']:.4f} s (he), for {cost.train_seconds.mean():.2f} s of "
            "training.")
    return Finding(
        "F6", "RBM pre-training is no longer needed",
        f"Simple scaled inits reach the accuracy of RBM pre-training (within "
        f"{t.accuracy_margin:g}) without its cost.", "grid sweep, rbm against xavier/he",
        checks, "f6_rbm_cost.png", "Test accuracy against the seconds spent initializing.",
        notes)


def f7_frontier(data: StudyData, out: Path) -> Finding:
    t = data.thresholds
    groups = {"lsuv": ("grid", {"init": "lsuv"}),
              "orthogonal": ("grid", {"init": "orthogonal"}),
              "batchnorm": ("batchnorm", {})}
    checks = _difference_checks(data, "grid", groups, GOOD_INITS, "xavier/he",
                                -t.accuracy_margin, stats.above,
                                "test accuracy difference (non-inferiority)")
    figures.differences(checks, "accuracy difference (method − xavier/he)",
                        out / "f7_frontier.png")
    return Finding(
        "F7", "The research frontier: LSUV, orthogonal, batch norm",
        f"LSUV, orthogonal init and batch norm (with he) do at least as well as xavier/he "
        f"(within {t.accuracy_margin:g}), per activation.",
        "grid sweep and batch-norm sweep", checks, "f7_frontier.png",
        "Mean accuracy difference against xavier/he with its bootstrap interval.")


def f8_init_and_nonlinearity(data: StudyData, out: Path) -> Finding:
    t, grid = data.thresholds, data.sweep("grid")
    claim = "Both the init and the activation change accuracy significantly."
    runs = grid.groupby(["init", "activation"]).size()
    if grid.init.nunique() < 2 or grid.activation.nunique() < 2 or runs.nunique() != 1 \
            or runs.min() < 2:
        untestable = Check("init and activation effects", "two-way ANOVA: needs >= 2 inits x "
                           ">= 2 activations, the same number (>= 2) of runs each",
                           float("nan"), float("nan"), float("nan"), f"p < {t.alpha}",
                           int(runs.min()) if len(runs) else 0, INCONCLUSIVE)
        return Finding("F8", "Hinton: a stupid init and the wrong non-linearity", claim,
                       "grid sweep", [untestable])
    table = stats.two_way_anova(grid, "accuracy", "init", "activation")
    checks = [_p_check(f"{source} effect", f"two-way ANOVA, eta² = {row.eta_sq:.3f}",
                       row.p, int(runs.min()),
                       REPRODUCED if row.p < t.alpha else INCONCLUSIVE, t.alpha)
              for source, row in table.drop(["residual", "init x activation"]).iterrows()]
    means = grid.groupby(["init", "activation"]).accuracy.mean().unstack()
    gaps = pd.DataFrame({
        "best init": means.idxmax(), "worst init": means.idxmin(),
        "gap": means.max() - means.min()})
    act_gaps = pd.DataFrame({
        "best activation": means.idxmax(axis=1), "worst activation": means.idxmin(axis=1),
        "gap": means.max(axis=1) - means.min(axis=1)})
    figures.variance_shares(table, out / "f8_anova.png")
    bigger = table.drop("residual").eta_sq.idxmax()
    return Finding(
        "F8", "Hinton: a stupid init and the wrong non-linearity", claim,
        "grid sweep", checks, "f8_anova.png",
        "Share of the accuracy variance (eta²) per source.",
        [f"The largest share of variance: **{bigger}** (eta² {table.eta_sq[bigger]:.3f})."],
        tables={"Two-way ANOVA of test accuracy": table,
                "Best and worst init per activation": gaps,
                "Best and worst activation per init": act_gaps})


FINDINGS = (f1_zero_init, f2_uniform_spread, f3_vanishing_gradients, f4_good_beats_naive,
            f5_he_over_xavier_deep, f6_rbm_not_needed, f7_frontier, f8_init_and_nonlinearity)
