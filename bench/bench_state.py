"""Benchmark of the incremental state: size, save/load time, diff throughput, peak memory.

    .venv/bin/python -m bench.bench_state                 # 1,000,000 contacts, with profile ids
    .venv/bin/python -m bench.bench_state --no-profiles --contacts 200000

Builds a state of N synthetic contacts through the real path (``StateUpdate.confirm_sent`` then
:func:`apply`), saves it to a :class:`LocalStore`, loads it back, and then, in a fresh process
(so its peak RSS is the diff's own), loads it and classifies a snapshot of N contacts: 90%
unchanged, 5% changed, 5% new, and 5% of the state left; then applies and saves that run's
confirmations (the finalize step). Addresses are synthetic
(name/number/domain patterns plus a quarter random local parts), so their compression ratio is
only indicative.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from exporter.incremental.diff import Differ
from exporter.incremental.state import ExportState, load, save
from exporter.incremental.update import StateUpdate, apply
from exporter.planning.contacts import PreparedContact
from exporter.storage.store import LocalStore


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


FIRST = _words(
    "anna ben carla david emma felix greta hans ida jonas karin lukas marie noah olga "
    "paul rita sven tina uwe vera willi xenia yusuf zoe ahmed bjorn chloe dmitri elif "
    "fatima giulia hiroshi ingrid jose kenji laura mohammed nadia oscar priya quentin "
    "raj sofia thomas ursula vincent wei yara zeynep"
)
LAST = _words(
    "mueller schmidt schneider fischer weber meyer wagner becker schulz hoffmann koch "
    "richter klein wolf schroeder neumann schwarz zimmermann braun krueger hartmann "
    "lange smith johnson williams brown jones garcia miller davis rodriguez martinez "
    "hernandez lopez gonzalez wilson anderson taylor moore jackson martin lee perez "
    "thompson white nguyen kim patel singh yilmaz kowalski novak rossi"
)
DOMAINS = _words(
    "gmail.com gmail.com gmail.com outlook.com hotmail.com yahoo.com web.de gmx.de "
    "icloud.com t-online.de proton.me example-corp.com acme-industries.de contoso.co.uk "
    "fabrikam.io"
)
_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
_MASK = (1 << 64) - 1


def _mix(i: int) -> int:
    x = (i * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def email(i: int) -> str:
    """A deterministic, unique, plausible address for contact number ``i``."""
    x = _mix(i)
    domain = DOMAINS[x % len(DOMAINS)]
    if (x >> 8) % 4 == 0:
        y, local = x >> 12, ""
        for _ in range(8 + (x >> 60) % 6):
            local += _ALNUM[y % 36]
            y //= 36
        return f"{local}.{i}@{domain}"
    first, last = FIRST[(x >> 16) % len(FIRST)], LAST[(x >> 24) % len(LAST)]
    sep = ".-_"[(x >> 32) % 3]
    return f"{first}{sep}{last}{i}@{domain}"


def contact(i: int, version: int, profiles: bool) -> PreparedContact:
    """Contact ``i``; its fingerprint depends on ``version`` (a changed contact: version 1)."""
    return PreparedContact(
        row=i + 1,
        source="bench.csv",
        key=email(i),
        payload="{}",
        fingerprint=_mix(i * 2 + version),
        profile_id=f"{_mix(~i & _MASK):032x}" if profiles else None,
    )


def snapshot(n: int, profiles: bool) -> Iterator[PreparedContact]:
    """90% unchanged, 5% changed, 5% new; contacts 0..n/20 of the state left."""
    gone = n // 20
    for i in range(gone, n):
        yield contact(i, 1 if i % 20 == 1 else 0, profiles)
    for i in range(n, n + gone):
        yield contact(i, 0, profiles)


def _memory_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, from /proc (Linux).

    Not ``ru_maxrss``: that survives ``exec`` and would report the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def build(root: str, n: int, profiles: bool) -> dict[str, float]:
    """Phase 1: build, save and load the state; return the measurements."""
    store = LocalStore(root)
    t0 = time.perf_counter()
    update = StateUpdate(snapshot_count=n)
    for i in range(n):
        update.confirm_sent(contact(i, 0, profiles))
    t1 = time.perf_counter()
    state = apply(ExportState.empty(), update)
    t2 = time.perf_counter()
    del update
    save(store, "bench", state, if_match=None)
    t3 = time.perf_counter()
    size = store.info("state/bench/state.bin").size
    loads = []
    for _ in range(3):
        t = time.perf_counter()
        loaded, _etag = load(store, "bench")
        loads.append(time.perf_counter() - t)
    assert len(loaded) == n
    return {
        "contacts": n,
        "file_bytes": size,
        "file_mb": size / 1e6,
        "key_bytes_avg": len(state.emails) / n,
        "in_memory_mb": state.nbytes() / 1e6,
        "record_confirmations_s": t1 - t0,
        "apply_s": t2 - t1,
        "save_s": t3 - t2,
        "load_s_best": min(loads),
        "load_s_worst": max(loads),
    }


def classify(root: str, n: int, profiles: bool) -> dict[str, float]:
    """Phase 2 (own process): load, classify a streamed snapshot (peak memory), then time the
    diff alone over pre-built contacts (best of 3, so building contacts is not counted)."""
    rss_start = _memory_mb("VmRSS")
    t = time.perf_counter()
    state, _etag = load(LocalStore(root), "bench")
    load_s = time.perf_counter() - t
    rss_loaded = _memory_mb("VmRSS")
    rss_load_peak = _memory_mb("VmHWM")
    differ = Differ(state)
    sent = sum(1 for _, change in differ.classify(snapshot(n, profiles)) if change.value < 2)
    result = differ.finish()
    rss_streamed = _memory_mb("VmHWM")
    contacts = list(snapshot(n, profiles))
    runs, cpu = [], []
    for _ in range(3):
        t, c = time.perf_counter(), time.process_time()
        differ = Differ(state)
        for _contact, _change in differ.classify(contacts):
            pass
        differ.finish()
        runs.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    # The finalize step of this run: every send and unsubscription confirmed.
    t = time.perf_counter()
    update = result.new_update()
    for sent_contact, change in Differ(state).classify(contacts):
        if change.value < 2:
            update.confirm_sent(sent_contact)
    for leaver in result.leavers_to_unsubscribe():
        update.confirm_left(leaver.key)
    record = time.perf_counter() - t
    t = time.perf_counter()
    after = apply(state, update)
    apply_s = time.perf_counter() - t
    t = time.perf_counter()
    save(LocalStore(root), "bench", after, if_match=_etag)
    save_s = time.perf_counter() - t
    total = result.snapshot_count
    return {
        "classified": total,
        "to_send": sent,
        **{f"count_{k}": v for k, v in result.counts.as_dict().items()},
        "fresh_process_load_s": load_s,
        "classify_s_best": min(runs),
        "classify_us_per_contact": min(runs) / total * 1e6,
        "classify_cpu_us_per_contact": min(cpu) / total * 1e6,
        "classify_contacts_per_s": total / min(runs),
        "rss_start_mb": rss_start,
        "rss_after_load_mb": rss_loaded,
        "rss_peak_during_load_mb": rss_load_peak,
        "rss_peak_streaming_diff_mb": rss_streamed,
        "incremental_reclassify_and_record_s": record,
        "incremental_apply_s": apply_s,
        "incremental_save_s": save_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--no-profiles", dest="profiles", action="store_false")
    parser.add_argument("--phase", choices=("all", "classify"), default="all")
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase == "classify":
        print(json.dumps(classify(args.root, args.contacts, args.profiles)))
        return
    with tempfile.TemporaryDirectory() as root:
        results = build(root, args.contacts, args.profiles)
        command = [sys.executable, "-m", "bench.bench_state", "--phase", "classify"]
        command += ["--root", root, "--contacts", str(args.contacts)]
        if not args.profiles:
            command.append("--no-profiles")
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results |= json.loads(out)
    results["profiles"] = args.profiles
    for key, value in results.items():
        print(f"{key:28} {value:,.3f}" if isinstance(value, float) else f"{key:28} {value}")


if __name__ == "__main__":
    main()
