"""The lecture's claims, each tested on the study's runs within the scope the claim was made for.

A finding is a list of checks; each check measures one number (an interval) against a threshold
from `ReportConfig` and gets HOLDS, FAILS or UNDECIDED from the rules in
`initlab.report.stats`. Checks belong to cases (an activation, a depth, an init pair); only
cases inside the finding's `Scope` (declared in SCOPES, before any data is read) decide its
verdict, by `stats.aggregate`. The headline names each case with its verdict, so no verdict is
written by hand anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from initlab.activations import ACTIVATIONS
from initlab.report import figures, stats
from initlab.report.stats import FAILS, HOLDS, INCONCLUSIVE, PARTLY, UNDECIDED, Interval

GOOD_INITS = ("xavier", "he")  # the lecture's fixes
NAIVE_INITS = ("uniform", "normal")  # the lecture's "random" inits
FRONTIER = ("lsuv", "orthogonal", "batchnorm")  # the lecture's "still research"
RELU_FAMILY = ("relu", "vleaky_relu", "maxout")
# The activations for which the lecture's CIFAR-10 table (Mishkin & Matas 2016, Table 3) has
# inits that converge: its sigmoid column is n/c for every init.
CONVERGING = ("tanh", "relu", "vleaky_relu", "maxout")
HE_STALL_DEPTH = 30  # He et al. 2015, Fig. 3: a 30-layer relu net from Xavier's init stalls


@dataclass(frozen=True)
class Scope:
    """Where a claim is tested: the cases that decide its verdict. Cases outside are shown,
    labelled, and decide nothing."""
    text: str
    activations: tuple[str, ...] | None = None  # None: every activation
    min_depth: int = 0
    outside: str = ""  # why the cases left out are left out

    def covers(self, activation: str, depth: int = 0) -> bool:
        return ((self.activations is None or activation in self.activations)
                and depth >= self.min_depth)


SCOPES = {
    "F1": Scope("every activation of the grid, init `zero`"),
    "F2": Scope("ReLU-family nets (relu, vleaky_relu, maxout), U[-1, 1] against xavier and "
                "he, every seed", RELU_FAMILY,
                outside="the lecture showed the run-to-run spread on ReLU nets"),
    "F3": Scope("sigmoid nets at the depth sweep's deepest depth, relu + he as the control, "
                "at init", ("sigmoid", "relu")),
    "F4": Scope("the grid's tanh, relu, vleaky_relu and maxout nets", CONVERGING,
                outside="the lecture's own CIFAR-10 table has no init that trains a sigmoid "
                        "net, so the claim is not made for it (see F3)"),
    "F5": Scope("relu nets of the depth sweep with at least 10 weight layers", ("relu",), 10,
                outside="the claim is about deep nets"),
    "F6": Scope("every activation of the grid, rbm against xavier and he; sigmoid, the "
                "units an RBM models, as its own case"),
    "F7": Scope("the grid's tanh, relu, vleaky_relu and maxout nets, each method against "
                "xavier and against he", CONVERGING,
                outside="the lecture's table has every init n/c for sigmoid: it ranks none"),
    "F8": Scope("the grid: relu and sigmoid nets under naive and good inits"),
}

TABLE_COLUMNS = ["case", "comparison", "measure", "estimate", "low", "high", "threshold", "n",
                 "detectable (80%)", "verdict", "in scope"]


@dataclass
class Check:
    case: str  # what the headline names: an activation, "sigmoid + xavier", "relu, depth 20"
    comparison: str  # within the case, e.g. "xavier − uniform"
    measure: str
    interval: Interval
    threshold: str
    verdict: str
    in_scope: bool
    needed: float = math.nan  # seeds a group needs for POWER at the observed effect

    def row(self) -> dict:
        i = self.interval
        return dict(zip(TABLE_COLUMNS, [
            self.case, self.comparison, self.measure, i.estimate, i.low, i.high,
            self.threshold, i.n, stats.detectable(i), self.verdict,
            "yes" if self.in_scope else "no"]))


def interval_check(case, comparison, measure, interval: Interval, threshold: float, rule: str,
                   data, in_scope: bool) -> Check:
    """A check of `interval` above or below `threshold` (rule "above" / "below")."""
    decide = stats.above if rule == "above" else stats.below
    verdict = decide(interval, threshold, data.thresholds.min_seeds)
    sign = ">" if rule == "above" else "<="
    return Check(case, comparison, measure, interval, f"{sign} {threshold:g}", verdict,
                 in_scope, stats.seeds_for_power(interval, threshold))


def exact_check(case, comparison, measure, value: float, n: int, ok: bool, threshold: str,
                in_scope: bool = True) -> Check:
    """A check of a value that is measured, not estimated (no interval)."""
    return Check(case, comparison, measure, Interval(value, value, value, n, math.nan, 0.025),
                 threshold, HOLDS if ok else FAILS, in_scope)


@dataclass
class Finding:
    key: str
    title: str
    claim: str
    checks: list[Check]
    figure: str | None = None
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # extra numbers
    details: dict[str, str] = field(default_factory=dict)  # per case: the numbers behind it
    theory: str = ""  # what theory predicts (its own issue: room left for it)

    @property
    def scope(self) -> Scope:
        return SCOPES[self.key]

    @property
    def verdict(self) -> str:
        return stats.aggregate([c.verdict for c in self.checks if c.in_scope])

    def cases(self, in_scope: bool) -> dict[str, str]:
        """Each case (in or outside the scope) with its verdict, in the order of the checks."""
        by_case: dict[str, list[str]] = {}
        for c in self.checks:
            if c.in_scope == in_scope:
                by_case.setdefault(c.case, []).append(c.verdict)
        return {case: stats.aggregate(verdicts) for case, verdicts in by_case.items()}

    def _named(self, cases: dict[str, str]) -> str:
        words = {HOLDS: "holds for", FAILS: "fails for", PARTLY: "partly holds for",
                 INCONCLUSIVE: "undecided for"}
        parts = []
        for word, label in words.items():
            names = [c + (f" ({self.details[c]})" if word in (FAILS, PARTLY)
                          and c in self.details else "")
                     for c, v in cases.items() if v == word]
            if names:
                parts.append(f"{label} {', '.join(names)}")
        return "; ".join(parts)

    @property
    def headline(self) -> str:
        """The verdict and where it holds, in one line a person can read aloud."""
        inside, outside = self.cases(True), self.cases(False)
        line = f"{self.verdict}: " + (self._named(inside) or "no runs of this study in scope")
        if outside:
            line += f". Outside the scope: {self._named(outside)}"
        return line

    @property
    def why(self) -> str:
        """Why an undecided check stays undecided: the seeds it would need."""
        reasons = []
        for c in self.checks:
            if c.in_scope and c.verdict == UNDECIDED:
                if c.interval.n < 2 or math.isnan(c.needed):
                    reasons.append(f"{c.case}, {c.comparison}: {c.interval.n} run(s) a group, "
                                   "too few to estimate a spread")
                elif math.isinf(c.needed):
                    reasons.append(f"{c.case}, {c.comparison}: the estimate sits on the "
                                   "threshold; no number of seeds would decide it")
                else:
                    reasons.append(f"{c.case}, {c.comparison}: the observed effect would need "
                                   f"≈{c.needed:.0f} seeds a group for 80% power "
                                   f"(it has {c.interval.n})")
        return "; ".join(reasons)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([c.row() for c in self.checks], columns=TABLE_COLUMNS)


@dataclass
class StudyData:
    """What the findings read: results.csv with `accuracy` (test accuracy, a diverged run
    counted at the chance level) and `n_c`, the per-layer probe rows, the per-epoch histories,
    and a line per sweep saying how it was trained (`setup`: grid, depth, rbm)."""
    results: pd.DataFrame
    layers: pd.DataFrame
    histories: pd.DataFrame
    chance: float
    thresholds: object
    setup: dict[str, str] = field(default_factory=dict)

    def sweep(self, name: str) -> pd.DataFrame:
        return self.results[self.results.sweep == name]

    def runs(self, sweep: str, **where) -> pd.DataFrame:
        frame = self.sweep(sweep)
        for column, value in where.items():
            frame = frame[frame[column].isin(value if isinstance(value, (list, tuple))
                                             else [value])]
        return frame

    def accuracies(self, sweep: str, **where) -> np.ndarray:
        return self.runs(sweep, **where)["accuracy"].to_numpy()

    def method(self, activation: str, name: str) -> np.ndarray:
        """The grid's accuracies of an init, or ("batchnorm") the batch-norm sweep's."""
        if name == "batchnorm":
            return self.accuracies("batchnorm", activation=activation)
        return self.accuracies("grid", activation=activation, init=name)

    def means(self, activation: str, names) -> str:
        """"xavier 15%, he 51%" for the inits (or "batchnorm") of one activation."""
        parts = []
        for init in names:
            values = self.method(activation, init)
            if len(values):
                parts.append(f"{init} {100 * values.mean():.0f}%")
        return ", ".join(parts)


def _accuracy_differences(data: StudyData, key: str, pairs, threshold: float,
                          measure: str) -> tuple[list[Check], dict[str, str]]:
    """Per grid activation, one check per (method, baseline) pair: the Welch interval of the
    accuracy difference above `threshold`; and per activation the mean accuracies behind it.
    A method "batchnorm" is the batch-norm sweep's cell of that activation."""
    checks, details = [], {}
    confidence = data.thresholds.confidence
    for activation in data.sweep("grid").activation.unique():
        named = []
        for method, baseline in pairs:
            values = data.method(activation, method)
            base = data.method(activation, baseline)
            if len(values) and len(base):
                checks.append(interval_check(
                    activation, f"{method} − {baseline}", measure,
                    stats.difference_interval(values, base, confidence), threshold, "above",
                    data, SCOPES[key].covers(activation)))
                named += [n for n in (method, baseline) if n not in named]
        if named:
            details[activation] = f"{data.setup.get('grid', 'grid')}: " \
                                  f"{data.means(activation, named)}"
    return checks, details


