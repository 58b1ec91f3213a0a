#version 450
// Draws one frame of the demo game into an RGBA8 storage buffer (R in the low byte).
//
// All geometry arrives from the CPU already in pixel space, in fixed point with 4 fractional
// bits (1/16 px), and every test here is integer arithmetic: the same scene gives bit-identical
// pixels on any device, which the checker relies on when it renders the same game.
// Layout of `Frame` is the contract with edge-agent/src/render.rs (`FrameUniform`).

layout(local_size_x = 16, local_size_y = 16, local_size_z = 1) in;

const int MAX_BODIES = 16;
const int SUB = 16;          // fixed-point steps per pixel
const int STAMP_X = 16;      // stamp origin in px (protocol::stamp: one cell of margin)
const int STAMP_Y = 16;
const int STAMP_CELL = 16;
const int STAMP_COLS = 32;
const int STAMP_ROWS = 8;

layout(std140, set = 0, binding = 0) uniform Frame {
    ivec4 dims;       // width, height, body_count, flash (ticks left)
    ivec4 hud;        // unused, digit count, border px, thrust (0/1)
    ivec4 digit_box;  // left x, top y, digit width, digit height (px)
    ivec4 digit_geo;  // pitch (px), segment thickness (px), grid step x (px), grid step y (px)
    vec4 grid_inv;    // 1 / grid step x, 1 / grid step y, unused, unused
    ivec4 ship_ab;    // vertex a.xy, vertex b.xy (1/16 px, counter-clockwise on screen)
    ivec4 ship_c;     // vertex c.xy, unused
    ivec4 ship_box;   // min x, min y, max x, max y (px, inclusive)
    ivec4 flame_ab;
    ivec4 flame_c;
    ivec4 flame_box;
    ivec4 bodies[MAX_BODIES]; // centre x, centre y, radius (1/16 px), packed RGBA colour
    uvec4 digit_segments[2];  // segments a..g (bits 0..6) of digit slot i at [i / 4][i % 4]
    uvec4 stamp[2];   // Stamp::to_bits(): bit i is (word[i / 32] >> (i % 32)) & 1
} f;

layout(std430, set = 0, binding = 1) writeonly buffer Rgba {
    uint px[];
} rgba;

// Colours are packed RGBA8, R in the low byte. The palette of the bodies lives on the CPU
// (render.rs): indexing a constant array here costs a copy per access on some drivers.
const uint BACKGROUND = 0xFF1C100Eu; // 14, 16, 28
const uint GRID = 0xFF301E1Au;       // 26, 30, 48
const uint BORDER = 0xFF96685Au;     // 90, 104, 150
const uint FLAME = 0xFF2896FFu;      // 255, 150, 40
const uint SHIP = 0xFFFFF0E8u;       // 232, 240, 255
const uint DIGIT = 0xFFFAFAFAu;      // 250, 250, 250

bool in_box(ivec2 p, ivec4 box) {
    return p.x >= box.x && p.y >= box.y && p.x <= box.z && p.y <= box.w;
}

// Edge functions of a counter-clockwise triangle, all in 1/16 px; the bounding box test before
// keeps every product far from overflow (the CPU clamps triangle sizes).
bool in_triangle(ivec2 q, ivec2 a, ivec2 b, ivec2 c) {
    int e0 = (b.x - a.x) * (q.y - a.y) - (b.y - a.y) * (q.x - a.x);
    int e1 = (c.x - b.x) * (q.y - b.y) - (c.y - b.y) * (q.x - b.x);
    int e2 = (a.x - c.x) * (q.y - c.y) - (a.y - c.y) * (q.x - c.x);
    return e0 >= 0 && e1 >= 0 && e2 >= 0;
}

