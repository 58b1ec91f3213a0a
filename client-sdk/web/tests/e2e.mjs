// End-to-end: headless Chromium plays a running edge's WHEP stream through /play.
// Usage: node tests/e2e.mjs <edge base URL> <dev token> <screenshot path>
// Prints one JSON line with the measurements; exits non-zero on a failed check.
import { collectLogs, fail, launchChromium, sleep, weaveUntil } from "./harness.mjs";

const [base, token, shot] = process.argv.slice(2);
if (!base || !token || !shot) {
  console.error("usage: node tests/e2e.mjs <edge base URL> <dev token> <screenshot path>");
  process.exit(2);
}

const context = await launchChromium({ hasTouch: true });
// A gamepad the test holds (the page polls navigator.getGamepads as with a real one).
await context.addInitScript(() => {
  const pad = {
    index: 0, id: "edgeplay e2e pad (STANDARD GAMEPAD)", connected: true, mapping: "standard", timestamp: 0,
    axes: [0, 0, 0, 0], buttons: Array.from({ length: 17 }, () => ({ pressed: false, touched: false, value: 0 })),
    vibrationActuator: null,
  };
  window.__pad = pad;
  Object.defineProperty(Navigator.prototype, "getGamepads", { value: () => [pad, null, null, null], configurable: true });
});
const page = context.pages()[0] ?? (await context.newPage());
const logs = collectLogs(page);
const stats = () => page.evaluate(() => window.edgeplay?.player?.stats() ?? null);
try {
  await page.goto(`${base}/play?avsync=1#token=${token}`);
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
  // Acks reach the page: every input so far applied.
  const acked = async (n, what) => {
    const t = Date.now();
    while (Date.now() - t < 10000) {
      s = await stats();
      if (s.ack && s.ack.applied >= n) return;
      await sleep(100);
    }
    fail(`${what}: input ${n} never acknowledged`, { stats: s, logs });
  };
  // Gamepad: a button press and a stick push become gamepad events the edge applies.
  const beforePad = (await stats()).inputsSent;
  await page.evaluate(() => { window.__pad.buttons[0].pressed = true; window.__pad.axes[0] = 0.5; });
  await sleep(300);
  await page.evaluate(() => { window.__pad.buttons[0].pressed = false; window.__pad.axes[0] = 0; });
  await sleep(300);
  const afterPad = (await stats()).inputsSent;
  if (afterPad - beforePad !== 4) fail(`gamepad: ${afterPad - beforePad} inputs sent, expected 4`, { stats: s, logs });
  await acked(afterPad, "gamepad");
  // Touch: a tap is a primary-button press and release.
  await page.touchscreen.tap(640, 400);
  await sleep(300);
  const afterTap = (await stats()).inputsSent;
  if (afterTap - afterPad !== 2) fail(`touch: ${afterTap - afterPad} inputs sent, expected 2`, { stats: s, logs });
  await acked(afterTap, "touch");
  // The stats overlay keeps clear of the score (top-right) and the stamp (top-left).
  const box = await page.locator(".edgeplay-stats").boundingBox();
  const view = await page.locator(".edgeplay-root").boundingBox();
  if (!box || !view || box.y < view.y + view.height / 2) fail(`stats overlay in the top half: ${JSON.stringify(box)}`);
  // Fullscreen: the button takes the player fullscreen and back.
  await page.click(".edgeplay-fullscreen");
  await sleep(300);
  const full = await page.evaluate(() => document.fullscreenElement?.className ?? null);
  if (full !== "edgeplay-root") fail(`fullscreen button: fullscreenElement is ${full}`, { stats: await stats(), logs });
  await page.click(".edgeplay-fullscreen");
  await sleep(300);
  // Audio–video sync: fly around (thrust, weaving) until ten hits have a tone and a flash
  // (45 s at most; fewer than three fails).
  await page.focus(".edgeplay-root");
  // The audio jitter buffer over the measurement (getStats, half-second means).
  const buffered = [];
  const targets = [];
  const playoutBefore = s.audioPlayout;
  s = await weaveUntil(
    page,
    stats,
    (x) => x.avSyncMs.length >= 10,
    (x) => {
      if (x.jitterBufferMs.audio !== null) buffered.push(x.jitterBufferMs.audio);
      if (x.audioJitterTargetMs) targets.push(x.audioJitterTargetMs.target);
    },
  );
  const avSync = s.avSyncMs;
  if (avSync.length < 3) fail(`only ${avSync.length} hits matched tone to flash in 45 s (onsets ${JSON.stringify(s.avSyncOnsets)})`, { stats: s, logs });
  // The median over the hits: one hit can land on a late audio packet or a frame boundary.
  // Here only a gross failure (no tone, drift) fails; the caller keeps a sanity bound and
  // `cargo xtask bench webrtc` reports the figure.
  const sorted = [...avSync].sort((a, b) => a - b);
  const avMedian = sorted[Math.floor(sorted.length / 2)];
  const avP95 = sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.95) - 1)];
  const mid = (xs) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] : null);
  // Over the measurement: samples played per second (48,000 when the audio device keeps real
  // time) and the share concealed, accelerated away and inserted by deceleration.
  const p0 = playoutBefore, p1 = s.audioPlayout;
  const playout = p0 && p1 && p1.at > p0.at && p1.played > p0.played
    ? {
        playedPerS: Math.round(((p1.played - p0.played) * 1000) / (p1.at - p0.at)),
        concealedPct: (100 * (p1.concealed - p0.concealed)) / (p1.played - p0.played),
        acceleratedPct: (100 * (p1.accelerated - p0.accelerated)) / (p1.played - p0.played),
        deceleratedPct: (100 * (p1.decelerated - p0.decelerated)) / (p1.played - p0.played),
      }
    : null;
  const audioJitter = { bufferMedianMs: mid(buffered), targetMedianMs: mid(targets), playout };
  if (Math.abs(avMedian) > 250) fail(`audio and video ${avMedian.toFixed(1)} ms apart (> 250 ms): ${JSON.stringify(avSync)}`, { stats: s });
  const errorVisible = await page.locator(".edgeplay-error").isVisible();
  if (errorVisible || s.error) fail(`error shown: ${s.error}`, { stats: s });
  await page.screenshot({ path: shot });
  console.log(JSON.stringify({ ok: true, played, before, after: s.lastStamp, avSyncMs: avSync, avSyncMedianMs: avMedian, avSyncP95Ms: avP95, avSyncHeardMs: s.avSyncHeardMs, audioJitter, stats: s }));
} catch (e) {
  fail(`${e}`, { logs });
} finally {
  await context.close();
}