def f1_zero_init(data: StudyData, out: Path) -> Finding:
    t, grid = data.thresholds, data.sweep("grid")
    checks = []
    for activation in grid[grid.init == "zero"].activation.unique():
        runs = data.layers[(data.layers.sweep == "grid") & (data.layers.init == "zero")
                           & (data.layers.activation == activation)]
        hidden = runs[runs.layer < runs.depth - 1]
        act, n = ACTIVATIONS[activation], runs.seed.nunique()
        if float(act.fn(torch.zeros(act.pieces))) == 0.0:
            # act(0) = 0: the chain rule gives exactly zero weight gradients everywhere ...
            largest = float(runs.grad_norm.max())
            checks.append(exact_check(activation, "zero", "largest weight-gradient norm, any "
                                      "layer/epoch", largest, n, largest == 0, "== 0"))
            # ... and the net stays at the majority-class rate.
            accuracy = stats.mean_interval(
                data.accuracies("grid", init="zero", activation=activation), t.confidence)
            checks.append(interval_check(
                activation, "zero", f"test accuracy (chance = majority rate {data.chance:.3f})",
                accuracy, data.chance + t.chance_margin, "below", data, True))
        else:
            # act(0) != 0 (sigmoid: 0.5): gradients flow, but every unit stays identical.
            spread = float(hidden.unit_spread.max())
            checks.append(exact_check(activation, "zero", "largest spread across a hidden "
                                      "layer's units", spread, n, spread == 0,
                                      "== 0 (symmetric)"))
    figures.zero_init(grid[grid.init == "zero"],
                      data.layers[(data.layers.sweep == "grid") & (data.layers.init == "zero")],
                      data.chance, out / "f1_zero_init.png")
    return Finding(
        "F1", "Zero init stops learning",
        "With all weights 0, every gradient behind the output is 0 (act(0) = 0), so nothing "
        "learns; with sigmoid (act(0) = 0.5) gradients flow but the units of a layer stay "
        "identical.", checks, "f1_zero_init.png",
        "Zero init: test accuracy against the majority-class rate, and the largest hidden "
        "weight-gradient norm per epoch.")


