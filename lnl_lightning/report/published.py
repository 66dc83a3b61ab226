"""The published numbers a report sets its runs against."""

from __future__ import annotations

# Unbiased test accuracy on Colored MNIST, from the official repository's README
# ("alternative of Fig. 4"), github.com/feidfoe/learning-not-to-learn.
PUBLISHED_COLORED_MNIST = {
    "baseline": {
        0.020: 0.4055,
        0.025: 0.4813,
        0.030: 0.5996,
        0.035: 0.6626,
        0.040: 0.7333,
        0.045: 0.7973,
        0.050: 0.8450,
    },
    "blind_eye": {
        0.020: 0.6741,
        0.025: 0.7123,
        0.030: 0.7883,
        0.035: 0.8203,
        0.040: 0.8638,
        0.045: 0.8927,
        0.050: 0.9159,
    },
    "gray": {
        0.020: 0.8374,
        0.025: 0.8751,
        0.030: 0.8996,
        0.035: 0.9166,
        0.040: 0.9325,
        0.045: 0.9472,
        0.050: 0.9596,
    },
    "lnl": {
        0.020: 0.8185,
        0.025: 0.8854,
        0.030: 0.9137,
        0.035: 0.9306,
        0.040: 0.9406,
        0.045: 0.9555,
        0.050: 0.9618,
    },
}
# Unbiased test accuracy of the ReBias protocol (Bahng et al. 2020, Table 1), by rho.
PUBLISHED_REBIAS = {
    "vanilla": {0.999: 0.104, 0.997: 0.334, 0.995: 0.721, 0.990: 0.891},
    "ReBias": {0.999: 0.227, 0.997: 0.642, 0.995: 0.760, 0.990: 0.881},
}
OFFICIAL_WEIGHTS = (0.01, 0.1)  # (lambda, mu) of the published LNL runs
