"""Generated datasets: simulated sensors, seeded, nothing downloaded (numpy only).

``fermentation()`` (regression) and ``machine_anomaly()`` (anomaly detection) are registered as
data sources in :mod:`edgekit.data`. Both are generated from a fixed seed, so every recipe that
names them sees the same samples (the recipe's seed only changes how they are split).

- **fermentation**: :data:`FERMENTATION_RUNS` simulated batch fermentations (wine-like: sugar
  170-260 g/L, set temperature 16-26 °C, yeast vigour and lag varying per run, a set-point
  change in a third of the runs). Sugar follows Monod kinetics with logistic yeast growth,
  temperature rises with the fermentation's heat, pH falls as sugar is consumed. Three sensors
  (sugar g/L, temperature °C, pH) are read every :data:`SAMPLE_HOURS` hours with sensor noise.
  A sample is a window of :data:`WINDOW` readings, shape ``(WINDOW, 3)``; its label is the
  hours left from the window's last reading until the fermentation ends (true sugar below
  :data:`END_SUGAR` g/L). The split is by run: the test windows come from runs no training
  window saw (:data:`FERMENTATION_TEST_SHARE` of the runs).
- **machine-anomaly**: :data:`MACHINE_SAMPLES` vibration spectra of rotating machines,
  :data:`BINS` log-power bins x :data:`FRAMES` frames = 640 features as ``(640, 1)`` (the MLPerf
  Tiny anomaly-detection input size). Normal machines (four machine types with their own
  fundamental and harmonic profile, speed and load jitter, a pink noise floor) are label 0;
  :data:`FAULT_SHARE` of the samples carry a fault of random severity, label 1: a bearing
  defect (peaks at non-harmonic multiples with sidebands), looseness (half-order harmonics),
  broadband noise in a band, or imbalance (a stronger first harmonic).
"""

from __future__ import annotations

import numpy as np

SEED = 20251123

FERMENTATION_RUNS = 260
FERMENTATION_TEST_SHARE = 0.2
SAMPLE_HOURS = 2.0
WINDOW = 16          # readings per sample (32 h)
STRIDE = 2           # readings between consecutive windows of a run
END_SUGAR = 2.0      # g/L: the fermentation has ended below this
SENSORS = ("sugar_g_per_l", "temperature_c", "ph")

BINS, FRAMES = 128, 5
MACHINE_SAMPLES = 3000
FAULT_SHARE = 0.08


# ----------------------------------------------------------------------------- fermentation


def _fermentation_run(rng: np.random.Generator, dt: float = 0.25):
    """One simulated batch: (readings (T, 3) every SAMPLE_HOURS, reading times in h, end time in h)."""
    s0 = rng.uniform(170, 260)                         # g/L sugar
    t_set = rng.uniform(16, 26)                        # °C
    vigour = rng.lognormal(0.0, 0.2)                   # yeast strain / pitch rate
    x = rng.uniform(0.05, 0.3)                         # g/L yeast at pitching
    x_max = rng.uniform(3.0, 5.0) * (s0 / 220)
    ph0, drop = rng.uniform(3.3, 3.8), rng.uniform(0.15, 0.4)
    step_at = rng.uniform(30, 120) if rng.random() < 0.33 else None
    step_to = t_set + rng.uniform(-4, 4)
    s, temp, t = s0, t_set, 0.0
    true_s, true_temp, times = [], [], []
    next_sample, end = 0.0, None
    while end is None or t < end + WINDOW * SAMPLE_HOURS:
        setpoint = step_to if step_at is not None and t >= step_at else t_set
        f = np.exp(0.08 * (temp - 20.0)) * vigour     # Arrhenius-like speed-up with temperature
        mu = 0.09 * f * s / (8.0 + s)                  # yeast growth rate, 1/h
        uptake = 0.5 * f * x * s / (12.0 + s)         # sugar uptake, g/L/h
        x += dt * mu * x * (1 - x / x_max)
        s = max(0.0, s - dt * uptake)
        # heat of fermentation against a cooled tank: relaxes to the set point
        temp += dt * (0.35 * (setpoint - temp) + 0.025 * uptake)
        if end is None and s < END_SUGAR:
            end = t
        if t >= next_sample - 1e-9:
            true_s.append(s)
            true_temp.append(temp)
            times.append(t)
            next_sample += SAMPLE_HOURS
        t += dt
        if t > 2000:  # a stuck fermentation: never ends within the horizon; drop it
            return None
    true_s = np.asarray(true_s)
    progress = 1 - true_s / s0
    readings = np.stack([
        true_s + rng.normal(0, 1.5, len(true_s)),
        np.asarray(true_temp) + rng.normal(0, 0.15, len(true_s)),
        ph0 - drop * progress + 0.02 * np.sin(np.asarray(times) / 17.0) + rng.normal(0, 0.02, len(true_s)),
    ], axis=1)
    return readings.astype("float32"), np.asarray(times), end


