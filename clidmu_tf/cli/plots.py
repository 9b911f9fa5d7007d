"""The PNG figures of a run directory.

Figures are drawn on `matplotlib.figure.Figure` objects rather than through `pyplot`, so no
GUI backend or global state is involved: it works on headless machines and in threads.
"""

import numpy as np

CLEAN_COLOR = "tab:blue"
FLIPPED_COLOR = "tab:red"
CLID_COLOR = "tab:purple"


def _save(figure, path):
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def _new_figure(width=7.0, height=4.5):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def plot_clid_and_accuracy(path, *, epochs, clid, clid_label="CLID on the meta set",
                           test_accuracy=None, baseline_accuracy=None, selected_epochs=()):
    """The per-epoch CLID the snapshots are ranked by and the test accuracy, on one figure
    with two y-axes.

    Args:
        path: where to write the PNG.
        epochs: epoch numbers (1-based), the x-axis.
        clid: the CLID ranking the snapshots after each epoch (lower is better), or None.
        clid_label: what `clid` was computed on, for the legend.
        test_accuracy: CLID-MU's test accuracy after each epoch, or None without test labels.
        baseline_accuracy: the cross-entropy baseline's test accuracy per epoch, or None.
        selected_epochs: the epochs kept in the snapshot ensemble, marked on the CLID curve.

    Returns:
        `path`.
    """
    figure = _new_figure(7.0, 5.2)
    clid_axis = figure.add_subplot()
    clid_axis.set_xlabel("epoch")
    lines = []
    if clid is not None:
        lines += clid_axis.plot(epochs, clid, color=CLID_COLOR, marker=".",
                                label=f"{clid_label} (lower is better)")
        chosen = [(e, c) for e, c in zip(epochs, clid) if e in set(selected_epochs)]
        if chosen:
            lines.append(clid_axis.scatter(*zip(*chosen), s=80, facecolors="none",
                                           edgecolors="black", zorder=3,
                                           label="epochs in the snapshot ensemble"))
    clid_axis.set_ylabel("CLID", color=CLID_COLOR)
    clid_axis.tick_params(axis="y", labelcolor=CLID_COLOR)
    if test_accuracy is not None or baseline_accuracy is not None:
        accuracy_axis = clid_axis.twinx()
        if test_accuracy is not None:
            lines += accuracy_axis.plot(epochs[: len(test_accuracy)], test_accuracy,
                                        color="tab:green", label="CLID-MU test accuracy")
        if baseline_accuracy is not None:
            lines += accuracy_axis.plot(range(1, len(baseline_accuracy) + 1), baseline_accuracy,
                                        color="tab:gray", linestyle="--",
                                        label="cross-entropy baseline test accuracy")
        accuracy_axis.set_ylabel("test accuracy")
    from matplotlib.ticker import MaxNLocator

    clid_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    # Below the axes, where it cannot hide a curve.
    clid_axis.legend(handles=lines, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2,
                     fontsize="small", frameon=False)
    clid_axis.set_title("CLID (label-free) and test accuracy per epoch")
    clid_axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_weight_function(path, *, losses, weights, sample_losses=None, flipped=None):
    """The meta-model's learned weight as a function of a sample's loss.

    Args:
        path: where to write the PNG.
        losses: 1-D array of loss values, the x-axis of the curve.
        weights: the meta-model's weight at each of `losses`.
        sample_losses: the training samples' cross-entropy, shown as histograms under the
            curve so that the reader sees where the samples actually lie.
        flipped: bool array aligned with `sample_losses`, True for injected label errors.

    Returns:
        `path`.
    """
    figure = _new_figure()
    weight_axis = figure.add_subplot()
    lines = weight_axis.plot(losses, weights, color="black", linewidth=2,
                             label="learned weight w(loss)")
    weight_axis.set_xlabel("cross-entropy loss of a training sample")
    weight_axis.set_ylabel("weight (before normalisation)")
    weight_axis.set_xlim(float(np.min(losses)), float(np.max(losses)))
    weight_axis.grid(alpha=0.3)
    if sample_losses is not None:
        density_axis = weight_axis.twinx()
        bins = np.linspace(float(np.min(losses)), float(np.max(losses)), 41)
        groups = [(sample_losses, CLEAN_COLOR, "training samples")]
        if flipped is not None and np.any(flipped):
            groups = [
                (sample_losses[~flipped], CLEAN_COLOR, "samples with a correct label"),
                (sample_losses[flipped], FLIPPED_COLOR, "samples with a flipped label"),
            ]
        for values, color, label in groups:
            lines += density_axis.hist(np.clip(values, bins[0], bins[-1]), bins=bins,
                                       color=color, alpha=0.3, label=label)[2][:1]
        # Memorised samples pile up near zero loss; a log scale keeps the tail visible.
        density_axis.set_yscale("log")
        density_axis.set_ylabel("number of samples (log scale)")
    weight_axis.set_zorder(1)
    weight_axis.patch.set_visible(False)
    weight_axis.legend(handles=lines, loc="upper right", fontsize="small")
    weight_axis.set_title("Meta-Weight-Net: weight as a function of loss")
    return _save(figure, path)


