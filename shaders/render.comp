#version 450
#extension GL_EXT_control_flow_attributes : require
// Draws one frame of the demo game and writes it as NV12 (BT.709 limited range) in the same
// pass: the RGBA picture never goes to memory (only the WRITE_RGBA variant, for tests, also
// stores it).
//
// One workgroup per 16x16 px tile, one invocation per 16x2 px band of it. An invocation shades
// its 32 pixels in registers, four 4x2 px blocks one after the other, and stores them as three
// 16-byte vectors: a row of Y, the next row of Y, and the band's interleaved UV (chroma from
// the average of each 2x2 px). A pixel carries its luma and its two chroma dot products (the
// chroma of a 2x2 block is linear in its pixels' until the final rounding), each computed once
// per colour, not once per pixel.
//
// Why this shape: CPU Vulkan (lavapipe) runs a workgroup's invocations in SIMD lanes along
// local x, pays for each storage access with a loop over the lanes, and runs both sides of
// every `if` under a mask. So the pass makes the fewest storage accesses a picture allows (one
// word of tile mask in, three vectors out per 32 px), a workgroup is exactly one 8-lane SIMD
// row, and every optional shape sits in a loop over the shapes whose trip count is the same for
// the whole tile (the CPU's bin of shapes touching it), entered once per 4x2 block: a loop run
// zero times costs one test, an `if` would cost its body at every pixel.
//
// All geometry arrives from the CPU in pixel space, in fixed point with 4 fractional bits
// (1/16 px), and every test is integer arithmetic: the same scene gives bit-identical pixels on
// any device. The blocks below are the contract with media/src/render.rs; the colour
// arithmetic is the integer form of media/src/convert.rs (`cpu_nv12_reference`).

const int TILE = 16;         // tile side in px: the workgroup's footprint, one stamp cell
const int BAND = 2;          // rows per invocation (one row of chroma)

layout(local_size_x = 8, local_size_y = 1, local_size_z = 1) in; // TILE / BAND bands

// The kind of tile this pipeline draws (render.rs `Kind`): 0 background only, 1 background and
// bodies, 2 background and every shape, 3 a cell of the stamp.
layout(constant_id = 0) const int KIND = 0;
// 1: also store the RGBA picture (binding 1), for tests and debugging.
layout(constant_id = 1) const int WRITE_RGBA = 0;

const int MAX_BODIES = 16;
const int SUB = 16;          // fixed-point steps per pixel
const int STAMP_TILE_X = 1;  // the stamp's first tile (protocol::stamp: one cell of margin)
const int STAMP_TILE_Y = 1;
const int STAMP_COLS = 32;   // one cell per tile
const int STAMP_ROWS = 8;

// Bits of a tile's mask (see render.rs `Binner`).
const uint BODY_BITS = 0xFFFFu;     // bit i: body i
const int TRIANGLE_SHIFT = 16;      // bits 16, 17: flame, ship
const uint DIGITS_BIT = 1u << 18;   // the score

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

// Four pixels per vector, R in the low byte.
layout(std430, set = 0, binding = 1) writeonly buffer Rgba {
    uvec4 px[];
} rgba;

// Sixteen bytes per vector: Y plane, then the interleaved UV plane, rows of `width` bytes.
layout(std430, set = 0, binding = 2) writeonly buffer Nv12 {
    uvec4 bytes[];
} nv12;

// Written by the CPU every frame: one VkDispatchIndirectCommand per kind of tile (x = number of
// tiles; w = index of the kind's first job), then the jobs: (tile x | tile y << 16, the bit set
// of the shapes touching the tile).
// A fifth command lists every background-only tile (the first command only those to redraw).
layout(std430, set = 0, binding = 3) readonly buffer Jobs {
    uvec4 dispatch[5];
    uvec2 list[];
} jobs;

