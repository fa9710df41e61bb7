/**
 * A file in a message: name and size, a download with progress and cancel,
 * then the checked file: a photo shown inline, a PDF opened in a new tab,
 * anything else saved under its (sanitised) name. A file that fails its
 * checks gets one sentence and nothing else: no preview, no link.
 */
import { useEffect, useState } from "preact/hooks";
import type { Device, MsgFile } from "../client";
import { safeFileName } from "../crypto/attachment";
import { unb64 } from "../crypto/bytes";
import { isImage } from "../files/shelf";
import type { Key } from "../i18n";

type T = (k: Key, v?: Record<string, string | number>) => string;
/** Photos up to this size are fetched by themselves; a larger one waits for a tap like any file. */
const AUTO_FETCH_BYTES = 20 * 1024 * 1024;

export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export function FileBox({ t, device, file }: { t: T; device: Device; file: MsgFile }) {
  const [, tick] = useState(0);
  const [thumb, setThumb] = useState<string | null>(null);
  useEffect(() => device.shelf.subscribe(() => tick((n) => n + 1)), [device]);
  const image = isImage(file.type);
  const auto = image && file.size <= AUTO_FETCH_BYTES;
  useEffect(() => {
    if (file.thumb === undefined) return undefined;
    const url = URL.createObjectURL(new Blob([unb64(file.thumb) as BlobPart], { type: "image/jpeg" }));
    setThumb(url);
    return () => URL.revokeObjectURL(url);
  }, [file.id]);
  useEffect(() => {
    // Photos are fetched and shown by themselves; other files wait for a tap.
    if (auto && device.shelf.get(file.id).status === "idle") void device.openFile(file);
  }, [file.id]);
  const view = device.shelf.get(file.id);
  const name = safeFileName(file.name);
  return (
    <div class="file" data-testid="file" data-status={view.status}>
      {view.status === "ready" && image ? <img class="preview" src={view.url} alt={name} data-testid="file-image" />
        : thumb !== null && view.status !== "refused" ? <img class="preview thumb" src={thumb} alt={name} data-testid="file-thumbnail" /> : null}
      <span class="file-name">{name} · {formatSize(file.size)}</span>
      {view.status === "idle" ? <button type="button" class="secondary" onClick={() => void device.openFile(file)}>{t("fileDownload")}</button> : null}
      {view.status === "loading" ? (
        <span class="file-progress">
          <progress max={view.total || 1} value={view.done} aria-label={t("fileDownloading", { name })} />
          <button type="button" class="secondary" onClick={view.cancel}>{t("cancel")}</button>
        </span>
      ) : null}
      {view.status === "ready" ? (
        <span class="file-actions">
          {file.type === "application/pdf" ? <a href={view.url} target="_blank" rel="noopener" data-testid="file-open">{t("fileOpen")}</a> : null}
          <a href={view.url} download={name} data-testid="file-save">{t("fileSave")}</a>
        </span>
      ) : null}
      {view.status === "refused" ? (
        <p role="alert" class="error" data-testid="file-refused">{t(view.reason === "tampered" ? "fileTampered" : view.reason === "gone" ? "fileGone" : "fileFailed")}</p>
      ) : null}
      {view.status === "refused" && view.reason === "failed" ? <button type="button" class="secondary" onClick={() => void device.openFile(file)}>{t("fileDownload")}</button> : null}
    </div>
  );
}