def f2_uniform_spread(data: StudyData, out: Path) -> Finding:
    t, grid = data.thresholds, data.sweep("grid")
    checks, details = [], {}
    for activation in grid.activation.unique():
        uniform = data.runs("grid", init="uniform", activation=activation)
        for good in GOOD_INITS:
            other = data.accuracies("grid", init=good, activation=activation)
            if len(uniform) and len(other):
                interval, p = stats.spread_difference(uniform.accuracy, other, t.alpha)
                checks.append(interval_check(
                    activation, f"uniform − {good}",
                    f"mean |accuracy − median|, one-sided Brown-Forsythe p = {p:.3g} (sd "
                    f"{uniform.accuracy.std():.3f} vs {other.std():.3f})", interval, 0.0,
                    "above", data, SCOPES["F2"].covers(activation)))
        if len(uniform) and uniform.n_c.all():
            details[activation] = f"all {len(uniform)} uniform runs n/c: the same result every run"
        elif len(uniform):
            details[activation] = (f"uniform: {100 * uniform.accuracy.min():.0f}% to "
                                   f"{100 * uniform.accuracy.max():.0f}% over {len(uniform)} "
                                   f"seeds, {int(uniform.n_c.sum())} n/c")
    figures.seed_spread(data.histories[(data.histories.sweep == "grid")
                                       & data.histories.init.isin(["uniform", *GOOD_INITS])],
                        out / "f2_seed_spread.png")
    return Finding(
        "F2", "U[-1, 1] gives a different result every run",
        "Across seeds, final test accuracy varies more under `uniform` than under xavier and "
        "he (a run that did not train counts at its accuracy: it is part of the spread).",
        checks, "f2_seed_spread.png",
        "Training loss of every seed (one line each): uniform against xavier and he.",
        details=details)


