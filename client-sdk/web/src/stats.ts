/**
 * The player's statistics, by the definitions of the Rust SDK's `edgeplay_client::Stats` (and
 * the C header's `EpStats`): rates over the last second (names ending in `1s`), latency
 * percentiles over the last {@link LATENCY_WINDOW} samples, counters since the start.
 *
 * The browser keeps cumulative counters (getStats); a rate over the last second is the change
 * of a counter between the newest sample and the sample nearest to one second before it,
 * divided by the time between the two. The player samples every 500 ms, so that span is 1 s
 * give or take the timer's lateness; until a second of samples exists it is the time since the
 * first one.
 */

/** The window of the `…1s` rates, ms (the SDK's `RATE_WINDOW`). */
export const RATE_WINDOW_MS = 1000;
/** Latency samples the percentiles cover (the SDK's `LATENCY_WINDOW`). */
export const LATENCY_WINDOW = 300;

/** The video receiver's cumulative counters (getStats `inbound-rtp`, kind video) at `at`. */
export interface CounterSample {
  /** When they were read, ms (performance clock). */
  at: number;
  framesDecoded: number;
  framesDropped: number;
  bytesReceived: number;
  /** Seconds. */
  totalDecodeTime: number;
}

/** The `…1s` statistics, as the SDK's `Stats` fields of the same names. */
export interface Rates1s {
  /** Pictures decoded in the last second, per second (`decoded_fps_1s`). */
  decodedFps1s: number;
  /** Video received in the last second, kbit/s: RTP payload bytes × 8 / 1000 (`received_kbps_1s`). */
  receivedKbps1s: number;
  /**
   * Frames skipped / (frames decoded + frames skipped) in the last second, 0 when neither
   * happened (`skipped_frame_ratio_1s`); the browser's skipped frames are getStats
   * `framesDropped`.
   */
  skippedFrameRatio1s: number;
  /** Mean decode time of the pictures decoded in the last second, ms; null when none was (`decode_time_1s`). */
  decodeMs1s: number | null;
}

/** Turns cumulative counter samples into the rates over the last second. */
export class RateWindow {
  private samples: CounterSample[] = [];

  /** Adds the newest sample and returns the rates over the second before it. */
  push(s: CounterSample): Rates1s {
    const last = this.samples[this.samples.length - 1];
    // Counters that went back belong to a new receiver: start over from this sample.
    if (last && (s.framesDecoded < last.framesDecoded || s.bytesReceived < last.bytesReceived)) this.samples = [];
    this.samples.push(s);
    // The base: the older sample nearest to one window before the newest; older ones go.
    let base = 0;
    for (let i = 1; i < this.samples.length - 1; i++) {
      const far = Math.abs(s.at - this.samples[base].at - RATE_WINDOW_MS);
      if (Math.abs(s.at - this.samples[i].at - RATE_WINDOW_MS) <= far) base = i;
    }
    this.samples.splice(0, base);
    const b = this.samples[0];
    const span = (s.at - b.at) / 1000;
    if (b === s || span <= 0) {
      return { decodedFps1s: 0, receivedKbps1s: 0, skippedFrameRatio1s: 0, decodeMs1s: null };
    }
    const decoded = s.framesDecoded - b.framesDecoded;
    const skipped = s.framesDropped - b.framesDropped;
    return {
      decodedFps1s: decoded / span,
      receivedKbps1s: ((s.bytesReceived - b.bytesReceived) * 8) / 1000 / span,
      skippedFrameRatio1s: decoded + skipped > 0 ? skipped / (decoded + skipped) : 0,
      decodeMs1s: decoded > 0 ? ((s.totalDecodeTime - b.totalDecodeTime) * 1000) / decoded : null,
    };
  }
}

/**
 * The `q` quantile (0..=1) of the last {@link LATENCY_WINDOW} of `xs`: the sorted sample at
 * index round((n − 1) · q), as the SDK's percentiles; null when empty.
 */
export function quantile(xs: number[], q: number): number | null {
  const w = xs.slice(-LATENCY_WINDOW).sort((a, b) => a - b);
  if (w.length === 0) return null;
  return w[Math.round((w.length - 1) * q)];
}
