"""The app's browser storage read raw, as someone with a copy of the browser profile would.

One reader for every browser test that checks the vault (web/src/store/vault.ts)
keeps nothing in clear: the sealed records, the kept files and the sealing key
are read straight from IndexedDB, not through the app.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from playwright.sync_api import Page

READ = """async (needles) => {
    const db = await new Promise((ok, no) => {
        const r = indexedDB.open("gchat");
        r.onsuccess = () => ok(r.result);
        r.onerror = () => no(r.error);
    });
    const ask = (store, how) => new Promise((ok, no) => {
        const r = how(db.transaction(store).objectStore(store));
        r.onsuccess = () => ok(r.result);
        r.onerror = () => no(r.error);
    });
    const records = await ask("sealed", (s) => s.getAll());
    const files = await ask("files", (s) => s.getAll());
    const key = await ask("keys", (s) => s.get("seal"));
    const kept = await Promise.all(files.map(async (b) => new Uint8Array(await b.arrayBuffer())));
    const hays = [...records.map((r) => new Uint8Array(r.ct)), ...kept];
    const contains = (hay, needle) => {
        outer: for (let i = 0; i + needle.length <= hay.length; i++) {
            for (let j = 0; j < needle.length; j++) {
                if (hay[i + j] !== needle[j]) continue outer;
            }
            return true;
        }
        return false;
    };
    const raw = needles.map((n) => Uint8Array.from(atob(n), (c) => c.charCodeAt(0)));
    let exported = false;
    try { await crypto.subtle.exportKey("raw", key); exported = true; } catch {}
    db.close();
    return {
        records: records.length,
        sealed_shapes: records.every((r) => Object.keys(r).sort().join() === "ct,iv"),
        file_sizes: files.map((b) => b.size).sort((a, b) => a - b),
        found: raw.map((n) => hays.some((h) => contains(h, n))),
        key_extractable: key.extractable,
        key_exported: exported,
        local_storage: localStorage.length,
    };
}"""


@dataclass(frozen=True)
class Stored:
    """What the profile holds: counts and yes/no answers, never the bytes themselves."""

    records: int  # sealed records
    sealed_shapes: bool  # every record is exactly {ct, iv}: nothing beside the ciphertext
    file_sizes: list[int]  # the kept files' sizes, smallest first
    found: list[bool]  # per needle: whether any sealed record or kept file contains it
    key_extractable: bool  # the sealing key's flag
    key_exported: bool  # whether crypto.subtle.exportKey gave its bytes
    local_storage: int  # entries in localStorage (the app keeps none)


def read_storage(page: Page, needles: list[bytes]) -> Stored:
    """Read the page's IndexedDB and look for each needle in every stored byte string."""
    return Stored(**page.evaluate(READ, [base64.b64encode(n).decode() for n in needles]))
