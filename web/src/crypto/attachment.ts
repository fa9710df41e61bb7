/**
 * File encryption for attachments (PROTOCOL.md Part II §E13), the browser
 * twin of crypto/attachment.py: libsodium secretstream XChaCha20-Poly1305
 * over 65 536-byte chunks, SHA-256 over the whole ciphertext, and the
 * message body that refers to a file (0xFF then a MessagePack map).
 *
 * Incremental on purpose: the caller reads the File one chunk at a time
 * and sends (or keeps) what comes out, so a 100 MiB file is never held
 * in memory twice.
 *
 * Why an encryptor can start again from its header: libsodium's push and
 * pull states are the same structure, derived the same way from key and
 * header, and a stream of TAG_MESSAGE chunks never rekeys. So
 * `FileEncryptor.restart` (init_pull on the same header) produces the same
 * ciphertext byte for byte; an interrupted upload resumes by encrypting
 * the file again and sending only what the node does not hold yet, without
 * ever writing the ciphertext or the plaintext to storage.
 */
import { decode, encode } from "@msgpack/msgpack";
import { AttachmentTampered, AttachmentTruncated, InvalidKey, InvalidMessage } from "./errors";
import { na } from "./sodium";

export const FILE_KEY_BYTES = 32;
export const STREAM_HEADER_BYTES = 24;
export const STREAM_A_BYTES = 17;
/** Plaintext bytes per secretstream message. */
export const FILE_CHUNK_BYTES = 65536;
const RECORD = FILE_CHUNK_BYTES + STREAM_A_BYTES;
/** First byte of a message body that carries a file (never valid UTF-8). */
export const FILE_MARK = 0xff;
/** Largest thumbnail a body may carry (§E13). */
export const MAX_THUMBNAIL_BYTES = 32 * 1024;
const MAX_NAME_BYTES = 255;

export const fileChunkCount = (size: number): number => Math.max(1, Math.ceil(size / FILE_CHUNK_BYTES));

/** The ciphertext's size for a file of `size` bytes: 24 + size + 17 n. */
export function ciphertextSize(size: number): number {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError("file size");
  return STREAM_HEADER_BYTES + size + fileChunkCount(size) * STREAM_A_BYTES;
}

const tagFinal = (): number => na().crypto_secretstream_xchacha20poly1305_TAG_FINAL;
const tagMessage = (): number => na().crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;

function checkKey(key: Uint8Array): void {
  if (key.length !== FILE_KEY_BYTES) throw new InvalidKey(`attachment key must be ${FILE_KEY_BYTES} bytes`);
}

export const newFileKey = (): Uint8Array => na().crypto_secretstream_xchacha20poly1305_keygen();

/**
 * Encrypts one file of a known size: `header` first, then `push` each
 * 65 536-byte chunk in order (the last may be shorter; an empty file is one
 * empty push). `sha256` is the hash of header and every push, once done.
 */
export class FileEncryptor {
  readonly header: Uint8Array;
  private state: unknown;
  private left: number;
  private pushed = 0;
  private readonly hash: unknown;

  private constructor(readonly key: Uint8Array, readonly size: number, header: Uint8Array | null) {
    checkKey(key);
    const s = na();
    if (header === null) {
      const init = s.crypto_secretstream_xchacha20poly1305_init_push(key);
      this.state = init.state;
      this.header = init.header;
    } else {
      this.state = s.crypto_secretstream_xchacha20poly1305_init_pull(header, key);
      this.header = header;
    }
    this.left = fileChunkCount(size);
    this.hash = s.crypto_hash_sha256_init();
    s.crypto_hash_sha256_update(this.hash as never, this.header);
  }

  static start(key: Uint8Array, size: number): FileEncryptor {
    return new FileEncryptor(key, size, null);
  }

  /** The same stream again from its first byte (same key and header: the same ciphertext). */
  static restart(key: Uint8Array, size: number, header: Uint8Array): FileEncryptor {
    if (header.length !== STREAM_HEADER_BYTES) throw new InvalidKey("secretstream header");
    return new FileEncryptor(key, size, header);
  }

