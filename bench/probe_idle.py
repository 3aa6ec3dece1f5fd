"""Probe: the CPU the staged agents and the broker use with no input at all.

A fresh Tansu broker with the topology's topics (``--partitions`` each), the three stage
agents started and left alone for ``--settle`` seconds, then the CPU time (from /proc) of
each process over ``--seconds``, in cores. An agent polls the broker every 2 ms while it
has records to wait for, and every 100 ms once idle (``streams/faust_transport.py``).

    python3 bench/probe_idle.py [--partitions 6] [--settle 15] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from bench_broker import start_tansu  # noqa: E402

from streams.kafka_log import KafkaLog  # noqa: E402
from streams.stage_agents import create_topics  # noqa: E402

STAGES = ("signal", "risk", "execution")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--settle", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cdb-probe-idle-"))
    broker, bootstrap = start_tansu(workdir)
    agents = []
    try:
        with KafkaLog(bootstrap, default_partitions=args.partitions) as kafka:
            create_topics(kafka)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CDB_")},
            "FAUST_DATADIR": str(workdir / "faust"),
        }
        for stage in STAGES:
            agents.append(
                subprocess.Popen(
                    [
                        *(sys.executable, "-m", "cdb", "--data-dir", str(workdir / "data")),
                        *("--log", f"kafka://{bootstrap}", "agent", stage, "--metrics-port", "-1"),
                    ],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(args.settle)
        pids = [broker.pid, *(a.pid for a in agents)]
        before = [_cpu_s(pid) for pid in pids]
        time.sleep(args.seconds)
        used = [(_cpu_s(pid) - b) / args.seconds for pid, b in zip(pids, before, strict=True)]
    finally:
        for agent in agents:
            agent.terminate()
        for agent in agents:
            agent.wait(timeout=60)
        broker.terminate()
        broker.wait(timeout=30)
    print(f"Command: `{' '.join(['python3 bench/probe_idle.py', *sys.argv[1:]])}`")
    print()
    print("| process | CPU, idle (cores) |")
    print("| --- | ---: |")
    for name, share in zip(("Tansu", *(f"cdb agent {s}" for s in STAGES)), used, strict=True):
        print(f"| {name} | {share:.3f} |")


if __name__ == "__main__":
    main()
