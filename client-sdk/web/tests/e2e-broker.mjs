// End-to-end through a session broker: headless Chromium opens the player with only the broker's
// URL; the player asks for a session, probes the candidates (RTCPeerConnection per candidate,
// signalled through the broker), has the broker pick one, and plays through the broker's WHEP
// relay. The player's files are served here, from dist/, on another origin than the broker's
// (so CORS is exercised).
// Usage: node tests/e2e-broker.mjs <broker URL> [region]
// SCREENSHOT=path.png saves what the page shows once frames play.
// Prints one JSON line; exits non-zero on a failed check.
import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { collectLogs, fail, launchChromium, sleep } from "./harness.mjs";

const [broker, region] = process.argv.slice(2);
if (!broker) {
  console.error("usage: node tests/e2e-broker.mjs <broker URL>");
  process.exit(2);
}

const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "dist");
const types = { html: "text/html", js: "text/javascript", map: "application/json" };
const server = createServer((req, res) => {
  const name = new URL(req.url, "http://x").pathname.replace(/^\/play\/?/, "") || "index.html";
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) return res.writeHead(404).end();
  try {
    const body = readFileSync(join(dist, name));
    res.writeHead(200, { "Content-Type": types[name.split(".").pop()] ?? "application/octet-stream" }).end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const page_url = `http://127.0.0.1:${server.address().port}/play/?broker=${encodeURIComponent(broker)}${region ? `&region=${encodeURIComponent(region)}` : ""}`;

const context = await launchChromium();
const page = context.pages()[0] ?? (await context.newPage());
const logs = collectLogs(page);
try {
  await page.goto(page_url);
  let s = null;
  const t0 = Date.now();
  while (Date.now() - t0 < 45000) {
    s = await page.evaluate(() => window.edgeplay?.player?.stats() ?? null);
    if (s?.error) fail(`player shows an error: ${s.error}`, { logs });
    if (s && s.framesPresented >= 30 && s.lastStamp) break;
    await sleep(200);
  }
  if (!s || !s.lastStamp || s.framesPresented < 30) fail("no stamped frames through the broker within 45 s", { stats: s, logs });
  const placement = await page.evaluate(() => window.edgeplay?.placement ?? null);
  if (!placement) fail("no placement recorded", { logs });
  if (!placement.whepUrl.startsWith(broker)) fail(`WHEP did not go through the broker: ${placement.whepUrl}`);
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
  console.log(JSON.stringify({
    ok: true,
    framesPresented: s.framesPresented,
    glassToGlassP50Ms: s.glassToGlassP50Ms,
    placement: { edge: placement.edge, whepUrl: placement.whepUrl, measured: placement.measured },
  }));
} finally {
  await context.close();
  server.close();
}