  /** The plaintext range `[start, end)` the next push takes. */
  get nextRange(): [number, number] {
    const final = this.left === 1;
    return [this.pushed, final ? this.size : this.pushed + FILE_CHUNK_BYTES];
  }

  push(chunk: Uint8Array): Uint8Array {
    if (this.left === 0) throw new RangeError("the file is already complete");
    const final = this.left === 1;
    const expected = final ? this.size - this.pushed : FILE_CHUNK_BYTES;
    if (chunk.length !== expected) throw new RangeError(`chunk of ${chunk.length} bytes where ${expected} were expected`);
    const s = na();
    const out = s.crypto_secretstream_xchacha20poly1305_push(this.state as never, chunk, null, final ? tagFinal() : tagMessage());
    this.left -= 1;
    this.pushed += chunk.length;
    s.crypto_hash_sha256_update(this.hash as never, out);
    return out;
  }

  get done(): boolean {
    return this.left === 0;
  }

  /** SHA-256 of the whole ciphertext (callable once, when done). */
  sha256(): Uint8Array {
    if (!this.done) throw new RangeError("the file is not complete yet");
    return na().crypto_hash_sha256_final(this.hash as never);
  }
}

/**
 * Checks and decrypts one attachment's ciphertext as it arrives: `feed`
 * takes pieces of any size and returns the plaintext decrypted so far;
 * `finish` checks the final tag, the exact size and the SHA-256 (constant
 * time). Plaintext is good only after `finish` returned: a caller keeps
 * nothing of it before (never a partial file).
 */
export class FileDecryptor {
  private state: unknown = null;
  private buffer: Uint8Array = new Uint8Array(0);
  private readonly hash: unknown;
  private readonly expectedSize: number;
  private seen = 0;
  private final = false;

  constructor(private readonly key: Uint8Array, private readonly expectedHash: Uint8Array, size: number) {
    checkKey(key);
    this.expectedSize = ciphertextSize(size);
    this.hash = na().crypto_hash_sha256_init();
  }

  feed(data: Uint8Array): Uint8Array[] {
    const s = na();
    this.seen += data.length;
    if (this.seen > this.expectedSize) throw new AttachmentTruncated("the attachment is longer than announced");
    s.crypto_hash_sha256_update(this.hash as never, data);
    this.buffer = this.buffer.length === 0 ? data.slice() : joined(this.buffer, data);
    const out: Uint8Array[] = [];
    if (this.state === null) {
      if (this.buffer.length < STREAM_HEADER_BYTES) return out;
      this.state = s.crypto_secretstream_xchacha20poly1305_init_pull(this.buffer.slice(0, STREAM_HEADER_BYTES), this.key);
      this.buffer = this.buffer.slice(STREAM_HEADER_BYTES);
    }
    // A full record is opened only once a byte after it arrived, or at the announced end: the last record may be full.
    let at = 0;
    while (this.buffer.length - at > RECORD || (this.buffer.length - at === RECORD && this.seen === this.expectedSize)) {
      out.push(this.pull(this.buffer.subarray(at, at + RECORD)));
      at += RECORD;
    }
    if (at > 0) this.buffer = this.buffer.slice(at);
    return out;
  }

  private pull(record: Uint8Array): Uint8Array {
    if (this.final) throw new AttachmentTruncated("the attachment goes on after its final chunk");
    let r: { message: Uint8Array; tag: number } | false;
    try {
      r = na().crypto_secretstream_xchacha20poly1305_pull(this.state as never, record, null) as { message: Uint8Array; tag: number } | false;
    } catch {
      r = false;
    }
    if (r === false || r === null) throw new AttachmentTampered("the attachment was altered: a chunk failed to decrypt");
    if (r.tag === tagFinal()) this.final = true;
    else if (r.tag !== tagMessage()) throw new AttachmentTampered("the attachment carries an unexpected chunk tag");
    return r.message;
  }

