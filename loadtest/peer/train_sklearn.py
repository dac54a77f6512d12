"""Trains the peer's model for `loadtest bench-mlserver`.

Reads one tenant's labelled events as the Rust side wrote them (raw little-endian f32:
`rows × features` values, then `rows` labels), fits scikit-learn's
`MLPRegressor(hidden_layer_sizes=(256, 256), activation="relu")` to them for a few epochs
(in float64, scikit-learn's default), and writes into OUT:

- `model.joblib`: the fitted estimator, for MLServer's `mlserver_sklearn.SKLearnModel`;
- `weights.json`: the same weights for Shardline: `coefs` per layer as `[in][out]` nested
  lists (scikit-learn's `coefs_`), `intercepts` per layer, the hidden and output
  activations, and the versions of the Python packages involved.

Usage: train_sklearn.py --features F --labels L --dim 64 --out DIR [--max-iter 8] [--seed 0]
"""

import argparse
import importlib.metadata
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import joblib
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor

PACKAGES = ["mlserver", "mlserver-sklearn", "scikit-learn", "numpy", "joblib", "uvloop", "uvicorn"]


def versions():
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", required=True, type=Path)
    p.add_argument("--labels", required=True, type=Path)
    p.add_argument("--dim", required=True, type=int)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--max-iter", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    x = np.fromfile(a.features, dtype="<f4").astype(np.float64)
    y = np.fromfile(a.labels, dtype="<f4").astype(np.float64)
    if x.size != y.size * a.dim:
        sys.exit(f"{x.size} feature values are not {y.size} rows of {a.dim}")
    x = x.reshape(y.size, a.dim)

    model = MLPRegressor(
        hidden_layer_sizes=(256, 256),
        activation="relu",
        max_iter=a.max_iter,
        random_state=a.seed,
    )
    started = time.monotonic()
    with warnings.catch_warnings():
        # A few epochs on purpose: the benchmark needs real weights, not the best fit.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    took = time.monotonic() - started

    a.out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, a.out / "model.joblib")
    weights = {
        "coefs": [c.tolist() for c in model.coefs_],
        "intercepts": [b.tolist() for b in model.intercepts_],
        "activation": model.activation,
        "out_activation": model.out_activation_,
        "train": {
            "rows": int(y.size),
            "epochs": int(model.n_iter_),
            "loss": float(model.loss_),
            "r2": float(model.score(x, y)),
            "seconds": took,
        },
        "versions": versions(),
    }
    (a.out / "weights.json").write_text(json.dumps(weights))
    print(
        f"trained {a.dim}→256→256→1 on {y.size} rows: {model.n_iter_} epochs, "
        f"loss {model.loss_:.4f}, {took:.1f} s"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
