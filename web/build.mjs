// Builds web/dist: hashed app chunks (libsodium split off), index.html, the
// service worker with the app-shell list, the manifest and icons. Also builds
// build/crypto.mjs (the crypto modules alone) and build/audit.mjs (the
// auditor's logic) for `node --test`.
// Usage: node build.mjs [--metafile]
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { deflateSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, "assets"), { recursive: true });
mkdirSync(join(dist, "icons"), { recursive: true });

const app = await build({
  entryPoints: { app: join(here, "src/main.tsx") },
  bundle: true,
  splitting: true,
  format: "esm",
  target: ["es2022"],
  minify: true,
  sourcemap: false,
  legalComments: "none",
  outdir: join(dist, "assets"),
  entryNames: "[name]-[hash]",
  chunkNames: "[name]-[hash]",
  assetNames: "[name]-[hash]",
  loader: { ".css": "css" },
  metafile: true,
  logLevel: "warning",
  define: { "process.env.NODE_ENV": '"production"' },
});
writeFileSync(join(here, "build-meta.json"), JSON.stringify(app.metafile));

const outputs = Object.keys(app.metafile.outputs).map((p) => p.slice(p.indexOf("assets/")));
const entry = outputs.find((p) => /^assets\/app-.*\.js$/.test(p));
const css = outputs.find((p) => p.endsWith(".css"));

// Icons: a plain PNG (installability needs raster icons) drawn here, no binary in git.
function png(size) {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, "ascii");
    data.copy(out, 8);
    out.writeUInt32BE(crc(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const rows = [];
  for (let y = 0; y < size; y++) {
    const row = Buffer.alloc(1 + size * 3);
    for (let x = 0; x < size; x++) {
      const u = x / size - 0.5, v = y / size - 0.5;
      const bubble = u * u + v * v < 0.09 && !(u > 0.05 && v > 0.12 && u - v < 0);
      const [r, g, b] = bubble ? [255, 255, 255] : [0x0b, 0x4f, 0x8a];
      row.set([r, g, b], 1 + x * 3);
    }
    rows.push(row);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr), chunk("IDAT", deflateSync(Buffer.concat(rows))), chunk("IEND", Buffer.alloc(0)),
  ]);
}
const icons = [];
for (const size of [192, 512]) {
  const data = png(size);
  const name = `icons/icon-${size}-${createHash("sha256").update(data).digest("hex").slice(0, 8)}.png`;
  writeFileSync(join(dist, name), data);
  icons.push({ src: `/${name}`, sizes: `${size}x${size}`, type: "image/png", purpose: "any maskable" });
}

writeFileSync(join(dist, "manifest.webmanifest"), JSON.stringify({
  name: "จีแชต สำหรับเจ้าหน้าที่ (G-Chat)",
  short_name: "จีแชต",
  description: "แชตที่เข้ารหัสตั้งแต่ต้นทางถึงปลายทางสำหรับเจ้าหน้าที่รัฐ",
  lang: "th",
  start_url: "/",
  scope: "/",
  display: "standalone",
  background_color: "#ffffff",
  theme_color: "#0b4f8a",
  icons,
}, null, 1));

const html = readFileSync(join(here, "src/index.html"), "utf8")
  .replace("%CSS%", `/${css}`)
  .replace("%APP%", `/${entry}`);
writeFileSync(join(dist, "index.html"), html);

// The service worker caches the app shell only (never messages or keys).
const shell = ["/", ...outputs.map((p) => `/${p}`), ...icons.map((i) => i.src), "/manifest.webmanifest"];
const version = createHash("sha256").update(shell.join("\n")).digest("hex").slice(0, 12);
await build({
  entryPoints: [join(here, "src/sw.ts")],
  bundle: true,
  format: "iife",
  minify: true,
  outfile: join(dist, "sw.js"),
  define: { __SHELL__: JSON.stringify(shell), __VERSION__: JSON.stringify(version) },
  logLevel: "warning",
});

// The crypto modules alone, the auditor's logic (no screens) and the
// console's HR CSV reader and writer, for node --test; one build so that
// they share one libsodium (split into a chunk).
rmSync(join(here, "build"), { recursive: true, force: true });
await build({
  entryPoints: { crypto: join(here, "src/crypto/index.ts"), audit: join(here, "src/console/audit/auditor.ts"), hrcsv: join(here, "src/console/admin/hrcsv.ts") },
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  outdir: join(here, "build"),
  outExtension: { ".js": ".mjs" },
  external: ["libsodium-wrappers-sumo", "@msgpack/msgpack"],
  logLevel: "warning",
});
writeFileSync(join(dist, ".stamp"), version + "\n");
console.log(`web: built ${entry} (${outputs.length} assets)`);
