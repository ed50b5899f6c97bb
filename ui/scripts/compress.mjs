// Writes NAME.gz beside each built asset (the server sends it to browsers
// that take gzip). zlib's output depends only on the input and the level,
// so a rebuild from the same lockfile gives the same bytes.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { gzipSync } from "node:zlib";

const out = process.env.CAIRN_UI_OUT ?? new URL("../../crates/cairn-web/dist/", import.meta.url).pathname;
const dir = join(resolve(out), "assets");
for (const name of readdirSync(dir)) {
  if (!/\.(js|css)$/.test(name)) continue;
  const path = join(dir, name);
  writeFileSync(`${path}.gz`, gzipSync(readFileSync(path), { level: 9 }));
}
