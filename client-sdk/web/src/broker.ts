/**
 * Joining through a session broker from a browser: the player names the broker and nothing
 * else. {@link placeViaBroker} asks for a session, measures the RTT to each candidate edge with a
 * short-lived RTCPeerConnection (a data channel, no media) signalled through the broker
 * (`POST /v1/sessions/{id}/probe/{edge}`), reading the ICE candidate pair's round-trip time from
 * getStats (the minimum over up to 3 STUN responses), reports them, and returns the WHEP relay
 * URL and the join token the broker's pick comes with.
 */

/** What the broker gave for a placed session. */
export interface Placement {
  session: string;
  edge: string;
  /** Absolute URL of the broker's WHEP relay for this session. */
  whepUrl: string;
  /** Join token (hex), single use. */
  token: string;
  /** Every candidate and its measured RTT in ms (null: the probe failed). */
  measured: { edge: string; rttMs: number | null }[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Probes one candidate: the minimum ICE round-trip time over up to `samples` responses, in ms.
 * The offer goes to `url` when given (the candidate's `probe_url`: the broker the edge is linked
 * to), else to `broker`'s probe route for the session.
 */
export async function probeRtt(
  broker: string,
  session: string,
  edge: string,
  samples = 3,
  timeoutMs = 4000,
  url?: string,
): Promise<number | null> {
  const pc = new RTCPeerConnection();
  try {
    pc.createDataChannel("probe");
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise<void>((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const t = setTimeout(resolve, 1000);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") {
          clearTimeout(t);
          resolve();
        }
      });
    });
    const resp = await fetch(new URL(url ?? `/v1/sessions/${session}/probe/${edge}`, broker), {
      method: "POST",
      headers: { "Content-Type": "application/sdp" },
      body: pc.localDescription!.sdp,
    });
    if (resp.status !== 201) return null;
    await pc.setRemoteDescription({ type: "answer", sdp: await resp.text() });
    let best: number | null = null;
    let seen = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < timeoutMs) {
      const stats = await pc.getStats();
      stats.forEach((s: any) => {
        if (s.type !== "candidate-pair" || s.state !== "succeeded") return;
        if (typeof s.currentRoundTripTime === "number" && (s.responsesReceived ?? 0) > seen) {
          seen = s.responsesReceived;
          const ms = s.currentRoundTripTime * 1000;
          best = best === null ? ms : Math.min(best, ms);
        }
      });
      if (seen >= samples) break;
      await sleep(50);
    }
    return best;
  } catch {
    return null;
  } finally {
    pc.close();
  }
}

/** Asks `broker` for a session for `player`, probes the candidates and has the broker pick one. */
export async function placeViaBroker(
  broker: string,
  player: string,
  want: { width: number; height: number; fps: number; region?: string } = { width: 1280, height: 720, fps: 60 },
): Promise<Placement> {
  const call = async (path: string, body: unknown, expect: number) => {
    let resp: Response;
    try {
      resp = await fetch(new URL(path, broker), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (e) {
      throw new Error(`Broker unreachable at ${broker}: ${e}. Is session-broker running, and is the URL right?`);
    }
    const v = await resp.json().catch(() => ({}));
    if (resp.status !== expect) throw new Error(`The broker answered ${resp.status}: ${v.error ?? "no explanation"}`);
    return v;
  };
  const s = await call("/v1/sessions", { player, ...want }, 201);
  const candidates: { edge: string; probe_url?: string }[] = s.candidates ?? [];
  const measured = await Promise.all(
    candidates.map(async (c) => ({
      edge: c.edge,
      rttMs: await probeRtt(broker, s.session, c.edge, 3, 4000, c.probe_url),
    })),
  );
  const report = measured.filter((m) => m.rttMs !== null).map((m) => ({ edge: m.edge, rtt_ms: m.rttMs }));
  if (report.length === 0) throw new Error("No candidate edge answered an RTT probe: UDP may be blocked between this browser and the edges.");
  const sel = await call(`/v1/sessions/${s.session}/select`, { measured: report }, 200);
  return {
    session: s.session,
    edge: sel.edge,
    whepUrl: new URL(sel.whep_url, broker).toString(),
    token: sel.token,
    measured,
  };
}