def hidden_gradient_ratios(layers: pd.DataFrame) -> pd.DataFrame:
    """Per run at init: log10 of the weight-gradient norm of the first hidden-to-hidden layer
    over the last one's (layers 1 and depth - 2, both width x width), and that per layer
    between them. The input layer (fan-in 784) and the output layer (10 units) are left out:
    their own shapes move their norms by orders of magnitude that no depth causes."""
    at_init = layers[(layers.epoch == 0) & (layers.depth >= 4)]
    first = at_init[at_init.layer == 1].set_index(["run_dir", "seed"]).grad_norm
    last = at_init[at_init.layer == at_init.depth - 2].set_index(["run_dir", "seed"]).grad_norm
    ratio = np.log10(first / last).rename("log10_ratio").reset_index()
    return ratio.merge(at_init[["run_dir", "seed", "activation", "init", "depth"]]
                       .drop_duplicates()).assign(
        per_layer=lambda r: r.log10_ratio / (r.depth - 3))


def f3_vanishing_gradients(data: StudyData, out: Path) -> Finding:
    t = data.thresholds
    depth_layers = data.layers[data.layers.sweep == "depth"]
    ratios = hidden_gradient_ratios(depth_layers)
    checks, details = [], {}
    if len(ratios):
        deepest = ratios.depth.max()
        measure = (f"log10(grad norm, hidden layer 2 / hidden layer {deepest - 1}), "
                   f"{deepest - 3} layers apart")
        for (activation, init), group in ratios[ratios.depth == deepest].groupby(
                ["activation", "init"]):
            ratio = stats.mean_interval(group.log10_ratio, t.confidence)
            case = f"{activation} + {init}"
            details[case] = f"{ratio.estimate:+.1f} decades over {deepest - 3} layers"
            if activation == "sigmoid":
                checks.append(interval_check(case, f"vanishes at depth {deepest}", measure,
                                             ratio, -t.vanishing_decades, "below", data, True))
            elif activation == "relu" and init == "he":
                low = stats.above(ratio, -t.stable_decades, t.min_seeds)
                high = stats.below(ratio, t.stable_decades, t.min_seeds)
                verdict = (HOLDS if low == high == HOLDS else
                           FAILS if FAILS in (low, high) else UNDECIDED)
                nearest = min((-t.stable_decades, t.stable_decades),
                              key=lambda b: abs(ratio.estimate - b))
                checks.append(Check(case, f"stays stable at depth {deepest} (control)", measure,
                                    ratio,
                                    f"within ±{t.stable_decades:g}", verdict, True,
                                    stats.seeds_for_power(ratio, nearest)))
    figures.gradients_by_depth(depth_layers[depth_layers.epoch == 0], ratios,
                               out / "f3_gradients_by_depth.png")
    return Finding(
        "F3", "Sigmoid gradients vanish with depth",
        f"At init, the gradient of the first hidden layer is at least {t.vanishing_decades:g} "
        f"orders of magnitude below the last hidden layer's under sigmoid in the deepest nets; "
        f"under relu + he it stays within {t.stable_decades:g}.", checks,
        "f3_gradients_by_depth.png",
        "Weight-gradient norm by layer at init (log scale), and the hidden-layer ratio "
        "against depth (mean over seeds).", details=details)