// Packed RGBA8, R in the low byte. The bodies' palette lives on the CPU (render.rs).
const uint BACKGROUND = 0xFF1C100Eu; // 14, 16, 28
const uint GRID = 0xFF301E1Au;       // 26, 30, 48
const uint BORDER = 0xFF96685Au;     // 90, 104, 150
const uint DIGIT = 0xFFFAFAFAu;      // 250, 250, 250

// BT.709 limited range, coefficients scaled by 2^16 (see convert.rs).
const int YR = 11966, YG = 40254, YB = 4064;
const int UR = -6596, UG = -22188, UB = 28784;
const int VR = 28784, VG = -26145, VB = -2639;

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

ivec3 unpack(uint c) {
    return ivec3(int(c & 255u), int((c >> 8) & 255u), int((c >> 16) & 255u));
}

uint luma(ivec3 c) {
    return uint(((YR * c.r + YG * c.g + YB * c.b + 32768) >> 16) + 16);
}

// Per-tile state every pixel's shading reads.
uint g_mask;
uint g_edge;
ivec3 g_edge_yuv;

// Four horizontally adjacent pixels: colour (only the WRITE_RGBA variant keeps it), luma, and
// the U and V dot products of their RGB (the chroma of a 2x2 block is that of the sum).
struct Row4 {
    uvec4 c;
    ivec4 y;
    ivec4 u;
    ivec4 v;
};

// Luma and the two chroma dot products of a colour.
ivec3 yuv(uint c) {
    ivec3 k = unpack(c);
    return ivec3(int(luma(k)), UR * k.r + UG * k.g + UB * k.b, VR * k.r + VG * k.g + VB * k.b);
}

Row4 solid(uint c) {
    ivec3 k = yuv(c);
    return Row4(uvec4(c), ivec4(k.x), ivec4(k.y), ivec4(k.z));
}

void paint(inout Row4 r, bvec4 hit, uint c, ivec3 k) {
    r.c = mix(r.c, uvec4(c), hit);
    r.y = mix(r.y, ivec4(k.x), hit);
    r.u = mix(r.u, ivec4(k.y), hit);
    r.v = mix(r.v, ivec4(k.z), hit);
}

bvec4 or4(bvec4 a, bvec4 b) {
    return notEqual(uvec4(a) | uvec4(b), uvec4(0u));
}

// The four pixels from `p` of a row whose grid and border facts are `row_grid` and `row_edge`:
// arena, grid lines, border (tinted red while the hit flash lasts).
Row4 background(ivec2 p, bool row_grid, bool row_edge) {
    ivec4 xs = p.x + ivec4(0, 1, 2, 3);
    // A grid line where the coordinate is a multiple of the step; the float quotient (half a
    // pixel of margin, far above float error) spares an integer division per pixel.
    ivec4 cols = ivec4((vec4(xs) + 0.5) * f.grid_inv.x);
    bvec4 grid = or4(equal(cols * f.digit_geo.z, xs), bvec4(row_grid));
    bvec4 edge = or4(lessThan(min(xs, f.dims.x - 1 - xs), ivec4(f.dims.w)), bvec4(row_edge));
    Row4 r = solid(BACKGROUND);
    paint(r, grid, GRID, yuv(GRID));
    paint(r, edge, g_edge, g_edge_yuv);
    return r;
}

// Whether pixel `p` is on a lit segment of the score.
bool digit_lit(ivec2 p) {
    int pitch = f.digit_geo.x;
    ivec2 dp = p - f.digit_box.xy;
    int slot = min(max(dp.x, 0) / pitch, 8);
    ivec2 d = ivec2(dp.x - slot * pitch, dp.y);
    bool in_slot = dp.x >= 0 && dp.y >= 0 && slot < 8 && d.x < f.digit_box.z && d.y < f.digit_box.w;
    uint segments = f.digit_segments[(slot & 7) >> 2][slot & 3];
    return in_slot && segment_lit(segments, d, f.digit_box.z, f.digit_box.w, f.digit_geo.y);
}

