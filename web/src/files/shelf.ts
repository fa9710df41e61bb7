/**
 * The files this page has opened, uploaded or is moving, in memory only:
 * a transfer's progress and cancel, a checked file's blob URL, or why it
 * was refused. Nothing here is written anywhere; a reload starts empty
 * (the kept ciphertext is decrypted and checked again when opened).
 */
import { CryptoError } from "../crypto/errors";
import { ServerError } from "../net/wire";
import { Cancelled, type Progress } from "./transfer";

export type Refusal = "tampered" | "gone" | "failed";
export type FileView =
  | { status: "idle" }
  | { status: "loading"; done: number; total: number; cancel: () => void }
  | { status: "ready"; url: string; blob: Blob }
  | { status: "refused"; reason: Refusal };

/** Media types shown or opened in the page; any other file is only saved, typed as opaque bytes. */
const VIEWABLE = /^(image\/(jpeg|png|gif|webp)|application\/pdf)$/;
export const viewableType = (mediaType: string): string => (VIEWABLE.test(mediaType) ? mediaType : "application/octet-stream");
export const isImage = (mediaType: string): boolean => /^image\/(jpeg|png|gif|webp)$/.test(mediaType);

export function refusalOf(e: unknown): Refusal {
  if (e instanceof CryptoError) return "tampered";
  if (e instanceof ServerError && e.code === "not_found") return "gone";
  return "failed";
}

export class Shelf {
  private readonly views = new Map<string, FileView>();
  private readonly listeners = new Set<() => void>();

  subscribe(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  get(id: string): FileView {
    return this.views.get(id) ?? { status: "idle" };
  }

  private set(id: string, view: FileView): void {
    const old = this.views.get(id);
    if (old?.status === "ready" && (view.status !== "ready" || view.url !== old.url)) URL.revokeObjectURL(old.url);
    this.views.set(id, view);
    for (const fn of this.listeners) fn();
  }

  /** A file this page already has in clear (the sender's own pick). */
  ready(id: string, blob: Blob): void {
    this.set(id, { status: "ready", url: URL.createObjectURL(blob), blob });
  }

  /** Fetch (or decrypt the kept copy) once; a second call while it runs or after it worked does nothing. */
  async open(id: string, fetch: (onProgress: Progress, signal: AbortSignal) => Promise<Blob>): Promise<void> {
    const now = this.get(id).status;
    if (now === "loading" || now === "ready") return;
    const abort = new AbortController();
    const cancel = (): void => abort.abort();
    this.set(id, { status: "loading", done: 0, total: 0, cancel });
    const onProgress: Progress = (done, total) => {
      const view = this.views.get(id);
      if (view?.status === "loading") {
        view.done = done;
        view.total = total;
        for (const fn of this.listeners) fn();
      }
    };
    try {
      this.ready(id, await fetch(onProgress, abort.signal));
    } catch (e) {
      this.set(id, e instanceof Cancelled ? { status: "idle" } : { status: "refused", reason: refusalOf(e) });
    }
  }
}
