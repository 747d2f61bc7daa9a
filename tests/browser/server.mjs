// A minimal static server for the browser tests and the example pages, on 127.0.0.1 only, cross-origin
// isolated (COOP/COEP, as a page that wants wasm threads must be) unless ?coi=0 is asked. It serves
// the repository root and maps the bare import "comlink" to its ESM file (module workers get no
// import maps) and @huggingface/jinja likewise, which is all a bundler would otherwise do for coil's
// web entry.
import { createServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".gguf": "application/octet-stream",
  ".map": "application/json",
};
const BARE = {
  comlink: "/node_modules/comlink/dist/esm/comlink.mjs",
  "@huggingface/jinja": "/node_modules/@huggingface/jinja/dist/index.js",
};

export function startServer(port = 0) {
  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? "/", "http://x");
      const rel = normalize(decodeURIComponent(url.pathname)).replace(/^([/\\])+/, "");
      const file = join(ROOT, rel);
      if (!file.startsWith(ROOT)) throw Object.assign(new Error("forbidden"), { status: 403 });
      const st = await stat(file);
      if (!st.isFile()) throw Object.assign(new Error("not a file"), { status: 404 });
      const type = TYPES[extname(file)] ?? "application/octet-stream";
      let body = await readFile(file);
      if (type.startsWith("text/javascript")) {
        let s = body.toString("utf8");
        for (const [name, to] of Object.entries(BARE)) {
          s = s.replaceAll(`from "${name}"`, `from "${to}"`).replaceAll(`from '${name}'`, `from '${to}'`);
        }
        body = Buffer.from(s);
      }
      const range = /^bytes=(\d+)-(\d+)?$/.exec(req.headers.range ?? "");
      const headers = { "content-type": type, "accept-ranges": "bytes", "cache-control": "no-store" };
      // Cross-origin isolation (SharedArrayBuffer, so the threaded wasm engine) unless the page is
      // asked for with ?coi=0: the tests run the pages both ways.
      if (url.searchParams.get("coi") !== "0") {
        Object.assign(headers, {
          "cross-origin-opener-policy": "same-origin",
          "cross-origin-embedder-policy": "require-corp",
          "cross-origin-resource-policy": "same-origin",
        });
      }
      if (range) {
        const start = Number(range[1]);
        const end = Math.min(body.length - 1, range[2] ? Number(range[2]) : body.length - 1);
        res.writeHead(206, { ...headers, "content-range": `bytes ${start}-${end}/${body.length}`, "content-length": end - start + 1 });
        res.end(req.method === "HEAD" ? undefined : body.subarray(start, end + 1));
        return;
      }
      res.writeHead(200, { ...headers, "content-length": body.length });
      res.end(req.method === "HEAD" ? undefined : body);
    } catch (e) {
      const status = e.status ?? (e.code === "ENOENT" ? 404 : 500);
      res.writeHead(status, { "content-type": "text/plain" });
      res.end(String(e.message));
    }
  });
  return new Promise((resolve) => {
    server.listen(port, "127.0.0.1", () => resolve({ server, port: server.address().port }));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { port } = await startServer(Number(process.argv[2] ?? 8080));
  console.log(`serving ${ROOT} on http://127.0.0.1:${port}/`);
}