def fermentation(seed: int = SEED):
    """The fermentation dataset, split by run: ``[(x_train, y_train), (x_test, y_test)]``.

    ``x``: float32 ``(n, WINDOW, 3)`` windows of sugar (g/L), temperature (°C) and pH readings;
    ``y``: float32 hours left until the fermentation ends, from the window's last reading.
    """
    rng = np.random.default_rng(seed)
    runs = []
    while len(runs) < FERMENTATION_RUNS:
        r = _fermentation_run(rng)
        if r is not None:
            runs.append(r)
    test_runs = set(rng.permutation(len(runs))[: int(round(FERMENTATION_TEST_SHARE * len(runs)))].tolist())
    parts = {True: ([], []), False: ([], [])}
    for i, (readings, times, end) in enumerate(runs):
        xs, ys = parts[i in test_runs]
        for last in range(WINDOW - 1, len(times), STRIDE):
            left = end - times[last]
            if left < 0:
                break
            xs.append(readings[last - WINDOW + 1 : last + 1])
            ys.append(left)
    return [(np.stack(x).astype("float32"), np.asarray(y, dtype="float32"))
            for x, y in (parts[False], parts[True])]


# ----------------------------------------------------------------------------- machine anomaly


def _peak(freqs: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((freqs - center) / width) ** 2)


def machine_anomaly(seed: int = SEED):
    """The machine-anomaly dataset: ``(x, y)``, x float32 ``(n, 640, 1)`` log power (dB / 10),
    y int64 (0 normal, 1 fault)."""
    rng = np.random.default_rng(seed + 1)
    bins = np.arange(BINS, dtype=np.float64) + 1.0
    machines = [  # (fundamental bin, harmonic decay, harmonics, resonance bin)
        (7.0, 0.55, 10, 70.0), (9.5, 0.65, 8, 85.0), (12.0, 0.5, 7, 60.0), (5.5, 0.7, 12, 95.0)]
    n = MACHINE_SAMPLES
    y = (rng.random(n) < FAULT_SHARE).astype("int64")
    x = np.empty((n, FRAMES, BINS), dtype=np.float64)
    for i in range(n):
        f0, decay, count, res = machines[rng.integers(len(machines))]
        f0 *= rng.normal(1.0, 0.02)                            # speed jitter
        load = rng.uniform(0.7, 1.3)
        floor = 1e-3 * rng.uniform(0.6, 1.6) / np.sqrt(bins)    # pink noise floor
        base = floor + 0.02 * load * _peak(bins, res, 12.0)     # structural resonance
        for h in range(1, count + 1):
            base = base + load * decay ** (h - 1) * rng.uniform(0.8, 1.2) * _peak(bins, h * f0, 0.8)
        if y[i]:
            severity = rng.uniform(0.1, 1.0)
            kind = rng.integers(4)
            if kind == 0:    # bearing defect: non-harmonic orders with sidebands
                order = rng.uniform(3.1, 5.9)
                for k in (1, 2, 3):
                    for side in (-1, 0, 1):
                        base = base + 0.3 * severity * (0.6 if side else 1.0) * 0.7 ** (k - 1) \
                            * _peak(bins, k * order * f0 + side * f0 * 0.5, 0.9)
            elif kind == 1:  # looseness: half-order harmonics
                for h in range(1, count + 1):
                    base = base + 0.25 * severity * decay ** (h - 1) * _peak(bins, (h + 0.5) * f0, 0.9)
            elif kind == 2:  # broadband noise in a band
                lo = rng.uniform(20, 90)
                base = base + 0.02 * severity * ((bins > lo) & (bins < lo + rng.uniform(15, 35)))
            else:            # imbalance: a much stronger first harmonic and its neighbours
                base = base + load * (1.0 + 4.0 * severity) * _peak(bins, f0, 0.8) \
                    + 0.3 * severity * _peak(bins, 2 * f0, 0.8)
        frames = base[None, :] * rng.lognormal(0.0, 0.12, (FRAMES, BINS))
        x[i] = np.log10(frames + 1e-6)                           # log power, dB / 10
    return x.reshape(n, FRAMES * BINS, 1).astype("float32"), y
