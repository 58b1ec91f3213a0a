/**
 * The edgeplay browser player: plays an edge's WHEP stream in a <video>, sends keyboard and
 * pointer-lock mouse input on data channels, reads each shown frame's stamp to measure
 * glass-to-glass and input-to-photon latency, and shows every failure as a visible message.
 *
 *   import { createPlayer } from "@edgeplay/web";
 *   const player = createPlayer(document.getElementById("game")!, { whepUrl, token });
 *
 * or `<edgeplay-player whep-url="https://edge/v1/whep" token="..."></edgeplay-player>`.
 */
import { readLuma, rgbaToLuma, STAMP_SPAN_PX, type Stamp } from "./stamp.js";
export { readLuma, crc16, fromBits, type Stamp } from "./stamp.js";
export { placeViaBroker, probeRtt, type Placement } from "./broker.js";
import { placeViaBroker, type Placement } from "./broker.js";
import { RateWindow, quantile, type Rates1s } from "./stats.js";
export { RATE_WINDOW_MS, LATENCY_WINDOW, RateWindow, quantile, type CounterSample, type Rates1s } from "./stats.js";

export interface PlayerOptions {
  /** The edge's WHEP endpoint, e.g. `http://127.0.0.1:8080/v1/whep`. */
  whepUrl: string;
  /** The join token (the broker's, or the one `edge-agent run --dev` prints). */
  token?: string;
  /**
   * A session broker's URL: the player asks it for a session, probes the candidate edges, and
   * plays through its WHEP relay (`whepUrl` and `token` then come from the broker).
   */
  broker?: string;
  /** Player id sent to the broker (default: a random one). */
  playerId?: string;
  /** Region the broker searches (a browser has no network coordinate of its own yet). */
  region?: string;
  /** Called with the broker's placement, once made. */
  onPlacement?: (p: Placement) => void;
  /** Show the stats overlay (default true). */
  stats?: boolean;
  /**
   * Measure audio–video sync (default false): each game hit plays a tone and tints the arena
   * border; the player times the tone's onset (WebAudio worklet on the received audio track)
   * against the first shown frame with the tinted border. Needs an AudioContext that may run
   * (a user gesture, or Chromium's --autoplay-policy=no-user-gesture-required).
   */
  avSync?: boolean;
  /** Called with every error message shown. */
  onError?: (message: string) => void;
}

/** An input event, as `edgeplay_protocol::input::InputEvent` in JSON. */
export type InputEvent =
  | { type: "key"; code: string; down: boolean }
  | { type: "pointer_move"; dx: number; dy: number }
  | { type: "button"; button: number; down: boolean }
  | { type: "gamepad_axis"; axis: number; value: number }
  | { type: "gamepad_button"; button: number; down: boolean };

/**
 * The player's statistics. Those named as the Rust SDK's `Stats` fields (camelCase, durations
 * in ms) have the SDK's definitions; the overlay shows them under the SDK's names.
 */
export interface PlayerStats {
  state: string;
  framesPresented: number;
  stampsRead: number;
  /** Pictures decoded in the last second, per second (`decoded_fps_1s`). */
  decodedFps1s: number;
  /** Video received in the last second, kbit/s (`received_kbps_1s`; RTP payload bytes here). */
  receivedKbps1s: number;
  /** Frames skipped / (frames decoded + frames skipped) in the last second (`skipped_frame_ratio_1s`). */
  skippedFrameRatio1s: number;
  /** Mean decode time of the pictures decoded in the last second, ms (`decode_time_1s`). */
  decodeMs1s: number | null;
  /** The ICE candidate pair's current round-trip time, ms (the SDK's `rtt` is QUIC's smoothed one). */
  rttMs: number | null;
  /** Frames the browser dropped since the start (getStats `framesDropped`; `frames_skipped`). */
  framesSkipped: number;
  /**
   * Glass-to-glass of the last stamped frame, ms: the render time in its stamp (the edge's
   * clock) to when it is expected on the display (this machine's clock). The two clocks are
   * compared, so it is exact only when edge and browser run on one machine (or their clocks
   * agree); otherwise it is off by their difference.
   */
  glassToGlassMs: number | null;
  /** Glass-to-glass over the last 300 stamped frames, median (`glass_to_glass_p50`). */
  glassToGlassP50Ms: number | null;
  /** Glass-to-glass, 95th percentile (`glass_to_glass_p95`). */
  glassToGlassP95Ms: number | null;
  /** Input-to-photon of the last input shown, ms: sent to the first frame showing it applied, one clock. */
  inputToPhotonMs: number | null;
  /** Input-to-photon over the last 300 inputs, median (`input_to_photon_p50`). */
  inputToPhotonP50Ms: number | null;
  /** Input-to-photon, 95th percentile (`input_to_photon_p95`). */
  inputToPhotonP95Ms: number | null;
  /**
   * Audio–video offsets of matched hits in ms (> 0: audio late): the tone's onset leaving the
   * page's audio graph for the audio device against the flash's frame composited for the
   * display. Neither side counts its device (the sound card's output latency, the monitor's
   * scan-out); `avSyncHeardMs` adds the sound card's reported output latency.
   */
  avSyncMs: number[];
  avSyncHeardMs: number[];
  /** Hit onsets seen on each side (unmatched ones included). */
  avSyncOnsets: { audio: number; video: number };
  /** WebAudio's own buffering (base) and its audio device's latency (output), in ms. */
  audioLatencyMs: { base: number; output: number } | null;
  /** Mean time in the receiver's jitter buffers over the last half second (getStats), in ms. */
  jitterBufferMs: { audio: number | null; video: number | null };
  /**
   * The audio jitter buffer's (NetEq's) target and minimum delay over the last half second
   * (getStats jitterBufferTargetDelay / jitterBufferMinimumDelay per emitted sample), in ms.
   */
  audioJitterTargetMs: { target: number; minimum: number } | null;
  /**
   * The audio receiver's playout counters (getStats, since the start): samples played out,
   * concealed, removed by acceleration and inserted by deceleration, and when they were read
   * (performance clock, ms). Played samples against elapsed time tell whether the audio device
   * keeps real time.
   */
  audioPlayout: { at: number; played: number; concealed: number; accelerated: number; decelerated: number } | null;
  lastStamp: { frame: number; tick: number; inputSeq: number; stateHash: string; renderTimeUs: string } | null;
  inputsSent: number;
  ack: { applied: number; committed: number } | null;
  error: string | null;
  /** The non-fatal problem shown now, if any. */
  notice: string | null;
}

