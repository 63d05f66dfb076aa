#!/usr/bin/env python3
"""The exact-matching benchmark's peers on the same Parquet files as `bench_exact run`: normalize
(trim, lower-case) and SHA-256 every email, then join the hashed keys. One engine per process, so
peak memory is the engine's own.

    exact_peers.py --engine duckdb|polars --dir DIR
"""
import argparse
import json
import resource
import sys
import time


def peak_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_duckdb(d):
    import duckdb

    con = duckdb.connect()
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    con.execute(f"CREATE TABLE a_raw AS SELECT id, email FROM read_parquet('{d}/advertiser_emails.parquet')")
    con.execute(f"CREATE TABLE p_raw AS SELECT id, email FROM read_parquet('{d}/publisher_emails.parquet')")
    rows = con.execute("SELECT (SELECT count(*) FROM a_raw) + (SELECT count(*) FROM p_raw)").fetchone()[0]
    t = time.perf_counter()
    # unhex(sha256(...)) gives the same 32-byte keys sealroom joins on.
    con.execute("CREATE TABLE a AS SELECT id, unhex(sha256(lower(trim(email)))) AS h FROM a_raw")
    con.execute("CREATE TABLE p AS SELECT id, unhex(sha256(lower(trim(email)))) AS h FROM p_raw")
    hash_seconds = time.perf_counter() - t
    t = time.perf_counter()
    con.execute("CREATE TABLE m AS SELECT a.id AS aid, p.id AS pid FROM a JOIN p ON a.h = p.h")
    join_seconds = time.perf_counter() - t
    matched = con.execute("SELECT count(*) FROM m").fetchone()[0]
    return {"engine": f"duckdb {duckdb.__version__}", "threads": threads, "rows_hashed": rows, "hash_seconds": hash_seconds,
            "hash_rows_per_second": rows / hash_seconds, "join_seconds": join_seconds, "matched_pairs": matched}


def run_polars(d):
    import polars as pl
    import polars_hash  # noqa: F401  (registers the .chash namespace)

    a_raw = pl.read_parquet(f"{d}/advertiser_emails.parquet")
    p_raw = pl.read_parquet(f"{d}/publisher_emails.parquet")
    rows = a_raw.height + p_raw.height
    t = time.perf_counter()
    a = a_raw.select("id", pl.col("email").str.strip_chars().str.to_lowercase().chash.sha2_256().alias("h"))
    p = p_raw.select("id", pl.col("email").str.strip_chars().str.to_lowercase().chash.sha2_256().alias("h"))
    hash_seconds = time.perf_counter() - t
    t = time.perf_counter()
    m = a.join(p, on="h", how="inner")
    join_seconds = time.perf_counter() - t
    return {"engine": f"polars {pl.__version__} + polars-hash", "threads": pl.thread_pool_size(), "rows_hashed": rows,
            "hash_seconds": hash_seconds, "hash_rows_per_second": rows / hash_seconds, "join_seconds": join_seconds,
            "matched_pairs": m.height}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["duckdb", "polars"], required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    result = run_duckdb(args.dir) if args.engine == "duckdb" else run_polars(args.dir)
    result["peak_rss_mib"] = peak_mib()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