// Draws the shapes the tile's mask names over the four pixels from `p`.
void shapes(inout Row4 r, ivec2 p) {
    ivec4 qx = (p.x + ivec4(0, 1, 2, 3)) * SUB + SUB / 2; // pixel centres, 1/16 px
    int qy = p.y * SUB + SUB / 2;
    ivec4 xs = p.x + ivec4(0, 1, 2, 3);
    // Bodies in index order; the last one hit wins.
    for (uint bodies = g_mask & BODY_BITS; bodies != 0u; bodies &= bodies - 1u) {
        ivec4 b = f.bodies[findLSB(bodies)];
        ivec4 dx = qx - b.x;
        int dy = qy - b.y;
        paint(r, lessThanEqual(dx * dx + dy * dy, ivec4(b.z * b.z)), uint(b.w), yuv(uint(b.w)));
    }
    if (KIND != 2) {
        return;
    }
    // Flame, then ship: inside the box and on the inner side of the three edges.
    for (uint tris = (g_mask >> TRIANGLE_SHIFT) & 3u; tris != 0u; tris &= tris - 1u) {
        Triangle t = f.triangles[findLSB(tris)];
        ivec2 a = t.ab.xy, b = t.ab.zw, c = t.c.xy;
        ivec4 e0 = (b.x - a.x) * (qy - a.y) - (b.y - a.y) * (qx - a.x);
        ivec4 e1 = (c.x - b.x) * (qy - b.y) - (c.y - b.y) * (qx - b.x);
        ivec4 e2 = (a.x - c.x) * (qy - c.y) - (a.y - c.y) * (qx - c.x);
        bool row_in = p.y >= t.box.y && p.y <= t.box.w;
        bvec4 inside = equal(uvec4(greaterThanEqual(xs, ivec4(t.box.x)))
            & uvec4(lessThanEqual(xs, ivec4(t.box.z)))
            & uvec4(greaterThanEqual(min(e0, min(e1, e2)), ivec4(0)))
            & uvec4(row_in), uvec4(1u));
        paint(r, inside, uint(t.c.z), yuv(uint(t.c.z)));
    }
    // Score: 7-segment digits right-aligned in the top-right corner.
    for (uint digits = g_mask & DIGITS_BIT; digits != 0u; digits = 0u) {
        bvec4 lit = bvec4(digit_lit(p), digit_lit(p + ivec2(1, 0)), digit_lit(p + ivec2(2, 0)),
            digit_lit(p + ivec2(3, 0)));
        paint(r, lit, DIGIT, yuv(DIGIT));
    }
}

// The 4x2 px block at `p` (x a multiple of 4, y even) as its top and bottom words of Y and its
// word of UV (two 2x2 blocks); the WRITE_RGBA variant stores its pixels too.
uvec3 block(ivec2 p, bvec2 grid, bvec2 edge) {
    Row4 t = background(p, grid.x, edge.x);
    Row4 b = background(p + ivec2(0, 1), grid.y, edge.y);
    if (KIND == 1 || KIND == 2) {
        shapes(t, p);
        shapes(b, p + ivec2(0, 1));
    }
    if (WRITE_RGBA != 0) {
        uint at = uint(p.y * f.dims.x + p.x) / 4u;
        rgba.px[at] = t.c;
        rgba.px[at + uint(f.dims.x) / 4u] = b.c;
    }
    uvec4 ty = uvec4(t.y) << uvec4(0u, 8u, 16u, 24u);
    uvec4 by = uvec4(b.y) << uvec4(0u, 8u, 16u, 24u);
    ivec4 u = t.u + b.u;
    ivec4 v = t.v + b.v;
    // Sums of the left and right 2x2 blocks, rounded as convert.rs does.
    ivec4 sums = ivec4(u.x + u.y, v.x + v.y, u.z + u.w, v.z + v.w);
    uvec4 c = uvec4(clamp((sums + (128 << 18) + (1 << 17)) >> 18, 16, 240));
    return uvec3(ty.x | ty.y | ty.z | ty.w, by.x | by.y | by.z | by.w,
        c.x | (c.y << 8) | (c.z << 16) | (c.w << 24));
}

