#!/usr/bin/env python3
"""`make bench-compare BASE=<git rev>`: the FT benchmark (bench_ft) of this checkout and of
BASE, alternated in one run, so that both see the same machine. BASE is checked out in a
temporary worktree and built there (its own target/, seeded from this one's). Writes the
section "This checkout against a baseline" of docs/BENCHMARKS.md (make bench keeps it).

Compared: FT/plain request-rate ratios per test, and CPU ms per 1000 requests of each process
kind (from /proc, as bench_ft measures them). The median over the rounds is reported.
"""
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "docs", "BENCHMARKS.md")
HEADING = "## This checkout against a baseline"


def run(cmd, cwd, timeout):
    print("+", " ".join(cmd), f"(in {cwd})", flush=True)
    subprocess.run(cmd, cwd=cwd, check=True, timeout=timeout)


def parse(md):
    """FT/plain ratio per test and the CPU table's rows from one bench_ft output."""
    ratios, cpu = {}, {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] in ("SET", "GET", "INCR"):
            ratios[cells[0]] = float(cells[3])
        if len(cells) == 5 and cells[0] in ("plain", "FT"):
            num = lambda c: float(c) if re.fullmatch(r"[0-9.]+", c) else None
            cpu[cells[0]] = {"primary": num(cells[1]), "backup": num(cells[2]),
                             "backends": num(cells[3])}
    if not ratios or not cpu:
        raise SystemExit(f"cannot read bench_ft's output:\n{md}")
    return ratios, cpu


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    return "-" if v is None else f"{v:.{digits}f}"


def main():
    if len(sys.argv) < 2:
        raise SystemExit("usage: compare.py GIT_REV [ROUNDS]")
    base = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    base_sha = subprocess.run(["git", "rev-parse", "--short", base], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    head_sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.strip()
    # BENCH_BASE_TREE: an existing checkout of BASE to build and use (kept afterwards).
    given = os.environ.get("BENCH_BASE_TREE")
    wt = given or tempfile.mkdtemp(prefix="bench-base-")
    results = {"base": [], "this": []}
    try:
        if given:
            at = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=wt, check=True,
                                capture_output=True, text=True).stdout.strip()
            if at != base_sha:
                raise SystemExit(f"BENCH_BASE_TREE {wt} is at {at}, not {base_sha}")
        else:
            run(["git", "worktree", "add", "--detach", wt, base], ROOT, 120)
            # Seed the baseline's build with this checkout's (only what differs is rebuilt).
            for rel in ("target", os.path.join("resources", "guest", "target")):
                src = os.path.join(ROOT, rel)
                if os.path.isdir(src):
                    shutil.copytree(src, os.path.join(wt, rel), symlinks=True, dirs_exist_ok=True)
        run(["make", "build", "guest"], wt, 3600)
        run(["make", "build", "guest"], ROOT, 3600)
        for i in range(rounds):
            for name, tree in (("base", wt), ("this", ROOT)):
                out = os.path.join(tempfile.gettempdir(), f"bench-ft-{name}-{i}.md")
                run([os.path.join(tree, "target", "release", "bench_ft"), out], tree, 900)
                with open(out) as f:
                    results[name].append(parse(f.read()))
                os.remove(out)
    finally:
        if not given:
            subprocess.run(["git", "worktree", "remove", "--force", wt], cwd=ROOT)
            shutil.rmtree(wt, ignore_errors=True)

    md = [HEADING, ""]
    md.append(f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. `make bench-compare "
              f"BASE={base}`: bench_ft of {base_sha} (baseline) and of {head_sha}"
              f"{' with uncommitted changes' if dirty else ''} (this checkout), alternated "
              f"{rounds} times in one run; medians over the rounds. Each round is the whole "
              f"bench_ft (plain, then an FT pair, `redis-benchmark -t set,get,incr -n 20000 -c 16`).")
    md.append("")
    md.append("| FT/plain request rate | baseline | this checkout | rounds (baseline; this) |")
    md.append("| --- | --- | --- | --- |")
    for test in ("SET", "GET", "INCR"):
        b = [r[0].get(test) for r in results["base"]]
        t = [r[0].get(test) for r in results["this"]]
        md.append(f"| {test} | {fmt(median(b), 2)} | {fmt(median(t), 2)} | "
                  f"{', '.join(fmt(v, 2) for v in b)}; {', '.join(fmt(v, 2) for v in t)} |")
    md.append("")
    md.append("| CPU ms per 1000 requests | baseline | this checkout | rounds (baseline; this) |")
    md.append("| --- | --- | --- | --- |")
    for run_kind in ("plain", "FT"):
        for proc in ("primary", "backup", "backends"):
            b = [r[1][run_kind][proc] for r in results["base"]]
            t = [r[1][run_kind][proc] for r in results["this"]]
            if median(b) is None and median(t) is None:
                continue
            what = {"primary": "vmm" if run_kind == "plain" else "vmm (primary)",
                    "backup": "vmm (backup)", "backends": "backends"}[proc]
            md.append(f"| {run_kind}: {what} | {fmt(median(b))} | {fmt(median(t))} | "
                      f"{', '.join(fmt(v) for v in b)}; {', '.join(fmt(v) for v in t)} |")
    section = "\n".join(md) + "\n"
    print(section)

    text = open(OUT).read() if os.path.exists(OUT) else "# Benchmarks\n"
    start = text.find(HEADING)
    if start >= 0:
        end = text.find("\n## ", start + len(HEADING))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(OUT, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
