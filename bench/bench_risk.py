"""Benchmark: the engine with the full rule set and the adaptive intensity against sizing alone.

Folds the same seeded synthetic 1-minute candles through the pipeline in this process, the
engine only (no log, no read models), once with the default risk configuration (the
sizing rule and the default limits) and once with every rule and the adaptive intensity
on (``docs/examples/risk.toml``, or ``--risk-config``). Also runs the whole
``run_backtest`` on the embedded log with each, as a user would. Runs alternate between the
two configurations; medians of several runs and the ratio are printed.

    python3 bench/bench_risk.py [--candles 1000000] [--runs 5] [--risk-config FILE]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


# Every rule on (but the automatic kill switch, below) and the intensity tracking its
# score, with limits that never bind and the
# intensity's DRY and WET ends at the static values: the same trades as the default run, so
# the difference is what checking the rules costs, apart from what they change.
NEVER_BINDING = {
    # Off: on, it binds. The 30% halt's CRITICAL alert would trip it, and the kill switch
    # then refuses the exit the default run makes, holding a position (and the in-market
    # work of every candle after) to the end: another run, not the cost of checking.
    "kill_switch_on_critical": False,
    "cooldown": {"after_loss_minutes": 1, "global_after_loss_minutes": 1, "after_stop_minutes": 1},
    "min_order_quantity": 1e-12,
    "max_order_quantity": 1e12,
    "max_order_notional": 1e15,
    "max_open_positions": 10_000,
    "drawdown_warning_pct": 29.0,  # below the default 30% halt, which stays
    "max_daily_drawdown_pct": 99.0,
    "daily_drawdown_warning_pct": 98.0,
    "max_orders_per_minute": 1_000,
    "max_orders_per_hour": 10_000,
    "max_orders_per_day": 100_000,
    "max_consecutive_losses": 1_000,
    "intensity": {
        "enabled": True,
        "risk_pct_dry": 10.0,
        "risk_pct_wet": 10.0,
        "max_total_exposure_pct_dry": 100.0,
        "max_total_exposure_pct_wet": 100.0,
        "max_symbol_exposure_pct_dry": 50.0,
        "max_symbol_exposure_pct_wet": 50.0,
        "cooldown_minutes_dry": 0.0,
        "cooldown_minutes_wet": 0.0,
    },
}


def main() -> None:
    from synthetic import write_candles

    from cdb.risk_file import load_risk_config
    from domain.events import Candle
    from domain.pipeline import PaperTradingPipeline
    from domain.risk import RiskConfig
    from domain.run_config import BacktestConfig
    from streams.backtest import prepare_run, run_backtest
    from streams.csv_source import CsvCandleSource
    from streams.embedded_log import EmbeddedLog

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--candles", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--risk-config", type=Path, default=ROOT / "docs/examples/risk.toml")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cdb-risk-"))
    try:
        csv = write_candles(workdir / "candles.csv", args.candles, seed=11)
        source = CsvCandleSource("SYN_USD", csv)
        candles: list[Candle] = list(source.candles(lambda bad: None))
        full = load_risk_config(args.risk_config)
        configs = {
            "sizing alone (default)": RiskConfig(),
            "every rule and the intensity, none binding": RiskConfig.model_validate(NEVER_BINDING),
            f"every rule and the intensity ({args.risk_config.name})": full,
        }
        engine_s: dict[str, list[float]] = {name: [] for name in configs}
        backtest_s: dict[str, list[float]] = {name: [] for name in configs}
        counts: dict[str, tuple[int, int, int]] = {}
        for i in range(args.runs):
            for name, risk in configs.items():
                config = BacktestConfig(
                    strategy_id="sma_cross",
                    strategy_params={"fast": 10, "slow": 30},
                    risk=risk,
                )
                print(f"  run {i + 1}/{args.runs}: {name}", file=sys.stderr, flush=True)
                with EmbeddedLog(workdir / f"meta-{i}") as log:
                    metadata = prepare_run(config, [source], log, None)
                pipeline = PaperTradingPipeline.from_metadata(metadata)
                on_candle = pipeline.on_candle
                events = len(pipeline.begin(metadata))
                gc.disable()
                try:
                    started = time.perf_counter()
                    for candle in candles:
                        out = on_candle(candle)
                        if out:
                            events += len(out)
                    engine_s[name].append(time.perf_counter() - started)
                finally:
                    gc.enable()
                counts[name] = (pipeline.signals, pipeline.fills, events)
                data = workdir / f"data-{i}"
                with EmbeddedLog(data / "log") as log:
                    started = time.perf_counter()
                    run_backtest(config, [source], log)
                    backtest_s[name].append(time.perf_counter() - started)
                shutil.rmtree(data, ignore_errors=True)
                shutil.rmtree(workdir / f"meta-{i}", ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"Command: `python3 bench/bench_risk.py --candles {args.candles} --runs {args.runs}`")
    print()
    print(
        "| configuration | signals | fills | events | engine median s | engine candles/s "
        "| backtest median s | backtest candles/s | runs |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rates = {}
    for name in configs:
        engine = statistics.median(engine_s[name])
        backtest = statistics.median(backtest_s[name])
        rates[name] = (args.candles / engine, args.candles / backtest)
        signals, fills, events = counts[name]
        print(
            f"| {name} | {signals:,} | {fills:,} | {events:,} | {engine:.2f} "
            f"| {args.candles / engine:,.0f} | {backtest:.2f} | {args.candles / backtest:,.0f} "
            f"| {args.runs} |"
        )
    base = rates["sizing alone (default)"]
    print()
    for name, (engine_rate, backtest_rate) in rates.items():
        if name.startswith("sizing alone"):
            continue
        print(
            f"{name} / sizing alone: engine {engine_rate / base[0]:.2f}, "
            f"backtest {backtest_rate / base[1]:.2f} (goal: within 15%, i.e. >= 0.85)"
        )
    for name in configs:
        print(
            f"{name}: engine s {[round(t, 2) for t in engine_s[name]]}; "
            f"backtest s {[round(t, 2) for t in backtest_s[name]]}"
        )


if __name__ == "__main__":
    main()
