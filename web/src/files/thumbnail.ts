/**
 * A small JPEG preview of a photo, carried inside the end-to-end message
 * (§E13 `thumbnail`, at most 32 KiB), so a recipient sees the picture
 * before the file is fetched. Drawn by the browser's own decoder; a file it
 * cannot decode simply goes without one.
 */
import { MAX_THUMBNAIL_BYTES } from "../crypto/attachment";
import { isImage } from "./shelf";

const TRIES: [number, number][] = [[320, 0.7], [200, 0.6], [120, 0.5]];

export async function thumbnailOf(file: Blob): Promise<Uint8Array | undefined> {
  if (!isImage(file.type) || typeof createImageBitmap !== "function" || typeof OffscreenCanvas === "undefined") return undefined;
  try {
    const bitmap = await createImageBitmap(file);
    try {
      for (const [edge, quality] of TRIES) {
        const scale = Math.min(1, edge / Math.max(bitmap.width, bitmap.height));
        const w = Math.max(1, Math.round(bitmap.width * scale));
        const h = Math.max(1, Math.round(bitmap.height * scale));
        const canvas = new OffscreenCanvas(w, h);
        canvas.getContext("2d")?.drawImage(bitmap, 0, 0, w, h);
        const jpeg = await canvas.convertToBlob({ type: "image/jpeg", quality });
        if (jpeg.size <= MAX_THUMBNAIL_BYTES) return new Uint8Array(await jpeg.arrayBuffer());
      }
    } finally {
      bitmap.close();
    }
  } catch {
    // not decodable here: no preview
  }
  return undefined;
}
