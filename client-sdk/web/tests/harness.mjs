// What the browser scripts share: the one-line JSON failure, a sleep, and headless Chromium
// with a fresh profile (removed when the process exits, whichever way it ends) and its page's
// console and errors collected.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Prints `{ ok: false, error, ...extra }` as one JSON line and exits 1. */
export const fail = (msg, extra = {}) => {
  console.log(JSON.stringify({ ok: false, error: msg, ...extra }));
  process.exit(1);
};

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Launches Debian's Chromium (or $CHROMIUM) headless, without GPU, sandbox or QUIC, in a fresh
 * profile; `options` go to playwright's launchPersistentContext (for example `hasTouch`).
 * Returns the context and its first page.
 */
export async function launchChromium(options = {}) {
  const userDataDir = mkdtempSync(join(tmpdir(), "edgeplay-chromium-"));
  process.on("exit", () => rmSync(userDataDir, { recursive: true, force: true }));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 720 },
    ...options,
    args: [
      "--autoplay-policy=no-user-gesture-required",
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  return context;
}

/** The page's console lines and uncaught errors, as they come. */
export function collectLogs(page) {
  const logs = [];
  page.on("console", (m) => logs.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`pageerror: ${e}`));
  return logs;
}

/**
 * Flies the built-in game's ship for the audio–video hits: holds thrust and weaves left and
 * right until `done(stats)` holds or 45 s passed, handing every stats sample to `onStats`
 * first. Returns the stats read after thrust is released.
 */
export async function weaveUntil(page, stats, done, onStats = () => {}) {
  await page.keyboard.down("ArrowUp");
  const started = Date.now();
  let turn = 0;
  while (Date.now() - started < 45000) {
    const s = await stats();
    onStats(s);
    if (done(s)) break;
    const key = turn++ % 2 === 0 ? "ArrowLeft" : "ArrowRight";
    await page.keyboard.down(key);
    await sleep(250 + (turn % 3) * 150);
    await page.keyboard.up(key);
    await sleep(400);
  }
  await page.keyboard.up("ArrowUp");
  return stats();
}
