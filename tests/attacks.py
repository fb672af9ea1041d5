"""The bookkeeping of the attack suite (``tests/test_attacks.py``): what each case tried and
what it found, and the table printed at the end of the test session."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

COLUMNS = ("cases", "data lost", "payloads run", "tracebacks", "silently wrong")


def snapshot(*folders: Path) -> dict[Path, bytes]:
    """Every file under ``folders`` with its bytes (to prove later that nothing changed)."""
    return {p: p.read_bytes() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


@dataclass
class Outcome:
    """What one attack found (each count must stay 0)."""

    case: str
    data_lost: int = 0
    payloads_run: int = 0
    tracebacks: int = 0
    silently_wrong: int = 0


@dataclass
class AttackLog:
    """The outcomes of a session's attacks, for the summary table."""

    outcomes: list[Outcome] = field(default_factory=list)

    def check(
        self,
        case: str,
        result: subprocess.CompletedProcess,
        *,
        protected: dict[Path, bytes] | None = None,
        payload: Path | None = None,
        exit_code: int = 2,
        message: str | None = None,
    ) -> Outcome:
        """Record and assert one attack: the tool exits with ``exit_code``, says ``message``
        on one ``<tool>: error:`` line (for exit code 2), writes over or deletes none of the
        ``protected`` files and does not run the ``payload`` (a marker file it would make)."""
        output = result.stdout + result.stderr
        lost = [
            p for p, data in (protected or {}).items() if not p.is_file() or p.read_bytes() != data
        ]
        outcome = Outcome(
            case,
            data_lost=len(lost),
            payloads_run=int(payload is not None and payload.exists()),
            tracebacks=int("Traceback (most recent call last)" in output),
            silently_wrong=int(result.returncode != exit_code),
        )
        self.outcomes.append(outcome)
        assert not lost, f"{case}: files changed or lost: {lost}"
        assert not outcome.payloads_run, f"{case}: the payload ran"
        assert not outcome.tracebacks, f"{case}: traceback:\n{output[-3000:]}"
        assert result.returncode == exit_code, (
            f"{case}: exit {result.returncode}, expected {exit_code}:\n{output[-3000:]}"
        )
        if exit_code == 2:
            errors = [line for line in result.stderr.splitlines() if ": error: " in line]
            assert len(errors) == 1, f"{case}: expected one error line:\n{result.stderr[-3000:]}"
        if message is not None:
            assert message in output, f"{case}: {message!r} not in:\n{output[-3000:]}"
        return outcome

    def to_json(self) -> str:
        return json.dumps([asdict(o) for o in self.outcomes])

    def add_json(self, text: str) -> None:
        self.outcomes += [Outcome(**o) for o in json.loads(text)]

    def table(self) -> str:
        """The markdown table of the counts (the README's Reliability section shows it)."""
        totals = [
            len(self.outcomes),
            sum(o.data_lost for o in self.outcomes),
            sum(o.payloads_run for o in self.outcomes),
            sum(o.tracebacks for o in self.outcomes),
            sum(o.silently_wrong for o in self.outcomes),
        ]
        head = "| " + " | ".join(COLUMNS) + " |"
        return "\n".join(
            [head, "|" + "---:|" * len(COLUMNS), "| " + " | ".join(map(str, totals)) + " |"]
        )
