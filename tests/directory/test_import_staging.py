"""Import staging at scale, scaled down: chunked apply, indexed look-ups, no leftovers.

The 300,000-row figures come from ``python -m loadtests.scale``;
these tests pin the properties that make them possible: the apply works
chunk by chunk and still changes nothing if a row of a late chunk is bad,
the staging look-up of earlier employee ids is an index range (not a scan of
everything staged so far), and a failed run leaves no staged personal data.
"""

import uuid

import pytest

from gchat.directory import importer
from gchat.store import imports
from gchat.store.imports import StagedRow
from protocol import frames as f
from tests.directory.conftest import Tree


def row(
    line: int, employee_id: str, agency: str = "DIV-A1", name: str = "สมชาย ใจดี"
) -> f.ImportRow:
    return f.ImportRow(line=line, employee_id=employee_id, name_th=name, agency_code=agency)


async def staged_count(tree: Tree) -> tuple[int, int]:
    db = tree.world.app.db
    assert db is not None
    return (
        int(await db.pool.fetchval("SELECT count(*) FROM directory_imports")),
        int(await db.pool.fetchval("SELECT count(*) FROM directory_import_rows")),
    )


async def test_a_bad_row_in_the_last_chunk_undoes_every_earlier_chunk(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "APPLY_CHUNK", 4)  # 10 rows: three chunks written one by one
    admin = tree.clients["admin_in"]
    before = await tree.snapshot()
    begun = await admin.request(f.ImportBegin)
    rows = [row(i + 2, f"CH-{i}") for i in range(9)] + [row(11, "CH-9", agency="DEPT-B")]
    await admin.request(f.ImportRows, import_id=begun.import_id, rows=rows)
    result = await admin.request(f.ImportApply, import_id=begun.import_id, dry_run=False)
    assert not result.applied and result.created == 0 and result.rows == 10
    assert [(e.line, e.field) for e in result.errors] == [(11, "agency_code")]
    assert await tree.snapshot() == before, "rows of the earlier chunks stayed"
    # The run is over and failed: the server deleted the staged rows itself
    # (a CLI that died here could not), and the import is gone.
    assert await staged_count(tree) == (0, 0)
    with pytest.raises(Exception, match="no such import"):
        await admin.request(f.ImportApply, import_id=begun.import_id, dry_run=True)

    # The same rows, all good, are created across the chunks with one audit event each.
    begun = await admin.request(f.ImportBegin)
    rows[-1] = row(11, "CH-9")
    await admin.request(f.ImportRows, import_id=begun.import_id, rows=rows)
    result = await admin.request(f.ImportApply, import_id=begun.import_id, dry_run=False)
    assert result.applied and result.created == 10
    db = tree.world.app.db
    assert db is not None
    assert await db.pool.fetchval(
        "SELECT count(*) FROM officials WHERE employee_id LIKE 'CH-%'") == 10
    assert await staged_count(tree) == (0, 0)


async def test_a_repeat_across_chunks_is_found(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "APPLY_CHUNK", 3)
    admin = tree.clients["admin_in"]
    begun = await admin.request(f.ImportBegin)
    rows = [row(i + 2, f"RP-{i}") for i in range(7)] + [row(9, "RP-1")]
    await admin.request(f.ImportRows, import_id=begun.import_id, rows=rows)
    result = await admin.request(f.ImportApply, import_id=begun.import_id, dry_run=True)
    assert result.error_count == 1 and "repeats line 3" in result.errors[0].reason
    assert (result.errors[0].code, result.errors[0].ref_line) == ("repeated", 3)
    # A dry run keeps the staged rows (the CLI discards them, or applies).
    assert await staged_count(tree) == (1, 8)
    await admin.request(f.ImportDiscard, import_id=begun.import_id)
    assert await staged_count(tree) == (0, 0)


async def test_staging_looks_up_earlier_employee_ids_by_index(tree: Tree) -> None:
    """A chunk's ids are each one index descent, with the statistics the
    migrations took of the empty table and with fresh ones: a plan that reads
    the whole import per chunk makes staging quadratic."""
    db = tree.world.app.db
    assert db is not None
    import_id = uuid.uuid4()
    async with db.transaction() as conn:
        await imports.begin(conn, import_id, tree.officials["admin_in"])
        for start in range(0, 20_000, 5_000):
            await imports.stage(conn, import_id, [
                StagedRow(line, f"IX-{line}", "สมชาย", None, None, "DIV-A1", None, None)
                for line in range(start, start + 5_000)
            ])
    chunk = ["IX-17", "IX-19999", "none"] + [f"NEW-{i}" for i in range(497)]
    for fresh in (False, True):
        if fresh:
            await db.analyze("directory_import_rows")
        plan = "\n".join(
            r[0] for r in await db.pool.fetch("EXPLAIN " + imports.EMPLOYEE_LINES, import_id, chunk)
        )
        assert "directory_import_rows_employee" in plan, plan
        assert "employee_id = u.employee_id" in plan and "Seq Scan on directory" not in plan, plan
        assert "Filter" not in plan, plan
        assert await imports.staged_employee_lines(db.pool, import_id, chunk) == {
            "IX-17": 17, "IX-19999": 19999}
    await imports.discard(db.pool, import_id)


async def test_an_abandoned_import_is_swept_after_an_hour(tree: Tree) -> None:
    admin = tree.clients["admin_in"]
    begun = await admin.request(f.ImportBegin)
    await admin.request(f.ImportRows, import_id=begun.import_id, rows=[row(2, "AB-1")])
    db = tree.world.app.db
    assert db is not None
    await db.pool.execute(
        "UPDATE directory_imports SET touched_at = now() - interval '61 minutes'")
    fresh = await admin.request(f.ImportBegin)  # any new import sweeps abandoned ones
    assert await staged_count(tree) == (1, 0)
    await admin.request(f.ImportDiscard, import_id=fresh.import_id)
