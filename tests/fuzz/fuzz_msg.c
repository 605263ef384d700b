/* fuzz_msg.c - libFuzzer target: one payload through every message decoder.
 *
 * Input: byte 0 is the header's flags byte, the rest is the payload.  For
 * every message type 1..PROTO_MSG_MAX-1 the payload is handed to that type's
 * decoder in a frame of that type (so all of them see the same bytes), and
 * whatever decodes is re-encoded and must come back byte for byte
 * (fuzz_msg_check, tests/fuzz/common.c).  Each decoder is also handed the
 * frame labelled with the next type, which it must refuse as INVALID.
 *
 * libFuzzer's input is a heap copy of exactly `size` bytes, so a decoder
 * reading past the payload is an ASan report.
 */
#include <string.h>

#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_msg_table_check();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size - 1 > PROTO_MAX_FRAME - PROTO_HEADER_SIZE)
        return 0;
    proto_frame f;
    memset(&f, 0, sizeof f);
    f.hdr.version = PROTO_VERSION;
    f.hdr.flags = data[0];
    f.hdr.request_id = 0x01020304u;
    f.payload_len = size - 1;
    f.payload = f.payload_len ? data + 1 : NULL;
    f.hdr.length = (uint32_t)(PROTO_HEADER_SIZE + f.payload_len);

    for (int t = 1; t < PROTO_MSG_MAX; t++) {
        f.hdr.type = (uint8_t)t;
        int rc = fuzz_msg_check(&f, t);
        /* The frame decoder's size and flag check, on its own, agrees with
         * the decoder about frames it refuses outright. */
        if (proto_frame_check(&f, (uint8_t)t) != 0)
            FUZZ_ASSERT(rc != 0, "%s decoded a frame that proto_frame_check refuses",
                        proto_msg_name(t));
        f.hdr.type = (uint8_t)(t % (PROTO_MSG_MAX - 1) + 1);
        if (f.hdr.type != t)
            fuzz_msg_check(&f, t);
    }
    return 0;
}
