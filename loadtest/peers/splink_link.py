#!/usr/bin/env python3
"""Splink 5 (DuckDB backend) on the same files `sealroom link` reads, configured the way Splink's own
tutorials configure it for these data: comparisons chosen by column role (NameComparison for names,
DateOfBirthComparison for dates of birth, EmailComparison, Damerau-Levenshtein for postcodes,
exact matches with term-frequency adjustments for places), blocking rules over name, date of birth
and postcode combinations, u by random sampling, λ by deterministic rules, m by EM on two blocking
rules. Prints the same JSON as `sealroom link` as its last line.

    splink_link.py --dedupe febrl3.csv --truth febrl3_true_pairs.csv --exclude-column soc_sec_id
"""
import argparse
import json
import logging
import sys
import time

import pandas as pd
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

ROLES = {
    "given_name": {"given_name", "first_name", "firstname", "forename"},
    "surname": {"surname", "last_name", "lastname", "family_name"},
    "dob": {"date_of_birth", "dob", "birth_date", "birthdate"},
    "postcode": {"postcode", "zip", "zipcode", "postal_code"},
    "city": {"city", "suburb", "town"},
    "street": {"address_1", "address", "street", "street_address"},
    "street_number": {"street_number", "house_number"},
    "address_2": {"address_2"},
    "state": {"state"},
    "email": {"email", "email_address"},
    "phone": {"phone", "phone_number", "telephone"},
}


def role_of(column):
    for role, names in ROLES.items():
        if column.lower() in names:
            return role
    return None


def date_format(values):
    sample = [v for v in values if isinstance(v, str) and v][:200]
    if sample and all(len(v) == 10 and v[4] == "-" for v in sample):
        return "%Y-%m-%d"
    return "%Y%m%d"


def settings_for(df, id_column, link_type):
    roles = {role_of(c): c for c in df.columns if c != id_column and role_of(c)}
    comparisons = []
    if "given_name" in roles:
        comparisons.append(cl.NameComparison(roles["given_name"]).configure(term_frequency_adjustments=True))
    if "surname" in roles:
        comparisons.append(cl.NameComparison(roles["surname"]).configure(term_frequency_adjustments=True))
    if "dob" in roles:
        comparisons.append(
            cl.DateOfBirthComparison(roles["dob"], input_is_string=True, datetime_format=date_format(df[roles["dob"]]))
        )
    if "postcode" in roles:
        comparisons.append(cl.DamerauLevenshteinAtThresholds(roles["postcode"], [1, 2]))
    if "street_number" in roles:
        comparisons.append(cl.ExactMatch(roles["street_number"]))
    if "street" in roles:
        comparisons.append(cl.JaroWinklerAtThresholds(roles["street"], [0.9, 0.7]))
    if "address_2" in roles:
        comparisons.append(cl.JaroWinklerAtThresholds(roles["address_2"], [0.9, 0.7]))
    if "city" in roles:
        comparisons.append(cl.ExactMatch(roles["city"]).configure(term_frequency_adjustments=True))
    if "state" in roles:
        comparisons.append(cl.ExactMatch(roles["state"]))
    if "email" in roles:
        comparisons.append(cl.EmailComparison(roles["email"]))
    if "phone" in roles:
        comparisons.append(cl.DamerauLevenshteinAtThresholds(roles["phone"], [1, 2]))

    def rule(*names):
        cols = [roles[n] for n in names if n in roles]
        return block_on(*cols) if len(cols) == len(names) else None

    blocking = [
        rule("given_name", "surname"),
        rule("surname", "dob"),
        rule("given_name", "dob"),
        rule("postcode", "street_number"),
        rule("postcode", "surname"),
        rule("email"),
        rule("dob"),
        rule("surname"),
    ]
    blocking = [b for b in blocking if b is not None]
    # Keep the broad single-column rules only when there is nothing better (they explode on big files).
    if len(df) > 2000:
        blocking = [b for b in blocking if b is not rule("surname")]
    training = [r for r in (rule("given_name", "surname"), rule("dob"), rule("postcode")) if r is not None]
    deterministic = [r for r in (rule("given_name", "surname", "dob"), rule("email")) if r is not None]
    settings = SettingsCreator(
        unique_id_column_name=id_column,
        link_type=link_type,
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=blocking,
        retain_intermediate_calculation_columns=False,
    )
    return settings, training, deterministic


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--left")
    parser.add_argument("--right")
    parser.add_argument("--dedupe")
    parser.add_argument("--truth")
    parser.add_argument("--exclude-column", action="append", default=[])
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--id-column")
    args = parser.parse_args()
    logging.getLogger("splink").setLevel(logging.ERROR)

    started = time.perf_counter()
    paths = [args.dedupe] if args.dedupe else [args.left, args.right]
    frames = [pd.read_csv(p, dtype=str, keep_default_na=False).replace("", None) for p in paths]
    id_column = args.id_column or frames[0].columns[0]
    frames = [f.drop(columns=[c for c in args.exclude_column if c in f.columns]) for f in frames]
    link_type = "dedupe_only" if args.dedupe else "link_only"
    settings, training, deterministic = settings_for(frames[0], id_column, link_type)
    db_api = DuckDBAPI()
    tables = [db_api.register(f) for f in frames]
    linker = Linker(tables if len(tables) > 1 else tables[0], settings, log_level=None)
    linker.training.estimate_probability_two_random_records_match(deterministic, recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=2e6, seed=42)
    for r in training[:2]:
        linker.training.estimate_parameters_using_expectation_maximisation(r)
    predictions = linker.inference.predict(threshold_match_probability=args.threshold).as_pandas_dataframe()
    seconds = time.perf_counter() - started

    result = {"matches": int(len(predictions)), "seconds": round(seconds, 3)}
    blocked = linker.inference.compute_blocked_pairs_for_predict() if hasattr(linker.inference, "compute_blocked_pairs_for_predict") else None
    try:
        result["pairs_compared"] = int(blocked.as_pandas_dataframe().shape[0]) if blocked is not None else None
    except Exception:  # noqa: BLE001 - counting is informative only
        result["pairs_compared"] = None
    if args.truth:
        truth = pd.read_csv(args.truth, dtype=str)
        a, b = truth.columns[:2]
        sym = bool(args.dedupe)
        norm = (lambda x, y: (min(x, y), max(x, y))) if sym else (lambda x, y: (x, y))
        truth_pairs = {norm(x, y) for x, y in zip(truth[a], truth[b]) if x != y}
        l, r = f"{id_column}_l", f"{id_column}_r"
        predicted = {norm(x, y) for x, y in zip(predictions[l].astype(str), predictions[r].astype(str))}
        tp = len(predicted & truth_pairs)
        precision = tp / len(predicted) if predicted else 0.0
        recall = tp / len(truth_pairs) if truth_pairs else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result.update(precision=round(precision, 4), recall=round(recall, 4), f1=round(f1, 4))
        print(f"precision {precision:.4f}  recall {recall:.4f}  F1 {f1:.4f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
