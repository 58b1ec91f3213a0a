#version 450
// Draws one frame of the demo game into an RGBA8 storage buffer (R in the low byte).
//
// Five passes from this one source, chosen by the specialization constant PASS, one workgroup
// per 16x16 px tile, in this order:
//   0: the whole picture: background, grid and arena border;
//   1: bodies, 2: flame and ship, 3: score digits, each only on the tiles the CPU found them to
//      touch (indirect dispatch over a job list);
//   4: the stamp, one workgroup per cell. Its tiles never get jobs: nothing draws under it.
// Why: CPU Vulkan (lavapipe) runs both sides of every branch under a mask, so a shape's cost
// would be paid by every pixel; the tile jobs make it paid only where the shape is.
//
// All geometry arrives from the CPU in pixel space, in fixed point with 4 fractional bits
// (1/16 px), and every test is integer arithmetic: the same scene gives bit-identical pixels on
// any device. The blocks below are the contract with edge-agent/src/render.rs.

layout(local_size_x = 16, local_size_y = 16, local_size_z = 1) in;

layout(constant_id = 0) const int PASS = 0;

const int MAX_BODIES = 16;
const int TILE = 16;         // tile side in px = workgroup size
const int SUB = 16;          // fixed-point steps per pixel
const int STAMP_X = 16;      // stamp origin in px (protocol::stamp: one cell of margin)
const int STAMP_Y = 16;
const int STAMP_CELL = 16;
const int STAMP_COLS = 32;
const int STAMP_ROWS = 8;

struct Triangle {
    ivec4 ab;   // vertex a.xy, vertex b.xy (1/16 px, counter-clockwise on screen)
    ivec4 c;    // vertex c.xy, packed colour, unused
    ivec4 box;  // min x, min y, max x, max y (px, inclusive)
};

layout(std140, set = 0, binding = 0) uniform Frame {
    ivec4 dims;       // width, height, flash (ticks left), border (px)
    ivec4 digit_box;  // left x, top y, digit width, digit height (px)
    ivec4 digit_geo;  // pitch (px), segment thickness (px), grid step x (px), grid step y (px)
    vec4 grid_inv;    // 1 / grid step x, 1 / grid step y, unused, unused
    ivec4 bodies[MAX_BODIES]; // centre x, centre y, radius (1/16 px), packed colour
    Triangle triangles[2];    // 0: flame, 1: ship (drawn in that order)
    uvec4 digit_segments[2];  // segments a..g (bits 0..6) of digit slot i at [i / 4][i % 4]
    uvec4 stamp[2];   // Stamp::to_bits(): bit i is (word[i / 32] >> (i % 32)) & 1
} f;

layout(std430, set = 0, binding = 1) writeonly buffer Rgba {
    uint px[];
} rgba;

// Written by the CPU every frame: one VkDispatchIndirectCommand per object pass (x = number of
// jobs; w = index of the pass's first job), then the jobs: (tile x | tile y << 16, object mask).
layout(std430, set = 0, binding = 3) readonly buffer Jobs {
    uvec4 dispatch[3];
    uvec2 list[];
} jobs;

// Packed RGBA8, R in the low byte. The bodies' palette lives on the CPU (render.rs).
const uint BACKGROUND = 0xFF1C100Eu; // 14, 16, 28
const uint GRID = 0xFF301E1Au;       // 26, 30, 48
const uint BORDER = 0xFF96685Au;     // 90, 104, 150
const uint DIGIT = 0xFFFAFAFAu;      // 250, 250, 250

// Edge functions of a counter-clockwise triangle in 1/16 px. Only pixels of tiles that touch
// the triangle's box get here, and the CPU bounds triangle sizes: no product overflows.
bool in_triangle(ivec2 q, ivec2 a, ivec2 b, ivec2 c) {
    int e0 = (b.x - a.x) * (q.y - a.y) - (b.y - a.y) * (q.x - a.x);
    int e1 = (c.x - b.x) * (q.y - b.y) - (c.y - b.y) * (q.x - b.x);
    int e2 = (a.x - c.x) * (q.y - c.y) - (a.y - c.y) * (q.x - c.x);
    return min(e0, min(e1, e2)) >= 0;
}

bool segment_lit(uint segs, ivec2 d, int w, int h, int t) {
    int mid = h / 2;
    int gy0 = (h - t) / 2;
    bool left = d.x < t;
    bool right = d.x >= w - t;
    bool upper = d.y <= mid;
    bool lower = d.y >= mid;
    uint lit = 0u;
    lit |= d.y < t ? 0x01u : 0u;                       // a: top
    lit |= right && upper ? 0x02u : 0u;                // b: top right
    lit |= right && lower ? 0x04u : 0u;                // c: bottom right
    lit |= d.y >= h - t ? 0x08u : 0u;                  // d: bottom
    lit |= left && lower ? 0x10u : 0u;                 // e: bottom left
    lit |= left && upper ? 0x20u : 0u;                 // f: top left
    lit |= d.y >= gy0 && d.y < gy0 + t ? 0x40u : 0u;   // g: middle
    return (lit & segs) != 0u;
}

