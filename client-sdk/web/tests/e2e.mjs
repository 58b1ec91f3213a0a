// End-to-end: headless Chromium plays a running edge's WHEP stream through /play.
// Usage: node tests/e2e.mjs <edge base URL> <dev token> <screenshot path>
// Prints one JSON line with the measurements; exits non-zero on a failed check.
import { chromium } from "playwright-core";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, token, shot] = process.argv.slice(2);
if (!base || !token || !shot) {
  console.error("usage: node tests/e2e.mjs <edge base URL> <dev token> <screenshot path>");
  process.exit(2);
}
const fail = (msg, extra = {}) => {
  console.log(JSON.stringify({ ok: false, error: msg, ...extra }));
  process.exit(1);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const userDataDir = mkdtempSync(join(tmpdir(), "edgeplay-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 720 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = context.pages()[0] ?? (await context.newPage());
const logs = [];
page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
page.on("pageerror", (e) => logs.push(`pageerror: ${e}`));
const stats = () => page.evaluate(() => window.edgeplay?.player?.stats() ?? null);
try {
  await page.goto(`${base}/play#token=${token}`);
  // Frames play: the presented-frame count advances by at least 100.
  let s = null;
  const t0 = Date.now();
  while (Date.now() - t0 < 30000) {
    s = await stats();
    if (s?.error) fail(`player shows an error: ${s.error}`, { logs });
    if (s && s.framesPresented >= 20 && s.lastStamp) break;
    await sleep(200);
  }
  if (!s || !s.lastStamp) fail("no stamped frame shown within 30 s", { stats: s, logs });
  const first = s;
  while (Date.now() - t0 < 45000) {
    s = await stats();
    if (s.framesPresented - first.framesPresented >= 100) break;
    await sleep(200);
  }
  const played = s.framesPresented - first.framesPresented;
  if (played < 100) fail(`only ${played} frames presented`, { stats: s, logs });
  const before = s.lastStamp;
  // A key press changes the game: thrust for 400 ms.
  await page.focus(".edgeplay-root");
  await page.keyboard.down("ArrowUp");
  await sleep(400);
  await page.keyboard.up("ArrowUp");
  let after = null;
  const t1 = Date.now();
  while (Date.now() - t1 < 10000) {
    s = await stats();
    if (s.lastStamp && s.lastStamp.inputSeq >= 2) {
      after = s.lastStamp;
      break;
    }
    await sleep(100);
  }
  if (!after) fail("the key press never reached the picture (stamp input_seq stayed)", { stats: s, logs });
  await sleep(500);
  s = await stats();
  if (s.lastStamp.stateHash === before.stateHash) fail("state hash did not change", { stats: s });
  const errorVisible = await page.locator(".edgeplay-error").isVisible();
  if (errorVisible || s.error) fail(`error shown: ${s.error}`, { stats: s });
  await page.screenshot({ path: shot });
  console.log(JSON.stringify({ ok: true, played, before, after: s.lastStamp, stats: s }));
} catch (e) {
  fail(`${e}`, { logs });
} finally {
  await context.close();
}
