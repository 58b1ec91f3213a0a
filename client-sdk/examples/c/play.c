/*
 * A C client of the edgeplay SDK: connects to an edge, takes N frames and checks that their
 * numbers increase and that every frame stamp reads, sends one key press and waits until a
 * frame shows it applied, prints the session's stats, and closes.
 *
 *   cc -std=c11 -I client-sdk/include client-sdk/examples/c/play.c \
 *      -L target/debug -ledgeplay_client -Wl,-rpath,target/debug -o play
 *   ./play 127.0.0.1:4433 <fingerprint> <token> [frames]
 *
 * It prints one line per check and exits 0 when all hold, 1 otherwise.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "edgeplay.h"

static int fail(const char *what) {
    const char *why = ep_last_error();
    fprintf(stderr, "play: %s: %s (status %d)\n", what, why ? why : "no detail",
            (int)ep_last_status());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s ADDR FINGERPRINT TOKEN [FRAMES]\n", argv[0]);
        return 2;
    }
    long frames = argc > 4 ? strtol(argv[4], NULL, 10) : 60;
    if (frames < 2) frames = 2;

    EpOptions opts = {.worker_threads = 2, .connect_timeout_ms = 60000};
    EpSession *s = ep_client_connect(argv[1], argv[2], argv[3], &opts);
    if (!s) return fail("connect");
    printf("connected to %s\n", argv[1]);

    /* N frames in increasing order, each with a readable stamp. */
    uint32_t last = 0;
    uint64_t g2g_sum = 0;
    for (long i = 0; i < frames; i++) {
        EpFrame f;
        EpStatus rc = ep_session_next_frame(s, 10000, &f);
        if (rc == EP_STATUS_TIMEOUT) {
            fprintf(stderr, "play: no frame in 10 s\n");
            ep_session_close(s);
            return 1;
        }
        if (rc != EP_STATUS_OK) {
            int r = fail("next frame");
            ep_session_close(s);
            return r;
        }
        if (i > 0 && f.frame <= last) {
            fprintf(stderr, "play: frame %" PRIu32 " after %" PRIu32 "\n", f.frame, last);
            ep_frame_release(&f);
            ep_session_close(s);
            return 1;
        }
        if (!f.has_stamp || f.stamp.frame != f.frame || !f.y || !f.uv ||
            f.y_stride < f.width || f.uv_stride < f.width) {
            fprintf(stderr, "play: frame %" PRIu32 " has no valid stamp or planes\n", f.frame);
            ep_frame_release(&f);
            ep_session_close(s);
            return 1;
        }
        last = f.frame;
        g2g_sum += f.glass_to_glass_us;
        if (i == 0) printf("first frame %" PRIu32 " %" PRIu32 "x%" PRIu32 "\n", f.frame, f.width, f.height);
        ep_frame_release(&f);
    }
    printf("frames %ld in order, last %" PRIu32 ", mean glass-to-glass %.2f ms\n", frames, last,
           (double)g2g_sum / (double)frames / 1000.0);

    /* One key press; the stamp's input_seq shows when the edge applied it. */
    EpInput press = {.kind = EP_INPUT_KIND_KEY, .key = "ArrowUp", .down = 1};
    uint64_t seq = 0;
    if (ep_session_send_input(s, &press, &seq) != EP_STATUS_OK) {
        int r = fail("send input");
        ep_session_close(s);
        return r;
    }
    printf("input %" PRIu64 " sent\n", seq);
    int applied = 0;
    for (int i = 0; i < 600 && !applied; i++) {
        EpFrame f;
        EpStatus rc = ep_session_next_frame(s, 10000, &f);
        if (rc != EP_STATUS_OK) {
            int r = fail("next frame after input");
            ep_session_close(s);
            return r;
        }
        if (f.has_stamp && f.stamp.input_seq >= seq) {
            printf("input %" PRIu64 " applied at frame %" PRIu32 " tick %" PRIu32 "\n", seq,
                   f.stamp.frame, f.stamp.tick);
            applied = 1;
        }
        ep_frame_release(&f);
    }
    if (!applied) {
        fprintf(stderr, "play: input %" PRIu64 " never applied\n", seq);
        ep_session_close(s);
        return 1;
    }

    /* A malformed input is refused with a message, and the session goes on. */
    EpInput bad = {.kind = EP_INPUT_KIND_KEY, .key = "NoSuchKey", .down = 1};
    if (ep_session_send_input(s, &bad, NULL) != EP_STATUS_INVALID_ARGUMENT) {
        fprintf(stderr, "play: an unknown key was accepted\n");
        ep_session_close(s);
        return 1;
    }
    printf("bad input refused: %s\n", ep_last_error());

    if (ep_session_request_keyframe(s) != EP_STATUS_OK) {
        int r = fail("request keyframe");
        ep_session_close(s);
        return r;
    }
    EpStats st;
    if (ep_session_stats(s, &st) != EP_STATUS_OK) {
        int r = fail("stats");
        ep_session_close(s);
        return r;
    }
    printf("stats: decoded %" PRIu64 " skipped %" PRIu64 " decoded_fps_1s %.1f received_kbps_1s %.0f"
           " rtt %" PRIu64 " us input applied %" PRIu64 "\n",
           st.frames_decoded, st.frames_skipped, st.decoded_fps_1s, st.received_kbps_1s, st.rtt_us,
           st.input_applied);
    if (ep_session_close(s) != EP_STATUS_OK) return fail("close");
    printf("closed\n");
    return 0;
}
