/* synth.c - writes the synthetic digits of tests/fixtures.h as IDX files, for
 * the network tests (tests/net/run.sh): the same data the Check cluster tests
 * train on.
 *
 *   synth DIR STEM N SEED     writes DIR/STEM-{images-idx3,labels-idx1}-ubyte.gz
 *                             and prints the two paths
 */
#include <stdio.h>
#include <stdlib.h>

#include "fixtures.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: synth DIR STEM N SEED\n");
        return 2;
    }
    char img[FIXTURES_PATH_MAX], lbl[FIXTURES_PATH_MAX];
    long n = strtol(argv[3], NULL, 10);
    unsigned long long seed = strtoull(argv[4], NULL, 10);
    if (n <= 0 ||
        fixtures_synth_write(argv[1], argv[2], (size_t)n, seed, 1, img, lbl, sizeof img) != 0) {
        fprintf(stderr, "synth: could not write %ld examples to %s\n", n, argv[1]);
        return 1;
    }
    printf("%s\n%s\n", img, lbl);
    return 0;
}
