"""The `report` stage: reports/results.csv + the cells' histories and probes -> reports/.

    python -m initlab.report

Writes report.md (renders on GitHub) and a self-contained report.html from the same blocks,
summary.json (DVC metrics), figures/ and plots/ (DVC plots). Built from the DVC outputs only.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from omegaconf import OmegaConf

from initlab import layout, theory, tracking
from initlab.cells import cell_config
from initlab.config import load_config
from initlab.data.prepare import load_split, prepared_dir
from initlab.errors import reported_errors
from initlab.io import atomic_path, write_json
from initlab.memo import kept
from initlab.paths import CELL_CONFIGS, RESULTS_CSV, workspace_root
from initlab.report import figures, predicted, tables
from initlab.report.document import Figure, Heading, Table, Text, to_html, to_markdown
from initlab.report.findings import FINDINGS, StudyData
from initlab.report.stats import spearman_exact

PUBLISHED = Path(__file__).with_name("published.yaml")
# Glorot & Bengio-style histograms: each activation under a naive and a good init.
# Which cells' theory a finding states (activation, init, of the forward signal).
THEORY_LINES = {
    "F3": [("sigmoid", "xavier", False), ("sigmoid", "he", False), ("sigmoid", "normal", False),
           ("relu", "he", False)],
    "F5": [("relu", "xavier", True), ("relu", "he", True)],
}
HISTOGRAM_CASES = [("sigmoid", "normal"), ("sigmoid", "xavier"), ("tanh", "normal"),
                   ("tanh", "xavier"), ("relu", "normal"), ("relu", "he")]


def class_counts(split: str = "test") -> list[int]:
    """Examples per class in a prepared split (its manifest)."""
    manifest = json.loads((prepared_dir() / "manifest.json").read_text())
    return manifest["files"][f"{split}.pt"]["class_counts"]


def per_run(results: pd.DataFrame, filename: str) -> pd.DataFrame:
    """Concatenate runs/<cell>/seed_<s>/<filename> for every run, tagged with its run's keys.
    The files share their header, so their bodies are parsed as one CSV (the study's 790
    files: 0.1 s, against 2.8 s for a `read_csv` each)."""
    root = workspace_root()
    header, bodies, rows_per_run = "", [], []
    for row in results.itertuples():
        header, _, body = (layout.seed_dir(root / row.run_dir, row.seed) / filename) \
            .read_text().partition("\n")
        bodies.append(body)
        rows_per_run.append(body.count("\n"))
    keys = ["sweep", "run_dir", "activation", "init", "depth", "seed"]
    return pd.read_csv(io.StringIO("\n".join([header, *bodies]))).assign(
        **{k: np.repeat(results[k].to_numpy(), rows_per_run) for k in keys})


def summary(stats: pd.DataFrame, results: pd.DataFrame, chance: float, findings) -> dict:
    """What `dvc exp show` compares: run counts (every sweep's, and the grid's that the rest
    describes), the best grid cell, the findings' verdicts. Per-cell numbers are in
    plots/accuracy.csv."""
    grid = results[results.sweep == "grid"]
    stats = stats.assign(cell=stats.activation + "-" + stats.init)
    best = stats.loc[stats["mean"].idxmax()] if len(stats) else None
    return {
        "runs": len(results),
        "grid_runs": len(grid),
        "grid_diverged_runs": int(grid["diverged"].sum()),
        "grid_not_converged_runs": int(grid["n_c"].sum()),
        "chance_accuracy": chance,
        "best_cell": None if best is None else best["cell"],
        "best_mean_test_accuracy": None if best is None else float(best["mean"]),
        "mean_test_accuracy": float(grid.loc[~grid["n_c"], "test_accuracy"].mean()),
        "findings": {f.key: f.verdict for f in findings},
    }


@kept(figures.FIGURES, output="path")
def activations_figure(cell: dict, probe: np.ndarray, path: Path) -> None:
    """Histograms of the hidden-layer outputs at init on the probe batch, for HISTOGRAM_CASES
    (seed 0), in nets of the configured model (`cell`: a cell config, as a dict)."""
    import torch

    from initlab.models import build_model
    from initlab.train import initialize

    x = torch.from_numpy(probe)
    samples = {}
    for activation, init in HISTOGRAM_CASES:
        case = OmegaConf.merge(cell, {"activation": {"name": activation},
                                      "init": {"name": init}})
        model = build_model(case, 1)
        initialize(model, case.init, "zero", [0], x)
        with torch.no_grad():
            outputs = model.layer_outputs(x.unsqueeze(0))[:-1]
        samples[(activation, init)] = [h.flatten().numpy() for _, h in outputs]
    figures.activation_histograms(samples, path)


def write_curves(histories: pd.DataFrame, folder: Path) -> None:
    """Each grid cell's learning curves as DVC plot data, <cell>.csv: per epoch the mean over
    seeds of the validation accuracy and training loss (`dvc plots diff main <exp>` overlays
    two revisions' curves; the PNGs stay for the report)."""
    means = histories.groupby(["activation", "init", "epoch"])[["val_accuracy", "train_loss"]] \
        .mean().reset_index()
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for (activation, init), curve in means.groupby(["activation", "init"]):
            curve[["epoch", "val_accuracy", "train_loss"]].to_csv(
                tmp / f"{activation}-{init}.csv", index=False)


def theory_parts(cfg, depth_layers: pd.DataFrame, depth_runs: pd.DataFrame, input_q,
                 figures_dir: Path) -> pd.DataFrame:
    """Theory beside the depth sweep's probes (`predicted.compare`) and test accuracy, and its
    three figures."""
    features, classes = math.prod(cfg.dataset.image_shape), cfg.dataset.num_classes
    bias2 = theory.BIAS_VARIANCE[cfg.model.bias_init]
    measured, tables = predicted.per_layer(depth_layers, input_q, features, classes, bias2)
    figures.theory_layers(measured, tables, "z_std", "pre-activation sd",
                          figures_dir / "theory_forward.png", log=True)
    figures.theory_layers(measured, tables, "log10_grad_norm", "log10 grad norm / last hidden",
                          figures_dir / "theory_backward.png")
    inits = sorted({*cfg.grid.inits, *cfg.depth_sweep.inits})
    figures.order_to_chaos(*predicted.phase("tanh", inits, cfg.depth_sweep.width),
                           figures_dir / "theory_tanh_phase.png")
    comparison = predicted.compare(depth_layers, input_q, features, classes,
                                   cfg.report.theory_decades, bias2)
    accuracy = depth_runs.groupby(["activation", "init", "depth"]).accuracy.mean()
    return comparison.join(accuracy.rename("test accuracy"), on=["activation", "init", "depth"])


def published_comparison(means: pd.DataFrame, alpha: float) -> list:
    """The lecture's CIFAR-10 table beside ours, the rank agreement per activation (Spearman),
    and the lab-10 MNIST runs beside our normal / glorot_uniform runs."""
    published = yaml.safe_load(PUBLISHED.read_text())
    cifar, lab = published["lecture_cifar10_init_x_activation"], \
        published["lecture_lab10_mnist"]
    table = pd.DataFrame(cifar["rows"], index=cifar["columns"]).T
    agreement = []
    for activation in cifar["columns"]:
        pairs = [(theirs, means.get(activation, {}).get(ours))
                 for name, ours in cifar["ours"].items()
                 for theirs in [table.loc[name, activation]]]
        pairs = [(0 if t == "n/c" else t, o) for t, o in pairs if o is not None and t != "-"]
        rho = p = float("nan")
        if len(pairs) >= 3:
            rho, p = spearman_exact([t for t, _ in pairs], [o for _, o in pairs])
        agreement.append({"activation": activation, "inits compared": len(pairs),
                          "spearman rho": rho, "exact permutation p": p})
    most = max([row["inits compared"] for row in agreement] + [3])
    smallest = 2 / math.factorial(most)
    lab_rows = [{"init": spec["init"], "published (full MNIST, Adam, 15 epochs)":
                 spec["accuracy"], "our init": lab["ours"][run],
                 "ours (relu, this study)": means.get("relu", {}).get(
                     lab["ours"][run], float("nan")) / 100}
                for run, spec in lab["runs"].items()]
    return [
        Heading("Published comparison"),
        Text(f"**{cifar['title']}**, from {cifar['original']}. {cifar['metric']}; "
             f"{cifar['precision'].strip()} A different dataset (CIFAR-10) and model "
             "(FitNet4): compare orderings, not levels."),
        Table(table),
        Text("Rank agreement between the published ordering of lsuv, orthonormal, xavier and "
             "msra (n/c ranked last) and our mean accuracies for lsuv, orthogonal, xavier and "
             "he, per activation:"),
        Table(pd.DataFrame(agreement), index=False),
        Text("Blank: no ordering to compare (the published values of that column are all "
             "equal, or fewer than 3 of the inits are in our grid). p is exact, over every "
             f"pairing of the inits: with {most} of them the smallest two-sided p possible is "
             f"2/{math.factorial(most)} = {smallest:.3g}"
             + (f", so no agreement can be significant at {alpha:g}." if smallest >= alpha
                else ".")),
        Text(f"**{lab['title']}** ({lab['source']}), single runs, beside the mean of our relu "
             "runs with the matching init on the embedded subset (a different setup: context, "
             "not a replication; blank where that init is not in this study's grid):"),
        Table(pd.DataFrame(lab_rows), index=False),
    ]


def rbm_config(root: Path):
    """The grid's RBM cell config, if the grid has one."""
    rbm_cells = sorted((root / CELL_CONFIGS / "grid").glob("*-rbm.yaml"))
    return OmegaConf.load(rbm_cells[0]) if rbm_cells else None


def setup_lines(cfg, rbm_cell) -> dict[str, str]:
    """How each sweep trained, in machine-independent units (StudyData.setup)."""
    n_train = sum(class_counts("train"))
    steps = cfg.depth_sweep.epochs * math.ceil(n_train / cfg.train.batch_size)
    lines = {"grid": f"{cfg.optimizer.name} lr {cfg.optimizer.lr:g}, {cfg.train.epochs} "
                     f"epochs",
             "depth": f"{cfg.depth_sweep.epochs} epochs ({steps} {cfg.optimizer.name} steps "
                      f"of {cfg.train.batch_size} examples)"}
    if rbm_cell is not None:
        rbm, hidden = rbm_cell.init.rbm, rbm_cell.model.depth - 1
        lines["rbm"] = (f"{rbm.epochs} epochs of CD-{rbm.k} for each of the {hidden} hidden "
                        f"layers, {rbm.epochs * hidden} passes over the training data (each "
                        f"through the layers below), before the {rbm_cell.train.epochs} epochs "
                        "of training that every init gets")
    return lines


def init_passes(results: pd.DataFrame, rbm_cell) -> np.ndarray:
    """Each run's passes over the training data before training: RBM pre-training's epochs
    for each hidden layer, 0 for every other init."""
    epochs = 0 if rbm_cell is None else rbm_cell.init.rbm.epochs
    return np.where(results.init == "rbm", epochs * (results.depth - 1), 0)


def build(cfg) -> tuple[list, dict]:
    root = workspace_root()
    reports = root / "reports"
    counts = class_counts()
    chance = max(counts) / sum(counts)
    results = tables.mark_not_converged(pd.read_csv(root / RESULTS_CSV), max(counts),
                                        sum(counts), cfg.report.chance_margin)
    rbm_cell = rbm_config(root)
    results = results.assign(accuracy=results.test_accuracy.fillna(chance),
                             init_passes=init_passes(results, rbm_cell))
    histories = per_run(results, layout.HISTORY)
    data = StudyData(results, per_run(results, layout.LAYERS).merge(
        results[["run_dir", "seed", "width"]]), histories, chance, cfg.report,
        setup_lines(cfg, rbm_cell))
    grid = results[results.sweep == "grid"]
    inits, activations = list(cfg.grid.inits), list(cfg.grid.activations)
    stats = tables.cell_stats(grid)
    x, _ = load_split("train")  # as numpy: the parent runs no torch op before the fork
    probe = x[:cfg.train.probe_size].numpy()
    input_q = theory.input_moments(probe)
    # The findings and figures (a few seconds each, mostly pure-Python matplotlib) are made
    # by a pool of processes, one per core, forked from this one (torch imported, no op run).
    figures_dir = reports / "figures"
    with atomic_path(figures_dir) as tmp, \
            multiprocessing.get_context("fork").Pool(len(os.sched_getaffinity(0))) as pool:
        tmp.mkdir()
        drawn = [pool.apply_async(draw, args) for draw, args in [
            (activations_figure, (OmegaConf.to_container(cell_config(cfg)), probe,
                                  tmp / "activations_at_init.png")),
            (figures.learning_curves, (histories[histories.sweep == "grid"], activations,
                                       inits, tmp / "learning_curves.png")),
            (figures.accuracy_heatmap, (stats, inits, activations, tmp / "accuracy_grid.png"))]]
        compared = pool.apply_async(theory_parts, (cfg, data.layers[data.layers.sweep == "depth"],
                                                 data.sweep("depth"), input_q, tmp))
        found = [pool.apply_async(finding, (data, tmp)) for finding in FINDINGS]
        findings = [result.get() for result in found]
        comparison = compared.get()
        for finding in findings:
            finding.theory = "; ".join(filter(None, [
                predicted.line(comparison, activation, init, forward)
                for activation, init, forward in THEORY_LINES.get(finding.key, [])]))
        for result in drawn:
            result.get()
    with atomic_path(reports / "plots" / "accuracy.csv") as tmp:
        stats.assign(cell=stats.activation + "-" + stats.init)[
            ["cell", "init", "activation", "mean", "sd", "runs", "n_c"]].rename(
            columns={"mean": "test_accuracy"}).to_csv(tmp, index=False)
    write_curves(histories[histories.sweep == "grid"], reports / "plots" / "curves")

    seeds = list(cfg.study.seeds)
    more = grid.groupby(["activation", "init"]).size()
    more = more[more != len(seeds)]
    blocks = [
        Heading(f"initlab report: study `{cfg.study.name}`", 1),
        Text(f"Each claim of the lecture \"Initialize weights in a smart way\", tested on "
             f"{len(results)} training runs ({cfg.dataset.name}, {len(seeds)} seeds a cell"
             + (f"; {len(more)} grid cells train {int(more.max())}, for the checks that need "
               "the power: `grid.more_seeds`" if len(more) else "") + "). "
             "Each finding is tested within its scope, the cases the claim was made for; "
             "cases outside it are shown, labelled, and decide nothing. Verdicts are computed "
             "from the data by the rule and thresholds at the end; a diverged run counts at "
             f"the chance level (the majority-class rate, {100 * chance:.1f}%)."),
        Text(f"Sizes: the **grid** is {len(activations)} activations × {len(inits)} inits, an "
             f"MLP of {cfg.model.depth} weight layers × {cfg.model.width} units, "
             f"{data.setup['grid']}, batch {cfg.train.batch_size}, momentum "
             f"{cfg.optimizer.momentum:g}. The **depth sweep** is depths "
             f"{list(cfg.depth_sweep.depths)} × {list(cfg.depth_sweep.activations)} × "
             f"{list(cfg.depth_sweep.inits)}, width {cfg.depth_sweep.width}, "
             f"{data.setup['depth']}. The **batch-norm sweep** is the grid's model "
             f"with batch norm, {list(cfg.batchnorm_sweep.activations)} × "
             f"{list(cfg.batchnorm_sweep.inits)}."),
        Heading("Findings"),
        Table(pd.DataFrame([{"finding": f.key, "claim": f.title, "verdict": f.headline,
                             "scope": f.scope.text} for f in findings]), index=False),
    ]
    for f in findings:
        blocks += [Heading(f"{f.key}. {f.title}"), Text(f"Claim: {f.claim}"),
                   Text(f"Scope: {f.scope.text}."
                        + (f" Cases outside it are shown: {f.scope.outside}."
                           if f.scope.outside else "")),
                   Text(f"**{f.headline}**."
                        + (f" Why undecided: {f.why}." if f.why else "")),
                   Table(f.table(), index=False)]
        blocks += [Text(note) for note in f.notes]
        if f.theory:
            blocks.append(Text(f"What theory predicts: {f.theory}"))
        for caption, table in f.tables.items():
            blocks += [Text(f"{caption}:"), Table(table)]
        if f.figure:
            blocks.append(Figure(f"figures/{f.figure}", f.caption))
    blocks += theory_section(cfg, comparison)
    blocks += [
        Heading("Accuracy: inits × activations (grid)"),
        Text(f"Test accuracy (%), mean ± sd over every seed, the runs that did not train "
             "included (a diverged run at the chance level). **n/c**: a run diverged or "
             f"stayed within {100 * cfg.report.chance_margin:.0f} points of the "
             "majority-class rate; `(k/n n/c)` counts them, `n/c (x)` marks a cell where "
             "none trained, with its mean; `n=` a cell with more seeds than the study's. One "
             "row per run: [results.csv](results.csv)."),
        Table(tables.accuracy_grid(stats, inits, activations, len(seeds))),
        Figure("figures/accuracy_grid.png", "Mean test accuracy per init and activation, "
               "over every seed (n/c: no run trained)."),
        Figure("figures/learning_curves.png", "Validation accuracy and training loss per "
               "epoch (epoch 0 = at init); line = mean over seeds, band = min..max."),
        Figure("figures/activations_at_init.png", "Hidden-layer outputs at init on the probe "
               "batch, per layer: a naive and a good init for each activation (after Glorot & "
               "Bengio 2010)."),
        *published_comparison(grid.groupby(["activation", "init"]).test_accuracy.mean()
                              .mul(100).unstack().to_dict("index"), cfg.report.alpha),
        Heading("The rule and the thresholds"),
        Text("A check holds when its interval (95%, Welch's t: it keeps its coverage at 5 "
             "seeds a group) lies on the claim's side of its threshold, fails when it lies on "
             "the other side, and is undecided otherwise or with fewer than `min_seeds` runs a "
             "group. A case and a finding aggregate their checks by one rule "
             "(`initlab.report.stats.aggregate`): **HOLDS** when every check in scope holds, "
             "**FAILS** when every one fails, **PARTLY** when some hold and some fail (the "
             "headline names which), **INCONCLUSIVE** otherwise, with the seeds an undecided "
             "check would need for 80% power. `detectable (80%)` is the smallest distance from "
             "the threshold a check detects with 80% power at the seeds it has."),
        Text("Every verdict uses these values (`report:` in params.yaml, defaults in "
             "`initlab.schema.ReportConfig`):"),
        Table(pd.DataFrame([OmegaConf.to_container(cfg.report)]), index=False),
    ]
    return blocks, summary(stats, results, chance, findings)


def theory_section(cfg, comparison: pd.DataFrame) -> list:
    """Mean-field theory's prediction for every cell of the depth sweep beside its probes."""
    deepest = comparison[comparison.depth == comparison.depth.max()] if len(comparison) \
        else comparison
    broken = deepest[deepest.verdict.astype(str).str.startswith("breaks")]
    return [
        Heading("Theory beside the measurements"),
        Text("Mean-field theory (Poole et al. 2016; Schoenholz et al. 2017) predicts, from an "
             "init's weight variance sigma_w² alone, each layer's pre-activation variance "
             "q = sigma_w² E[phi(√q' z)²] and how the backward signal moves per layer, "
             "chi = sigma_w² E[phi'(√q z)²] (½ log10 chi decades a layer; chi = 1 is the edge "
             "of chaos). `python -m initlab.theory activation=tanh init=xavier "
             "model.depth=50` prints the table for any config without training "
             "(`src/initlab/theory.py`). Below, the prediction for every cell of the depth "
             "sweep against its probes at init: the first/last hidden-layer gradient ratio "
             "(F3's measure, decades) and the pre-activation sd's change across the hidden "
             f"layers. They agree when the ratios differ by at most "
             f"{cfg.report.theory_decades:g} decades; where they do not, the verdict names the "
             "assumption that broke."),
        Table(comparison.round(3), index=False),
        Text("Where theory breaks at the deepest depth: "
             + ("; ".join(f"{r.activation} + {r.init} ({r.verdict[len('breaks: '):]}: "
                          f"{r.predicted:+.2f} predicted, {r.measured:+.2f} measured)"
                          for r in broken.itertuples())
                if len(broken) else "nowhere")
             + ". Zero, constant and rbm are outside the theory (no weights of a set variance, "
             "or weights fitted to the data), and so is batch norm, which rescales every layer "
             "by its batch's statistics."),
        Figure("figures/theory_backward.png", "Weight-gradient norm per hidden layer at init "
               "over the last hidden layer's (log10), the deepest nets of the depth sweep: a "
               "dot per seed, the line theory's."),
        Figure("figures/theory_forward.png", "Pre-activation sd per layer at init, the deepest "
               "nets of the depth sweep: a dot per seed, the line theory's."),
        Figure("figures/theory_tanh_phase.png", "Order to chaos for tanh: chi_1 over the "
               "weight and bias variance, the edge of chaos (black) and the study's inits at "
               "bias 0 with their predicted trainable depth, 6 xi_c layers (Schoenholz et al. "
               "2017; xavier sits on the edge, where xi_c is infinite)."),
    ]


def attach_to_study_run(study: str, reports: Path) -> None:
    """Log the report, its figures and summary to the study's parent run in MLflow."""
    mlflow_client = tracking.client()
    exp_id = tracking.experiment_id(mlflow_client, study)
    run_id = tracking.study_run(mlflow_client, exp_id, study)
    for name in ("report.md", "report.html", "summary.json", "results.csv"):
        mlflow_client.log_artifact(run_id, str(reports / name))
    mlflow_client.log_artifacts(run_id, str(reports / "figures"), "figures")


def main() -> None:
    with reported_errors():
        cfg = load_config(sys.argv[1:])
        tracking.check_reachable(tracking.tracking_uri())
        blocks, info = build(cfg)
    reports = workspace_root() / "reports"
    write_json(reports / "summary.json", info)
    with atomic_path(reports / "report.md") as tmp:
        tmp.write_text(to_markdown(blocks))
    with atomic_path(reports / "report.html") as tmp:
        tmp.write_text(to_html(blocks, f"initlab report: {cfg.study.name}", reports))
    with reported_errors(), tracking.reported_server_loss():
        attach_to_study_run(cfg.study.name, reports)
    verdicts = ", ".join(f"{k} {v}" for k, v in info["findings"].items())
    print(f"report: reports/report.md and report.html ({info['runs']} runs). Best cell "
          f"{info['best_cell']} at {100 * info['best_mean_test_accuracy']:.1f}% test accuracy. "
          f"Findings: {verdicts}. Browse the runs: `make ui`.")


if __name__ == "__main__":
    main()
