"""Benchmark: `cdb backtest` end to end on one million seeded synthetic 1-minute candles.

Each run is a fresh process in a fresh data directory, timed from start to exit (imports,
CSV parsing, engine, log, fsync, read models and digests all counted), with its peak
memory from wait4. Baselines run in the same go on the same file: a bare Python loop
(the floor, no log or storage) and backtrader (if installed).

    python3 bench/bench_backtest.py [--candles 1000000] [--runs 5] [--write-md FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import write_candles

ROOT = Path(__file__).resolve().parent.parent


def timed_rss(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run argv; return (wall seconds, the child's peak RSS in MiB from wait4, stdout)."""
    with tempfile.TemporaryFile() as out_file, tempfile.TemporaryFile() as err_file:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out_file, stderr=err_file, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read().decode(), err_file.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = err.strip().splitlines()[-5:]
        sys.exit(f"run failed ({' '.join(argv)}): {' | '.join(tail)}")
    return wall, usage.ru_maxrss / 1024.0, out


def head(src: Path, dst: Path, rows: int) -> Path:
    if not dst.exists():
        with open(src, encoding="utf-8") as inp, open(dst, "w", encoding="utf-8") as out:
            for i, line in enumerate(inp):
                if i > rows:
                    break
                out.write(line)
    return dst


def measure(label: str, argv_for_run, runs: int, candles: int, env=None) -> dict:
    walls, rss, extra = [], [], []
    for i in range(runs):
        print(f"  {label}: run {i + 1}/{runs}", file=sys.stderr, flush=True)
        argv, cleanup = argv_for_run()
        try:
            wall, peak, out = timed_rss(argv, env)
        finally:
            cleanup()
        walls.append(wall)
        rss.append(peak)
        extra.append(out.strip())
    median = statistics.median(walls)
    return {
        "system": label,
        "candles": candles,
        "walls_s": [round(w, 3) for w in walls],
        "median_wall_s": round(median, 3),
        "median_candles_per_s": round(candles / median),
        "median_peak_rss_mib": round(statistics.median(rss), 1),
        "runs": runs,
        "outputs": extra,
    }


def cdb_runner(csv: Path, workdir: Path):
    def make() -> tuple[list[str], callable]:
        data_dir = Path(tempfile.mkdtemp(dir=workdir, prefix="data-"))
        argv = [
            sys.executable,
            "-m",
            "cdb",
            "--data-dir",
            str(data_dir),
            "backtest",
            "--data",
            f"SYN_USD={csv}",
            "--strategy",
            "sma_cross",
            "--param",
            "fast=10",
            "--param",
            "slow=30",
            "--json",
            "--no-progress",
        ]
        return argv, lambda: shutil.rmtree(data_dir, ignore_errors=True)

    return make


def script_runner(script: str, csv: Path):
    def make():
        return [sys.executable, str(ROOT / "bench" / script), str(csv)], lambda: None

    return make


def machine() -> str:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    python = platform.python_version()
    return f"{os.cpu_count()} cores, {model}, Python {python}, {platform.platform()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--baseline-candles",
        type=int,
        default=100_000,
        help="candles for backtrader, which is slow (default 100000)",
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cdb-bench")
    parser.add_argument("--write-md", type=Path)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)

    csv = write_candles(
        args.workdir / f"syn_{args.candles}_{args.seed}.csv", args.candles, args.seed
    )
    small = head(
        csv,
        args.workdir / f"syn_{args.candles}_{args.seed}_head{args.baseline_candles}.csv",
        args.baseline_candles,
    )
    results = [
        measure(
            "cdb backtest (default, 3 processes)",
            cdb_runner(csv, args.workdir),
            args.runs,
            args.candles,
        ),
        measure(
            "cdb backtest (CDB_SINGLE_PROCESS=1)",
            cdb_runner(csv, args.workdir),
            args.runs,
            args.candles,
            env={**os.environ, "CDB_SINGLE_PROCESS": "1"},
        ),
        measure(
            "bare Python loop (no log, no storage)",
            script_runner("baseline_plain.py", csv),
            args.runs,
            args.candles,
        ),
    ]
    try:
        import backtrader  # type: ignore[import-untyped]  # noqa: F401

        results.append(
            measure(
                "backtrader 1.9 (SmaCross, CrossOver)",
                script_runner("baseline_backtrader.py", small),
                args.runs,
                args.baseline_candles,
            )
        )
    except ImportError:
        print("backtrader is not installed: its baseline was skipped", file=sys.stderr)

    for r in results:
        if r["system"].startswith("cdb"):
            summary = json.loads(r["outputs"][0])
            if summary["candles"] != args.candles:
                sys.exit(f"cdb processed {summary['candles']} candles, expected {args.candles}")
            r["engine_elapsed_s"] = summary["elapsed_s"]
    cdb_rate = results[0]["median_candles_per_s"]
    lines = [
        f"Machine: {machine()}",
        "",
        f"Command: `python3 bench/bench_backtest.py --candles {args.candles} --runs {args.runs} "
        f"--baseline-candles {args.baseline_candles}`",
        "",
        "| system | candles | median wall s | median candles/s | median peak RSS MiB "
        "| cdb speed-up | runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        ratio = cdb_rate / r["median_candles_per_s"]
        lines.append(
            f"| {r['system']} | {r['candles']:,} | {r['median_wall_s']:.2f} | "
            f"{r['median_candles_per_s']:,} | {r['median_peak_rss_mib']:.0f} | {ratio:.2f}x "
            f"| {r['runs']} |"
        )
    lines.append("")
    lines.append(
        "Individual wall times (s): "
        + "; ".join(f"{r['system']}: {', '.join(str(w) for w in r['walls_s'])}" for r in results)
    )
    text = "\n".join(lines)
    print(text)
    if args.write_md:
        args.write_md.write_text(text + "\n", encoding="utf-8")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
