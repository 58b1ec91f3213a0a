// Unit test of the player's statistics (src/stats.ts, built to dist/): the 1 s rates from
// cumulative getStats counters and the percentiles, with made-up samples (no browser, no timers).
// Usage: npm test (builds first), or node tests/stats.mjs after npm run build.
import assert from "node:assert/strict";
import { RateWindow, quantile, RATE_WINDOW_MS, LATENCY_WINDOW } from "../dist/stats.js";

assert.equal(RATE_WINDOW_MS, 1000);
assert.equal(LATENCY_WINDOW, 300);

// 60 fps and 500 kB/s for 10 s, sampled every 500 ms (a little late, as timers are), then
// 30 fps and 100 kB/s: the rates follow the last second, not the session's average.
const w = new RateWindow();
const counters = { framesDecoded: 0, framesDropped: 0, bytesReceived: 0, totalDecodeTime: 0 };
let r = w.push({ at: 0, ...counters });
assert.deepEqual(r, { decodedFps1s: 0, receivedKbps1s: 0, skippedFrameRatio1s: 0, decodeMs1s: null });
let at = 0;
let n = 0;
const advance = (ms, fps, bytesPerS, dropsPerS, decodeMs) => {
  const step = ms + [0, 7, 3][n++ % 3]; // timers fire a little late
  at += step;
  const dt = step / 1000;
  counters.framesDecoded += fps * dt;
  counters.framesDropped += dropsPerS * dt;
  counters.bytesReceived += bytesPerS * dt;
  counters.totalDecodeTime += (fps * dt * decodeMs) / 1000;
  return w.push({ at, ...counters });
};
for (let i = 0; i < 20; i++) r = advance(500, 60, 500_000, 0, 2);
const close = (a, b, what) => assert.ok(Math.abs(a - b) < 1e-6 * Math.max(1, Math.abs(b)), `${what}: ${a} ≠ ${b}`);
close(r.decodedFps1s, 60, "fps");
close(r.receivedKbps1s, 4000, "kbit/s");
close(r.decodeMs1s, 2, "decode ms");
close(r.skippedFrameRatio1s, 0, "skipped ratio");
// Half a second at the new rate: the window holds half of each.
r = advance(500, 30, 100_000, 10, 4);
assert.ok(r.decodedFps1s > 30 && r.decodedFps1s < 60, `${r.decodedFps1s}`);
// One second later only the new rate is left.
r = advance(500, 30, 100_000, 10, 4);
close(r.decodedFps1s, 30, "fps after the change");
close(r.receivedKbps1s, 800, "kbit/s after the change");
close(r.skippedFrameRatio1s, 10 / 40, "skipped / (decoded + skipped)");
close(r.decodeMs1s, 4, "decode ms after the change");
// A stall: nothing decoded in the last second.
r = advance(500, 0, 0, 0, 0);
r = advance(500, 0, 0, 0, 0);
assert.equal(r.decodedFps1s, 0);
assert.equal(r.decodeMs1s, null);
assert.equal(r.skippedFrameRatio1s, 0);

// A new receiver: its counters start again from zero; no negative rates.
r = w.push({ at: at + 500, framesDecoded: 5, framesDropped: 0, bytesReceived: 1000, totalDecodeTime: 0.01 });
assert.deepEqual(r, { decodedFps1s: 0, receivedKbps1s: 0, skippedFrameRatio1s: 0, decodeMs1s: null });

// Percentiles as the SDK's: sorted[round((n - 1) q)] over the last 300 samples.
assert.equal(quantile([], 0.5), null);
assert.equal(quantile([3, 1, 2], 0.5), 2);
assert.equal(quantile([4, 1, 3, 2], 0.5), 3);
const many = Array.from({ length: 1000 }, (_, i) => i); // the last 300: 700..999
assert.equal(quantile(many, 0), 700);
assert.equal(quantile(many, 0.95), 700 + Math.round(299 * 0.95));
console.log("stats.mjs: ok");