bool segment_lit(uint segs, ivec2 d, int w, int h, int t) {
    int mid = h / 2;
    int gy0 = (h - t) / 2;
    bool lit = false;
    lit = lit || ((segs & 0x01u) != 0u && d.y < t);                               // a: top
    lit = lit || ((segs & 0x02u) != 0u && d.x >= w - t && d.y <= mid);            // b: top right
    lit = lit || ((segs & 0x04u) != 0u && d.x >= w - t && d.y >= mid);            // c: bottom right
    lit = lit || ((segs & 0x08u) != 0u && d.y >= h - t);                          // d: bottom
    lit = lit || ((segs & 0x10u) != 0u && d.x < t && d.y >= mid);                 // e: bottom left
    lit = lit || ((segs & 0x20u) != 0u && d.x < t && d.y <= mid);                 // f: top left
    lit = lit || ((segs & 0x40u) != 0u && d.y >= gy0 && d.y < gy0 + t);           // g: middle
    return lit;
}

void main() {
    int width = f.dims.x;
    int height = f.dims.y;
    ivec2 p = ivec2(gl_GlobalInvocationID.xy);
    if (p.x >= width || p.y >= height) {
        return;
    }
    uint index = uint(p.y * width + p.x);

    // The stamp overrides everything under it: test it first and stop there.
    ivec2 s = p - ivec2(STAMP_X, STAMP_Y);
    if (s.x >= 0 && s.y >= 0 && s.x < STAMP_COLS * STAMP_CELL && s.y < STAMP_ROWS * STAMP_CELL) {
        uint bit = uint((s.y / STAMP_CELL) * STAMP_COLS + s.x / STAMP_CELL);
        uint word = f.stamp[bit >> 7u][(bit >> 5u) & 3u];
        rgba.px[index] = ((word >> (bit & 31u)) & 1u) != 0u ? 0xFFFFFFFFu : 0xFF000000u;
        return;
    }

    // Background with a subtle grid, one line per 1000 game units.
    // x is on a line when it is a multiple of the step; the float quotient (with half a pixel
    // of margin, far above float error) avoids an integer division per pixel.
    uint colour = BACKGROUND;
    ivec2 cell = ivec2((vec2(p) + 0.5) * f.grid_inv.xy);
    if (cell.x * f.digit_geo.z == p.x || cell.y * f.digit_geo.w == p.y) {
        colour = GRID;
    }

    // Arena border, tinted red while the hit flash lasts.
    int border = f.hud.z;
    if (p.x < border || p.y < border || p.x >= width - border || p.y >= height - border) {
        int flash = f.dims.w;
        colour = flash > 0 ? (0xFF3C00FFu | (uint(max(40, 120 - flash * 8)) << 8)) : BORDER;
    }

    ivec2 q = p * SUB + ivec2(SUB / 2); // pixel centre, 1/16 px

    int body_count = f.dims.z;
    for (int i = 0; i < body_count; ++i) {
        ivec4 b = f.bodies[i];
        ivec2 d = q - b.xy;
        if (abs(d.x) <= b.z && abs(d.y) <= b.z && d.x * d.x + d.y * d.y <= b.z * b.z) {
            colour = uint(b.w);
        }
    }

    if (f.hud.w != 0 && in_box(p, f.flame_box) && in_triangle(q, f.flame_ab.xy, f.flame_ab.zw, f.flame_c.xy)) {
        colour = FLAME;
    }
    if (in_box(p, f.ship_box) && in_triangle(q, f.ship_ab.xy, f.ship_ab.zw, f.ship_c.xy)) {
        colour = SHIP;
    }

    // Score: 7-segment digits right-aligned in the top-right corner.
    int digits = f.hud.y;
    int pitch = f.digit_geo.x;
    ivec2 dp = p - f.digit_box.xy;
    if (dp.x >= 0 && dp.y >= 0 && dp.x < digits * pitch && dp.y < f.digit_box.w) {
        int slot = dp.x / pitch;
        ivec2 d = ivec2(dp.x - slot * pitch, dp.y);
        if (d.x < f.digit_box.z) {
            uint segments = f.digit_segments[slot >> 2][slot & 3];
            if (segment_lit(segments, d, f.digit_box.z, f.digit_box.w, f.digit_geo.y)) {
                colour = DIGIT;
            }
        }
    }

    rgba.px[index] = colour;
}