def plot_weight_histograms(path, *, weights, flipped, auc=None):
    """Histograms of the per-sample weights of samples with flipped and unflipped labels.

    Args:
        path: where to write the PNG.
        weights: the meta-model's per-sample weight of each training sample.
        flipped: bool array aligned with `weights`.
        auc: the ROC AUC of `1 - weight` as a detector of flipped labels, for the title.

    Returns:
        `path`.
    """
    figure = _new_figure()
    axis = figure.add_subplot()
    low, high = float(np.min(weights)), float(np.max(weights))
    bins = np.linspace(low, high if high > low else low + 1e-6, 41)
    axis.hist(weights[~flipped], bins=bins, color=CLEAN_COLOR, alpha=0.6,
              label=f"label unchanged ({int(np.sum(~flipped))})")
    axis.hist(weights[flipped], bins=bins, color=FLIPPED_COLOR, alpha=0.6,
              label=f"label flipped by the noise ({int(np.sum(flipped))})")
    axis.set_xlabel("per-sample weight given by the meta-model")
    axis.set_yscale("log")
    axis.set_ylabel("number of training samples (log scale)")
    title = "Per-sample weights of flipped and unflipped samples"
    if auc is not None:
        title += f"\n(ROC AUC of low weight as a label-error detector: {auc:.3f})"
    axis.set_title(title)
    axis.legend(fontsize="small")
    axis.grid(alpha=0.3)
    return _save(figure, path)


def plot_transition_matrix(path, *, transition, class_names=None, title=None):
    """The empirical noise transition matrix, `T[i, j] = P(noisy = j | true = i)`.

    Args:
        path: where to write the PNG.
        transition: `[K, K]` array.
        class_names: the classes' names, or None for their ids.
        title: the figure's title.

    Returns:
        `path`.
    """
    transition = np.asarray(transition, dtype=float)
    classes = transition.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(classes)]
    size = min(12.0, 3.0 + 0.5 * classes)
    figure = _new_figure(size + 1.0, size)
    axis = figure.add_subplot()
    image = axis.imshow(transition, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    if classes <= 20:
        for i in range(classes):
            for j in range(classes):
                value = transition[i, j]
                if value > 0.005:
                    axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                              color="white" if value > 0.5 else "black")
        axis.set_xticks(range(classes), names, rotation=90 if classes > 10 else 0)
        axis.set_yticks(range(classes), names)
    axis.set_xlabel("noisy (given) label j")
    axis.set_ylabel("true label i")
    axis.set_title(title or "Empirical noise transition matrix P(noisy = j | true = i)")
    return _save(figure, path)


def plot_label_issues(path, *, quality, score, num_issues, flipped=None, roc_curve=None):
    """The training labels ranked by a score, the suggested cut-off and, with known flips,
    the share of flipped labels among the first k and the score's ROC curve.

    Args:
        path: where to write the PNG.
        quality: `[N]` label quality of the chosen score (lower: label more likely wrong).
        score: the score's name, for the legends.
        num_issues: the suggested number of wrong labels (`suggested_num_issues`: cleanlab's
            count on the early epochs' class probabilities).
        flipped: bool `[N]`, True where the label is known to be wrong, or None.
        roc_curve: with `flipped`, a dict with `false_positive_rate`, `true_positive_rate`
            and `roc_auc` (the report's), drawn in a second panel.

    Returns:
        `path`.
    """
    quality = np.asarray(quality, dtype=float)
    order = np.argsort(quality, kind="stable")
    known = flipped is not None and roc_curve is not None
    figure = _new_figure(12.0 if known else 6.5, 4.8)
    ranking_axis = figure.add_subplot(1, 2 if known else 1, 1)
    ranks = np.arange(1, len(quality) + 1)
    ranking_axis.plot(ranks, quality[order], color="black", linewidth=1,
                      label=f"label quality ({score})")
    ranking_axis.axvline(num_issues, color="tab:orange", linestyle="--",
                         label=f"suggested: {num_issues} wrong labels (cleanlab, early epochs)")
    ranking_axis.set_xlabel("rank k (1: the label most likely wrong)")
    ranking_axis.set_ylabel(f"label quality ({score})")
    ranking_axis.set_title("Training labels ranked by how likely they are wrong")
    ranking_axis.grid(alpha=0.3)
    if not known:
        ranking_axis.legend(fontsize="small", loc="lower right")
        return _save(figure, path)
    flipped = np.asarray(flipped, dtype=bool)
    ranking_axis.axvline(int(flipped.sum()), color=FLIPPED_COLOR, linestyle=":",
                         label=f"flipped by the noise: {int(flipped.sum())}")
    ranking_axis.legend(fontsize="small", loc="lower right")
    share_axis = ranking_axis.twinx()
    share_axis.plot(ranks, np.cumsum(flipped[order]) / ranks, color=FLIPPED_COLOR, linewidth=1)
    share_axis.set_ylabel("share of flipped labels among the first k", color=FLIPPED_COLOR)
    share_axis.tick_params(axis="y", labelcolor=FLIPPED_COLOR)
    share_axis.set_ylim(0.0, 1.05)
    roc_axis = figure.add_subplot(1, 2, 2)
    roc_axis.plot(roc_curve["false_positive_rate"], roc_curve["true_positive_rate"],
                  color=FLIPPED_COLOR, label=f"{score} (ROC AUC {roc_curve['roc_auc']:.3f})")
    roc_axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    flagged = np.zeros(len(quality), dtype=bool)
    flagged[order[:num_issues]] = True
    roc_axis.scatter([flagged[~flipped].mean()], [flagged[flipped].mean()], color="tab:orange",
                     zorder=3, label=f"the suggested {num_issues} flagged")
    roc_axis.set_xlabel("false positive rate (correct labels flagged)")
    roc_axis.set_ylabel("true positive rate (flipped labels flagged)")
    roc_axis.set_title("Finding the flipped labels")
    roc_axis.legend(fontsize="small", loc="lower right")
    roc_axis.grid(alpha=0.3)
    return _save(figure, path)
