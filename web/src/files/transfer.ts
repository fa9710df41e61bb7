/**
 * Upload and download of attachment ciphertext on the node's WebSocket
 * (PROTOCOL.md "Attachments"), encrypting and checking on the way (§E13).
 *
 * Upload reads the File one 64 KiB chunk at a time, encrypts it, and keeps
 * up to WINDOW chunk requests in flight (replies come in order). Nothing of
 * the plaintext is kept: after a dropped connection or an expired
 * capability it asks `upload_resume` where the node stands, encrypts the
 * file again from the same key and header (the same bytes,
 * `FileEncryptor.restart`) and sends only what the node lacks.
 *
 * Download asks for chunks the same way, feeds each to the decryptor in
 * order, and after a drop continues at the byte it has with a new
 * `download_begin`. The plaintext becomes a Blob only after the final tag,
 * the size and the SHA-256 checked out; before that nothing of it leaves
 * this module, so a tampered or truncated file never shows in part.
 */
import {
  ciphertextSize, FileDecryptor, FileEncryptor, newFileKey, AttachmentTruncated, CryptoError,
} from "../crypto";
import { ServerError, type Frame } from "../net/wire";

/** Chunk requests in flight. */
const WINDOW = 8;
/** Times a transfer picks up again after a drop or an expired capability. */
const MAX_RESUMES = 20;
/** Blob parts are folded into one Blob every so many bytes (the browser may keep big Blobs on disk). */
const FOLD_BYTES = 4 * 1024 * 1024;

export type Progress = (done: number, total: number) => void;

/** How a transfer reaches the node: a request as this device, and a wait until it is connected again. */
export interface Net {
  call(frame: Frame): Promise<Frame>;
  online(signal?: AbortSignal): Promise<void>;
}

export type Target = { recipient: string } | { conversation_id: string };

export class Cancelled extends Error {}

/** Collects bytes into a Blob without keeping a second copy of them in script memory. */
class BlobSink {
  private parts: Uint8Array[] = [];
  private pending = 0;
  private folded: Blob = new Blob([]);

  add(part: Uint8Array): void {
    this.parts.push(part);
    this.pending += part.length;
    if (this.pending >= FOLD_BYTES) this.fold();
  }

  private fold(): void {
    this.folded = new Blob([this.folded, ...(this.parts as BlobPart[])]);
    this.parts = [];
    this.pending = 0;
  }

  blob(type = ""): Blob {
    this.fold();
    return type ? new Blob([this.folded], { type }) : this.folded;
  }
}

const CONNECTION = /closed|offline|timeout|connection/;

/** Worth picking up again: a dropped connection, or what the node says to resume after. */
function resumable(e: unknown): boolean {
  if (e instanceof ServerError) return e.code === "capability_expired" || e.code === "offset_mismatch";
  return e instanceof Error && !(e instanceof CryptoError) && !(e instanceof Cancelled) && CONNECTION.test(e.message);
}

function checkAbort(signal?: AbortSignal): void {
  if (signal?.aborted) throw new Cancelled("cancelled");
}

/** Settle every request still in flight quietly (an error cut the window short). */
function drop(inflight: Promise<Frame>[]): void {
  for (const p of inflight.splice(0)) p.catch(() => undefined);
}

export interface Uploaded { id: string; key: Uint8Array; sha256: Uint8Array; ciphertext: Blob }

/** Encrypt and upload one file for a recipient or a conversation; the reference's secret parts come back. */
export async function upload(net: Net, file: Blob, target: Target, onProgress?: Progress, signal?: AbortSignal): Promise<Uploaded> {
  const key = newFileKey();
  let encryptor = FileEncryptor.start(key, file.size);
  const header = encryptor.header;
  const total = ciphertextSize(file.size);
  checkAbort(signal);
  let ready = await net.call({ type: "upload_begin", size: total, ...target });
  const id = String(ready["attachment_id"]);
  for (let attempt = 0; ; attempt++) {
    const sink = new BlobSink();
    try {
      await sendFrom(net, file, encryptor, ready, sink, onProgress, signal);
      return { id, key, sha256: encryptor.sha256(), ciphertext: sink.blob() };
    } catch (e) {
      checkAbort(signal);
      if (!resumable(e) || attempt >= MAX_RESUMES) throw e;
      if (!(e instanceof ServerError)) await net.online(signal);
      ready = await net.call({ type: "upload_resume", attachment_id: id });
      encryptor = FileEncryptor.restart(key, file.size, header);
    }
  }
}

