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

export interface PlayerOptions {
  /** The edge's WHEP endpoint, e.g. `http://127.0.0.1:8080/v1/whep`. */
  whepUrl: string;
  /** The join token (the broker's, or the one `edge-agent run --dev` prints). */
  token?: string;
  /** Show the stats overlay (default true). */
  stats?: boolean;
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

export interface PlayerStats {
  state: string;
  framesPresented: number;
  stampsRead: number;
  fps: number;
  bitrateKbps: number;
  rttMs: number | null;
  decodeMsPerFrame: number | null;
  framesDropped: number;
  glassToGlassMs: number | null;
  glassToGlassP50Ms: number | null;
  inputToPhotonMs: number | null;
  lastStamp: { frame: number; tick: number; inputSeq: number; stateHash: string; renderTimeUs: string } | null;
  inputsSent: number;
  ack: { applied: number; committed: number } | null;
  error: string | null;
}

export interface Player {
  readonly element: HTMLElement;
  readonly video: HTMLVideoElement;
  /** Sends an input (pointer motion on the unreliable channel, the rest on the reliable one). */
  send(event: InputEvent): number | null;
  stats(): PlayerStats;
  close(): Promise<void>;
}

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const STYLE = `
.edgeplay-root { position: relative; background: #000; outline: none; width: 100%; aspect-ratio: 16 / 9; }
.edgeplay-root video { width: 100%; height: 100%; display: block; object-fit: contain; }
.edgeplay-stats { position: absolute; top: 8px; right: 8px; font: 12px/1.35 monospace; color: #0f0;
  background: rgba(0,0,0,.6); padding: 6px 8px; white-space: pre; pointer-events: none; }
.edgeplay-error { position: absolute; left: 0; right: 0; bottom: 0; font: 15px sans-serif; color: #fff;
  background: #b00020; padding: 10px 12px; }
.edgeplay-error[hidden] { display: none; }
.edgeplay-unmute { position: absolute; left: 8px; top: 8px; font: 12px sans-serif; }
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
  const unmute = document.createElement("button");
  unmute.className = "edgeplay-unmute";
  unmute.textContent = "sound off";
  unmute.onclick = (e) => {
    e.stopPropagation();
    video.muted = !video.muted;
    unmute.textContent = video.muted ? "sound off" : "sound on";
  };
  root.append(video, overlay, unmute, errorBox);
  element.appendChild(root);

  let state = "starting";
  let error: string | null = null;
  const showError = (message: string) => {
    error = message;
    state = "failed";
    errorBox.textContent = message;
    errorBox.hidden = false;
    options.onError?.(message);
  };

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
  let lastI2p: number | null = null;
  let lastG2g: number | null = null;

  const onFrame = (_now: number, meta: VideoFrameCallbackMetadata) => {
    if (closed) return;
    framesPresented = meta.presentedFrames;
    if (ctx && video.videoWidth > 0) {
      const w = Math.min(canvas.width, video.videoWidth);
      const h = Math.min(canvas.height, video.videoHeight);
      ctx.drawImage(video, 0, 0, w, h, 0, 0, w, h);
      const img = ctx.getImageData(0, 0, w, h);
      const stamp = readLuma(rgbaToLuma(img.data, w, h), w, h, w);
      if (stamp) {
        stampsRead++;
        lastStamp = stamp;
        // Same machine clock on loopback: the edge's render time against when this frame is shown.
        const shownMs = performance.timeOrigin + meta.expectedDisplayTime;
        lastG2g = shownMs - Number(stamp.renderTimeUs) / 1000;
        g2g.push(lastG2g);
        if (g2g.length > 600) g2g = g2g.slice(-300);
        for (const [s, t] of sentAt) {
          if (s <= stamp.inputSeq) {
            lastI2p = meta.expectedDisplayTime - t;
            i2p.push(lastI2p);
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
  let rtc = { fps: 0, bitrateKbps: 0, rttMs: null as number | null, decodeMs: null as number | null, dropped: 0 };
  let prev: { t: number; bytes: number; frames: number; decode: number; decoded: number } | null = null;
  const sample = async () => {
    if (!pc || closed) return;
    const report = await pc.getStats();
    let bytes = 0, frames = 0, decode = 0, decoded = 0, dropped = 0;
    let rtt: number | null = null;
    report.forEach((s: any) => {
      if (s.type === "inbound-rtp" && s.kind === "video") {
        bytes = s.bytesReceived ?? 0;
        frames = s.framesDecoded ?? 0;
        decode = s.totalDecodeTime ?? 0;
        decoded = s.framesDecoded ?? 0;
        dropped = s.framesDropped ?? 0;
      }
      if (s.type === "candidate-pair" && s.nominated && s.currentRoundTripTime !== undefined) {
        rtt = s.currentRoundTripTime * 1000;
      }
    });
    const t = performance.now();
    if (prev) {
      const dt = (t - prev.t) / 1000;
      rtc.fps = (frames - prev.frames) / dt;
      rtc.bitrateKbps = ((bytes - prev.bytes) * 8) / 1000 / dt;
      rtc.decodeMs = decoded > prev.decoded ? ((decode - prev.decode) * 1000) / (decoded - prev.decoded) : rtc.decodeMs;
    }
    rtc.rttMs = rtt;
    rtc.dropped = dropped;
    prev = { t, bytes, frames, decode, decoded };
    const fmt = (v: number | null, d = 1) => (v === null ? "–" : v.toFixed(d));
    overlay.textContent =
      `state        ${state}\n` +
      `fps          ${fmt(rtc.fps)}\n` +
      `bitrate      ${fmt(rtc.bitrateKbps, 0)} kbit/s\n` +
      `RTT          ${fmt(rtc.rttMs)} ms\n` +
      `decode       ${fmt(rtc.decodeMs, 2)} ms/frame\n` +
      `dropped      ${rtc.dropped}\n` +
      `glass→glass  ${fmt(lastG2g)} ms (p50 ${fmt(median(g2g))})\n` +
      `input→photon ${fmt(lastI2p)} ms (p50 ${fmt(median(i2p))})\n` +
      `frame        ${lastStamp ? lastStamp.frame : "–"}  input ${lastStamp ? lastStamp.inputSeq : "–"}`;
  };
  const statsTimer = setInterval(() => void sample().catch(() => {}), 500);

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
  root.addEventListener("click", () => {
    root.focus();
    if (document.pointerLockElement !== root) root.requestPointerLock?.();
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

  const connect = async () => {
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
      void video.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (!pc) return;
      state = pc.connectionState;
      if (state === "failed") showError("The connection to the edge failed (ICE/DTLS): check that UDP to the edge is not blocked, then reload.");
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
      fps: rtc.fps,
      bitrateKbps: rtc.bitrateKbps,
      rttMs: rtc.rttMs,
      decodeMsPerFrame: rtc.decodeMs,
      framesDropped: rtc.dropped,
      glassToGlassMs: lastG2g,
      glassToGlassP50Ms: median(g2g),
      inputToPhotonMs: median(i2p),
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
    }),
    close: async () => {
      closed = true;
      clearInterval(statsTimer);
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
  connectedCallback() {
    if (this.player) return;
    this.player = createPlayer(this, {
      whepUrl: this.getAttribute("whep-url") ?? new URL("/v1/whep", location.href).toString(),
      token: this.getAttribute("token") ?? undefined,
      stats: this.getAttribute("stats") !== "off",
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
