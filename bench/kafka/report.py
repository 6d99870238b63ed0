"""The table of bench/compare-kafka.sh: reads its work directory (machine.txt, results.jsonl, rss.jsonl and each
load's raw output) and prints markdown: Apache Kafka, Kafka with an fsync per append, Fjord, and the ratios.

Every ratio is oriented so that above 1 means Fjord is ahead: Fjord / Kafka for throughput, Kafka / Fjord for
latency, memory and CPU seconds per GB (the last is the ratio of throughput per broker CPU second).

Usage: python3 bench/kafka/report.py WORKDIR
"""

import json
import re
import sys
from pathlib import Path

BROKERS = ("kafka", "kafka-fsync", "fjord")

# (load, label, client, kind): the rows, in order. kind: produce and consume rows show throughput, e2e rows
# latency percentiles.
ROWS = [
    ("produce-100-acks1", "produce 100 B, acks=1", "fjord bench", "produce"),
    ("produce-100-acksall", "produce 100 B, acks=all", "fjord bench", "produce"),
    ("produce-1k-acks1", "produce 1 KiB, acks=1", "fjord bench", "produce"),
    ("produce-1k-acksall", "produce 1 KiB, acks=all", "fjord bench", "produce"),
    ("jproduce-100-acks1", "produce 100 B, acks=1", "kafka-producer-perf-test", "produce"),
    ("jproduce-100-acksall", "produce 100 B, acks=all", "kafka-producer-perf-test", "produce"),
    ("jproduce-1k-acks1", "produce 1 KiB, acks=1", "kafka-producer-perf-test", "produce"),
    ("jproduce-1k-acksall", "produce 1 KiB, acks=all", "kafka-producer-perf-test", "produce"),
    ("consume-100", "consume 100 B", "fjord bench", "consume"),
    ("consume-1k", "consume 1 KiB", "fjord bench", "consume"),
    ("jconsume-100", "consume 100 B", "kafka-consumer-perf-test", "consume"),
    ("jconsume-1k", "consume 1 KiB", "kafka-consumer-perf-test", "consume"),
    ("e2e-acks1", "e2e p50 / p99 / p99.9, acks=1", "fjord bench e2e", "e2e"),
    ("e2e-acksall", "e2e p50 / p99 / p99.9, acks=all", "fjord bench e2e", "e2e"),
]


def parse_fjord_bench(text):
    doc = json.loads(text.strip().splitlines()[-1])
    lat = (doc.get("details") or {}).get("latency") or {}
    return {
        "msgs_per_sec": doc["msgs_per_sec"],
        "latency_ms": [lat.get("p50_ms"), lat.get("p99_ms"), lat.get("p999_ms")] if lat else None,
    }


# ProducerPerformance's last line: "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max
# latency, P50 ms 50th, P95 ms 95th, P99 ms 99th, P999 ms 99.9th."
PRODUCER_FINAL = re.compile(
    r"^(\d+) records sent, ([\d.]+) records/sec .* ([\d.]+) ms 50th, ([\d.]+) ms 95th, ([\d.]+) ms 99th, "
    r"([\d.]+) ms 99\.9th"
)


def parse_java_producer(text):
    for line in reversed(text.splitlines()):
        m = PRODUCER_FINAL.match(line.strip())
        if m:
            return {
                "msgs_per_sec": float(m.group(2)),
                "latency_ms": [float(m.group(3)), float(m.group(5)), float(m.group(6))],
            }
    raise ValueError("no final ProducerPerformance line")


