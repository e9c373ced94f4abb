"""What ``alprobe status`` prints: the per-generation tables of a campaign, as blocks."""

from __future__ import annotations

from .blocks import Block, Paragraph, plain
from .fmt import ACCURACY_COLUMNS, SIGNAL_COLUMNS, cell, columns_table, replay_table
from .gather import STATUSES, CampaignData

__all__ = ["status_blocks"]


def status_blocks(data: CampaignData) -> list[Block]:
    """Two tables, one row per finished generation.

    Accuracy: "labels" counts DFT labels in the training pool (test set excluded); errors are
    on the fixed held-out test set, with the 95% bootstrap interval of the force MAE over test
    frames, the 95th percentile and maximum of the per-frame force RMSE, and the frames the
    backbone trained on; "hit rate" the fraction of the rule's new labels whose true error
    exceeded generation 0's threshold ("hit abs": select.hit_threshold_force_rmse_eV_A).
    Trust signal: the probe's training pool, the candidates' P(reliable) quartiles, and the
    AUROC / Spearman rho of generation g-1's signal, scored before the labels existed, on the
    frames the rule picked, on the random audit sample and (pool) on every candidate; "AUROC
    test" is this generation's probe on the test set. Then frame counts, the stress set and
    the last backbone's MD stability.
    """
    rows = data.metrics
    out: list[Block] = [columns_table(rows, ACCURACY_COLUMNS)]
    if rows:
        out.append(columns_table(rows, SIGNAL_COLUMNS, caption=(
            "trust signal (AUROC at the median error of each set; rho: Spearman of trust and "
            "error, negative is good):")))
        forgetting = replay_table(rows)
        if forgetting is not None:
            out.append(forgetting)
    status = {s: data.status[s] for s in STATUSES}
    lines = [(f"frames: {status}; held-out test frames: {data.splits['test']}; "
              f"stress frames: {data.stress}")]
    if not rows:
        return [*out, Paragraph("\n".join([*lines, "no generation finished yet"]))]
    last = data.last
    if data.stress:
        lines.append(
            f"stress set (gen {last['generation']}): F MAE "
            + cell(last, ("", "stress_force_mae_eV_A", "{:.1f}", 1000.0)) + " meV/Å (95% CI "
            + cell(last, ("", ("stress_force_mae_lo_eV_A", "stress_force_mae_hi_eV_A"),
                          "{:.0f}-{:.0f}", 1000.0)) + "), p95 frame F RMSE "
            + cell(last, ("", "stress_force_rmse_p95_eV_A", "{:.0f}", 1000.0)) + " meV/Å, max "
            + cell(last, ("", "stress_force_rmse_max_eV_A", "{:.0f}", 1000.0)) + " meV/Å")
    st = data.stage(int(last["generation"]), "stability")
    if st:
        from ..stages.stability import describe_stability

        lines.append(f"MD stability of backbone {st['generation']} at "
                     f"{st['temperature_K']:g} K: {plain(describe_stability(st))}")
    return [*out, Paragraph("\n".join(lines))]
