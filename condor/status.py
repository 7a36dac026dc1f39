"""``pnfsmon condor status``: where the sweep stands, from the jobs' user log (read with
``htcondor2.JobEventLog``, no daemon needed) and from the database (files checked in the
last hour, files still due, the ETA of the sweep)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pnfsmon.schema.errors import ConfigError
from pnfsmon.schema.extras import require
from pnfsmon.schema.sweep import SweepProgress, sweep_progress

__all__ = ["JobStates", "SweepProgress", "format_status", "read_user_log", "sweep_progress"]


@dataclass
class JobStates:
    states: Counter = field(default_factory=Counter)  # idle/running/done/held/removed
    exit_codes: Counter = field(default_factory=Counter)
    hold_reasons: Counter = field(default_factory=Counter)


def read_user_log(path: Path) -> JobStates:
    """The last known state of every job in a user log."""
    htcondor2 = require("htcondor2", "pnfsmon condor status")

    if not path.is_file():
        raise ConfigError(f"no HTCondor user log at {path} (submit writes it there)")
    kind = htcondor2.JobEventType
    transitions = {
        kind.SUBMIT: "idle", kind.JOB_RELEASED: "idle", kind.JOB_EVICTED: "idle",
        kind.EXECUTE: "running", kind.JOB_TERMINATED: "done", kind.JOB_HELD: "held",
        kind.JOB_ABORTED: "removed",
    }
    last: dict[tuple[int, int], str] = {}
    out = JobStates()
    for event in htcondor2.JobEventLog(str(path)).events(stop_after=0):
        state = transitions.get(event.type)
        if state is None:
            continue
        last[(event.cluster, event.proc)] = state
        if event.type == kind.JOB_TERMINATED and "ReturnValue" in event:
            out.exit_codes[event["ReturnValue"]] += 1
        if event.type == kind.JOB_HELD:
            out.hold_reasons[event.get("HoldReason", "?")] += 1
    out.states.update(last.values())
    return out


def format_status(jobs: JobStates | None, progress: SweepProgress) -> str:
    lines = []
    if jobs is not None:
        order = ("idle", "running", "held", "done", "removed")
        lines.append("jobs: " + ", ".join(f"{s} {jobs.states[s]}" for s in order))
        for reason, n in jobs.hold_reasons.most_common(3):
            lines.append(f"  held ({n}): {reason}")
    eta = progress.eta_hours
    lines.append(f"reads (file checks) in the last hour: {progress.checked_last_hour:,}; "
                 f"files due {progress.due:,}, being checked {progress.leased:,}; "
                 + (f"ETA {eta:.1f} h" if eta is not None else "ETA unknown (no recent checks)"))
    return "\n".join(lines)
