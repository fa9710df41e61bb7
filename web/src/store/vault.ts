/**
 * The device's storage: IndexedDB records sealed with AES-256-GCM under a
 * WebCrypto key that is generated non-extractable and kept in IndexedDB
 * itself. Script on this origin can use the key but never read its bytes,
 * so a copy of the browser profile's files alone does not give the records
 * away in clear (what the browser can and cannot protect: docs/WEB.md).
 * Optionally (chosen at enrolment) every record is first sealed with
 * XChaCha20-Poly1305 under a key derived from a passphrase with Argon2id
 * (libsodium, at least its INTERACTIVE cost); the passphrase is then asked
 * each time the app opens and its key lives only in memory.
 * Nothing is kept in localStorage. `wipe` deletes the whole database
 * (sign-out and revocation).
 *
 * Attachments (PROTOCOL.md §E13) are kept as the ciphertext that was
 * uploaded or downloaded and checked, in their own store (a Blob each, so a
 * large file is not copied through a sealed JSON record); their keys live
 * only in the sealed message history, so the store holds nothing readable.
 */
import { utf8 } from "../crypto/bytes";
import { DecryptionFailed } from "../crypto/errors";
import { open as aeadOpen, seal as aeadSeal } from "../crypto/primitives";
import { na } from "../crypto/sodium";

const DB_NAME = "gchat";
/** Argon2id cost: libsodium's INTERACTIVE (2 passes, 64 MiB) at least, SENSITIVE at most. */
const PW_OPS = 2;
const PW_MEM = 64 * 1024 * 1024;
const PW_MIN_LENGTH = 8;

interface PassphraseParams { salt: Uint8Array; ops: number; mem: number }

export class WrongPassphrase extends Error {}
const STORE = "sealed";
const KEYS = "keys";
const FILES = "files";

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error("IndexedDB request failed"));
  });
}

function openDb(): Promise<IDBDatabase> {
  const r = indexedDB.open(DB_NAME, 2);
  r.onupgradeneeded = () => {
    for (const name of [STORE, KEYS, FILES]) if (!r.result.objectStoreNames.contains(name)) r.result.createObjectStore(name);
  };
  return request(r);
}

interface Sealed {
  iv: Uint8Array<ArrayBuffer>;
  ct: ArrayBuffer;
  /** Also sealed under the passphrase key (XChaCha20-Poly1305) inside. */
  p?: true;
}

export class Vault {
  /** The Argon2id key from the passphrase, in memory only while the app runs. */
  private inner: Uint8Array | null = null;
  private constructor(private readonly db: IDBDatabase, private readonly key: CryptoKey, private params: PassphraseParams | undefined) {}

  /** The records are also sealed under a passphrase, and it has not been given yet. */
  get locked(): boolean {
    return this.params !== undefined && this.inner === null;
  }

  private static derive(passphrase: string, p: PassphraseParams): Uint8Array {
    if (p.ops < PW_OPS || p.mem < PW_MEM || p.ops > 4 || p.mem > 1024 * 1024 * 1024) throw new WrongPassphrase("refused Argon2id parameters");
    return na().crypto_pwhash(32, utf8(passphrase), p.salt, p.ops, p.mem, na().crypto_pwhash_ALG_ARGON2ID13);
  }

  /** At enrolment: every record from now on is also sealed under this passphrase. */
  async setPassphrase(passphrase: string): Promise<void> {
    if (passphrase.length < PW_MIN_LENGTH) throw new WrongPassphrase("passphrase too short");
    const params = { salt: na().randombytes_buf(16), ops: PW_OPS, mem: PW_MEM };
    this.inner = Vault.derive(passphrase, params);
    this.params = params;
    await request(this.db.transaction(KEYS, "readwrite").objectStore(KEYS).put(params, "passphrase"));
  }

  /** Check the passphrase against the device record; WrongPassphrase if it does not open it. */
  async unlock(passphrase: string): Promise<void> {
    if (this.params === undefined) return;
    this.inner = Vault.derive(passphrase, this.params);
    try {
      await this.get("device");
    } catch {
      this.inner = null;
      throw new WrongPassphrase("wrong passphrase");
    }
  }

  static async open(): Promise<Vault> {
    const db = await openDb();
    let key = await request(db.transaction(KEYS).objectStore(KEYS).get("seal")) as CryptoKey | undefined;
    if (key === undefined) {
      key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
      await request(db.transaction(KEYS, "readwrite").objectStore(KEYS).put(key, "seal"));
    }
    const params = await request(db.transaction(KEYS).objectStore(KEYS).get("passphrase")) as PassphraseParams | undefined;
    return new Vault(db, key, params);
  }

  async get<T>(name: string): Promise<T | undefined> {
    const sealed = await request(this.db.transaction(STORE).objectStore(STORE).get(name)) as Sealed | undefined;
    if (sealed === undefined) return undefined;
    let plain = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: sealed.iv, additionalData: new Uint8Array(utf8(name)) }, this.key, sealed.ct));
    if (sealed.p === true) {
      if (this.inner === null) throw new DecryptionFailed("locked: the passphrase is needed");
      plain = new Uint8Array(aeadOpen(this.inner, plain, utf8(name)));
    }
    return JSON.parse(new TextDecoder().decode(plain)) as T;
  }

  async put(name: string, value: unknown): Promise<void> {
    if (this.locked) throw new DecryptionFailed("locked: the passphrase is needed");
    const iv = crypto.getRandomValues(new Uint8Array(12));
    let plain = utf8(JSON.stringify(value));
    if (this.inner !== null) plain = aeadSeal(this.inner, plain, utf8(name));
    const ct = await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: new Uint8Array(utf8(name)) }, this.key, new Uint8Array(plain));
    const record: Sealed = this.inner !== null ? { iv, ct, p: true } : { iv, ct };
    await request(this.db.transaction(STORE, "readwrite").objectStore(STORE).put(record, name));
  }

  async delete(name: string): Promise<void> {
    await request(this.db.transaction(STORE, "readwrite").objectStore(STORE).delete(name));
  }

  /** An attachment's ciphertext, exactly as uploaded (§E13); its key is in the sealed history only. */
  async putCiphertext(attachmentId: string, ciphertext: Blob): Promise<void> {
    await request(this.db.transaction(FILES, "readwrite").objectStore(FILES).put(ciphertext, attachmentId));
  }

  async getCiphertext(attachmentId: string): Promise<Blob | undefined> {
    return await request(this.db.transaction(FILES).objectStore(FILES).get(attachmentId)) as Blob | undefined;
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
