"""ml: a function with a heavy initialisation: it trains a classifier before serving (python3-sklearn).

Initialisation loads the handwritten digits that scikit-learn ships (1797 8x8 images, no download),
trains a random forest on the first 1500 with a fixed seed and scores it on the other 297: more
than a second of work a cold start pays and a restore does not.

POST /predict with a JSON body {"features": [[64 numbers 0-16], ...]} (or one list of 64) answers
{"ok", "served", "predictions", "probabilities"}; GET /predict predicts the fixed sample (the last
held-out digit) and also gives its label. Any other request answers the JSON status of serve.py.
"""
import json
import math
import os
import sys

# serve.py sits beside this file in the image (/app), in images/common in the repository.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
from serve import BadRequest, Response, serve  # noqa: E402  first: starts the initialisation clock

import numpy as np  # noqa: E402
import sklearn  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402

TRAIN = 1500
TREES = 1000
SEED = 0

digits = load_digits()
model = RandomForestClassifier(n_estimators=TREES, random_state=SEED, n_jobs=1)
model.fit(digits.data[:TRAIN], digits.target[:TRAIN])
ACCURACY = float(model.score(digits.data[TRAIN:], digits.target[TRAIN:]))
SAMPLE, SAMPLE_LABEL = digits.data[-1], int(digits.target[-1])
FEATURES = digits.data.shape[1]


def features_of(body):
    try:
        value = json.loads(body)
    except ValueError as e:
        raise BadRequest(f"the body is not JSON ({e})")
    rows = value.get("features") if isinstance(value, dict) else value
    if isinstance(rows, list) and rows and not isinstance(rows[0], list):
        rows = [rows]
    ok = isinstance(rows, list) and rows and all(
        isinstance(r, list) and len(r) == FEATURES and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in r) for r in rows
    )
    if not ok:
        raise BadRequest(f'expected {{"features": [[{FEATURES} finite numbers], ...]}}')
    return np.asarray(rows, dtype=float)


def predict(x):
    probabilities = model.predict_proba(x)
    classes = model.classes_[probabilities.argmax(axis=1)]
    return [int(c) for c in classes], [round(float(p), 4) for p in probabilities.max(axis=1)]


predict(SAMPLE.reshape(1, -1))


def handle(request):
    if request.path != "/predict":
        return None
    if request.method == "POST":
        predictions, probabilities = predict(features_of(request.body))
        return Response.json({"ok": True, "served": request.served, "predictions": predictions, "probabilities": probabilities})
    predictions, probabilities = predict(SAMPLE.reshape(1, -1))
    return Response.json({"ok": True, "served": request.served, "predictions": predictions, "probabilities": probabilities, "label": SAMPLE_LABEL})


if __name__ == "__main__":
    serve("ml", handle, {
        "model": f"RandomForestClassifier(n_estimators={TREES}, random_state={SEED})",
        "dataset": "sklearn digits",
        "trained_on": TRAIN,
        "accuracy": round(ACCURACY, 4),
        "sklearn_version": sklearn.__version__,
    })
