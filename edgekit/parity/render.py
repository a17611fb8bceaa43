"""The parity result (:func:`edgekit.parity.compare`) as Markdown: a table, then each diagnosis."""

from __future__ import annotations

from typing import Any


def render_compare(result: dict[str, Any]) -> str:
    """A markdown table of :func:`compare`'s result, then each diagnosis as a list.

    Columns: variant, runtime, accuracy, its change against the teacher (points; every stage
    from the teacher on is a row, so the loss of each shows), agreement with Keras float, max and mean absolute
    output (logit) difference after dequantization, the three classes (as Keras float predicts
    them) with the most disagreements as ``class: count/of``.
    """
    ref = result["reference"]
    lines = [f"Parity of `{result['run']}` on {result['samples']} test samples; reference: Keras "
             f"float (stage `{ref['stage']}`); agreement threshold {result['threshold']:g}", "",
             "| variant | runtime | accuracy | vs teacher | agreement | max abs logit diff | mean abs logit diff "
             "| most disagreeing classes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["variants"]:
        if r["error"] is not None:
            lines.append(f"| {r['name']} | {r['runtime']} | error: {r['error']} | | | | | |")
            continue
        vs = r.get("vs_teacher_points")
        vs = "–" if vs is None else ("±0.0 pt" if round(vs, 1) == 0 else f"{vs:+.1f} pt".replace("-", "−"))
        classes = ", ".join(f"{t['class']}: {t['count']}/{t['of']}" for t in r["top_disagreement_classes"]) or "–"
        flag = " ⚠" if r["name"] in result["below_threshold"] else ""
        lines.append(f"| {r['name']} | {r['runtime']} | {r['accuracy']:.4f} | {vs} | {r['agreement']:.4f}{flag} "
                     f"| {r['max_abs_logit_diff']:.3g} | {r['mean_abs_logit_diff']:.3g} | {classes} |")
    f = result["facts"]
    lines += ["", f"Representative set: {f['representative_samples_used']} of {f['train_samples']} "
                  f"training samples (class balance unknown); QAT: "
                  f"{'yes (' + str(f['qat_scheme']) + ')' if f['qat_used'] else 'no'}; "
                  f"test x range [{f['x_range'][0]:.4g}, {f['x_range'][1]:.4g}]."]
    if ref.get("matches_eval_ref") is not None and ref["matches_eval_ref"] < 1.0:
        lines.append(f"Warning: the Keras float model matches eval.npz's reference predictions on "
                     f"only {ref['matches_eval_ref']:.4f} of samples; eval.npz may be stale.")
    for r in result["variants"]:
        if not r.get("diagnosis"):
            continue
        lines += ["", f"Diagnosis for {r['name']} (agreement {r['agreement']:.4f} < "
                      f"{result['threshold']:g}):"]
        lines += [f"- {d['cause']}: {d['evidence'].rstrip('.')}. Try: {d['try'].rstrip('.')}."
                  for d in r["diagnosis"]]
    lines.append("")
    lines.append("PASS: every quantized variant agrees at or above the threshold." if result["ok"]
                 else f"FAIL: below threshold: {', '.join(result['below_threshold']) or 'none'}; "
                      f"errors: {', '.join(result['errors']) or 'none'}.")
    return "\n".join(lines) + "\n"