def f4_good_beats_naive(data: StudyData, out: Path) -> Finding:
    pairs = [(good, naive) for good in GOOD_INITS for naive in NAIVE_INITS]
    checks, details = _accuracy_differences(data, "F4", pairs, 0.0, "test accuracy difference")
    figures.differences(checks, "accuracy difference (good − naive init)",
                        out / "f4_good_vs_naive.png")
    return Finding(
        "F4", "Xavier and He beat the naive inits",
        "Mean accuracy under xavier and under he exceeds that under uniform and under normal.",
        checks, "f4_good_vs_naive.png",
        "Accuracy difference with its 95% Welch interval, per activation and pair of inits.",
        [f"The gain: xavier (variance 1/fan_in) and he (2/fan_in) follow the slides and use "
         f"no gain; the gain-aware inits use `torch.nn.init.calculate_gain`, which is 1 for "
         f"sigmoid ({ACTIVATIONS['sigmoid'].gain:g} here). The widely copied Theano "
         "convention (the deeplearning.net MLP tutorial, after Glorot & Bengio 2010) "
         "multiplies Glorot's uniform bound by 4 for sigmoid, a 16-fold variance that none of "
         "this study's inits uses."], details=details)


def f5_he_over_xavier_deep(data: StudyData, out: Path) -> Finding:
    depth, scope = data.sweep("depth"), SCOPES["F5"]
    checks = []
    for d in sorted(depth.depth.unique()):
        he = data.accuracies("depth", init="he", activation="relu", depth=d)
        xavier = data.accuracies("depth", init="xavier", activation="relu", depth=d)
        if len(he) and len(xavier):
            checks.append(interval_check(
                f"depth {d}", "he − xavier (relu)", "test accuracy difference",
                stats.difference_interval(he, xavier, data.thresholds.confidence), 0.0,
                "above", data, scope.covers("relu", int(d))))
    figures.accuracy_by_depth(depth, out / "f5_accuracy_by_depth.png")
    notes = []
    if len(depth):
        deepest = int(depth.depth.max())
        xavier = data.accuracies("depth", init="xavier", activation="relu", depth=deepest)
        he = data.accuracies("depth", init="he", activation="relu", depth=deepest)
        if len(xavier) and len(he):
            notes.append(
                f"The depth budget: our deepest relu nets have {deepest} weight layers, "
                f"trained {data.setup.get('depth', '')}; there xavier reaches "
                f"{100 * xavier.mean():.0f}% and he {100 * he.mean():.0f}%. He et al. 2015 "
                f"(Fig. 3, ImageNet) saw xavier's 22-layer net train more slowly and its "
                f"{HE_STALL_DEPTH}-layer net stall; what we see at {deepest} layers is that "
                "gap opening after a short training, not their stall (the `full` preset goes "
                "deeper and trains longer).")
    return Finding(
        "F5", "He over Xavier for deep ReLU nets",
        "In deep relu nets, He's init trains where Xavier's stalls (He et al. 2015: at 30 "
        "layers).", checks, "f5_accuracy_by_depth.png",
        "Test accuracy against depth per init (mean and range over seeds).", notes)


def f6_rbm_not_needed(data: StudyData, out: Path) -> Finding:
    t = data.thresholds
    checks, details = _accuracy_differences(
        data, "F6", [(good, "rbm") for good in GOOD_INITS], -t.accuracy_margin,
        "test accuracy difference (non-inferiority)")
    figures.accuracy_vs_cost(data.sweep("grid"), out / "f6_rbm_cost.png")
    notes = ["RBM pre-training (Hinton et al. 2006) trains stacked sigmoid units; under any "
             "other activation its weights are used as they are, as a starting point that "
             "was fitted for sigmoid units. Sigmoid is the RBM's own ground."]
    if "rbm" in data.setup:
        notes.append(f"The cost, in passes over the data: {data.setup['rbm']}. Its seconds "
                     "depend on the machine and its load: they are in the runs' MLflow "
                     "metrics (`init_seconds`, `train_seconds`) and timings/, not here.")
    return Finding(
        "F6", "RBM pre-training is no longer needed",
        f"Xavier and He each reach the accuracy of RBM pre-training (within "
        f"{t.accuracy_margin:g}) without its cost.", checks, "f6_rbm_cost.png",
        "Test accuracy against the passes over the training data spent initializing (LSUV's "
        "few forward passes of one batch count as 0).", notes, details=details)


