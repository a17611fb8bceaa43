"""Likely causes of a quantized variant's low agreement with the Keras float model, each with the
numbers checked in the run (``evidence``) and what to change (``try``), most specific first."""

from __future__ import annotations

import numpy as np

from .variants import REFERENCE, _Outputs

#: a share of outputs at the int8 limits above this is reported as saturation
SATURATION_SHARE = 0.01


def diagnose(row: dict, rows: list[dict], facts: dict, v: _Outputs, ref_out: np.ndarray,
              ref_pred: np.ndarray, threshold: float) -> list[dict[str, str]]:
    """Likely causes of a quantized variant's low agreement, most specific first.

    Each entry: ``cause``, ``evidence`` (the checked numbers) and ``try`` (what to change).
    """
    out: list[dict[str, str]] = []
    by = {r["name"]: r for r in rows}
    qf = row.get("quantization") or {}
    agree = row["agreement"]

    flt = by.get("tflite_float")
    if (row["variant"] != "keras_qat" and flt and flt["agreement"] is not None
            and flt["disagreements"] and flt["agreement"] < threshold):
        out.append({"cause": "conversion, not quantization",
                    "evidence": f"the float TFLite model already agrees only {flt['agreement']:.4f} "
                                "with Keras float",
                    "try": "check for layers the converter rewrites (custom layers, unsupported "
                           "ops, training-only behaviour such as dropout or batch norm in training mode)"})
    micro = row.get("litert_same_file")
    if micro and micro.get("agreement") is not None and micro["agreement"] < 1.0:
        out.append({"cause": "TFLite Micro kernels differ from LiteRT on the same file",
                    "evidence": f"TFLM and LiteRT agree on {micro['agreement']:.4f} of samples, "
                                f"max output difference {micro['max_abs_diff']:.4g}",
                    "try": "compare per-op outputs; update tflite-micro; check the op resolver "
                           "uses the reference (not optimized) kernels on the host"})

    if row["variant"] == "keras_qat":
        if row["disagreements"]:
            out.append({"cause": "QAT fine-tuning moved the model away from the float model",
                        "evidence": f"the Keras QAT model itself agrees {agree:.4f} with Keras float "
                                    f"(accuracy {row['accuracy']:.4f} vs "
                                    f"{by[REFERENCE]['accuracy']:.4f})",
                        "try": "lower qat.learning_rate or train more qat.epochs so it recovers; "
                               "the int8 files follow the QAT model, not the float one"})
    elif "agreement_with_keras_qat" in row:
        with_qat = row["agreement_with_keras_qat"]
        qat_row = by.get("keras_qat") or {}
        if qat_row.get("disagreements") and with_qat >= agree:
            out.append({"cause": "the QAT model, not the converter",
                        "evidence": f"this file agrees {with_qat:.4f} with the Keras QAT model it "
                                    f"was converted from, which agrees {qat_row['agreement']:.4f} "
                                    "with Keras float",
                        "try": "improve QAT (see the keras_qat row); conversion kept what QAT "
                               "learned"})
        if with_qat < 1.0:
            out.append({"cause": "conversion changes the QAT model's predictions",
                        "evidence": f"this file agrees {with_qat:.4f} with the Keras QAT model it "
                                    "was converted from",
                        "try": "check that the converter kept QAT's ranges (no float fallback, "
                               "same input preprocessing as in training)"})

    q_out = qf.get("output")
    if q_out is not None:
        sat = qf.get("output_saturated_share", 0.0)
        top = qf.get("top1_saturated_samples", 0)
        ties = qf.get("top1_tied_at_max_samples", 0)
        lo, hi = qf.get("float_logit_range", [None, None])
        if top or sat > SATURATION_SHARE:
            tied = (f", {ties} of them with another class tied there (argmax then picks the lower "
                    "class index)" if ties else ", none tied with another class, so it clips "
                    "logits (see the max logit difference) without flipping a prediction by itself")
            if facts["qat_used"]:
                fix = ("the output range comes from QAT's moving-average range trackers (tfmot "
                       "starts them at [-6, 6]): train more qat.epochs so they follow the logits, "
                       "or keep logits smaller (l2, fewer epochs at high learning rate)")
            else:
                fix = ("calibrate on more (and more varied) samples: raise "
                       "convert.representative_samples; or enable QAT so the range is learned")
            out.append({"cause": "int8 output saturation",
                        "evidence": f"{sat:.1%} of int8 outputs sit at the limits "
                                    f"({qf['output_at_min_share']:.1%} at {q_out['qmin']}, "
                                    f"{qf['output_at_max_share']:.1%} at {q_out['qmax']}); "
                                    f"{top} samples have their top output at {q_out['qmax']}{tied}; "
                                    f"float logits span [{lo:.3g}, {hi:.3g}], the int8 output "
                                    f"covers [{q_out['range'][0]:.3g}, {q_out['range'][1]:.3g}]",
                        "try": fix})
        low, in_low = qf.get("low_margin_samples", 0), qf.get("disagreements_in_low_margin", 0)
        if low:
            out.append({"cause": "coarse int8 output resolution",
                        "evidence": f"{low} samples have top-1/top-2 float logits closer than one "
                                    f"output step ({q_out['scale']:.4g}); {in_low} of "
                                    f"{row['disagreements']} disagreements are among them",
                        "try": "these flips are expected at int8; QAT or a wider margin (more "
                               "training, label smoothing off) reduces them"})

    q_in = qf.get("input")
    if q_in is not None:
        x_lo, x_hi = facts["x_range"]
        r_lo, r_hi = q_in["range"]
        if x_lo < r_lo - q_in["scale"] / 2 or x_hi > r_hi + q_in["scale"] / 2:
            out.append({"cause": "test inputs outside the input quantization range",
                        "evidence": f"test x spans [{x_lo:.4g}, {x_hi:.4g}], int8 input covers "
                                    f"[{r_lo:.4g}, {r_hi:.4g}]: values outside are clipped",
                        "try": "calibrate on data preprocessed exactly like the test data; check "
                               "scaling/normalization in the data source"})
        elif (x_hi - x_lo) < 0.5 * (r_hi - r_lo):
            used = int(round((x_hi - x_lo) / q_in["scale"])) + 1
            out.append({"cause": "test inputs use a small part of the input range",
                        "evidence": f"test x spans [{x_lo:.4g}, {x_hi:.4g}] of [{r_lo:.4g}, {r_hi:.4g}]: "
                                    f"about {used} of 256 input levels",
                        "try": "calibrate on data preprocessed like the test data"})

    rep, used, train = (facts["representative_samples"], facts["representative_samples_used"],
                        facts["train_samples"])
    classes = facts["classes"]
    if rep is not None:
        per_class = f" (about {used / classes:.0f} per class if balanced)" if classes and used else ""
        of = f" of {train} training samples" if train else ""
        bigger = min(train, max(4 * used, 1000)) if train and used else max(4 * rep, 1000)
        note = ("; with QAT the activation ranges come mostly from QAT's own range tracking, "
                "so this matters less" if facts["qat_used"] else "")
        out.append({"cause": "representative (calibration) set too small or unbalanced",
                    "evidence": f"int8 ranges were calibrated on {used} samples{of}{per_class}; "
                                f"its class balance is unknown (not recorded){note}",
                    "try": f"raise convert.representative_samples (e.g. to {bigger})"})
    else:
        out.append({"cause": "representative (calibration) set unknown",
                    "evidence": "recipe.resolved.yaml has no convert.representative_samples",
                    "try": "rerun with the current edgekit, which records it"})
    if not facts["qat_used"] and row["variant"] != "keras_qat":
        out.append({"cause": "post-training quantization only",
                    "evidence": "the run has no QAT stage (stages/qat)",
                    "try": "enable QAT in the recipe, e.g. qat: {epochs: 3}"})
    top = row.get("top_disagreement_classes") or []
    if top:
        names = ", ".join(f"{t['class']} ({t['count']} of {t['of']})" for t in top)
        out.append({"cause": "class-specific loss",
                    "evidence": f"disagreements concentrate in classes {names}",
                    "try": "make sure these classes are in the representative set; look at their "
                           "confusions in eval/<target>.json"})
    return out