def parse_java_consumer(text):
    # A header line of comma-separated names, then one line of values. fetch.nMsg.sec is the rate after the
    # consumer joined its group (the tool's own measure of the fetch phase; the join is timed apart).
    lines = [line for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("start.time") and i + 1 < len(lines):
            names = [n.strip() for n in line.split(",")]
            values = [v.strip() for v in lines[i + 1].split(",")]
            row = dict(zip(names, values))
            return {
                "msgs_per_sec": float(row["fetch.nMsg.sec"]),
                "join_ms": float(row["rebalance.time.ms"]),
                "latency_ms": None,
            }
    raise ValueError("no ConsumerPerformance result line")


PARSERS = {
    "fjord-bench": parse_fjord_bench,
    "java-producer": parse_java_producer,
    "java-consumer": parse_java_consumer,
}


def best(runs):
    """One load's best round: other work on a shared machine only makes a figure worse, so each figure is the
    best any round reached (throughput highest, CPU per GB lowest, latencies from the round with the lowest
    p99, so the three percentiles stay one run's)."""
    out = dict(max(runs, key=lambda p: p["msgs_per_sec"]))
    out["cpu_s_per_gb"] = min(p["cpu_s_per_gb"] for p in runs)
    with_latency = [p for p in runs if p["latency_ms"]]
    if with_latency:
        out["latency_ms"] = min(with_latency, key=lambda p: p["latency_ms"][1])["latency_ms"]
    out["rounds"] = len(runs)
    return out


def read_kv(path):
    out = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def fmt_int(x):
    return f"{x:,.0f}"


def fmt_ms(x):
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def ratio(num, den):
    if num is None or den is None or den == 0:
        return None
    return num / den


def fmt_ratio(r):
    if r is None:
        return "–"
    return f"{r:,.0f}x" if r >= 100 else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def main(work):
    work = Path(work)
    machine = read_kv(work / "machine.txt")
    clk_tck = float(machine.get("clk_tck", "100"))
    rounds = {}
    for line in (work / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        parsed = PARSERS[r["parser"]](Path(r["out"]).read_text())
        moved = r["messages"] * r["size"] * (2 if r["load"].startswith("e2e") else 1)
        parsed["cpu_s"] = r["cpu_ticks"] / clk_tck
        parsed["gb"] = moved / 1e9
        parsed["cpu_s_per_gb"] = parsed["cpu_s"] / parsed["gb"]
        parsed["mb_per_sec"] = parsed["msgs_per_sec"] * r["size"] / 1e6
        rounds.setdefault((r["broker"], r["load"]), []).append(parsed)
    res = {key: best(runs) for key, runs in rounds.items()}
    rss = {}
    for line in (work / "rss.jsonl").read_text().splitlines():
        r = json.loads(line)
        prev = rss.get(r["broker"])
        # Memory: the largest of the rounds (a peak is a peak).
        if prev is None or r["hwm_kb"] > prev["hwm_kb"]:
            rss[r["broker"]] = {**r, "rss_start_kb": max(r["rss_start_kb"], (prev or r)["rss_start_kb"])}

    def cell(broker, load, kind):
        p = res.get((broker, load))
        if p is None:
            return "–"
        if kind == "e2e":
            return " / ".join(fmt_ms(x) for x in p["latency_ms"]) + " ms"
        return f"{fmt_int(p['msgs_per_sec'])} msgs/s, {p['mb_per_sec']:,.0f} MB/s"

    def ratio_cell(kafka_broker, load, kind):
        k, f = res.get((kafka_broker, load)), res.get(("fjord", load))
        if k is None or f is None:
            return "–"
        if kind == "e2e":
            return " / ".join(fmt_ratio(ratio(a, b)) for a, b in zip(k["latency_ms"], f["latency_ms"]))
        return fmt_ratio(ratio(f["msgs_per_sec"], k["msgs_per_sec"]))

    def cpu_cell(broker, load):
        p = res.get((broker, load))
        return "–" if p is None else f"{p['cpu_s_per_gb']:.1f}"

    out = []
    m = machine
    out.append(
        f"{m['date']}: {m['nproc']} cores ({m['cpu']}), {m['mem']}, Linux {m['kernel']}; "
        f"Apache Kafka {m['kafka']} on {m['java']} (heap {m['kafka_heap']}), Fjord {m['fjord']}; "
        f"load average before {m['load_before']}, after {m.get('load_after', '?')}."
    )
    out.append(
        f"Messages: fjord bench {fmt_int(int(m['m100']))} x 100 B, {fmt_int(int(m['m1k']))} x 1 KiB; "
        f"Java perf tools {fmt_int(int(m['jm100']))} x 100 B, {fmt_int(int(m['jm1k']))} x 1 KiB; "
        f"e2e {fmt_int(int(m['e2e_messages']))} x 100 B at {fmt_int(int(m['rate']))} msgs/s."
        + (" QUICK RUN: not numbers to quote." if m.get("quick") else "")
    )
    if int(m.get("rounds", "1")) > 1:
        out.append(
            f"{m['rounds']} rounds (Kafka then Fjord, each time): each figure is the best round's; the CPU total "
            "is over all rounds; RSS the largest."
        )
    out.append("Ratios: above 1 means Fjord is ahead (Fjord / Kafka for throughput, Kafka / Fjord for the rest).")
    out.append("")
    out.append(
        "| load | client | Apache Kafka | Kafka, fsync per append | Fjord | Fjord vs Kafka | Fjord vs Kafka fsync |"
    )
    out.append("|---|---|---|---|---|---|---|")
    for load, label, client, kind in ROWS:
        out.append(
            f"| {label} | {client} | {cell('kafka', load, kind)} | {cell('kafka-fsync', load, kind)} | "
            f"{cell('fjord', load, kind)} | {ratio_cell('kafka', load, kind)} | "
            f"{ratio_cell('kafka-fsync', load, kind)} |"
        )

    # Broker resources: memory, and CPU seconds per GB moved, per load and over all the throughput loads.
    out.append("")
    out.append("| broker resources | Apache Kafka | Kafka, fsync per append | Fjord | Fjord vs Kafka |")
    out.append("|---|---|---|---|---|")
    k_rss, f_rss = rss.get("kafka"), rss.get("fjord")

    def mib(kb):
        return f"{kb / 1024:,.0f} MiB"

    if k_rss and f_rss:
        out.append(
            f"| RSS after start (VmRSS) | {mib(k_rss['rss_start_kb'])} | – | {mib(f_rss['rss_start_kb'])} | "
            f"{fmt_ratio(ratio(k_rss['rss_start_kb'], f_rss['rss_start_kb']))} |"
        )
        out.append(
            f"| peak RSS over the run (VmHWM) | {mib(k_rss['hwm_kb'])} | (same process) | {mib(f_rss['hwm_kb'])} | "
            f"{fmt_ratio(ratio(k_rss['hwm_kb'], f_rss['hwm_kb']))} |"
        )
    throughput_loads = [load for load, _, _, kind in ROWS if kind != "e2e"]

    def total(broker):
        # Over the rounds: all CPU seconds of the produce and consume loads over all the bytes they moved.
        cpu = gb = 0.0
        for load in throughput_loads:
            runs = rounds.get((broker, load))
            if not runs:
                return None
            cpu += sum(p["cpu_s"] for p in runs)
            gb += sum(p["gb"] for p in runs)
        return cpu / gb

    tk, tf = total("kafka"), total("fjord")
    out.append(
        f"| broker CPU s per GB, all {len(throughput_loads)} produce and consume loads | "
        f"{'–' if tk is None else f'{tk:.1f}'} | – | {'–' if tf is None else f'{tf:.1f}'} | "
        f"{fmt_ratio(ratio(tk, tf))} |"
    )
    for load, label, client, kind in ROWS:
        k, f = res.get(("kafka", load)), res.get(("fjord", load))
        r = None if k is None or f is None else ratio(k["cpu_s_per_gb"], f["cpu_s_per_gb"])
        what = "in+out" if kind == "e2e" else "moved"
        out.append(
            f"| CPU s per GB {what}: {label} ({client}) | {cpu_cell('kafka', load)} | "
            f"{cpu_cell('kafka-fsync', load)} | {cpu_cell('fjord', load)} | {fmt_ratio(r)} |"
        )
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
