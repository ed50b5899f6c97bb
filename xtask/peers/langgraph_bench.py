#!/usr/bin/env python3
"""Peer benchmark: LangGraph with durable SQLite checkpointing.

Run by `cargo xtask bench --peers` so cairn's numbers can be set against a
widely used Python graph engine doing the same work. Every step is a trivial
function, so what is measured is engine overhead plus persistence: each graph
is compiled with a SQLite checkpointer on a fresh database file and run with
`durability="sync"`, i.e. every super-step's checkpoint is committed before
the next step starts (the same guarantee cairn gives).

Workloads:
  W1  one run of a 200-node chain                        -> steps/s, bytes/step
  W2  fan-out of 1,000 `Send` workers + a reduce node    -> items/s, peak RSS
  W3  200 runs of a 10-node chain, sequential (sync saver) and
      concurrent (asyncio + AsyncSqliteSaver)            -> runs/s
  W4  100-node chain interrupted before node 50; a fresh Python process
      loads the checkpoint and resumes to completion     -> resume time

Timing uses time.perf_counter inside the process; interpreter start-up and
imports are not counted (except W4's `resume_process_s`, which is the child's
whole process wall on purpose).

Usage:
  langgraph_bench.py --dir DIR [--quick]
Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from importlib import metadata
from typing import Annotated, TypedDict

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

# Durability mode used for every run: checkpoint committed before next step.
DURABILITY = "sync"

W1_STEPS = 200
W2_ITEMS = 1000
W3_RUNS = 200
W3_STEPS = 10
W4_STEPS = 100
W4_INTERRUPT_AT = 50  # nodes s0..s49 run in the first process, s50..s99 resume


def log(msg: str) -> None:
    """Progress for humans; stdout is reserved for the JSON result."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Graphs
# --------------------------------------------------------------------------


class ChainState(TypedDict):
    """State of the linear chains: each node overwrites both fields."""

    counter: int
    text: str


def _chain_node(i: int):
    """A trivial step: record which node ran last."""

    def node(state: ChainState) -> dict:
        return {"counter": i, "text": f"step-{i}"}

    return node


def _async_chain_node(i: int):
    """Async twin of `_chain_node`, so ainvoke runs nodes on the event loop
    instead of handing each one to a thread pool."""

    async def node(state: ChainState) -> dict:
        return {"counter": i, "text": f"step-{i}"}

    return node


def build_chain(steps: int, *, use_async: bool = False) -> StateGraph:
    """Linear graph s0 -> s1 -> ... -> s{steps-1}."""
    make = _async_chain_node if use_async else _chain_node
    builder = StateGraph(ChainState)
    prev = START
    for i in range(steps):
        name = f"s{i}"
        builder.add_node(name, make(i))
        builder.add_edge(prev, name)
        prev = name
    builder.add_edge(prev, END)
    return builder


class FanState(TypedDict):
    """Map-reduce state: workers append to `results` through the reducer."""

    n: int
    results: Annotated[list, operator.add]
    count: int


class WorkInput(TypedDict):
    """Private input of one `Send` worker."""

    item: int


def _fan_start(state: FanState) -> dict:
    return {}


def _fan_out(state: FanState) -> list[Send]:
    """Conditional edge that spawns one `work` task per item."""
    return [Send("work", {"item": i}) for i in range(state["n"])]


def _work(inp: WorkInput) -> dict:
    return {"results": [inp["item"] * 2]}


def _reduce(state: FanState) -> dict:
    return {"count": len(state["results"])}


def build_fanout() -> StateGraph:
    """start --Send x N--> work --> reduce."""
    builder = StateGraph(FanState)
    builder.add_node("start", _fan_start)
    builder.add_node("work", _work)
    builder.add_node("reduce", _reduce)
    builder.add_edge(START, "start")
    builder.add_conditional_edges("start", _fan_out, ["work"])
    builder.add_edge("work", "reduce")
    builder.add_edge("reduce", END)
    return builder


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def db_files(path: str) -> list[str]:
    """The database file and its WAL side files."""
    return [path, path + "-wal", path + "-shm"]


def fresh_db(directory: str, name: str) -> str:
    """Path to a database file that does not exist yet (old copies removed)."""
    path = os.path.join(directory, name)
    for f in db_files(path):
        if os.path.exists(f):
            os.remove(f)
    return path


def db_size(path: str) -> int:
    """Total bytes of the database and any -wal/-shm files present."""
    return sum(os.path.getsize(f) for f in db_files(path) if os.path.exists(f))


def open_saver(path: str) -> SqliteSaver:
    """A SqliteSaver on its own connection (the saver serialises access with a
    lock, so check_same_thread=False is the documented way to open it)."""
    return SqliteSaver(sqlite3.connect(path, check_same_thread=False))


