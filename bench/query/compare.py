"""Runs the SQL suite (queries.json) in DuckDB and chDB over weft's Parquet
segments, the same files weft queries, and prints the median milliseconds
per query and engine as JSON: {"<query name>": {"duckdb": ms, "chdb": ms}}.

usage: python3 compare.py DATA_DIR queries.json RUNS   (pip install duckdb chdb)
"""
import json
import statistics
import sys
import time

import chdb.session
import duckdb


def median_ms(run, runs):
    run()  # warm-up: file metadata and caches, as weft's first run does
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times)


def main():
    data_dir, suite_path, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    suite = json.load(open(suite_path))
    files = {t: f"{data_dir}/{t}/segments/*.parquet" for t in ("spans", "logs")}

    duck = duckdb.connect()
    for table, pattern in files.items():
        duck.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{pattern}')")
    ch = chdb.session.Session()
    ch.query("CREATE DATABASE IF NOT EXISTS bench ENGINE = Atomic")
    for table, pattern in files.items():
        ch.query(f"CREATE VIEW bench.{table} AS SELECT * FROM file('{pattern}', Parquet)")
    ch.query("USE bench")

    results = {}
    for query in suite:
        results[query["name"]] = {
            "duckdb": median_ms(lambda: duck.execute(query["duckdb"]).fetchall(), runs),
            "chdb": median_ms(lambda: ch.query(query["chdb"], "CSV").bytes(), runs),
        }
        print(f"# {query['name']}: {results[query['name']]}", file=sys.stderr)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
