#!/usr/bin/env python3
"""The affinity benchmark's peer: the same top-affinity report in DuckDB on the Parquet files
`bench_affinity generate` wrote. The tables are loaded into DuckDB's memory first (not timed, as
sealroom's upload is not); the timed query matches on the email digest, counts each segment's
matched audience and base as distinct users, computes the affinity index and its 95% log-method
interval, and keeps the segments whose audience and base reach k, best first. A second query does
the same with plain counts (see PLAIN), which is right on this data only.

    affinity_duckdb.py --dir DIR [--k 100]
"""
import argparse
import json
import resource
import time

QUERY = """
WITH matched AS (
    SELECT DISTINCT p.user_id FROM users p JOIN crm a ON p.email_sha256 = a.email_sha256
),
totals AS (
    SELECT (SELECT count(DISTINCT user_id) FROM users) AS n2, (SELECT count(*) FROM matched) AS n1
),
memberships AS (
    SELECT DISTINCT user_id, unnest(segments) AS segment FROM users
),
per_segment AS (
    SELECT s.segment, count(DISTINCT s.user_id) AS base, count(DISTINCT m.user_id) AS audience
    FROM memberships s LEFT JOIN matched m ON s.user_id = m.user_id
    GROUP BY s.segment
)
SELECT segment, audience, base,
       100.0 * (audience / n1) / (base / n2) AS affinity_index,
       100.0 * (audience / n1) / (base / n2)
           * exp(-1.959963984540 * sqrt(1.0 / audience - 1.0 / n1 + 1.0 / base - 1.0 / n2)) AS index_low,
       100.0 * (audience / n1) / (base / n2)
           * exp(1.959963984540 * sqrt(1.0 / audience - 1.0 / n1 + 1.0 / base - 1.0 / n2)) AS index_high
FROM per_segment, totals
WHERE audience >= ? AND base >= ?
ORDER BY affinity_index DESC, segment
"""

# The same report with plain counts instead of distinct ones: right only when every user id occurs
# once and no list repeats a segment, which holds for the generated data but is nowhere declared to
# DuckDB (sealroom checks it at run time and counts distinct individuals either way).
PLAIN = (
    QUERY.replace("SELECT DISTINCT user_id, unnest(segments)", "SELECT user_id, unnest(segments)")
    .replace("count(DISTINCT s.user_id) AS base, count(DISTINCT m.user_id) AS audience",
             "count(*) AS base, count(m.user_id) AS audience")
    .replace("(SELECT count(DISTINCT user_id) FROM users)", "(SELECT count(*) FROM users)")
)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()

    import duckdb

    con = duckdb.connect()
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    t = time.perf_counter()
    con.execute(f"CREATE TABLE users AS SELECT * FROM read_parquet('{args.dir}/publisher.parquet')")
    con.execute(f"CREATE TABLE crm AS SELECT * FROM read_parquet('{args.dir}/advertiser.parquet')")
    load_seconds = time.perf_counter() - t
    t = time.perf_counter()
    rows = con.execute(QUERY, [args.k, args.k]).fetchall()
    run_seconds = time.perf_counter() - t
    t = time.perf_counter()
    plain = con.execute(PLAIN, [args.k, args.k]).fetchall()
    plain_seconds = time.perf_counter() - t
    if [r[:3] for r in plain] != [r[:3] for r in rows]:
        raise SystemExit("the plain-count query disagrees with the distinct one: the data has repeats")
    n1 = con.execute(
        "SELECT count(DISTINCT p.user_id) FROM users p JOIN crm a ON p.email_sha256 = a.email_sha256"
    ).fetchone()[0]
    print(json.dumps({
        "engine": f"duckdb {duckdb.__version__}",
        "threads": threads,
        "load_seconds": load_seconds,
        "run_seconds": run_seconds,
        "plain_count_seconds": plain_seconds,
        "matched_publisher": n1,
        "ranked_segments": len(rows),
        "top": [{"segment": r[0], "audience": r[1], "base": r[2], "index": r[3]} for r in rows[:5]],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }))


if __name__ == "__main__":
    main()
