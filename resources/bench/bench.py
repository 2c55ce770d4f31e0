#!/usr/bin/env python3
"""`make bench`: measures the VMM and writes docs/BENCHMARKS.md.

Every number in the output is measured by this script in this run; each row names the
command that produced it. These machines are VMs whose KVM emulates guest ring 0, so
absolute numbers are far from bare-metal KVM; compare ratios measured in the same run.
"""
import os
import platform
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
VMM = os.path.join(ROOT, "target", "release", "vmm")
# Written by resources/bench/compare.py (make bench-compare); kept across make bench runs.
COMPARE_HEADING = "## This checkout against a baseline"
GUEST = os.path.join(ROOT, "build", "guest.elf")
OUT = os.path.join(ROOT, "docs", "BENCHMARKS.md")


def run_vmm(cmdline, timeout=120):
    """Runs the test guest with --stats; returns (seconds, stdout, stats dict)."""
    cmd = [VMM, "--kernel", GUEST, "--cmdline", cmdline, "--stats"]
    start = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} failed with {p.returncode}:\n{p.stdout}\n{p.stderr}")
    stats = dict(re.findall(r"(\w+)=([0-9.]+)", p.stderr))
    return elapsed, p.stdout, stats


def boot_to_banner(runs=10):
    """Wall time from spawning the VMM until `guest: hello` appears on its stdout."""
    cmd = [VMM, "--kernel", GUEST, "--cmdline", "guest.mode=hello"]
    samples = []
    for _ in range(runs):
        start = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        for line in p.stdout:
            if line.startswith("guest: hello"):
                samples.append((time.monotonic() - start) * 1000)
                break
        p.wait(timeout=30)
    if len(samples) != runs:
        sys.exit("bench: the hello guest did not print its banner")
    return statistics.median(samples), max(samples), " ".join(cmd) + f"  (x{runs})"


def main():
    rows = []
    med, worst, cmd = boot_to_banner()
    rows.append(("Boot to banner (median of 10)", f"{med:.1f} ms (max {worst:.1f} ms)", cmd))

    count = 200000
    line = f"guest.mode=pio guest.count={count}"
    _, _, st = run_vmm(line)
    rows.append(("Landmark exits, ring-3 `out` to port 0x80", f"{float(st['landmarks_per_s']):,.0f} exits/s",
                 f"vmm --kernel build/guest.elf --cmdline '{line}' --stats"))

    line = "guest.mode=ticks guest.hz=1000 guest.ticks=2000"
    _, _, st = run_vmm(line)
    rows.append(("Interrupt latency, line raised -> KVM_INTERRUPT (idle guest in hlt), p50 / p99",
                 f"{st['irq_latency_us_p50']} us / {st['irq_latency_us_p99']} us",
                 f"vmm --kernel build/guest.elf --cmdline '{line}' --stats"))
    rows.append(("Interrupt handling, KVM_INTERRUPT -> guest EOI (ring-0 stub, emulated), p50 / p99",
                 f"{st['inject_to_eoi_us_p50']} us / {st['inject_to_eoi_us_p99']} us",
                 "same run"))

    line = "guest.mode=spin guest.report=200000000 guest.lines=3 guest.hz=100"
    secs, out, st = run_vmm(line)
    iters = 3 * 200_000_000
    rows.append(("Ring-3 compute loop (spin mode)", f"{iters / secs / 1e6:,.0f} M iterations/s",
                 f"vmm --kernel build/guest.elf --cmdline '{line}'"))

    extra = os.path.join(ROOT, "build", "bench-extra.md")
    subprocess.run(["cargo", "run", "--release", "--locked", "-q", "-p", "integration", "--bin", "bench_kv", extra],
                   cwd=ROOT, check=True, timeout=900)
    extra_ft = os.path.join(ROOT, "build", "bench-ft.md")
    subprocess.run(["cargo", "run", "--release", "--locked", "-q", "-p", "integration", "--bin", "bench_ft", extra_ft],
                   cwd=ROOT, check=True, timeout=900)
    extra_fo = os.path.join(ROOT, "build", "bench-failover.md")
    subprocess.run(["cargo", "run", "--release", "--locked", "-q", "-p", "integration", "--bin", "bench_failover",
                    extra_fo], cwd=ROOT, check=True, timeout=900)
    extra_join = os.path.join(ROOT, "build", "bench-join.md")
    subprocess.run(["cargo", "run", "--release", "--locked", "-q", "-p", "integration", "--bin", "bench_join",
                    extra_join], cwd=ROOT, check=True, timeout=1800)
    # The baseline comparison (make bench-compare) is a run of its own, dated in its text.
    kept = ""
    if os.path.exists(OUT):
        old = open(OUT).read()
        start = old.find(COMPARE_HEADING)
        if start >= 0:
            end = old.find("\n## ", start + len(COMPARE_HEADING))
            kept = old[start:end + 1] if end >= 0 else old[start:]
    with open(OUT, "w") as f:
        f.write("# Benchmarks\n\n")
        f.write("Written by `make bench` (resources/bench/bench.py); every number below was measured by\n")
        f.write("that run. The machine is a VM whose KVM emulates guest ring 0 (~1000x slower) and runs\n")
        f.write("ring 3 natively (docs: ../shared/docs/kvm-on-these-machines.md), so absolute numbers are\n")
        f.write("far from what hardware KVM gives; ratios measured in the same run are what to compare.\n\n")
        f.write(f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
                f"kernel {platform.release()}.\n\n")
        f.write("## VMM core\n\n| what | result | command |\n| --- | --- | --- |\n")
        for what, result, command in rows:
            f.write(f"| {what} | {result} | `{command}` |\n")
        if os.path.exists(extra):
            f.write("\n" + open(extra).read())
        for part in (extra_ft, extra_fo, extra_join):
            if os.path.exists(part):
                f.write("\n" + open(part).read())
        if kept:
            f.write("\n" + kept.rstrip("\n") + "\n")
    print(open(OUT).read())


if __name__ == "__main__":
    main()
