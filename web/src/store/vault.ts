/**
 * The device's storage: IndexedDB records sealed with AES-256-GCM under a
 * WebCrypto key that is generated non-extractable and kept in IndexedDB
 * itself. Script on this origin can use the key but never read its bytes,
 * so a copy of the browser profile's files alone does not give the records
 * away in clear (what the browser can and cannot protect: docs/WEB.md).
 * Nothing is kept in localStorage. `wipe` deletes the whole database
 * (sign-out and revocation).
 */
const DB_NAME = "gchat";
const STORE = "sealed";
const KEYS = "keys";

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error("IndexedDB request failed"));
  });
}

function openDb(): Promise<IDBDatabase> {
  const r = indexedDB.open(DB_NAME, 1);
  r.onupgradeneeded = () => {
    r.result.createObjectStore(STORE);
    r.result.createObjectStore(KEYS);
  };
  return request(r);
}

interface Sealed {
  iv: Uint8Array<ArrayBuffer>;
  ct: ArrayBuffer;
}

export class Vault {
  private constructor(private readonly db: IDBDatabase, private readonly key: CryptoKey) {}

  static async open(): Promise<Vault> {
    const db = await openDb();
    let key = await request(db.transaction(KEYS).objectStore(KEYS).get("seal")) as CryptoKey | undefined;
    if (key === undefined) {
      key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
      await request(db.transaction(KEYS, "readwrite").objectStore(KEYS).put(key, "seal"));
    }
    return new Vault(db, key);
  }

  async get<T>(name: string): Promise<T | undefined> {
    const sealed = await request(this.db.transaction(STORE).objectStore(STORE).get(name)) as Sealed | undefined;
    if (sealed === undefined) return undefined;
    const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: sealed.iv, additionalData: new TextEncoder().encode(name) }, this.key, sealed.ct);
    return JSON.parse(new TextDecoder().decode(plain)) as T;
  }

  async put(name: string, value: unknown): Promise<void> {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: new TextEncoder().encode(name) }, this.key, new TextEncoder().encode(JSON.stringify(value)));
    await request(this.db.transaction(STORE, "readwrite").objectStore(STORE).put({ iv, ct } satisfies Sealed, name));
  }

  async delete(name: string): Promise<void> {
    await request(this.db.transaction(STORE, "readwrite").objectStore(STORE).delete(name));
  }

  /** Sign-out: close and delete every record and the sealing key. */
  async wipe(): Promise<void> {
    this.db.close();
    await new Promise<void>((resolve) => {
      const r = indexedDB.deleteDatabase(DB_NAME);
      r.onsuccess = r.onerror = r.onblocked = () => resolve();
    });
  }
}
