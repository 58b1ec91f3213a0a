// One measurement of `cargo xtask bench webrtc`: headless Chromium plays a WHEP stream through
// the web player for a while, pressing keys, and prints every glass-to-glass and
// input-to-photon sample the page measured, with frames shown and dropped; then it flies the
// ship around (thrust, weaving) until `hits` hits have matched the tone's onset to the flash
// (45 s at most) and prints each audio-behind-video offset (the page needs `avsync=1`).
// With a fourth argument, every audio receiver's `jitterBufferTarget` is set to it (ms) as its
// track arrives.
// Usage: node tests/bench.mjs <player page URL> <seconds to measure> [hits, default 10; 0: none]
//        [audio jitterBufferTarget, ms]
import { collectLogs, fail, launchChromium, sleep, weaveUntil } from "./harness.mjs";

const [url, secondsArg, hitsArg, audioTargetArg] = process.argv.slice(2);
const seconds = Number(secondsArg);
const hits = hitsArg === undefined ? 10 : Number(hitsArg);
if (!url || !(seconds > 0)) {
  console.error("usage: node tests/bench.mjs <player page URL> <seconds>");
  process.exit(2);
}

const context = await launchChromium();
const page = context.pages()[0] ?? (await context.newPage());
if (audioTargetArg !== undefined) {
  // Before the player's script: every peer connection sets the hint on its audio receivers.
  await page.addInitScript((ms) => {
    const Native = window.RTCPeerConnection;
    window.RTCPeerConnection = class extends Native {
      constructor(...args) {
        super(...args);
        this.addEventListener("track", (e) => {
          if (e.track.kind === "audio") e.receiver.jitterBufferTarget = ms;
        });
      }
    };
  }, Number(audioTargetArg));
}
const logs = collectLogs(page);
const stats = () => page.evaluate(() => window.edgeplay?.player?.stats() ?? null);
try {
  await page.goto(url, { waitUntil: "domcontentloaded" });
  let s = null;
  const t0 = Date.now();
  while (Date.now() - t0 < 30000) {
    s = await stats();
    if (s?.error) fail(`player shows an error: ${s.error}`, { logs });
    if (s && s.stampsRead >= 30) break;
    await sleep(100);
  }
  if (!s || s.stampsRead < 30) fail("fewer than 30 stamped frames shown within 30 s", { stats: s, logs });
  await page.focus(".edgeplay-root");
  await page.evaluate(() => window.edgeplay.player.takeLatencySamples());
  const start = await stats();
  const began = Date.now();
  // A key press or release every 250 ms: each is an input whose first frame is timed.
  let down = false;
  while (Date.now() - began < seconds * 1000) {
    down = !down;
    if (down) await page.keyboard.down("ArrowLeft");
    else await page.keyboard.up("ArrowLeft");
    await sleep(250);
  }
  if (down) await page.keyboard.up("ArrowLeft");
  const wall = (Date.now() - began) / 1000;
  const end = await stats();
  const samples = await page.evaluate(() => window.edgeplay.player.takeLatencySamples());
  if (end.error) fail(`player shows an error: ${end.error}`, { logs });
  // Audio behind video: the tone's onset (WebAudio) against the first frame with the flash,
  // one sample per hit (the same measurement as tests/e2e.mjs).
  let av = [];
  // NetEq's audio buffer (getStats, half-second means) while the hits are flown: the part of
  // the offset the receiver's jitter buffer holds.
  const audioBufferMs = [];
  if (hits > 0) {
    const before = (await stats()).avSyncMs.length;
    const s = await weaveUntil(
      page,
      stats,
      (x) => x.avSyncMs.length - before >= hits,
      (x) => {
        if (x.jitterBufferMs.audio !== null) audioBufferMs.push(x.jitterBufferMs.audio);
      },
    );
    if (s.error) fail(`player shows an error: ${s.error}`, { logs });
    // The page keeps its latest 200; fewer than 200 are taken here.
    av = s.avSyncMs.slice(Math.min(before, s.avSyncMs.length));
  }
  console.log(JSON.stringify({
    ok: true,
    seconds: wall,
    presented: end.framesPresented - start.framesPresented,
    dropped: end.framesSkipped - start.framesSkipped,
    g2g: samples.glassToGlassMs,
    i2p: samples.inputToPhotonMs,
    av,
    audioBufferMs,
  }));
} catch (e) {
  fail(`${e}`, { logs });
} finally {
  await context.close();
}
