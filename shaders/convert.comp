#version 450
// RGBA8 → NV12, BT.709 limited range (Y 16..235, Cb/Cr 16..240), chroma from the average of
// each 2x2 block. One invocation per 8x2 pixel area (two 4x2 blocks: fewer invocations cost
// less on CPU Vulkan); every store is a whole uint word of Y (two per block, one per row) or
// of interleaved UV (one per block): no 8-bit storage needed.
// The arithmetic is the integer form in edge-agent/src/convert.rs (`cpu_nv12_reference`),
// which gives the same bytes.

layout(local_size_x = 16, local_size_y = 8, local_size_z = 1) in;

layout(std140, set = 0, binding = 0) uniform Frame {
    ivec4 dims; // width, height, ...: only the first member matters here
} f;

layout(std430, set = 0, binding = 1) readonly buffer Rgba {
    uint px[];
} rgba;

layout(std430, set = 0, binding = 2) writeonly buffer Nv12 {
    uint words[];
} nv12;

// Coefficients scaled by 2^16 (see convert.rs).
const int YR = 11966, YG = 40254, YB = 4064;
const int UR = -6596, UG = -22188, UB = 28784;
const int VR = 28784, VG = -26145, VB = -2639;

ivec3 unpack(uint c) {
    return ivec3(int(c & 255u), int((c >> 8) & 255u), int((c >> 16) & 255u));
}

uint luma(ivec3 c) {
    return uint(((YR * c.r + YG * c.g + YB * c.b + 32768) >> 16) + 16);
}

// `s` is the sum of four pixels.
uint chroma(ivec3 s, int kr, int kg, int kb) {
    int v = (kr * s.r + kg * s.g + kb * s.b + (128 << 18) + (1 << 17)) >> 18;
    return uint(clamp(v, 16, 240));
}

// One 4x2 block: two words of Y, one word of UV.
void block(int width, int height, int x0, int by) {
    int top = (by * 2) * width + x0;
    int bottom = top + width;

    ivec3 t0 = unpack(rgba.px[top]);
    ivec3 t1 = unpack(rgba.px[top + 1]);
    ivec3 t2 = unpack(rgba.px[top + 2]);
    ivec3 t3 = unpack(rgba.px[top + 3]);
    ivec3 b0 = unpack(rgba.px[bottom]);
    ivec3 b1 = unpack(rgba.px[bottom + 1]);
    ivec3 b2 = unpack(rgba.px[bottom + 2]);
    ivec3 b3 = unpack(rgba.px[bottom + 3]);

    nv12.words[top / 4] = luma(t0) | (luma(t1) << 8) | (luma(t2) << 16) | (luma(t3) << 24);
    nv12.words[bottom / 4] = luma(b0) | (luma(b1) << 8) | (luma(b2) << 16) | (luma(b3) << 24);

    ivec3 left = t0 + t1 + b0 + b1;
    ivec3 right = t2 + t3 + b2 + b3;
    uint u0 = chroma(left, UR, UG, UB);
    uint v0 = chroma(left, VR, VG, VB);
    uint u1 = chroma(right, UR, UG, UB);
    uint v1 = chroma(right, VR, VG, VB);
    int uv = (width * height + by * width + x0) / 4;
    nv12.words[uv] = u0 | (v0 << 8) | (u1 << 16) | (v1 << 24);
}

void main() {
    int width = f.dims.x;
    int height = f.dims.y;
    int bx = int(gl_GlobalInvocationID.x);
    int by = int(gl_GlobalInvocationID.y);
    if (bx >= width / 8 || by >= height / 2) {
        return;
    }
    block(width, height, bx * 8, by);
    block(width, height, bx * 8 + 4, by);
}
