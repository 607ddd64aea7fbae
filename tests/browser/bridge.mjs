// Line-delimited JSON bridge from Python tests to one headless Chromium (playwright-core, the
// system /usr/bin/chromium; never downloads a browser). One request per stdin line:
//   {"id": 1, "op": "open", "url": "...", "init_scripts": ["/path/iwer.min.js"], "init_js": "...", "viewport": [w, h]}
//   {"id": 2, "op": "eval", "js": "expression or async arrow fn source"}
//   {"id": 3, "op": "wait", "js": "predicate expression", "timeout_ms": 5000}
//   {"id": 4, "op": "click", "selector": "#btn"} | {"op": "fill", "selector": ..., "text": ...}
//   {"id": 5, "op": "screenshot", "path": "/tmp/x.png"} | {"op": "logs"} | {"op": "quit"}
// Each reply is one stdout line: {"id": 1, "ok": true, "value": ...} or {"id": 1, "ok": false, "error": "..."}.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import readline from "node:readline";

const executablePath = process.env.HIL_CHROMIUM || "/usr/bin/chromium";
const userDataDir = mkdtempSync(join(tmpdir(), "hil-chromium-"));
const args = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--ignore-certificate-errors",
  "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
];
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath, headless: true, args, ignoreHTTPSErrors: true, viewport: { width: 1280, height: 800 },
});
let page = null;
const logs = [];

async function handle(req) {
  switch (req.op) {
    case "open": {
      if (page) await page.close();
      page = await context.newPage();
      if (req.viewport) await page.setViewportSize({ width: req.viewport[0], height: req.viewport[1] });
      page.on("console", (m) => logs.push(`[${m.type()}] ${m.text()}`));
      page.on("pageerror", (e) => logs.push(`[pageerror] ${e.message}`));
      for (const path of req.init_scripts || []) await page.addInitScript({ path });
      if (req.init_js) await page.addInitScript({ content: req.init_js });
      await page.goto(req.url, { waitUntil: "load" });
      return true;
    }
    case "eval": return await page.evaluate(req.js);
    case "wait": await page.waitForFunction(req.js, null, { timeout: req.timeout_ms ?? 5000 }); return true;
    case "click": await page.click(req.selector, { timeout: req.timeout_ms ?? 5000 }); return true;
    case "fill": await page.fill(req.selector, req.text); return true;
    case "press": await page.press(req.selector, req.key); return true;
    case "screenshot": await page.screenshot({ path: req.path, fullPage: !!req.full_page }); return req.path;
    case "logs": return logs.splice(0);
    case "quit": return true;
    default: throw new Error(`unknown op ${req.op}`);
  }
}

const rl = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
rl.on("line", (line) => {
  queue = queue.then(async () => {
    let req;
    try { req = JSON.parse(line); } catch (e) { process.stdout.write(JSON.stringify({ id: null, ok: false, error: `bad json: ${e}` }) + "\n"); return; }
    try {
      const value = await handle(req);
      process.stdout.write(JSON.stringify({ id: req.id, ok: true, value: value ?? null }) + "\n");
    } catch (e) {
      process.stdout.write(JSON.stringify({ id: req.id, ok: false, error: String(e && e.message || e) }) + "\n");
    }
    if (req.op === "quit") await shutdown();
  });
});
rl.on("close", () => { queue = queue.then(shutdown); });
let closing = false;
async function shutdown() {
  if (closing) return;
  closing = true;
  await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
  process.exit(0);
}
process.stdout.write(JSON.stringify({ id: 0, ok: true, value: "ready" }) + "\n");
