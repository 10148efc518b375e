#!/usr/bin/env python3
"""The batch peer of `clickflow replay`: DuckDB computes sessions, an ordered 6-step funnel, day
retention and page transitions from scratch over the same NDJSON file, and prints how long it took.

    python3 benches/duckdb_peer.py FILE [--threads 2] [--json]

The workload follows what benches/peer.toml asks of clickflow (the same funnel, retention and
session gap), as a from-scratch batch job over every event of the file: what an analyst's SQL
against a warehouse does on each refresh. Malformed lines are skipped (clickflow rejects them).
"""

import argparse
import json
import sys
import time

import duckdb

GAP_MS = 30 * 60 * 1000
WINDOW_MS = 14 * 24 * 3600 * 1000

# The funnel of benches/peer.toml, step by step (event, page condition).
STEPS = [
    "event = 'page_view' AND page = '/'",
    "event = 'page_view' AND (page = '/search' OR page LIKE '/category/%')",
    "event = 'page_view' AND page LIKE '/products/%'",
    "event = 'add_to_cart'",
    "event = 'page_view' AND page = '/checkout'",
    "event = 'purchase'",
]


def load(con, path):
    con.execute(
        f"""
        CREATE TABLE ev AS
        SELECT user_id, event, ts, page, utm_source, device, country
        FROM read_json('{path}', format = 'newline_delimited', ignore_errors = true,
            columns = {{user_id: 'VARCHAR', event: 'VARCHAR', ts: 'BIGINT', page: 'VARCHAR',
                       utm_source: 'VARCHAR', device: 'VARCHAR', country: 'VARCHAR'}})
        WHERE user_id IS NOT NULL AND event IS NOT NULL AND ts IS NOT NULL
        """
    )


def sessions(con):
    con.execute(
        f"""
        CREATE TABLE sess AS
        SELECT *, sum(new) OVER (PARTITION BY user_id ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid
        FROM (SELECT *, CASE WHEN ts - lag(ts) OVER (PARTITION BY user_id ORDER BY ts) <= {GAP_MS}
                             THEN 0 ELSE 1 END AS new FROM ev)
        """
    )
    con.execute(
        """
        CREATE TABLE session_summary AS
        SELECT user_id, sid, min(ts) AS start, max(ts) AS "end", count(*) AS events,
               count(*) FILTER (WHERE event = 'page_view') AS page_views,
               arg_min(page, ts) FILTER (WHERE event = 'page_view') AS entry,
               arg_max(page, ts) FILTER (WHERE event = 'page_view') AS exit,
               arg_min(utm_source, ts) AS utm_source, arg_min(device, ts) AS device,
               arg_min(country, ts) AS country
        FROM sess GROUP BY user_id, sid
        """
    )
    return con.execute(
        """
        SELECT count(*), sum(("end" - start)), sum(events), sum(page_views),
               count(*) FILTER (WHERE page_views = 1 AND "end" - start < 10000),
               count(DISTINCT start // 3600000), count(DISTINCT entry), count(DISTINCT exit),
               count(DISTINCT utm_source), count(DISTINCT device), count(DISTINCT country)
        FROM session_summary
        """
    ).fetchone()


def funnel(con):
    parts = [f"s1 AS (SELECT user_id, min(ts) AS t1, min(ts) AS t FROM ev WHERE {STEPS[0]} GROUP BY user_id)"]
    for k in range(2, len(STEPS) + 1):
        parts.append(
            f"s{k} AS (SELECT e.user_id, any_value(p.t1) AS t1, min(e.ts) AS t FROM ev e JOIN s{k - 1} p "
            f"ON e.user_id = p.user_id AND e.ts > p.t AND e.ts <= p.t1 + {WINDOW_MS} "
            f"WHERE {STEPS[k - 1]} GROUP BY e.user_id)"
        )
    counts = ", ".join(f"(SELECT count(*) FROM s{k})" for k in range(1, len(STEPS) + 1))
    return con.execute(f"WITH {', '.join(parts)} SELECT {counts}").fetchone()


def retention(con):
    return con.execute(
        """
        WITH d AS (SELECT DISTINCT user_id, ts // 86400000 AS day FROM ev WHERE event = 'page_view'),
             f AS (SELECT user_id, min(day) AS cohort FROM d GROUP BY user_id)
        SELECT count(*) FROM (
            SELECT f.cohort, d.day - f.cohort AS n, count(*) AS users
            FROM f JOIN d USING (user_id) WHERE d.day >= f.cohort GROUP BY 1, 2)
        """
    ).fetchone()


def transitions(con):
    return con.execute(
        """
        WITH pv AS (SELECT user_id, sid, ts, rtrim(page, '/') AS page FROM sess WHERE event = 'page_view' AND page IS NOT NULL),
             steps AS (SELECT user_id, sid, page,
                              coalesce(lag(page) OVER w, '(entry)') AS prev,
                              lead(page) OVER w IS NULL AS last
                       FROM pv WINDOW w AS (PARTITION BY user_id, sid ORDER BY ts))
        SELECT count(*) FROM (
            SELECT prev, page, count(*) FROM steps GROUP BY 1, 2
            UNION ALL SELECT page, '(exit)', count(*) FROM steps WHERE last GROUP BY 1)
        """
    ).fetchone()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args()
    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    started = time.perf_counter()
    load(con, args.file)
    loaded = time.perf_counter()
    rows = con.execute("SELECT count(*) FROM ev").fetchone()[0]
    result = {
        "events": rows,
        "sessions": sessions(con)[0],
        "funnel_steps": list(funnel(con)),
        "retention_cells": retention(con)[0],
        "path_edges": transitions(con)[0],
    }
    done = time.perf_counter()
    result.update({"load_seconds": round(loaded - started, 3), "seconds": round(done - started, 3)})
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"duckdb {duckdb.__version__}: {rows} events in {result['seconds']:.2f} s "
            f"({result['load_seconds']:.2f} s of it reading the file): {result['sessions']} sessions, "
            f"funnel {result['funnel_steps']}, {result['retention_cells']} retention cells, "
            f"{result['path_edges']} path edges",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
