/* main.c - psd's command line: parse, load the placement, run the shard.
 *
 * Exit status: 0 after a clean stop (SIGTERM/SIGINT), 2 for a usage error,
 * 1 for any other failure (bad placement, bad checkpoint, cannot listen).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "kernels.h"
#include "placement.h"
#include "psd.h"
#include "secure.h"
#include "util.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: psd --placement FILE [--node ID] [--state-dir DIR] [--fresh] [--verbose]\n"
            "           [--max-connections N] [--handshake-timeout S] [--idle-timeout S]\n"
            "           [--frame-timeout S]\n"
            "\n"
            "Serve one shard of the model's parameters (docs/protocol.md).\n"
            "\n"
            "  --placement FILE  the placement file (docs/placement.md); required\n"
            "  --node ID         this daemon's ps node in FILE (default: the host name)\n"
            "  --state-dir DIR   where checkpoints are written and resumed from\n"
            "                    (default: the current directory; created if missing)\n"
            "  --fresh           ignore an existing checkpoint and start from the job's seed\n"
            "                    (the next checkpoint replaces it)\n"
            "  --verbose         also log DEBUG lines\n"
            "  --max-connections N   connections held at once; more are refused with\n"
            "                    ERROR BUSY (default 1024)\n"
            "  --handshake-timeout S HELLO must arrive within S seconds (default 10)\n"
            "  --idle-timeout S  close a connection with no request pending and nothing\n"
            "                    received for S seconds (default 600; 0: never)\n"
            "  --frame-timeout S a frame must be complete S seconds after its first byte\n"
            "                    (default 60)\n"
            "  -h, --help        this text\n"
            "\n"
            "With \"auth\": {\"key_file\": F} in the placement, every connection must prove\n"
            "it holds that cluster key and is encrypted and authenticated (docs/security.md);\n"
            "psd refuses to start if F is missing, malformed or readable by group or others.\n"
            "Checkpoints go to DIR/shard<N>.ckpt every job.checkpoint_interval_s seconds,\n"
            "on a CHECKPOINT request and on SIGTERM/SIGINT (then psd exits 0).  A corrupt\n"
            "or foreign checkpoint stops psd (exit 1) unless --fresh is given.\n"
            "Exit status: 0 clean stop, 1 runtime error, 2 usage error.\n");
}

enum {
    OPT_PLACEMENT = 256,
    OPT_NODE,
    OPT_STATE_DIR,
    OPT_FRESH,
    OPT_VERBOSE,
    OPT_MAX_CONNS,
    OPT_HANDSHAKE,
    OPT_IDLE,
    OPT_FRAME
};

static const struct option long_opts[] = {
    {"placement", required_argument, NULL, OPT_PLACEMENT},
    {"node", required_argument, NULL, OPT_NODE},
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"fresh", no_argument, NULL, OPT_FRESH},
    {"verbose", no_argument, NULL, OPT_VERBOSE},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNS},
    {"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE},
    {"idle-timeout", required_argument, NULL, OPT_IDLE},
    {"frame-timeout", required_argument, NULL, OPT_FRAME},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

int main(int argc, char **argv)
{
    const char *placement_path = NULL, *node = NULL, *state_dir = ".";
    int fresh = 0, verbose = 0, c;
    long max_conns = PSD_MAX_CONNS, handshake_s = PSD_HANDSHAKE_MS / 1000,
         idle_s = PSD_IDLE_MS / 1000, frame_s = PSD_FRAME_MS / 1000;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(stdout);
            return 0;
        case OPT_PLACEMENT: placement_path = optarg; break;
        case OPT_NODE: node = optarg; break;
        case OPT_STATE_DIR: state_dir = optarg; break;
        case OPT_FRESH: fresh = 1; break;
        case OPT_VERBOSE: verbose = 1; break;
        case OPT_MAX_CONNS:
            if (util_parse_long(optarg, 1, 1000000, &max_conns) != 0) {
                fprintf(stderr, "psd: --max-connections: expected 1..1000000, got '%s'\n", optarg);
                return 2;
            }
            break;
        case OPT_HANDSHAKE:
        case OPT_IDLE:
        case OPT_FRAME: {
            long *dst = c == OPT_HANDSHAKE ? &handshake_s : c == OPT_IDLE ? &idle_s : &frame_s;
            if (util_parse_long(optarg, c == OPT_IDLE ? 0 : 1, 86400, dst) != 0) {
                fprintf(stderr, "psd: %s: expected seconds %s..86400, got '%s'\n",
                        argv[optind - 1] ? argv[optind - 1] : "timeout", c == OPT_IDLE ? "0" : "1",
                        optarg);
                return 2;
            }
            break;
        }
        case ':':
            fprintf(stderr, "psd: %s needs a value\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        default:
            fprintf(stderr, "psd: unknown option '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "psd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!placement_path) {
        fprintf(stderr, "psd: --placement FILE is required\n");
        usage(stderr);
        return 2;
    }
    if (node && !*node) {
        fprintf(stderr, "psd: --node: empty id\n");
        return 2;
    }
    if (!*state_dir) {
        fprintf(stderr, "psd: --state-dir: empty path\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char err[1024];
    if (kern_init(err, sizeof err) != 0) {
        fprintf(stderr, "psd: %s\n", err);
        return 1;
    }
    placement pl;
    const placement_node *me;
    if (placement_load(placement_path, &pl, err, sizeof err) != 0) {
        fprintf(stderr, "psd: %s\n", err);
        return 1;
    }
    if (placement_node_select(&pl, node, PLACEMENT_ROLE_PS, &me, err, sizeof err) != 0) {
        fprintf(stderr, "psd: %s\n", err);
        placement_free(&pl);
        return 1;
    }
    cnn_model model;
    if (placement_model_init(&pl, &model, err, sizeof err) != 0) {
        fprintf(stderr, "psd: %s\n", err);
        placement_free(&pl);
        return 1;
    }
    uint8_t key[PLACEMENT_KEY_SIZE];
    char key_path[4096] = "";
    int have_key = placement_auth_key(&pl, key, key_path, sizeof key_path, err, sizeof err);
    if (have_key < 0 || (have_key && secure_init() != 0)) {
        fprintf(stderr, "psd: %s\n", have_key < 0 ? err : "cannot initialise libsodium");
        placement_free(&pl);
        return 1;
    }
    psd_config cfg = {
        .pl = &pl, .me = me, .model = &model, .state_dir = state_dir,
        .fresh = fresh, .verbose = verbose, .max_conns = (int)max_conns,
        .handshake_ms = handshake_s * 1000, .idle_ms = idle_s ? idle_s * 1000 : -1,
        .frame_ms = frame_s * 1000,
        .key = have_key ? key : NULL, .key_path = key_path,
    };
    int rc = psd_server_run(&cfg);
    secure_wipe(key, sizeof key);
    placement_free(&pl);
    return rc;
}