export interface Player {
  readonly element: HTMLElement;
  readonly video: HTMLVideoElement;
  /** Sends an input (pointer motion on the unreliable channel, the rest on the reliable one). */
  send(event: InputEvent): number | null;
  stats(): PlayerStats;
  /** Every glass-to-glass and input-to-photon sample (ms) since the last call, for benches. */
  takeLatencySamples(): { glassToGlassMs: number[]; inputToPhotonMs: number[] };
  close(): Promise<void>;
}

const STYLE = `
.edgeplay-root { position: relative; background: #000; outline: none; width: 100%; aspect-ratio: 16 / 9;
  touch-action: none; user-select: none; -webkit-user-select: none; }
.edgeplay-root:fullscreen { aspect-ratio: auto; }
.edgeplay-root video { width: 100%; height: 100%; display: block; object-fit: contain; }
.edgeplay-stats { position: absolute; left: 8px; bottom: 8px; font: 12px/1.35 monospace; color: #0f0;
  background: rgba(0,0,0,.6); padding: 6px 8px; white-space: pre; pointer-events: none; }
.edgeplay-stats[hidden], .edgeplay-notice[hidden] { display: none; }
.edgeplay-error { position: absolute; left: 0; right: 0; bottom: 0; font: 15px sans-serif; color: #fff;
  background: #b00020; padding: 10px 12px; }
.edgeplay-error[hidden] { display: none; }
.edgeplay-notice { position: absolute; left: 50%; top: 8px; transform: translateX(-50%); font: 13px sans-serif;
  color: #000; background: #ffd54f; padding: 6px 10px; border-radius: 3px; }
.edgeplay-controls { position: absolute; right: 8px; bottom: 8px; display: flex; gap: 6px; }
.edgeplay-controls button { font: 12px sans-serif; }
`;

