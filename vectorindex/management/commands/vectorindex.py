"""``manage.py vectorindex build|status|snapshot|recover|check|maintain|repair|drop``.

An action is a row of ``ACTIONS`` and a ``do_<action>(target, options)``
method that calls one service function and prints what it returns; a
``finish_<action>(options)`` method, where there is one, runs once every
target is done.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS
from tqdm import tqdm

from ...exceptions import VectorIndexError
from ...index import build as building
from ...index import recovery, removal
from ...index.registry import Declared, declared_indexes, declared_names, get_declared
from ...storage import read_only
from ...wording import built_lines, counted, remedy, status_lines
from ..progress import progress_bars


def _build_options(parser: CommandParser) -> None:
    parser.add_argument("--seed", type=int, help="random seed for choosing heads")
    parser.add_argument("--no-progress", action="store_true")


def _repair_options(parser: CommandParser) -> None:
    parser.add_argument("--no-progress", action="store_true")


def _calibrate_options(parser: CommandParser) -> None:
    parser.add_argument(
        "--queries", type=int, default=None,
        help="sample queries, the index's own vectors (default: CALIBRATION_QUERIES, or 200 where that is 0)",
    )
    parser.add_argument("--no-progress", action="store_true")


def _status_options(parser: CommandParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def _drop_options(parser: CommandParser) -> None:
    parser.add_argument(
        "--force", action="store_true", help="also drop an index that a model declares (it is then not built)"
    )
    parser.add_argument(
        "--noinput", "--no-input", action="store_false", dest="interactive", help="do not ask for confirmation"
    )


@dataclass(frozen=True)
class Action:
    help: str
    options: Callable[[CommandParser], None] | None = None
    # With no NAME: every declared index, instead of asking for NAME or --all.
    every_by_default: bool = False
    # Its targets are declared indexes; otherwise, names of stored contents.
    declared: bool = True
    # It writes to the database (refused on a replica).
    writes: bool = True


ACTIONS: dict[str, Action] = {
    "build": Action("index the existing rows (replaces any earlier build)", _build_options),
    "status": Action(
        "heads, posting lists, vectors, WAL, snapshot, memory; with no NAME, every index "
        "and what removed indexes left behind",
        _status_options,
        every_by_default=True,
        writes=False,
    ),
    "snapshot": Action("write the head index to the database and truncate the WAL"),
    "recover": Action("load snapshot + WAL, verify against the heads table, rebuild the head index if needed"),
    "check": Action("verify the index's invariants; exits non-zero on a violation", writes=False),
    "maintain": Action(
        "run maintenance (split, merge, defragment, snapshot, clean-up) until nothing is left to do",
        every_by_default=True,
    ),
    "calibrate": Action(
        "measure how many lists a query must read to meet the index's recall target (a build does it too)",
        _calibrate_options,
    ),
    "repair": Action(
        "index again the rows check finds missing, lost, changed or unreachable; mark orphaned version rows deleted",
        _repair_options,
    ),
    "drop": Action(
        "delete what an index that no model declares any more left in vectorindex's tables",
        _drop_options,
        declared=False,
    ),
}


def _common_options() -> argparse.ArgumentParser:
    """Django's options of every command (-v, --traceback, --settings, …) and --database.

    Each action's parser takes them too, so that they may follow the action
    word; there they have no default, which would overwrite a value given
    before the action word.
    """
    common = BaseCommand().create_parser("manage.py", "vectorindex", add_help=False)
    common.add_argument("--database", help=f"the database alias (default: {DEFAULT_DB_ALIAS})")
    for option in common._actions:
        option.default = argparse.SUPPRESS
    return common


class Command(BaseCommand):
    help = "Build, inspect, snapshot, recover, check, maintain, repair and drop vector indexes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help=f"the database alias (default: {DEFAULT_DB_ALIAS})")
        common = _common_options()
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        for name, action in ACTIONS.items():
            sub = actions.add_parser(name, help=action.help, description=action.help, parents=[common])
            sub.add_argument("names", nargs="*", metavar="NAME", help="VectorIndex names")
            if action.declared:
                sub.add_argument("--all", action="store_true", help="every declared VectorIndex")
            if action.options:
                action.options(sub)

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        run = getattr(self, f"do_{action}")
        steps = [
            (getattr(target, "name", target), partial(run, target, options))
            for target in self._targets(ACTIONS[action], options)
        ]
        if ACTIONS[action].writes and read_only(options["database"]):
            raise CommandError(
                f"The {options['database']!r} database takes no writes (a replica, or a server set read_only): "
                f"run `vectorindex {action}` on the database it copies; `status` and `check` read a replica."
            )
        finish = getattr(self, f"finish_{action}", None)
        if finish is not None:
            steps.append((action, partial(finish, options)))
        self.reports: list[dict[str, Any]] = []
        self._run(steps, "Maintenance did not finish for" if action == "maintain" else "Invariants violated in")

    def _run(self, steps: list[tuple[str, Callable[[], Any]]], failing: str) -> None:
        """Run every step, then fail with one CommandError that names each index that failed.

        A step that returns False failed (*failing*: how to say so). An error that is not a
        CommandError (a database error, a bug) is named with its type; the
        first is the CommandError's cause, whose traceback Django shows under
        --traceback.
        """
        errors: list[str] = []
        violated: list[str] = []
        cause: Exception | None = None
        for name, step in steps:
            try:
                if step() is False:
                    violated.append(name)
            except CommandError as error:  # says what to do already
                errors.append(str(error))
            except Exception as error:  # noqa: BLE001 - named, and the other indexes still run
                kind = "" if isinstance(error, VectorIndexError) else f"{type(error).__name__}: "
                errors.append(f"{name}: {kind}{error}")
                cause = cause or error
        if violated:
            errors.append(f"{failing}: {', '.join(violated)}")
        if errors:
            raise CommandError("\n".join(errors)) from cause

    def _targets(self, action: Action, options: dict) -> list[Any]:
        names = options["names"]
        if not action.declared:
            if not names:
                raise CommandError(f"Name the index to drop ({self._leftover_names(options['database'])}).")
            return names
        if options["all"] and names:
            raise CommandError(f"Name indexes or give --all, not both (--all with {', '.join(names)}).")
        if options["all"] or (action.every_by_default and not names):
            return [declared_indexes()[name] for name in sorted(declared_indexes())]
        if not names:
            known = ", ".join(sorted(declared_indexes())) or "none declared"
            raise CommandError(f"Name one or more indexes, or --all ({known}).")
        found = []
        for name in names:
            try:
                found.append(get_declared(name))
            except LookupError as error:
                hint = ""
                model = declared_names().get(name)
                if model is not None:
                    hint = f" {model} declares {name!r} on a field that is not a VectorField: `manage.py check` says what to fix."
                elif removal.find(name, options["database"]) is not None:
                    hint = f" {name!r} is what a removed index left behind: `manage.py vectorindex drop {name}` deletes it."
                raise CommandError(f"{error}{hint}") from None
        return found

    @staticmethod
    def _leftover_names(database: str) -> str:
        names = [stored.name for stored in removal.leftovers(database)]
        return f"left by removed indexes: {', '.join(names)}" if names else "no removed index left anything behind"

    def _progress(self, declared: Declared, options: dict, unit: str = "it") -> Any:
        """A ``progress(stage, done, total)`` that draws one bar per stage on a terminal (not with --no-progress)."""
        return progress_bars(declared.name, not options["no_progress"] and self.stdout.isatty(), unit)

    # build -----------------------------------------------------------------------

    def do_build(self, declared: Declared, options: dict) -> None:
        with self._progress(declared, options, unit="vec") as progress:
            report = building.build(declared, options["database"], progress=progress, seed=options["seed"])
        for line in built_lines(declared.name, report):
            self.stdout.write(line)

    # status ----------------------------------------------------------------------

    def do_status(self, declared: Declared, options: dict) -> None:
        report = recovery.status(declared, options["database"])
        if options["json"]:
            self.reports.append(report)  # written together by finish_status
        else:
            for line in status_lines(report):
                self.stdout.write(line)

    def finish_status(self, options: dict) -> None:
        leftovers = [] if options["names"] else removal.leftovers(options["database"])
        if options["json"]:
            if len(options["names"]) == 1:
                document: Any = self.reports[0] if self.reports else None
            else:
                document = {"indexes": self.reports, "leftovers": [asdict(stored) for stored in leftovers]}
            if document is not None:
                self.stdout.write(json.dumps(document, indent=2, default=str))
            return
        if not options["names"] and not declared_indexes():
            self.stdout.write("No model declares a VectorIndex.")
        if leftovers:
            self.stdout.write("Left behind by removed indexes (no model declares them):")
        for stored in leftovers:
            self.stdout.write(f"  {stored.name} (was {stored.model}.{stored.field}): {stored.describe()}")
            self.stdout.write(f"    `manage.py vectorindex drop {stored.name}` deletes it")

    # snapshot, recover, maintain, check ---------------------------------------------

    def do_snapshot(self, declared: Declared, options: dict) -> None:
        snapshot = recovery.take_snapshot(declared, options["database"])
        self.stdout.write(
            f"{declared.name}: snapshot at LSN {snapshot.lsn}, {snapshot.size:,} bytes in {counted(snapshot.chunks, 'chunk')}"
        )

    def do_recover(self, declared: Declared, options: dict) -> None:
        report = recovery.recover(declared, options["database"])
        for problem in report.problems:
            self.stdout.write(f"{declared.name}: {problem}")
        self.stdout.write(
            f"{declared.name}: head index from the {report.source}, {counted(report.heads, 'head')} at LSN {report.lsn}"
        )

    def do_calibrate(self, declared: Declared, options: dict) -> None:
        from ...conf import DEFAULTS, vectorindex_settings
        from ...index.maintenance.calibrating import calibration

        queries = options["queries"] or vectorindex_settings.CALIBRATION_QUERIES or DEFAULTS["CALIBRATION_QUERIES"]
        if queries < 1:
            raise CommandError(f"--queries must be a positive number, got {queries}.")
        with self._progress(declared, options, unit="query") as progress:
            found = calibration(declared, options["database"], progress, queries=queries)
        if found is None:
            self.stdout.write(
                f"{declared.name}: not built, nothing to calibrate; `manage.py vectorindex build {declared.name}` builds it"
            )
            return
        self.stdout.write(f"{declared.name}: {found.describe()}")

    def do_maintain(self, declared: Declared, options: dict) -> bool:
        from collections import Counter

        from ...index import maintenance
        from ...models import IndexState

        state = IndexState.objects.using(options["database"]).filter(name=declared.name).first()
        if state is None or not state.ready:
            self.stdout.write(
                f"{declared.name}: not built, nothing to maintain; `manage.py vectorindex build {declared.name}` builds it"
            )
            return
        show = self.stdout.isatty()
        bar = tqdm(desc=f"{declared.name}: jobs", unit="job", leave=False, disable=not show)
        verbose = options["verbosity"] >= 2

        def report(outcome: Any) -> None:
            bar.update(1)
            if outcome.busy:
                self.stderr.write(f"{declared.name}: {outcome.detail}")
            elif verbose:
                self.stdout.write(f"  {outcome.job}: {outcome.detail}")

        result = maintenance.maintain(declared, options["database"], report=report)
        bar.close()
        ran = [outcome for outcome in result.outcomes if not outcome.busy]
        counts = Counter(outcome.job for outcome in ran)
        jobs = ", ".join(f"{count} {job}" for job, count in sorted(counts.items()))
        summary = f"{counted(len(ran), 'job')} ({jobs})" if ran else "nothing to do"
        if result.finished:
            self.stdout.write(f"{declared.name}: {summary}")
            return True

        def listed(found: list) -> str:
            return ", ".join(f"{count} {job}" for job, count in sorted(Counter(job for job, _ in found).items()))

        if result.left:
            self.stderr.write(
                f"{declared.name}: {summary}; NOT FINISHED: stopped after {result.rounds} rounds with "
                f"{listed(result.left)} still to do. Run it again; "
                "if it never finishes without writes in between, lists are split and merged for ever."
            )
        if result.busy:
            self.stderr.write(
                f"{declared.name}: {summary}; NOT FINISHED: {listed(result.busy)} left undone, a lock held by "
                "another transaction for over JOB_LOCK_TIMEOUT; run it again once that transaction ends."
            )
        return False

    def do_check(self, declared: Declared, options: dict) -> bool:
        violations, warnings = recovery.check(declared, options["database"])
        for warning in warnings:
            self.stdout.write(f"{declared.name}: warning: {warning}")
        for violation in violations:
            self.stderr.write(f"{declared.name}: VIOLATION: {violation}")
        for fix in dict.fromkeys(remedy(declared.name, violation) for violation in violations):
            self.stderr.write(f"{declared.name}: fix: {fix}")
        if not violations:
            self.stdout.write(f"{declared.name}: ok")
        return not violations

    def do_repair(self, declared: Declared, options: dict) -> None:
        from ...index.repair import repair

        with self._progress(declared, options) as progress:
            report = repair(declared, options["database"], progress=progress)
        if not report.indexed and not report.orphans_deleted:
            self.stdout.write(f"{declared.name}: nothing to repair")
            return
        kinds = ", ".join(f"{report.found[kind]:,} {kind}" for kind in ("missing", "lost", "changed", "unreachable"))
        self.stdout.write(
            f"{declared.name}: {counted(report.indexed, 'row')} indexed again ({kinds}), "
            f"{counted(report.orphans_deleted, 'orphaned version row')} marked deleted"
        )

    # drop --------------------------------------------------------------------------

    def do_drop(self, name: str, options: dict) -> None:
        database = options["database"]
        model = declared_names().get(name)
        if model is not None and not options["force"]:
            raise CommandError(
                f"{name} is declared by {model}: `manage.py vectorindex build {name}` "
                f"replaces its contents. To delete them anyway (the index is then not built), add --force."
            )
        stored = removal.find(name, database)
        if stored is None:
            raise CommandError(f"Nothing is stored for an index named {name!r} ({self._leftover_names(database)}).")
        if options["interactive"] and not self._confirm(stored, database):
            self.stdout.write(f"{name}: drop cancelled.")
            return
        dropped = removal.drop(name, database) or stored
        self.stdout.write(f"{name}: dropped {dropped.describe()}")

    def _confirm(self, stored: removal.Stored, database: str) -> bool:
        answer = input(
            f"You have requested to drop the vector index {stored.name!r} ({stored.model}.{stored.field}) "
            f"in the {database!r} database:\n{stored.describe()}.\n"
            "This will IRREVERSIBLY DESTROY them.\n"
            "Are you sure you want to do this?\n\n"
            "    Type 'yes' to continue, or 'no' to cancel: "
        )
        return answer == "yes"
