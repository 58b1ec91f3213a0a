/**
 * The frame stamp reader: a port of `edgeplay_protocol::stamp::read_luma` (protocol/src/stamp.rs).
 *
 * 32x8 cells, one cell of margin from the top-left corner, bit i at column i % 32, row i / 32,
 * white = 1. Bits 0..16: sync word 0xC35A (LSB first); then 28 payload bytes, little-endian:
 * frame u32, tick u32, render_time_us u64, input_seq u32, state_hash u64; then CRC-16/CCITT-FALSE.
 */

export const STAMP_COLS = 32;
export const STAMP_ROWS = 8;
export const STAMP_BITS = STAMP_COLS * STAMP_ROWS;
export const STAMP_CELL_PX = 16;
export const STAMP_SYNC = 0xc35a;
const FRAC = 256;
const PREFERRED_CELLS = [16, 8, 24, 32, 12].map((c) => c * FRAC);
const MIN_CONTRAST = 40;
/** A cell mean nearer the threshold than 1/this of the sync contrast is unclear. */
const CLEAR_MARGIN_DIV = 4;

/** What one frame's stamp carries (64-bit fields as bigint). */
export interface Stamp {
  frame: number;
  tick: number;
  renderTimeUs: bigint;
  inputSeq: number;
  stateHash: bigint;
}

/** CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor. */
export function crc16(bytes: Uint8Array): number {
  let crc = 0xffff;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) {
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
  }
  return crc;
}

/** Decodes the 256 stamp bits (as 32 bytes, bit i = byte i/8 bit i%8); null if sync or CRC fail. */
export function fromBits(bytes: Uint8Array): Stamp | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint16(0, true) !== STAMP_SYNC) return null;
  const payload = bytes.subarray(2, 30);
  if (view.getUint16(30, true) !== crc16(payload)) return null;
  const p = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return {
    frame: p.getUint32(0, true),
    tick: p.getUint32(4, true),
    renderTimeUs: p.getBigUint64(8, true),
    inputSeq: p.getUint32(16, true),
    stateHash: p.getBigUint64(20, true),
  };
}

/** The extent of the picture a reader needs: the stamp and its margin at the largest preferred cell. */
export const STAMP_SPAN_PX = { width: (STAMP_COLS + 1) * 32, height: (STAMP_ROWS + 1) * 32 };

/**
 * Reads a stamp from a luma plane (`luma[y * stride + x]`), trying the likely cell sizes.
 * A size whose sync word and CRC match with every cell clearly dark or bright wins at once;
 * otherwise the size with the fewest unclear cells decides. Returns null when that read's CRC
 * fails or no size gives a matching sync word.
 */
export function readLuma(luma: Uint8Array, width: number, height: number, stride: number): Stamp | null {
  let best: { stamp: Stamp | null; unclear: number } | null = null;
  for (const cell of PREFERRED_CELLS) {
    const span = (index: number): [number, number] => {
      const origin = cell * index;
      const start = Math.floor((origin + cell / 4 + FRAC / 2) / FRAC);
      const end = Math.max(Math.floor((origin + (3 * cell) / 4 + FRAC / 2) / FRAC), start + 1);
      return [start, end];
    };
    if (span(STAMP_COLS)[1] > width || span(STAMP_ROWS)[1] > height) continue;
    const mean = (col: number, row: number): number => {
      const [x0, x1] = span(col + 1);
      const [y0, y1] = span(row + 1);
      let sum = 0;
      for (let y = y0; y < y1; y++) {
        for (let x = x0; x < x1; x++) sum += luma[y * stride + x];
      }
      return Math.floor(sum / ((x1 - x0) * (y1 - y0)));
    };
    const sync: number[] = [];
    for (let i = 0; i < 16; i++) sync.push(mean(i, 0));
    const dark = Math.min(...sync);
    const bright = Math.max(...sync);
    if (bright - dark < MIN_CONTRAST) continue;
    const threshold = Math.floor((dark + bright) / 2);
    const bytes = new Uint8Array(STAMP_BITS / 8);
    let unclear = 0;
    for (let i = 0; i < STAMP_BITS; i++) {
      const m = mean(i % STAMP_COLS, Math.floor(i / STAMP_COLS));
      if (Math.abs(m - threshold) * CLEAR_MARGIN_DIV < bright - dark) unclear++;
      if (m > threshold) bytes[i >> 3] |= 1 << (i & 7);
    }
    const stamp = fromBits(bytes);
    if (stamp && unclear === 0) return stamp;
    // As in the Rust reader: otherwise the grid with the fewest unclear cells decides, so a
    // grid off the stamp's scale, straddling cell edges, is not taken for a damaged stamp.
    if (!best || unclear < best.unclear) best = { stamp, unclear };
  }
  return best ? best.stamp : null;
}

/** Luma (BT.601, full range) of canvas RGBA pixels, for [readLuma]. */
export function rgbaToLuma(rgba: Uint8ClampedArray, width: number, height: number): Uint8Array {
  const out = new Uint8Array(width * height);
  for (let i = 0, j = 0; j < out.length; i += 4, j++) {
    out[j] = (rgba[i] * 77 + rgba[i + 1] * 150 + rgba[i + 2] * 29) >> 8;
  }
  return out;
}
