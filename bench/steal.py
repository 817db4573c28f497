#!/usr/bin/env python3
"""Pass the harness's output through, adding to each result line the share of CPU time the
hypervisor took from this VM (`steal` in /proc/stat) since the previous result line.

These machines are VMs on shared hosts: under contention the host takes time from them and
every proxy in a run slows, by different amounts at different moments, so the ratios stop
meaning anything. A run whose lines show steal above a couple of per cent is to be repeated,
not quoted.
"""
import sys


def sample():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    return sum(fields), fields[7]


def pct(a, b):
    total, steal = b[0] - a[0], b[1] - a[1]
    return 100.0 * steal / max(total, 1)


def main():
    start = last = sample()
    worst = 0.0
    for line in sys.stdin:
        line = line.rstrip("\n")
        words = line.split()
        if len(words) > 1 and (words[1].startswith("rep") or words[0].startswith("mem")):
            now = sample()
            share = pct(last, now)
            worst = max(worst, share)
            line += f" steal={share:.1f}%"
            last = now
        print(line, flush=True)
    print(f"  steal over these lines: {pct(start, sample()):.1f}% of CPU time (worst line {worst:.1f}%); "
          "above about 2% the host was throttling this VM: repeat, do not quote", flush=True)


if __name__ == "__main__":
    main()