// Four horizontally adjacent pixels per invocation: the per-invocation overhead of CPU
// Vulkan is a good part of this pass's cost.
void background() {
    int width = f.dims.x;
    int height = f.dims.y;
    ivec2 p = ivec2(gl_GlobalInvocationID.x * 4u, gl_GlobalInvocationID.y);
    if (p.x >= width || p.y >= height) {
        return;
    }
    uint index = uint(p.y * width + p.x);
    int border = f.dims.w;
    int flash = f.dims.z;
    uint edge = flash > 0 ? (0xFF3C00FFu | (uint(max(40, 120 - flash * 8)) << 8)) : BORDER;

    // A grid line where the coordinate is a multiple of the step; the float quotient (half a
    // pixel of margin, far above float error) spares an integer division per pixel.
    int row = int((float(p.y) + 0.5) * f.grid_inv.y);
    bool row_grid = row * f.digit_geo.w == p.y;
    bool row_edge = min(p.y, height - 1 - p.y) < border;
    for (int k = 0; k < 4; ++k) {
        int x = p.x + k;
        int col = int((float(x) + 0.5) * f.grid_inv.x);
        uint colour = row_grid || col * f.digit_geo.z == x ? GRID : BACKGROUND;
        // Arena border, tinted red while the hit flash lasts.
        colour = row_edge || min(x, width - 1 - x) < border ? edge : colour;
        rgba.px[index + uint(k)] = colour;
    }
}

void objects() {
    int width = f.dims.x;
    int height = f.dims.y;
    uvec2 job = jobs.list[jobs.dispatch[PASS - 1].w + gl_WorkGroupID.x];
    ivec2 p = ivec2(job.x & 0xFFFFu, job.x >> 16) * TILE + ivec2(gl_LocalInvocationID.xy);
    if (p.x >= width || p.y >= height) {
        return;
    }
    ivec2 q = p * SUB + ivec2(SUB / 2); // pixel centre, 1/16 px
    uint colour = 0u;                    // 0: nothing drawn here
    uint mask = job.y;

    if (PASS == 1) {
        // Bodies in index order; the last one hit wins.
        while (mask != 0u) {
            int i = findLSB(mask);
            mask &= mask - 1u;
            ivec4 b = f.bodies[i];
            ivec2 d = q - b.xy;
            if (d.x * d.x + d.y * d.y <= b.z * b.z) {
                colour = uint(b.w);
            }
        }
    } else if (PASS == 2) {
        while (mask != 0u) {
            int i = findLSB(mask);
            mask &= mask - 1u;
            Triangle t = f.triangles[i];
            bool inside = p.x >= t.box.x && p.y >= t.box.y && p.x <= t.box.z && p.y <= t.box.w;
            if (inside && in_triangle(q, t.ab.xy, t.ab.zw, t.c.xy)) {
                colour = uint(t.c.z);
            }
        }
    } else {
        // Score: 7-segment digits right-aligned in the top-right corner.
        int pitch = f.digit_geo.x;
        ivec2 dp = p - f.digit_box.xy;
        int slot = max(dp.x, 0) / pitch;
        ivec2 d = ivec2(dp.x - slot * pitch, dp.y);
        if (dp.x >= 0 && dp.y >= 0 && slot < 8 && d.x < f.digit_box.z && d.y < f.digit_box.w) {
            uint segments = f.digit_segments[slot >> 2][slot & 3];
            if (segment_lit(segments, d, f.digit_box.z, f.digit_box.w, f.digit_geo.y)) {
                colour = DIGIT;
            }
        }
    }

    if (colour != 0u) {
        rgba.px[uint(p.y * width + p.x)] = colour;
    }
}

// Dispatched as STAMP_COLS x STAMP_ROWS workgroups: the workgroup is the cell (and the bit).
void stamp() {
    ivec2 cell = ivec2(gl_WorkGroupID.xy);
    ivec2 p = ivec2(STAMP_X, STAMP_Y) + cell * STAMP_CELL + ivec2(gl_LocalInvocationID.xy);
    if (p.x >= f.dims.x || p.y >= f.dims.y) {
        return;
    }
    uint bit = uint(cell.y * STAMP_COLS + cell.x);
    uint word = f.stamp[bit >> 7u][(bit >> 5u) & 3u];
    rgba.px[uint(p.y * f.dims.x + p.x)] = ((word >> (bit & 31u)) & 1u) != 0u ? 0xFFFFFFFFu : 0xFF000000u;
}

void main() {
    if (PASS == 0) {
        background();
    } else if (PASS == 4) {
        stamp();
    } else {
        objects();
    }
}
