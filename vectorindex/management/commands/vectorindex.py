"""``manage.py vectorindex build|status|snapshot|recover|check``."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS
from tqdm import tqdm

from vectorindex import build as building
from vectorindex import recovery
from vectorindex.exceptions import VectorIndexError
from vectorindex.registry import declared_indexes, get_declared


class Command(BaseCommand):
    help = "Build, inspect, snapshot, recover and check vector indexes."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        for action, text in [
            ("build", "index the existing rows (replaces any earlier build)"),
            ("status", "heads, posting lists, vectors, WAL, snapshot, memory"),
            ("snapshot", "write the head index to the database and truncate the WAL"),
            ("recover", "load snapshot + WAL, verify against the heads table, rebuild the head index if needed"),
            ("check", "verify the index's invariants; exits non-zero on a violation"),
            ("maintain", "run maintenance (split, merge, defragment, snapshot, clean-up) until nothing is left to do"),
        ]:
            sub = actions.add_parser(action, help=text, description=text)
            sub.add_argument("names", nargs="*", metavar="NAME", help="VectorIndex names")
            sub.add_argument("--all", action="store_true", help="every declared VectorIndex")
            sub.add_argument("--database", default=DEFAULT_DB_ALIAS)
            if action == "build":
                sub.add_argument("--seed", type=int, help="random seed for choosing heads")
                sub.add_argument("--no-progress", action="store_true")
            if action == "status":
                sub.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        names = options["names"]
        if options["all"] or (options["action"] == "maintain" and not names):
            names = sorted(declared_indexes())
        if not names:
            known = ", ".join(sorted(declared_indexes())) or "none declared"
            raise CommandError(f"Name one or more indexes, or --all ({known}).")
        try:
            indexes = [get_declared(name) for name in names]
        except LookupError as error:
            raise CommandError(str(error)) from None
        handler = getattr(self, f"do_{options['action']}")
        failed = []
        for declared in indexes:
            try:
                if handler(declared, options) is False:
                    failed.append(declared.name)
            except VectorIndexError as error:
                raise CommandError(f"{declared.name}: {error}") from None
        if failed:
            what = "Maintenance did not finish for" if options["action"] == "maintain" else "Invariants violated in"
            raise CommandError(f"{what}: {', '.join(failed)}")

    def do_build(self, declared: Any, options: dict) -> None:
        bars: dict[str, tqdm] = {}
        show = not options["no_progress"] and self.stdout.isatty()

        def progress(stage: str, done: int, total: int) -> None:
            if not show:
                return
            bar = bars.get(stage)
            if bar is None:
                bar = bars[stage] = tqdm(total=total, desc=f"{declared.name}: {stage}", unit="vec", leave=False)
            bar.update(done - bar.n)

        report = building.build(declared, options["database"], progress=progress, seed=options["seed"])
        for bar in bars.values():
            bar.close()
        self.stdout.write(
            f"{declared.name}: {report.vectors:,} vectors, {report.heads:,} heads, "
            f"{report.entries:,} posting entries in {report.seconds:.1f} s "
            f"({report.vectors_per_second:,.0f} vectors/s)"
        )

    def do_status(self, declared: Any, options: dict) -> None:
        report = recovery.status(declared, options["database"])
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, default=str))
            return
        self.stdout.write(f"{report['name']} ({report['model']}.{report['field']}, {report['distance']}, {report['dimensions']}-d): {report['status']}")
        if report["status"] != "ready":
            return
        sizes = report["posting_sizes"]
        self.stdout.write(f"  vectors        {report['vectors']:,} ({report['deleted_versions']:,} deleted versions)")
        self.stdout.write(f"  heads          {report['heads']:,} alive, {report['retired_heads']:,} retired")
        self.stdout.write(
            f"  posting lists  {report['posting_lists']:,}, {report['posting_entries']:,} entries; "
            f"entries per list min {sizes.get('min', 0):.0f} / p50 {sizes.get('p50', 0):.0f} / "
            f"p90 {sizes.get('p90', 0):.0f} / max {sizes.get('max', 0):.0f}; "
            f"rows per list max {report['posting_rows_per_list'].get('max', 0):.0f}"
        )
        rebuild = "" if report["payload"] == report["declared_payload"] else (
            f" (declared {report['declared_payload']}: takes effect at the next build)"
        )
        self.stdout.write(f"  entries        {report['payload']}, {report['entry_bytes']:,} bytes each{rebuild}")
        age = report["snapshot_age_s"]
        self.stdout.write(
            f"  WAL            {report['wal_entries']:,} entries after LSN {report['snapshot_lsn']}; "
            f"snapshot {report['snapshot_bytes'] or 0:,} bytes, {age if age is None else round(age)} s old"
        )
        share = report["head_index_share"]
        self.stdout.write(
            f"  memory         head index {report['head_index_bytes']:,} bytes = "
            f"{'-' if share is None else f'{share:.1%}'} of {report['raw_vector_bytes']:,} raw vector bytes"
        )

    def do_snapshot(self, declared: Any, options: dict) -> None:
        snapshot = recovery.take_snapshot(declared, options["database"])
        self.stdout.write(f"{declared.name}: snapshot at LSN {snapshot.lsn}, {snapshot.size:,} bytes in {snapshot.chunks} chunks")

    def do_recover(self, declared: Any, options: dict) -> None:
        report = recovery.recover(declared, options["database"])
        for problem in report.problems:
            self.stdout.write(f"{declared.name}: {problem}")
        self.stdout.write(f"{declared.name}: head index from the {report.source}, {report.heads:,} heads at LSN {report.lsn}")

    def do_maintain(self, declared: Any, options: dict) -> bool:
        from collections import Counter

        from vectorindex import maintenance
        from vectorindex.models import IndexState

        state = IndexState.objects.using(options["database"]).filter(name=declared.name).first()
        if state is None or state.status != IndexState.Status.READY:
            self.stdout.write(f"{declared.name}: not built, nothing to maintain")
            return
        show = self.stdout.isatty()
        bar = tqdm(desc=f"{declared.name}: jobs", unit="job", leave=False, disable=not show)
        verbose = options["verbosity"] >= 2

        def report(outcome: Any) -> None:
            bar.update(1)
            if verbose:
                self.stdout.write(f"  {outcome.job}: {outcome.detail}")

        result = maintenance.maintain(declared, options["database"], report=report)
        bar.close()
        counts = Counter(outcome.job for outcome in result.outcomes)
        summary = ", ".join(f"{count} {job}" for job, count in sorted(counts.items())) or "nothing to do"
        if result.finished:
            self.stdout.write(f"{declared.name}: {summary}")
            return True
        left = Counter(job for job, _arguments in result.left)
        self.stderr.write(
            f"{declared.name}: {summary}; NOT FINISHED: stopped after {result.rounds} rounds with "
            f"{', '.join(f'{count} {job}' for job, count in sorted(left.items()))} still to do. Run it again; "
            "if it never finishes without writes in between, lists are split and merged for ever."
        )
        return False

    def do_check(self, declared: Any, options: dict) -> bool:
        violations, warnings = recovery.check(declared, options["database"])
        for warning in warnings:
            self.stdout.write(f"{declared.name}: warning: {warning}")
        for violation in violations:
            self.stderr.write(f"{declared.name}: VIOLATION: {violation}")
        if not violations:
            self.stdout.write(f"{declared.name}: ok")
        return not violations
