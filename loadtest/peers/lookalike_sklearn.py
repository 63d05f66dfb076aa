#!/usr/bin/env python3
"""scikit-learn on the same train/test CSVs `sealroom lookalike --data train.csv --test test.csv`
reads: numeric columns standardized, categorical one-hot encoded (unknown levels ignored), then
LogisticRegression (lbfgs, C=1) and HistGradientBoostingClassifier (native categorical support).
Prints one JSON object per model with AUC, recall at the top 10% and training seconds.

    lookalike_sklearn.py --train train.csv --test test.csv --label label --exclude-column income
"""
import argparse
import json
import time

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

MISSING = ["", "?", "NA", "N/A", "null", "NaN"]


def recall_at(scores, labels, fraction):
    order = np.argsort(-scores, kind="stable")
    top = int(np.ceil(len(scores) * fraction))
    return labels[order[:top]].sum() / labels.sum()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--positive", default="1")
    p.add_argument("--exclude-column", action="append", default=[])
    a = p.parse_args()
    frames = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in (a.train, a.test)]
    ys = [(f[a.label] == a.positive).values for f in frames]
    xs = [f.drop(columns=[a.label, *a.exclude_column]) for f in frames]
    numeric = []
    for c in xs[0].columns:
        values = pd.to_numeric(xs[0][c].replace(MISSING, np.nan), errors="coerce")
        if values.notna().sum() == (~xs[0][c].isin(MISSING)).sum():
            numeric.append(c)
    categorical = [c for c in xs[0].columns if c not in numeric]
    for x in xs:
        for c in numeric:
            x[c] = pd.to_numeric(x[c].replace(MISSING, np.nan), errors="coerce")
    out = []
    # Logistic regression on standardized numbers and one-hot categories (missing numbers: mean).
    ct = ColumnTransformer([("n", StandardScaler(), numeric), ("c", OneHotEncoder(handle_unknown="ignore"), categorical)])
    train_x = ct.fit_transform(xs[0].fillna({c: xs[0][c].mean() for c in numeric}))
    test_x = ct.transform(xs[1].fillna({c: xs[0][c].mean() for c in numeric}))
    t = time.perf_counter()
    lr = LogisticRegression(max_iter=1000).fit(train_x, ys[0])
    seconds = time.perf_counter() - t
    s = lr.predict_proba(test_x)[:, 1]
    out.append({"model": "sklearn LogisticRegression", "auc": roc_auc_score(ys[1], s),
                "recall_at_10pct": recall_at(s, ys[1], 0.1), "train_seconds": seconds})
    # Histogram gradient boosting with native categorical features.
    oe = ColumnTransformer([("c", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan), categorical)],
                           remainder="passthrough")
    train_h = oe.fit_transform(xs[0])
    test_h = oe.transform(xs[1])
    t = time.perf_counter()
    hgb = HistGradientBoostingClassifier(categorical_features=list(range(len(categorical))), random_state=0).fit(train_h, ys[0])
    seconds = time.perf_counter() - t
    s = hgb.predict_proba(test_h)[:, 1]
    out.append({"model": "sklearn HistGradientBoostingClassifier", "auc": roc_auc_score(ys[1], s),
                "recall_at_10pct": recall_at(s, ys[1], 0.1), "train_seconds": seconds})
    for o in out:
        print(json.dumps(o))


if __name__ == "__main__":
    main()