  /** The last plaintext; throws unless the whole attachment checked out. */
  finish(): Uint8Array[] {
    if (this.seen !== this.expectedSize) throw new AttachmentTruncated("the attachment is truncated");
    const out: Uint8Array[] = [];
    if (this.state !== null && this.buffer.length > 0) {
      out.push(this.pull(this.buffer));
      this.buffer = new Uint8Array(0);
    }
    if (!this.final) throw new AttachmentTruncated("the attachment is truncated");
    const digest = na().crypto_hash_sha256_final(this.hash as never);
    if (!(digest.length === this.expectedHash.length && na().memcmp(digest, this.expectedHash))) {
      throw new AttachmentTampered("the attachment was altered: its SHA-256 does not match");
    }
    return out;
  }
}

function joined(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

// --- the message body that refers to a file ---------------------------------------

/** What a recipient needs to fetch and check one file (the `attachment` map of §E13). */
export interface FileRef {
  id: string;
  key: Uint8Array;
  sha256: Uint8Array;
  size: number;
  name: string;
  media_type: string;
  thumbnail?: Uint8Array;
}

const refKeys = new Set(["id", "key", "sha256", "size", "name", "media_type", "thumbnail"]);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const isFileBody = (body: Uint8Array): boolean => body.length > 0 && body[0] === FILE_MARK;

/** 0xFF || MessagePack {"attachment": {...}, "caption": str}, keys in the reference client's order. */
export function encodeFileBody(ref: FileRef, caption = ""): Uint8Array {
  const attachment: Record<string, unknown> = {
    id: ref.id, key: ref.key, sha256: ref.sha256, size: ref.size, name: ref.name, media_type: ref.media_type,
  };
  if (ref.thumbnail !== undefined) attachment["thumbnail"] = ref.thumbnail;
  const packed = encode({ attachment, caption });
  const out = new Uint8Array(packed.length + 1);
  out[0] = FILE_MARK;
  out.set(packed, 1);
  return out;
}

/** The caption and the file, or InvalidMessage for a body that is not exactly the §E13 map. */
export function decodeFileBody(body: Uint8Array): { caption: string; file: FileRef } {
  if (!isFileBody(body)) throw new InvalidMessage("not a file body");
  let m: unknown;
  try {
    m = decode(body.subarray(1));
  } catch {
    throw new InvalidMessage("file reference is not MessagePack");
  }
  const bad = (): never => { throw new InvalidMessage("malformed file reference"); };
  if (typeof m !== "object" || m === null || Array.isArray(m)) return bad();
  const outer = m as Record<string, unknown>;
  if (Object.keys(outer).some((k) => k !== "attachment" && k !== "caption")) return bad();
  const caption = outer["caption"] ?? "";
  const a = outer["attachment"];
  if (typeof caption !== "string" || typeof a !== "object" || a === null || Array.isArray(a)) return bad();
  const r = a as Record<string, unknown>;
  if (Object.keys(r).some((k) => !refKeys.has(k))) return bad();
  const { id, key, sha256, size, name, media_type: mediaType, thumbnail } = r;
  if (typeof id !== "string" || !UUID.test(id.toLowerCase())) return bad();
  if (!(key instanceof Uint8Array) || key.length !== FILE_KEY_BYTES || !(sha256 instanceof Uint8Array) || sha256.length !== 32) return bad();
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) return bad();
  if (typeof name !== "string" || typeof mediaType !== "string") return bad();
  if (thumbnail !== undefined && thumbnail !== null && !(thumbnail instanceof Uint8Array)) return bad();
  const preview = thumbnail instanceof Uint8Array && thumbnail.length <= MAX_THUMBNAIL_BYTES ? { thumbnail } : {}; // a larger one is ignored
  return { caption, file: { id: id.toLowerCase(), key, sha256, size, name, media_type: mediaType, ...preview } };
}

/** A sender's file name made harmless (§E13): no folders, no control characters, no leading dots, at most 255 bytes. */
export function safeFileName(name: string): string {
  let base = name.replace(/\\/g, "/").split("/").pop() ?? "";
  // eslint-disable-next-line no-control-regex
  base = base.replace(/[\u0000-\u001f\u007f]/g, "").trim().replace(/^\.+/, "");
  const enc = new TextEncoder();
  while (enc.encode(base).length > MAX_NAME_BYTES) base = base.slice(0, -1);
  return base || "attachment";
}