def run_config(thread_id: str, steps: int) -> dict:
    """Config for one run; recursion_limit must exceed the number of steps."""
    return {
        "configurable": {"thread_id": thread_id},
        "recursion_limit": steps + 10,
    }


def count_checkpoints(path: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]


def summarise(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "best_s": min(times)}


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------


def w1_chain(directory: str, reps: int) -> dict:
    """W1: one 200-step run, every step checkpointed; also storage per step."""
    graph_builder = build_chain(W1_STEPS)
    times, sizes = [], []
    for r in range(reps):
        path = fresh_db(directory, f"w1-{r}.sqlite")
        saver = open_saver(path)
        graph = graph_builder.compile(checkpointer=saver)
        cfg = run_config("w1", W1_STEPS)
        t0 = time.perf_counter()
        out = graph.invoke({"counter": -1, "text": ""}, cfg, durability=DURABILITY)
        elapsed = time.perf_counter() - t0
        assert out["counter"] == W1_STEPS - 1, out
        # Fold the WAL into the main file and close, so the size is final.
        saver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        saver.conn.close()
        times.append(elapsed)
        sizes.append(db_size(path))
        log(
            f"  w1 rep {r}: {elapsed:.3f}s, {count_checkpoints(path)} checkpoints, "
            f"{sizes[-1]} bytes"
        )
    s = summarise(times)
    return {
        "steps": W1_STEPS,
        **s,
        "steps_per_s": W1_STEPS / s["median_s"],
        "bytes_per_step": statistics.median(sizes) / W1_STEPS,
    }


def w2_fanout(directory: str, reps: int) -> dict:
    """W2: 1,000 `Send` workers in one super-step, then a reduce node."""
    graph_builder = build_fanout()
    times = []
    for r in range(reps):
        path = fresh_db(directory, f"w2-{r}.sqlite")
        saver = open_saver(path)
        graph = graph_builder.compile(checkpointer=saver)
        cfg = run_config("w2", 10)
        t0 = time.perf_counter()
        out = graph.invoke(
            {"n": W2_ITEMS, "results": [], "count": 0}, cfg, durability=DURABILITY
        )
        elapsed = time.perf_counter() - t0
        assert out["count"] == W2_ITEMS, out["count"]
        saver.conn.close()
        times.append(elapsed)
        log(f"  w2 rep {r}: {elapsed:.3f}s")
    # ru_maxrss is KiB on Linux, bytes on macOS. It is the peak of the whole
    # process so far (W1 ran before, but W2 is by far the larger).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_mb = rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
    s = summarise(times)
    return {
        "items": W2_ITEMS,
        **s,
        "items_per_s": W2_ITEMS / s["median_s"],
        "peak_rss_mb": round(rss_mb, 1),
    }


def w3_sequential(directory: str, reps: int) -> dict:
    """W3a: 200 ten-step runs one after another, distinct threads, one saver."""
    graph_builder = build_chain(W3_STEPS)
    times = []
    for r in range(reps):
        path = fresh_db(directory, f"w3-seq-{r}.sqlite")
        saver = open_saver(path)
        graph = graph_builder.compile(checkpointer=saver)
        t0 = time.perf_counter()
        for i in range(W3_RUNS):
            out = graph.invoke(
                {"counter": -1, "text": ""},
                run_config(f"run-{i}", W3_STEPS),
                durability=DURABILITY,
            )
            assert out["counter"] == W3_STEPS - 1
        elapsed = time.perf_counter() - t0
        saver.conn.close()
        times.append(elapsed)
        log(f"  w3 sequential rep {r}: {elapsed:.3f}s")
    s = summarise(times)
    return {**s, "runs_per_s": W3_RUNS / s["median_s"]}


def w3_concurrent(directory: str, reps: int) -> dict:
    """W3b: the same 200 runs started at once with asyncio on one
    AsyncSqliteSaver (one aiosqlite connection shared by all runs)."""
    import asyncio

    # Imported here so the W4 child process does not pay for it.
    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    graph_builder = build_chain(W3_STEPS, use_async=True)

    async def one_rep(path: str) -> float:
        async with aiosqlite.connect(path) as conn:
            saver = AsyncSqliteSaver(conn)
            graph = graph_builder.compile(checkpointer=saver)
            t0 = time.perf_counter()
            outs = await asyncio.gather(
                *(
                    graph.ainvoke(
                        {"counter": -1, "text": ""},
                        run_config(f"run-{i}", W3_STEPS),
                        durability=DURABILITY,
                    )
                    for i in range(W3_RUNS)
                )
            )
            elapsed = time.perf_counter() - t0
            assert all(o["counter"] == W3_STEPS - 1 for o in outs)
            return elapsed

    times = []
    for r in range(reps):
        path = fresh_db(directory, f"w3-conc-{r}.sqlite")
        elapsed = asyncio.run(one_rep(path))
        times.append(elapsed)
        log(f"  w3 concurrent rep {r}: {elapsed:.3f}s")
    s = summarise(times)
    return {**s, "runs_per_s": W3_RUNS / s["median_s"]}


