"""The words people read: counts with the right form of their noun, sizes, ``status`` and ``check`` in sentences."""

from __future__ import annotations

from typing import Any

from .storage.memory import BufferPool, PostingMemory

__all__ = [
    "buffer_pool_advice",
    "buffer_pool_warning",
    "counted",
    "in_bytes",
    "posting_data",
    "posting_table_hint",
    "posting_table_warning",
    "remedy",
    "status_lines",
    "times_the_pool",
]

BYTE_UNITS = ["KiB", "MiB", "GiB", "TiB"]


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``1 head``, ``2 heads``, ``1,234 entries``: *plural* where adding an "s" is wrong."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def in_bytes(size: int) -> str:
    """``512 bytes``, ``1.5 KiB``, ``286 MiB``, ``12.5 GiB``: a tenth shown below 100 of a unit, where it is not zero."""
    if size < 1024:
        return counted(size, "byte")
    value = float(size)
    for unit in BYTE_UNITS:
        value /= 1024
        if value < 1024 or unit == BYTE_UNITS[-1]:
            break
    number = f"{value:.1f}".removesuffix(".0") if value < 100 else f"{value:,.0f}"
    return f"{number} {unit}"


def times_the_pool(memory: PostingMemory) -> str:
    """``2.2× the InnoDB buffer pool (128 MiB)``: the posting data against the pool."""
    pool = memory.buffer_pool
    ratio = memory.posting_bytes / pool.size
    times = f"{ratio:.1f}" if ratio >= 1.1 else f"{ratio:.2f}"  # never "1.0×" for data over the pool
    return f"{times}× the {pool.name} ({in_bytes(pool.size)})"


def buffer_pool_advice(memory: PostingMemory) -> str:
    """What to set to hold the posting data in memory."""
    pool = memory.buffer_pool
    return f"set {pool.setting} to at least {in_bytes(memory.advised_pool_bytes)} (see README, Deployment)"


def buffer_pool_warning(memory: PostingMemory) -> str | None:
    """One index's posting data against its server's buffer pool, when it does not fit; None when it does or there is no pool."""
    if not memory.too_large:
        return None
    return (
        f"posting data {in_bytes(memory.posting_bytes)} is {times_the_pool(memory)}: queries will read lists from disk; "
        f"{buffer_pool_advice(memory)}"
    )


def posting_table_warning(alias: str, memory: PostingMemory) -> str:
    """The posting table of database *alias*, larger than its buffer pool (``memory.too_large``)."""
    return (
        f"The posting lists of the vector indexes on database '{alias}' take {in_bytes(memory.posting_bytes)}, "
        f"{times_the_pool(memory)}: queries will read lists from disk, several times slower."
    )


def posting_table_hint(memory: PostingMemory) -> str:
    """What to do about :func:`posting_table_warning`, and where each index's share is shown."""
    advice = buffer_pool_advice(memory)
    return f"{advice[0].upper()}{advice[1:]}; `manage.py vectorindex status` shows each index's posting data."


def posting_data(memory: PostingMemory) -> str:
    """``286 MiB; InnoDB buffer pool 128 MiB``, or that the database has no buffer pool of its own."""
    pool = memory.buffer_pool
    if pool is None:
        return f"{in_bytes(memory.posting_bytes)}; no buffer pool: the operating system caches the database's pages in free memory"
    return f"{in_bytes(memory.posting_bytes)}; {pool.name} {in_bytes(pool.size)}"


def remedy(name: str, violation: str) -> str:
    """The command that fixes a kind of violation: the head index is recovered, rows are repaired."""
    if "head index" in violation:
        return f"`manage.py vectorindex recover {name}` rebuilds the head index from the heads table"
    return (
        f"`manage.py vectorindex repair {name}` indexes the rows the check names and marks deleted the versions "
        "that belong to no row "
        f"(`manage.py vectorindex build {name}` rebuilds the whole index)"
    )


def built_lines(name: str, report: Any) -> list[str]:
    """What a build did (an ``index.build.BuildReport``), in words."""
    lines = [
        f"{name}: {counted(report.vectors, 'vector')}, {counted(report.heads, 'head')}, "
        f"{counted(report.entries, 'posting entry', 'posting entries')} in {report.seconds:.1f} s "
        f"({report.vectors_per_second:,.0f} vectors/s)"
    ]
    if report.calibration is not None:
        lines.append(f"{name}: calibrated: {report.calibration.describe()}")
    return lines


