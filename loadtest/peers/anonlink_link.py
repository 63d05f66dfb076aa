#!/usr/bin/env python3
"""clkhash + anonlink on the same files `sealroom link --clk` reads: clkhash encodes every record
into a 1024-bit CLK (bigrams of each field, positional digits for dates, the same per-field weights
sealroom uses), anonlink compares them with its accelerated Dice coefficient and (when linking two
files) solves greedily. Prints the same JSON as `sealroom link` as its last line, plus
`comparisons_per_second`.

    anonlink_link.py --dedupe febrl3.csv --truth febrl3_true_pairs.csv --exclude-column soc_sec_id --threshold 0.75
"""
import argparse
import json
import sys
import time

import anonlink
import pandas as pd
from anonlink.similarities import dice_coefficient_accelerated
from clkhash import clk
from clkhash.schema import from_json_dict

# Same roles and weights (bits per token) as sealroom's ClkSchema::infer. clkhash keys every feature
# separately and has no whole-component date tokens, so sealroom's shared name tag and its year/month/day
# tokens have no equivalent here: the comparison is of the two encoders at the same weights.
ROLES = [
    ({"given_name", "first_name", "firstname", "forename", "surname", "last_name", "lastname"}, 2, False, 15),
    ({"date_of_birth", "dob", "birth_date"}, 1, True, 16),
    ({"postcode", "zip", "zipcode", "postal_code"}, 2, False, 12),
    ({"email", "email_address"}, 2, False, 12),
    ({"phone", "phone_number", "telephone"}, 2, False, 10),
    ({"city", "suburb", "town"}, 2, False, 10),
    ({"address_1", "address_2", "address", "street", "street_address"}, 2, False, 6),
    ({"state"}, 2, False, 4),
    ({"street_number", "house_number"}, 2, False, 8),
]


def feature(column):
    for names, n, positional, bits in ROLES:
        if column.lower() in names:
            comparison = {"type": "ngram", "n": n}
            if positional:
                comparison["positional"] = True
            return {
                "identifier": column,
                "format": {"type": "string", "encoding": "utf-8", "case": "lower"},
                "hashing": {"comparison": comparison, "strategy": {"bitsPerToken": bits}, "hash": {"type": "doubleHash"}},
            }
    return {"identifier": column, "ignored": True}


def schema_for(columns):
    return from_json_dict(
        {
            "version": 3,
            "clkConfig": {
                "l": 1024,
                "kdf": {"type": "HKDF", "hash": "SHA256", "salt": "c2VhbHJvb20tYmVuY2htYXJr", "info": "", "keySize": 64},
            },
            "features": [feature(c) for c in columns],
        }
    )


def clean_dates(frame):
    # clkhash hashes the date text as given; normalize YYYY-MM-DD to YYYYMMDD as sealroom does.
    for c in frame.columns:
        if c.lower() in {"date_of_birth", "dob", "birth_date"}:
            frame[c] = frame[c].str.replace("-", "", regex=False)
    return frame


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--left")
    parser.add_argument("--right")
    parser.add_argument("--dedupe")
    parser.add_argument("--truth")
    parser.add_argument("--exclude-column", action="append", default=[])
    parser.add_argument("--threshold", type=float, default=0.8)
    args = parser.parse_args()

    started = time.perf_counter()
    paths = [args.dedupe] if args.dedupe else [args.left, args.right]
    frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in paths]
    frames = [clean_dates(f.drop(columns=[c for c in args.exclude_column if c in f.columns])) for f in frames]
    id_column = frames[0].columns[0]
    schema = schema_for(list(frames[0].columns))
    clks = [clk.generate_clks(f.values.tolist(), schema, "sealroom-benchmark-secret", validate=False, max_workers=1) for f in frames]
    encoded = time.perf_counter()
    datasets = clks if len(clks) > 1 else [clks[0], clks[0]]
    candidates = anonlink.candidate_generation.find_candidate_pairs(datasets, dice_coefficient_accelerated, args.threshold)
    compared_seconds = time.perf_counter() - encoded
    comparisons = len(datasets[0]) * len(datasets[1])
    ids = [f[id_column].tolist() for f in frames]
    if args.dedupe:
        _, _, (left_rows, right_rows) = candidates
        pairs = {(ids[0][i], ids[0][j]) for i, j in zip(left_rows, right_rows) if i < j}
    else:
        groups = anonlink.solving.greedy_solve(candidates)
        pairs = set()
        for group in groups:
            if len(group) == 2:
                (d1, r1), (d2, r2) = sorted(group)
                pairs.add((ids[0][r1], ids[1][r2]))
    seconds = time.perf_counter() - started
    result = {
        "matches": len(pairs),
        "pairs_compared": comparisons,
        "seconds": round(seconds, 3),
        "encode_seconds": round(encoded - started, 3),
        "compare_seconds": round(compared_seconds, 3),
        "comparisons_per_second": round(comparisons / max(compared_seconds, 1e-9)),
    }
    if args.truth:
        truth = pd.read_csv(args.truth, dtype=str)
        a, b = truth.columns[:2]
        norm = (lambda x, y: (min(x, y), max(x, y))) if args.dedupe else (lambda x, y: (x, y))
        truth_pairs = {norm(x, y) for x, y in zip(truth[a], truth[b]) if x != y}
        predicted = {norm(x, y) for x, y in pairs}
        tp = len(predicted & truth_pairs)
        precision = tp / len(predicted) if predicted else 0.0
        recall = tp / len(truth_pairs) if truth_pairs else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result.update(precision=round(precision, 4), recall=round(recall, 4), f1=round(f1, 4))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