export function createPlayer(element: HTMLElement, options: PlayerOptions): Player {
  if (!document.getElementById("edgeplay-style")) {
    const style = document.createElement("style");
    style.id = "edgeplay-style";
    style.textContent = STYLE;
    document.head.appendChild(style);
  }
  const root = document.createElement("div");
  root.className = "edgeplay-root";
  root.tabIndex = 0;
  const video = document.createElement("video");
  video.autoplay = true;
  video.muted = true; // autoplay policy: start muted, unmute on a click
  video.playsInline = true;
  const overlay = document.createElement("div");
  overlay.className = "edgeplay-stats";
  overlay.hidden = options.stats === false;
  const errorBox = document.createElement("div");
  errorBox.className = "edgeplay-error";
  errorBox.setAttribute("role", "alert");
  errorBox.hidden = true;
  // Transient, non-fatal problems (connection hiccups, fullscreen refused, autoplay blocked).
  const noticeBox = document.createElement("div");
  noticeBox.className = "edgeplay-notice";
  noticeBox.setAttribute("role", "status");
  noticeBox.hidden = true;
  // Controls bottom-right: the game draws its stamp top-left and its score top-right.
  const controls = document.createElement("div");
  controls.className = "edgeplay-controls";
  const unmute = document.createElement("button");
  unmute.className = "edgeplay-unmute";
  unmute.textContent = "sound off";
  const fullscreen = document.createElement("button");
  fullscreen.className = "edgeplay-fullscreen";
  fullscreen.textContent = "fullscreen";
  controls.append(unmute, fullscreen);
  root.append(video, overlay, noticeBox, controls, errorBox);
  element.appendChild(root);

  let state = "starting";
  let error: string | null = null;
  let notice: string | null = null;
  let noticeTimer: ReturnType<typeof setTimeout> | undefined;
  const showError = (message: string) => {
    error = message;
    state = "failed";
    errorBox.textContent = message;
    errorBox.hidden = false;
    options.onError?.(message);
  };
  /** Shows a non-fatal problem; `ms` = 0 keeps it until the next notice or clearNotice. */
  const showNotice = (message: string, ms = 6000) => {
    notice = message;
    noticeBox.textContent = message;
    noticeBox.hidden = false;
    clearTimeout(noticeTimer);
    if (ms > 0) noticeTimer = setTimeout(clearNotice, ms);
  };
  const clearNotice = () => {
    notice = null;
    noticeBox.hidden = true;
  };
  unmute.onclick = (e) => {
    e.stopPropagation();
    video.muted = !video.muted;
    unmute.textContent = video.muted ? "sound off" : "sound on";
    if (!video.muted) {
      void video.play().catch((err) => showNotice(`The browser refused to play sound: ${err}`));
    }
  };
  fullscreen.onclick = (e) => {
    e.stopPropagation();
    if (document.fullscreenElement === root) {
      void document.exitFullscreen().catch((err) => showNotice(`Cannot leave fullscreen: ${err}`));
    } else if (!root.requestFullscreen) {
      showNotice("This browser has no fullscreen for elements.");
    } else {
      void root.requestFullscreen().then(
        () => root.focus(),
        (err) => showNotice(`Fullscreen refused by the browser: ${err}`),
      );
    }
  };
  document.addEventListener("fullscreenchange", () => {
    fullscreen.textContent = document.fullscreenElement === root ? "exit fullscreen" : "fullscreen";
  });

  let pc: RTCPeerConnection | null = null;
  let inputChannel: RTCDataChannel | null = null;
  let controlChannel: RTCDataChannel | null = null;
  let resource: { url: string; secret: string } | null = null;
  let seq = 0;
  const sentAt = new Map<number, number>();
  let ack: { applied: number; committed: number } | null = null;
  let closed = false;

  // Frame-stamp reading, one canvas the size of the stamp's corner.
  const canvas = document.createElement("canvas");
  canvas.width = STAMP_SPAN_PX.width;
  canvas.height = STAMP_SPAN_PX.height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  let framesPresented = 0;
  let stampsRead = 0;
  let lastStamp: Stamp | null = null;
  let g2g: number[] = [];
  let i2p: number[] = [];
  // Unwindowed copies, drained by takeLatencySamples (bounded: a reader that never drains
  // keeps the last 6000).
  let g2gTaken: number[] = [];
  let i2pTaken: number[] = [];
  let lastI2p: number | null = null;
  let lastG2g: number | null = null;

  // Audio–video sync: flash onsets (shown time, performance clock) and tone onsets (heard time).
  const flashCanvas = document.createElement("canvas");
  flashCanvas.width = 64;
  flashCanvas.height = 4;
  const flashCtx = options.avSync ? flashCanvas.getContext("2d", { willReadFrequently: true }) : null;
  let flashing = false;
  const videoOnsets: { at: number; tick: number | null }[] = [];
  const audioOnsets: number[] = [];
  const avSync: number[] = [];
  const avSyncHeard: number[] = [];
  let avOnsetCounts = { audio: 0, video: 0 };
  const matchOnsets = () => {
    // Pair each flash with the nearest tone within 200 ms, once both sides are in.
    while (videoOnsets.length > 0) {
      const v = videoOnsets[0];
      let best = -1;
      for (let i = 0; i < audioOnsets.length; i++) {
        if (Math.abs(audioOnsets[i] - v.at) < 200 && (best < 0 || Math.abs(audioOnsets[i] - v.at) < Math.abs(audioOnsets[best] - v.at))) best = i;
      }
      if (best >= 0) {
        const outputMs = ((audioCtx as any)?.outputLatency ?? 0) * 1000;
        avSync.push(audioOnsets[best] - outputMs - v.at);
        avSyncHeard.push(audioOnsets[best] - v.at);
        if (avSync.length > 200) {
          avSync.shift();
          avSyncHeard.shift();
        }
        audioOnsets.splice(0, best + 1);
        videoOnsets.shift();
      } else if (performance.now() - v.at > 400) {
        videoOnsets.shift(); // no tone for this flash (yet): give up on it
      } else break;
    }
    while (audioOnsets.length > 0 && performance.now() - audioOnsets[0] > 400) audioOnsets.shift();
  };
  const readFlash = (shownAt: number, tick: number | null) => {
    if (!flashCtx || video.videoHeight < 8) return;
    // The bottom border (width / 320 px, at least 2; 4 rows at 1280): red while a hit flashes.
    const rows = Math.max(2, Math.floor(video.videoWidth / 320));
    flashCtx.drawImage(video, Math.floor(video.videoWidth * 0.4), video.videoHeight - rows, 64, rows, 0, 0, 64, 4);
    const px = flashCtx.getImageData(0, 1, 64, 2).data;
    let r = 0, b = 0;
    for (let i = 0; i < px.length; i += 4) {
      r += px[i];
      b += px[i + 2];
    }
    const n = px.length / 4;
    const red = r / n > 150 && (r - b) / n > 80;
    if (red && !flashing) {
      videoOnsets.push({ at: shownAt, tick });
      avOnsetCounts.video++;
      matchOnsets();
    }
    flashing = red;
  };
  let audioCtx: AudioContext | null = null;
  const listenForTones = async (track: MediaStreamTrack) => {
    const ctx = new AudioContext({ latencyHint: "interactive" });
    audioCtx = ctx;
    // Onset detector: RMS over 32-sample windows; a window above 0.15 after ≥ 50 ms below
    // 0.06 is a tone onset (the hit tone peaks at 0.73 full scale, the background at 0.04).
    const worklet = `
      class Onset extends AudioWorkletProcessor {
        constructor() { super(); this.quiet = 0; }
        process(inputs) {
          const ch = inputs[0] && inputs[0][0];
          if (!ch) return true;
          for (let w = 0; w < ch.length; w += 32) {
            let e = 0;
            const end = Math.min(w + 32, ch.length);
            for (let i = w; i < end; i++) e += ch[i] * ch[i];
            const rms = Math.sqrt(e / (end - w));
            if (rms < 0.06) { this.quiet += end - w; continue; }
            if (rms > 0.15 && this.quiet >= sampleRate / 20) {
              let k = w;
              while (k < end - 1 && Math.abs(ch[k]) < 0.1) k++;
              this.port.postMessage(currentFrame + k);
            }
            this.quiet = 0;
          }
          return true;
        }
      }
      registerProcessor("edgeplay-onset", Onset);`;
    const url = URL.createObjectURL(new Blob([worklet], { type: "text/javascript" }));
    try {
      await ctx.audioWorklet.addModule(url);
    } finally {
      URL.revokeObjectURL(url);
    }
    const source = ctx.createMediaStreamSource(new MediaStream([track]));
    const node = new AudioWorkletNode(ctx, "edgeplay-onset", { numberOfOutputs: 1 });
    node.port.onmessage = (m) => {
      // Context time of the onset sample → when it leaves the output, on the performance clock.
      const ts = ctx.getOutputTimestamp();
      if (ts.contextTime === undefined || ts.performanceTime === undefined) return;
      const heard = ts.performanceTime + ((m.data as number) / ctx.sampleRate - ts.contextTime) * 1000;
      audioOnsets.push(heard);
      avOnsetCounts.audio++;
      matchOnsets();
    };
    source.connect(node);
    node.connect(ctx.destination); // silent: the worklet writes no output; this keeps it pulled
    if (ctx.state !== "running") await ctx.resume().catch(() => {});
    if (ctx.state !== "running") {
      showNotice("Audio–video sync needs audio: click the player to allow sound.", 0);
      root.addEventListener("click", () => void ctx.resume().then(clearNotice), { once: true });
    }
  };

  const onFrame = (_now: number, meta: VideoFrameCallbackMetadata) => {
    if (closed) return;
    framesPresented = meta.presentedFrames;
    if (ctx && video.videoWidth > 0) {
      const w = Math.min(canvas.width, video.videoWidth);
      const h = Math.min(canvas.height, video.videoHeight);
      ctx.drawImage(video, 0, 0, w, h, 0, 0, w, h);
      const img = ctx.getImageData(0, 0, w, h);
      const stamp = readLuma(rgbaToLuma(img.data, w, h), w, h, w);
      if (options.avSync) readFlash(meta.expectedDisplayTime, stamp?.tick ?? null);
      if (stamp) {
        stampsRead++;
        lastStamp = stamp;
        // The edge's clock (render time) against this machine's (when the frame is shown):
        // exact only on one machine or with synced clocks.
        const shownMs = performance.timeOrigin + meta.expectedDisplayTime;
        lastG2g = shownMs - Number(stamp.renderTimeUs) / 1000;
        g2g.push(lastG2g);
        g2gTaken.push(lastG2g);
        if (g2gTaken.length > 6000) g2gTaken = g2gTaken.slice(-3000);
        if (g2g.length > 600) g2g = g2g.slice(-300);
        for (const [s, t] of sentAt) {
          if (s <= stamp.inputSeq) {
            lastI2p = meta.expectedDisplayTime - t;
            i2p.push(lastI2p);
            i2pTaken.push(lastI2p);
            if (i2pTaken.length > 6000) i2pTaken = i2pTaken.slice(-3000);
            if (i2p.length > 600) i2p = i2p.slice(-300);
            sentAt.delete(s);
          }
        }
      }
    }
    video.requestVideoFrameCallback(onFrame);
  };
  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    video.requestVideoFrameCallback(onFrame);
  }

  // Stats from getStats, sampled twice a second.
  const jitterMs = { audio: null as number | null, video: null as number | null };
  const jitterTotals: Record<"audio" | "video", { delay: number; emitted: number } | null> = { audio: null, video: null };
  let audioTarget: { target: number; minimum: number } | null = null;
  let audioTargetTotals: { target: number; minimum: number; emitted: number } | null = null;
  let audioPlayout: { at: number; played: number; concealed: number; accelerated: number; decelerated: number } | null = null;
  // The SDK's statistics, by its definitions (./stats.ts): rates over the last second.
  const rateWindow = new RateWindow();
  let rates: Rates1s = { decodedFps1s: 0, receivedKbps1s: 0, skippedFrameRatio1s: 0, decodeMs1s: null };
  let rttMs: number | null = null;
  let framesSkipped = 0;
  const sample = async () => {
    if (!pc || closed) return;
    const report = await pc.getStats();
    let bytes = 0, decode = 0, decoded = 0, dropped = 0;
    let rtt: number | null = null;
    report.forEach((s: any) => {
      if (s.type === "inbound-rtp" && s.jitterBufferEmittedCount > 0) {
        // Over the last half second, not the stream's life: the start's buffering fades slowly.
        const kind = s.kind === "audio" ? "audio" : "video";
        const last = jitterTotals[kind];
        const emitted = s.jitterBufferEmittedCount - (last?.emitted ?? 0);
        if (emitted > 0) jitterMs[kind] = ((s.jitterBufferDelay - (last?.delay ?? 0)) / emitted) * 1000;
        jitterTotals[kind] = { delay: s.jitterBufferDelay, emitted: s.jitterBufferEmittedCount };
        if (kind === "audio") {
          audioPlayout = {
            at: performance.now(),
            played: s.totalSamplesReceived ?? 0,
            concealed: s.concealedSamples ?? 0,
            accelerated: s.removedSamplesForAcceleration ?? 0,
            decelerated: s.insertedSamplesForDeceleration ?? 0,
          };
        }
        if (kind === "audio" && s.jitterBufferTargetDelay !== undefined) {
          const t = audioTargetTotals;
          const n = s.jitterBufferEmittedCount - (t?.emitted ?? 0);
          if (n > 0) {
            audioTarget = {
              target: ((s.jitterBufferTargetDelay - (t?.target ?? 0)) / n) * 1000,
              minimum: (((s.jitterBufferMinimumDelay ?? 0) - (t?.minimum ?? 0)) / n) * 1000,
            };
          }
          audioTargetTotals = { target: s.jitterBufferTargetDelay, minimum: s.jitterBufferMinimumDelay ?? 0, emitted: s.jitterBufferEmittedCount };
        }
      }
      if (s.type === "inbound-rtp" && s.kind === "video") {
        bytes = s.bytesReceived ?? 0;
        decode = s.totalDecodeTime ?? 0;
        decoded = s.framesDecoded ?? 0;
        dropped = s.framesDropped ?? 0;
      }
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
        rtt = s.currentRoundTripTime * 1000;
      }
    });
    rates = rateWindow.push({
      at: performance.now(),
      framesDecoded: decoded,
      framesDropped: dropped,
      bytesReceived: bytes,
      totalDecodeTime: decode,
    });
    rttMs = rtt;
    framesSkipped = dropped;
    const fmt = (v: number | null, d = 1) => (v === null ? "–" : v.toFixed(d));
    // The SDK's names (edgeplay_client::Stats), by its definitions.
    overlay.textContent =
      `state                   ${state}\n` +
      `decoded_fps_1s          ${fmt(rates.decodedFps1s)}\n` +
      `received_kbps_1s        ${fmt(rates.receivedKbps1s, 0)} kbit/s\n` +
      `skipped_frame_ratio_1s  ${fmt(rates.skippedFrameRatio1s * 100)} %\n` +
      `decode_time_1s          ${fmt(rates.decodeMs1s, 2)} ms\n` +
      `rtt                     ${fmt(rttMs)} ms\n` +
      `frames_skipped          ${framesSkipped}\n` +
      `glass_to_glass          ${fmt(lastG2g)} ms (p50 ${fmt(quantile(g2g, 0.5))}, p95 ${fmt(quantile(g2g, 0.95))})\n` +
      `input_to_photon         ${fmt(lastI2p)} ms (p50 ${fmt(quantile(i2p, 0.5))}, p95 ${fmt(quantile(i2p, 0.95))})\n` +
      `frame                   ${lastStamp ? lastStamp.frame : "–"}  input ${lastStamp ? lastStamp.inputSeq : "–"}` +
      (options.avSync ? `\naudio−video             ${fmt(quantile(avSync, 0.5))} ms (${avSync.length} hits)` : "");
  };
  let statsFailures = 0;
  const statsTimer = setInterval(
    () =>
      void sample().then(
        () => (statsFailures = 0),
        (err) => {
          if (++statsFailures === 4) showNotice(`Stats unavailable: ${err}`);
        },
      ),
    500,
  );

  const send = (event: InputEvent): number | null => {
    const channel = event.type === "pointer_move" ? inputChannel : controlChannel;
    if (!channel || channel.readyState !== "open") return null;
    seq += 1;
    sentAt.set(seq, performance.now());
    channel.send(JSON.stringify({ seq, event }));
    return seq;
  };

  // Keyboard on the focused player; pointer lock for the mouse.
  const keyHandler = (down: boolean) => (e: KeyboardEvent) => {
    if (e.repeat || !e.code) return;
    if (send({ type: "key", code: e.code, down }) !== null) e.preventDefault();
  };
  const onKeyDown = keyHandler(true);
  const onKeyUp = keyHandler(false);
  root.addEventListener("keydown", onKeyDown);
  root.addEventListener("keyup", onKeyUp);
  // A touch is a pointer without lock: the finger's motion (in picture pixels) moves, touching
  // presses the primary button. Touch must not ask for pointer lock (the click a tap makes).
  let lastPointerType = "mouse";
  root.addEventListener("click", (e) => {
    root.focus();
    if (lastPointerType === "touch" || (e.target as HTMLElement).closest(".edgeplay-controls")) return;
    if (document.pointerLockElement !== root) {
      try {
        const r = root.requestPointerLock?.() as unknown;
        if (r instanceof Promise) r.catch((err) => showNotice(`Pointer lock refused: ${err}; the mouse will not steer.`));
      } catch (err) {
        showNotice(`Pointer lock refused: ${err}; the mouse will not steer.`);
      }
    }
  });
  document.addEventListener("pointerlockerror", () => showNotice("Pointer lock refused by the browser; the mouse will not steer."));
  const touches = new Map<number, { x: number; y: number }>();
  const pictureScale = () => (video.videoWidth > 0 && root.clientWidth > 0 ? video.videoWidth / root.clientWidth : 1);
  root.addEventListener("pointerdown", (e) => {
    lastPointerType = e.pointerType;
    if (e.pointerType !== "touch" || (e.target as HTMLElement).closest(".edgeplay-controls")) return;
    e.preventDefault();
    root.focus();
    touches.set(e.pointerId, { x: e.clientX, y: e.clientY });
    if (touches.size === 1) send({ type: "button", button: 0, down: true });
  });
  root.addEventListener("pointermove", (e) => {
    const last = touches.get(e.pointerId);
    if (e.pointerType !== "touch" || !last) return;
    const k = pictureScale();
    const dx = Math.round((e.clientX - last.x) * k);
    const dy = Math.round((e.clientY - last.y) * k);
    if (dx === 0 && dy === 0) return;
    // Keep the remainder of the rounding for the next move.
    touches.set(e.pointerId, { x: last.x + dx / k, y: last.y + dy / k });
    send({ type: "pointer_move", dx, dy });
  });
  const touchEnd = (e: PointerEvent) => {
    if (e.pointerType !== "touch" || !touches.delete(e.pointerId)) return;
    if (touches.size === 0) send({ type: "button", button: 0, down: false });
  };
  root.addEventListener("pointerup", touchEnd);
  root.addEventListener("pointercancel", touchEnd);

  // Gamepads (standard mapping): polled once per animation frame, changes sent as events.
  // Axes are quantized to 1/64 with a dead zone so a resting stick sends nothing.
  const pads = new Map<number, { axes: number[]; buttons: boolean[] }>();
  const axisValue = (v: number) => {
    const q = Math.abs(v) < 0.08 ? 0 : Math.round(Math.max(-1, Math.min(1, v)) * 64) / 64;
    return Math.max(-32768, Math.min(32767, Math.round(q * 32767)));
  };
  let padFrame = 0;
  const pollGamepads = () => {
    if (closed) return;
    padFrame = requestAnimationFrame(pollGamepads);
    let list: (Gamepad | null)[] = [];
    try {
      list = navigator.getGamepads?.() ?? [];
    } catch {
      return; // a permissions policy may forbid gamepads: keyboard and mouse still work
    }
    for (const pad of list) {
      if (!pad || !pad.connected) continue;
      let prev = pads.get(pad.index);
      if (!prev) {
        prev = { axes: pad.axes.map(() => 0), buttons: pad.buttons.map(() => false) };
        pads.set(pad.index, prev);
      }
      pad.axes.forEach((raw, axis) => {
        const v = axisValue(raw);
        if (axis < 256 && v !== prev!.axes[axis]) {
          if (send({ type: "gamepad_axis", axis, value: v }) !== null) prev!.axes[axis] = v;
        }
      });
      pad.buttons.forEach((b, button) => {
        const down = b.pressed;
        if (button < 256 && down !== (prev!.buttons[button] ?? false)) {
          if (send({ type: "gamepad_button", button, down }) !== null) prev!.buttons[button] = down;
        }
      });
    }
  };
  padFrame = requestAnimationFrame(pollGamepads);
  window.addEventListener("gamepaddisconnected", (e) => {
    pads.delete((e as GamepadEvent).gamepad.index);
    showNotice("Gamepad disconnected.");
  });
  root.addEventListener("mousemove", (e) => {
    if (document.pointerLockElement === root && (e.movementX || e.movementY)) {
      send({ type: "pointer_move", dx: Math.round(e.movementX), dy: Math.round(e.movementY) });
    }
  });
  root.addEventListener("mousedown", (e) => {
    if (document.pointerLockElement === root) send({ type: "button", button: e.button, down: true });
  });
  root.addEventListener("mouseup", (e) => {
    if (document.pointerLockElement === root) send({ type: "button", button: e.button, down: false });
  });

  // Connected but nothing decoded: say so rather than show a black box forever.
  let watchdog: ReturnType<typeof setTimeout> | undefined;
  const armFrameWatchdog = () => {
    clearTimeout(watchdog);
    const start = framesPresented;
    watchdog = setTimeout(() => {
      if (!closed && !error && framesPresented === start) {
        showError("Connected, but no video frame was decoded in 10 s: this browser may not decode the edge's H.264 (codec unsupported), or the edge stopped sending.");
      }
    }, 10000);
  };

  const connect = async () => {
    if (options.broker && !options.token) {
      try {
        const placed = await placeViaBroker(options.broker, options.playerId ?? `web-${Math.random().toString(36).slice(2, 10)}`, {
          width: 1280, height: 720, fps: 60, region: options.region,
        });
        options = { ...options, whepUrl: placed.whepUrl, token: placed.token };
        options.onPlacement?.(placed);
      } catch (e) {
        showError(`${e instanceof Error ? e.message : e}`);
        return;
      }
    }
    if (!options.token) {
      showError("No join token: open the player with #token=<token> (edge-agent run --dev prints one) or pass `token`.");
      return;
    }
    if (typeof RTCPeerConnection === "undefined") {
      showError("This browser has no WebRTC (RTCPeerConnection): use a current Chromium, Firefox or Safari.");
      return;
    }
    const caps = RTCRtpReceiver.getCapabilities?.("video");
    const h264 = caps?.codecs.filter((c) => c.mimeType.toLowerCase() === "video/h264") ?? [];
    if (caps && h264.length === 0) {
      showError("Codec unsupported: this browser cannot decode H.264, which the edge sends. Use Chromium, Firefox or Safari with H.264.");
      return;
    }
    pc = new RTCPeerConnection();
    const videoTr = pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    if (h264.length > 0 && caps) {
      // Constrained baseline with packetization-mode 1 first: what the edge sends.
      const rank = (c: RTCRtpCodec) =>
        (c.sdpFmtpLine?.includes("profile-level-id=42e01f") ? 0 : 1) + (c.sdpFmtpLine?.includes("packetization-mode=1") ? 0 : 2);
      const rest = caps.codecs.filter((c) => c.mimeType.toLowerCase() !== "video/h264");
      try {
        videoTr.setCodecPreferences([...h264.sort((a, b) => rank(a) - rank(b)), ...rest]);
      } catch {
        /* older browsers: the edge still picks H.264 */
      }
    }
    inputChannel = pc.createDataChannel("input", { ordered: false, maxRetransmits: 0 });
    controlChannel = pc.createDataChannel("control", { ordered: true });
    for (const ch of [inputChannel, controlChannel]) {
      ch.onclose = () => {
        if (!closed && !error) showNotice(`The "${ch.label}" channel closed: input is not reaching the edge.`, 0);
      };
      ch.onerror = (ev) => {
        if (!closed && !error) showNotice(`The "${ch.label}" channel failed: ${(ev as RTCErrorEvent).error?.message ?? "unknown error"}`);
      };
    }
    controlChannel.onmessage = (m) => {
      try {
        const a = JSON.parse(String(m.data));
        if (typeof a.applied === "number") ack = { applied: a.applied, committed: a.committed };
      } catch {
        /* ignore */
      }
    };
    const stream = new MediaStream();
    video.srcObject = stream;
    pc.ontrack = (e) => {
      stream.addTrack(e.track);
      if (options.avSync && e.track.kind === "audio") {
        void listenForTones(e.track).catch((err) => showNotice(`Audio–video sync cannot listen to the audio: ${err}`));
      }
      e.track.onended = () => {
        if (!closed && !error) showNotice(`The ${e.track.kind} track ended.`, 0);
      };
      void video.play().catch((err) => showNotice(`The browser would not start playback: ${err}; click the player.`, 0));
    };
    pc.onconnectionstatechange = () => {
      if (!pc || error) return;
      state = pc.connectionState;
      if (state === "failed") showError("The connection to the edge failed (ICE/DTLS): check that UDP to the edge is not blocked, then reload.");
      else if (state === "disconnected") showNotice("Connection to the edge interrupted: waiting for it to come back…", 0);
      else if (state === "connected") {
        clearNotice();
        armFrameWatchdog();
      } else if (state === "closed" && !closed) showError("The edge ended the session: reload to play again.");
    };
    await pc.setLocalDescription(await pc.createOffer());
    // Non-trickle offer: wait for our candidates (bounded), so one POST is enough.
    await new Promise<void>((resolve) => {
      if (pc!.iceGatheringState === "complete") return resolve();
      const t = setTimeout(resolve, 1500);
      pc!.addEventListener("icegatheringstatechange", () => {
        if (pc!.iceGatheringState === "complete") {
          clearTimeout(t);
          resolve();
        }
      });
    });
    let resp: Response;
    try {
      resp = await fetch(options.whepUrl, {
        method: "POST",
        headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${options.token}` },
        body: pc.localDescription!.sdp,
      });
    } catch (e) {
      showError(`Edge unreachable at ${options.whepUrl}: ${e}. Is edge-agent running, and is the URL right?`);
      return;
    }
    if (resp.status !== 201) {
      let reason = await resp.text();
      try {
        reason = JSON.parse(reason).error ?? reason;
      } catch {
        /* plain text */
      }
      if (resp.status === 401) showError(`The edge refused the join token: ${reason}`);
      else if (resp.status === 406) showError(`Codec unsupported: ${reason}`);
      else if (resp.status === 503) {
        // A full edge: the token is still good, so the page may simply try again.
        const after = Number(resp.headers.get("Retry-After") ?? "5");
        const secs = Number.isFinite(after) && after > 0 ? after : 5;
        showError(`This edge is full: every session slot is taken. Reload in ${secs} s to try again, or ask for another edge. (${reason})`);
      }
      else showError(`The edge refused to play (HTTP ${resp.status}): ${reason}`);
      return;
    }
    const location = resp.headers.get("Location");
    const secret = resp.headers.get("Edgeplay-Session-Secret") ?? "";
    if (location) resource = { url: new URL(location, options.whepUrl).toString(), secret };
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
    state = "connecting";
  };
  void connect().catch((e) => showError(`Cannot start the stream: ${e}`));

  return {
    element: root,
    video,
    send,
    stats: () => ({
      state,
      framesPresented,
      stampsRead,
      ...rates,
      rttMs,
      framesSkipped,
      glassToGlassMs: lastG2g,
      glassToGlassP50Ms: quantile(g2g, 0.5),
      glassToGlassP95Ms: quantile(g2g, 0.95),
      inputToPhotonMs: lastI2p,
      inputToPhotonP50Ms: quantile(i2p, 0.5),
      inputToPhotonP95Ms: quantile(i2p, 0.95),
      avSyncMs: [...avSync],
      avSyncHeardMs: [...avSyncHeard],
      avSyncOnsets: { ...avOnsetCounts },
      jitterBufferMs: { ...jitterMs },
      audioJitterTargetMs: audioTarget,
      audioPlayout: audioPlayout ? { ...audioPlayout } : null,
      audioLatencyMs: audioCtx
        ? { base: (audioCtx.baseLatency ?? 0) * 1000, output: ((audioCtx as any).outputLatency ?? 0) * 1000 }
        : null,
      lastStamp: lastStamp
        ? {
            frame: lastStamp.frame,
            tick: lastStamp.tick,
            inputSeq: lastStamp.inputSeq,
            stateHash: lastStamp.stateHash.toString(16),
            renderTimeUs: lastStamp.renderTimeUs.toString(),
          }
        : null,
      inputsSent: seq,
      ack,
      error,
      notice,
    }),
    takeLatencySamples: () => {
      const out = { glassToGlassMs: g2gTaken, inputToPhotonMs: i2pTaken };
      g2gTaken = [];
      i2pTaken = [];
      return out;
    },
    close: async () => {
      closed = true;
      clearInterval(statsTimer);
      clearTimeout(watchdog);
      clearTimeout(noticeTimer);
      cancelAnimationFrame(padFrame);
      void audioCtx?.close().catch(() => {});
      if (document.fullscreenElement === root) await document.exitFullscreen().catch(() => {});
      if (resource) {
        await fetch(resource.url, { method: "DELETE", headers: { Authorization: `Bearer ${resource.secret}` } }).catch(() => {});
      }
      pc?.close();
      root.remove();
    },
  };
}

/** `<edgeplay-player whep-url="..." token="..." stats="off">`: the player as a custom element. */
export class EdgeplayPlayerElement extends HTMLElement {
  player: Player | null = null;
  /** The broker's placement, in broker mode. */
  placement: Placement | null = null;
  connectedCallback() {
    if (this.player) return;
    this.player = createPlayer(this, {
      whepUrl: this.getAttribute("whep-url") ?? new URL("/v1/whep", location.href).toString(),
      token: this.getAttribute("token") ?? undefined,
      broker: this.getAttribute("broker") ?? undefined,
      region: this.getAttribute("region") ?? undefined,
      onPlacement: (p) => (this.placement = p),
      stats: this.getAttribute("stats") !== "off",
      avSync: this.hasAttribute("av-sync"),
    });
  }
  disconnectedCallback() {
    void this.player?.close();
    this.player = null;
  }
}

if (typeof customElements !== "undefined" && !customElements.get("edgeplay-player")) {
  customElements.define("edgeplay-player", EdgeplayPlayerElement);
}
