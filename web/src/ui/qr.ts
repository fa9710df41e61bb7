/** A QR code as an SVG string (qrcode-generator; drawn with attributes only, so the CSP's style-src holds). */
import qrcode from "qrcode-generator";

export function qrSvg(data: string, cellSize = 4): string {
  const q = qrcode(0, "M");
  q.addData(data);
  q.make();
  return q.createSvgTag({ cellSize, margin: 2, scalable: true });
}