async function sendFrom(net: Net, file: Blob, encryptor: FileEncryptor, ready: Frame, sink: BlobSink, onProgress?: Progress, signal?: AbortSignal): Promise<void> {
  const size = Number(ready["size"]);
  const start = Number(ready["offset"]);
  const maxChunk = Number(ready["max_chunk"]);
  const base = { type: "upload_chunk", attachment_id: ready["attachment_id"], capability: ready["capability"] };
  const inflight: Promise<Frame>[] = [];
  let produced = 0;
  let stored = start;
  const settle = async (): Promise<void> => {
    const reply = await inflight.shift()!;
    stored = Number(reply["offset"]);
    onProgress?.(stored, size);
  };
  const emit = async (piece: Uint8Array): Promise<void> => {
    sink.add(piece);
    const end = produced + piece.length;
    for (let at = Math.max(produced, start); at < end; at += maxChunk) {
      const data = piece.subarray(at - produced, Math.min(end, at + maxChunk) - produced);
      const sent = net.call({ ...base, offset: at, data });
      sent.catch(() => undefined); // awaited below; a failure is handled there
      inflight.push(sent);
      if (inflight.length >= WINDOW) await settle();
    }
    produced = end;
  };
  onProgress?.(start, size);
  try {
    await emit(encryptor.header);
    while (!encryptor.done) {
      checkAbort(signal);
      const [a, b] = encryptor.nextRange;
      await emit(encryptor.push(new Uint8Array(await file.slice(a, b).arrayBuffer())));
    }
    while (inflight.length > 0) await settle();
  } finally {
    drop(inflight);
  }
  if (stored !== size) throw new Error("upload incomplete: connection closed");
}

export interface FileSecrets { id: string; key: Uint8Array; sha256: Uint8Array; size: number }

/** Download, check and decrypt; the plaintext (typed as asked) and the checked ciphertext, or a CryptoError. */
export async function download(net: Net, ref: FileSecrets, type: string, onProgress?: Progress, signal?: AbortSignal): Promise<{ plain: Blob; ciphertext: Blob }> {
  const expected = ciphertextSize(ref.size);
  const decryptor = new FileDecryptor(ref.key, ref.sha256, ref.size);
  const plain = new BlobSink();
  const cipher = new BlobSink();
  const cursor = { offset: 0 };
  checkAbort(signal);
  let ready = await net.call({ type: "download_begin", attachment_id: ref.id });
  for (let attempt = 0; ; attempt++) {
    // The size the node holds is checked against the sender's word before any byte is read.
    if (Number(ready["size"]) !== expected) throw new AttachmentTruncated("the server holds another size than the sender announced");
    try {
      await fetchFrom(net, ready, cursor, decryptor, plain, cipher, onProgress, signal);
      break;
    } catch (e) {
      checkAbort(signal);
      if (!resumable(e) || attempt >= MAX_RESUMES) throw e;
      if (!(e instanceof ServerError)) await net.online(signal);
      ready = await net.call({ type: "download_begin", attachment_id: ref.id });
    }
  }
  for (const part of decryptor.finish()) plain.add(part);
  return { plain: plain.blob(type), ciphertext: cipher.blob() };
}

/** Decrypt and check a ciphertext kept on this device (reopening a file without the node). */
export async function decryptKept(ciphertext: Blob, ref: FileSecrets, type: string): Promise<Blob> {
  const decryptor = new FileDecryptor(ref.key, ref.sha256, ref.size);
  const plain = new BlobSink();
  const step = 1024 * 1024;
  for (let at = 0; at < ciphertext.size; at += step) {
    for (const part of decryptor.feed(new Uint8Array(await ciphertext.slice(at, at + step).arrayBuffer()))) plain.add(part);
  }
  for (const part of decryptor.finish()) plain.add(part);
  return plain.blob(type);
}

async function fetchFrom(
  net: Net, ready: Frame, cursor: { offset: number }, decryptor: FileDecryptor, plain: BlobSink, cipher: BlobSink,
  onProgress?: Progress, signal?: AbortSignal,
): Promise<void> {
  const size = Number(ready["size"]);
  const step = Number(ready["max_chunk"]);
  const base = { type: "download_chunk", attachment_id: ready["attachment_id"], capability: ready["capability"] };
  const inflight: Promise<Frame>[] = [];
  const lengths: number[] = [];
  let asked = cursor.offset;
  onProgress?.(cursor.offset, size);
  try {
    while (cursor.offset < size) {
      checkAbort(signal);
      while (asked < size && inflight.length < WINDOW) {
        const length = Math.min(step, size - asked);
        const p = net.call({ ...base, offset: asked, length });
        p.catch(() => undefined);
        inflight.push(p);
        lengths.push(length);
        asked += length;
      }
      const chunk = await inflight.shift()!;
      const length = lengths.shift()!;
      const data = chunk["data"];
      // Exactly the bytes asked for, where asked: a short or misplaced reply means the node's copy is cut.
      if (!(data instanceof Uint8Array) || data.length !== length || Number(chunk["offset"]) !== cursor.offset) {
        throw new AttachmentTruncated("the server's copy of the file is truncated");
      }
      cipher.add(data);
      for (const part of decryptor.feed(data)) plain.add(part);
      cursor.offset += data.length;
      onProgress?.(cursor.offset, size);
    }
  } finally {
    drop(inflight);
  }
}