def f7_frontier(data: StudyData, out: Path) -> Finding:
    t = data.thresholds
    checks, details = _accuracy_differences(
        data, "F7", [(method, base) for method in FRONTIER for base in GOOD_INITS],
        -t.accuracy_margin, "test accuracy difference (non-inferiority)")
    figures.differences(checks, "accuracy difference (method − baseline)",
                        out / "f7_frontier.png")
    return Finding(
        "F7", "The research frontier: LSUV, orthogonal, batch norm",
        f"LSUV, orthogonal init and batch norm (with he) each do at least as well as xavier "
        f"and as he (within {t.accuracy_margin:g}), per activation.", checks,
        "f7_frontier.png",
        "Accuracy difference against xavier and against he, with its 95% Welch interval.",
        details=details)


def f8_init_and_nonlinearity(data: StudyData, out: Path) -> Finding:
    """Hinton's two points tested directly: a stupid init against a good one under the right
    non-linearity, the wrong non-linearity against the right one under a good init."""
    t, grid = data.thresholds, data.sweep("grid")
    confidence, checks = t.confidence, []

    acc = data.method
    for naive in NAIVE_INITS:
        a, b = acc("relu", "he"), acc("relu", naive)
        if len(a) and len(b):
            checks.append(interval_check(
                "the init (relu)", f"he − {naive}", "test accuracy difference",
                stats.difference_interval(a, b, confidence), 0.0, "above", data, True))
    for good in GOOD_INITS:
        a, b = acc("relu", good), acc("sigmoid", good)
        if len(a) and len(b):
            checks.append(interval_check(
                f"the non-linearity ({good})", "relu − sigmoid", "test accuracy difference",
                stats.difference_interval(a, b, confidence), 0.0, "above", data, True))
    notes = []
    cells = [acc(a, i) for a, i in [("relu", "he"), ("relu", "normal"), ("sigmoid", "he"),
                                    ("sigmoid", "normal")]]
    if all(len(c) for c in cells):
        interaction = stats.contrast_interval(cells, [1, -1, -1, 1], confidence)
        apart = interaction.low > 0 or interaction.high < 0
        notes.append(
            f"The interaction: he − normal is {100 * (cells[0].mean() - cells[1].mean()):+.0f}"
            f" points under relu and {100 * (cells[2].mean() - cells[3].mean()):+.0f} under "
            f"sigmoid; the difference, {100 * interaction.estimate:+.0f} points "
            f"(95% interval {100 * interaction.low:+.0f} to {100 * interaction.high:+.0f}), "
            + ("excludes 0: how much the init matters depends on the non-linearity, and the "
               "other way round." if apart else "includes 0: no interaction is detected at "
               "these seeds."))
    means = grid.groupby(["init", "activation"]).accuracy.mean().unstack()
    tables = {}
    if len(means):
        tables = {
            "Best and worst init per activation": pd.DataFrame({
                "best init": means.idxmax(), "worst init": means.idxmin(),
                "gap": means.max() - means.min()}),
            "Best and worst activation per init": pd.DataFrame({
                "best activation": means.idxmax(axis=1),
                "worst activation": means.idxmin(axis=1),
                "gap": means.max(axis=1) - means.min(axis=1)})}
    figures.differences(checks, "accuracy difference", out / "f8_hinton.png")
    return Finding(
        "F8", "Hinton: a stupid init and the wrong non-linearity",
        "Under relu, he beats the naive inits; under a good init, relu beats sigmoid.", checks,
        "f8_hinton.png", "Each of Hinton's two points as an accuracy difference with its 95% "
        "Welch interval.", notes, tables)


FINDINGS = (f1_zero_init, f2_uniform_spread, f3_vanishing_gradients, f4_good_beats_naive,
            f5_he_over_xavier_deep, f6_rbm_not_needed, f7_frontier, f8_init_and_nonlinearity)