// A stamp tile: one cell, one bit, white or black.
void stamp(ivec2 tile, ivec2 p0) {
    ivec2 cell = tile - ivec2(STAMP_TILE_X, STAMP_TILE_Y);
    uint bit = uint(clamp(cell.y, 0, STAMP_ROWS - 1) * STAMP_COLS + clamp(cell.x, 0, STAMP_COLS - 1));
    uint word = f.stamp[bit >> 7u][(bit >> 5u) & 3u];
    uint c = ((word >> (bit & 31u)) & 1u) != 0u ? 0xFFFFFFFFu : 0xFF000000u;
    int width = f.dims.x;
    uint at = uint(p0.y * width + p0.x) / 4u;
    if (WRITE_RGBA != 0) {
        for (int i = 0; i < 4; ++i) {
            rgba.px[at + uint(i)] = uvec4(c);
            rgba.px[at + uint(width / 4 + i)] = uvec4(c);
        }
    }
    ivec3 k = yuv(c);
    uint y = uint(k.x) * 0x01010101u;
    uint uv = (uint(clamp((4 * k.y + (128 << 18) + (1 << 17)) >> 18, 16, 240))
        | (uint(clamp((4 * k.z + (128 << 18) + (1 << 17)) >> 18, 16, 240)) << 8)) * 0x00010001u;
    nv12.bytes[at / 4u] = uvec4(y);
    nv12.bytes[at / 4u + uint(width) / 16u] = uvec4(y);
    nv12.bytes[uint(f.dims.x * f.dims.y + (p0.y / 2) * width + p0.x) / 16u] = uvec4(uv);
}

void main() {
    int width = f.dims.x;
    int height = f.dims.y;
    uvec2 job = jobs.list[jobs.dispatch[KIND].w + gl_WorkGroupID.x];
    ivec2 tile = ivec2(job.x & 0xFFFFu, job.x >> 16);
    ivec2 p0 = tile * TILE + ivec2(0, int(gl_LocalInvocationID.x) * BAND);
    // Sizes are multiples of 16 x 8: a band is wholly inside or wholly outside.
    if (p0.y >= height) {
        return;
    }
    if (KIND == 3) {
        stamp(tile, p0);
        return;
    }
    g_mask = job.y;
    int flash = f.dims.z;
    g_edge = flash > 0 ? (0xFF3C00FFu | (uint(max(40, 120 - flash * 8)) << 8)) : BORDER;
    g_edge_yuv = yuv(g_edge);

    // Per row: on a grid line, in the border.
    ivec2 rows = p0.yy + ivec2(0, 1);
    ivec2 grid_row = ivec2((vec2(rows) + 0.5) * f.grid_inv.y);
    bvec2 grid = equal(grid_row * f.digit_geo.w, rows);
    bvec2 edge = lessThan(min(rows, height - 1 - rows), ivec2(f.dims.w));

    // Four blocks left to right, each word shifted in at the end of its vector.
    uvec4 top = uvec4(0u), bottom = uvec4(0u), uv = uvec4(0u);
    for (int i = 0; i < 4; ++i) {
        uvec3 words = block(p0 + ivec2(i * 4, 0), grid, edge);
        top = uvec4(top.yzw, words.x);
        bottom = uvec4(bottom.yzw, words.y);
        uv = uvec4(uv.yzw, words.z);
    }
    uint at = uint(p0.y * width + p0.x) / 16u;
    nv12.bytes[at] = top;
    nv12.bytes[at + uint(width) / 16u] = bottom;
    nv12.bytes[uint(width * height + (p0.y / 2) * width + p0.x) / 16u] = uv;
}