def w4_graph(saver: SqliteSaver):
    """The W4 graph; compiled identically by the parent and the child."""
    return build_chain(W4_STEPS).compile(
        checkpointer=saver, interrupt_before=[f"s{W4_INTERRUPT_AT}"]
    )


def w4_resume_child(path: str, thread_id: str) -> None:
    """Hidden subcommand: in a fresh process, open the saver, compile the
    graph and resume the interrupted run to completion. Timed from after
    imports; the result is printed as one JSON line on stdout."""
    t0 = time.perf_counter()
    saver = open_saver(path)
    graph = w4_graph(saver)
    out = graph.invoke(None, run_config(thread_id, W4_STEPS), durability=DURABILITY)
    elapsed = time.perf_counter() - t0
    saver.conn.close()
    assert out["counter"] == W4_STEPS - 1, out
    print(json.dumps({"resume_s": elapsed, "counter": out["counter"]}))


def w4_resume(directory: str, reps: int) -> dict:
    """W4: interrupt a 100-step chain before s50 here, resume in a new process."""
    script = os.path.abspath(__file__)
    resume_times, process_times = [], []
    for r in range(reps):
        path = fresh_db(directory, f"w4-{r}.sqlite")
        thread_id = "w4"
        saver = open_saver(path)
        graph = w4_graph(saver)
        cfg = run_config(thread_id, W4_STEPS)
        out = graph.invoke({"counter": -1, "text": ""}, cfg, durability=DURABILITY)
        assert out["counter"] == W4_INTERRUPT_AT - 1, out
        assert graph.get_state(cfg).next == (f"s{W4_INTERRUPT_AT}",)
        saver.conn.close()

        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, script, "--resume-child", path, thread_id],
            capture_output=True,
            text=True,
        )
        process_s = time.perf_counter() - t0
        if proc.returncode != 0:
            log(proc.stderr)
            raise SystemExit(f"w4 resume child failed with {proc.returncode}")
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        resume_times.append(child["resume_s"])
        process_times.append(process_s)
        log(
            f"  w4 rep {r}: resume {child['resume_s']:.3f}s in-process, "
            f"{process_s:.3f}s whole child process"
        )
    return {
        "steps": W4_STEPS,
        "interrupted_at": W4_INTERRUPT_AT,
        "resume_s": statistics.median(resume_times),
        "resume_best_s": min(resume_times),
        "resume_process_s": statistics.median(process_times),
        "resume_process_best_s": min(process_times),
    }


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="directory for the SQLite files")
    parser.add_argument(
        "--quick", action="store_true", help="run each workload once (smoke test)"
    )
    parser.add_argument(
        "--resume-child", nargs=2, metavar=("DB", "THREAD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.resume_child:
        w4_resume_child(*args.resume_child)
        return
    if not args.dir:
        parser.error("--dir is required")

    os.makedirs(args.dir, exist_ok=True)
    reps = {"w1": 5, "w2": 3, "w3": 3, "w4": 3}
    if args.quick:
        reps = {k: 1 for k in reps}

    versions = {
        "langgraph": metadata.version("langgraph"),
        "langgraph-checkpoint-sqlite": metadata.version("langgraph-checkpoint-sqlite"),
        "python": ".".join(map(str, sys.version_info[:3])),
    }
    log(f"langgraph peer benchmark ({versions}), durability={DURABILITY}")

    log(f"W1: {W1_STEPS}-step chain x{reps['w1']}")
    w1 = w1_chain(args.dir, reps["w1"])
    log(f"W2: fan-out of {W2_ITEMS} x{reps['w2']}")
    w2 = w2_fanout(args.dir, reps["w2"])
    log(f"W3: {W3_RUNS} runs x {W3_STEPS} steps x{reps['w3']}")
    w3 = {
        "runs": W3_RUNS,
        "steps_per_run": W3_STEPS,
        "sequential": w3_sequential(args.dir, reps["w3"]),
        "concurrent": w3_concurrent(args.dir, reps["w3"]),
    }
    log(f"W4: {W4_STEPS}-step chain, resume at {W4_INTERRUPT_AT} x{reps['w4']}")
    w4 = w4_resume(args.dir, reps["w4"])

    result = {
        "peer": "langgraph",
        "versions": versions,
        "durability": DURABILITY,
        "w1": w1,
        "w2": w2,
        "w3": w3,
        "w4": w4,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