def status_lines(report: dict[str, Any]) -> list[str]:
    """``status`` in words."""
    name = report["name"]
    title = f"{name} ({report['model']}.{report['field']}, {report['distance']}, {report['dimensions']}-d)"
    changes = report.get("changed_since_build")
    if changes:
        what = "is refused until rebuilt" if report["status"] == "ready" else "was reset"
        return [
            f"{title}: {'not built' if report['status'] == 'empty' else report['status']}",
            f"  its declaration changed since it was built ({', '.join(changes)}): it {what}; "
            f"run `manage.py vectorindex build {name}`",
        ]
    if report["status"] == "empty":
        waiting = report["rows_with_vectors"]
        rows = f"{counted(waiting, 'row')} with vectors" if waiting else "no rows with vectors yet"
        return [f"{title}: not built: {rows}; run `manage.py vectorindex build {name}`"]
    if report["status"] != "ready":
        return [f"{title}: {report['status']}"]
    sizes = report["posting_sizes"]
    rebuild = "" if report["payload"] == report["declared_payload"] else (
        f" (declared {report['declared_payload']}: takes effect at the next build)"
    )
    age = report["snapshot_age_s"]
    snapshot = "no snapshot" if age is None else f"snapshot {report['snapshot_bytes']:,} bytes, {age:,.0f} s old"
    share = report["head_index_share"]
    return [
        f"{title}: ready",
        f"  vectors        {report['vectors']:,} ({counted(report['deleted_versions'], 'deleted version')})",
        f"  heads          {report['heads']:,} alive, {report['retired_heads']:,} retired",
        f"  posting lists  {report['posting_lists']:,}, {counted(report['posting_entries'], 'entry', 'entries')}; "
        f"entries per list min {sizes.get('min', 0):,.0f} / p50 {sizes.get('p50', 0):,.0f} / "
        f"p90 {sizes.get('p90', 0):,.0f} / max {sizes.get('max', 0):,.0f}; "
        f"rows per list max {report['posting_rows_per_list'].get('max', 0):,.0f}",
        f"  entries        {report['payload']}, {report['entry_bytes']:,} bytes each{rebuild}",
        f"  WAL            {counted(report['wal_entries'], 'entry', 'entries')} after LSN {report['snapshot_lsn']}; {snapshot}",
        f"  memory         head index {report['head_index_bytes']:,} bytes = "
        f"{'-' if share is None else f'{share:.1%}'} of {report['raw_vector_bytes']:,} raw vector bytes",
        f"  probes         {probes_line(report['probes'])}",
        *_posting_data_lines(report),
    ]


def probes_line(probes: dict[str, Any]) -> str:
    """How many lists a query reads, and why, in words (``status``, the admin)."""
    count = f"{probes['probes']:,} lists a query"
    if probes["source"] == "declared":
        said = f"{count} (declared probes)"
    elif probes["source"] == "not calibrated":
        return f"{count} (not calibrated yet: `manage.py vectorindex calibrate` measures it for recall {probes['target']})"
    else:
        said = f"{count} for recall {probes['target']}"
    if "measured_recall" not in probes:
        return said
    if not probes["queries"]:
        return f"{said}; every list: the index had too few vectors or heads to sample when calibrated"
    return (
        f"{said}; calibrated {probes['calibrated_at'][:16].replace('T', ' ')} on {probes['queries']} of its "
        f"{probes['calibrated_vectors']:,} vectors: {probes['calibrated_probes']:,} lists gave recall@10 "
        f"{probes['measured_recall']:.3f} (target {probes['calibrated_target']})"
    )


def _posting_data_lines(report: dict[str, Any]) -> list[str]:
    """The posting data's size against the buffer pool, and the warning when it does not fit."""
    pool = report["buffer_pool"]
    memory = PostingMemory(report["posting_bytes"], BufferPool(**pool) if pool else None)
    warning = buffer_pool_warning(memory)
    return [f"  posting data   {posting_data(memory)}", *([f"  warning        {warning}"] if warning else [])]
