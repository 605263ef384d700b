/* check_install.c - `make install` and the systemd units it installs.
 *
 * Runs `make install DESTDIR=<tmp> PREFIX=...` from the repository root (the
 * tests' working directory) and checks what lands where: the three programs
 * (executable), psd.service and workerd.service in /lib/systemd/system with
 * @PREFIX@ substituted, and the example placement in
 * /etc/psd/placement.conf.example.  Then `systemd-analyze verify` on the
 * installed units: it checks that ExecStart's binary exists, so the units are
 * verified as copies whose ExecStart points into DESTDIR; anything it prints
 * (an unknown or misspelt directive is only a warning, exit 0) fails the test.
 * A unit with a misspelt directive, and one whose binary is missing, must
 * fail the same check, so the check cannot pass vacuously.  Without
 * systemd-analyze (package systemd) those tests say so and pass.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixtures.h"

#define OUT_MAX 65536
#define CMD_MAX (4 * FIXTURES_PATH_MAX)

static char g_dir[FIXTURES_PATH_MAX]; /* DESTDIR, removed in teardown */
static char g_out[OUT_MAX];           /* what the last run() printed */

static void setup(void)
{
    g_dir[0] = 0;
    ck_assert_int_eq(fixtures_tmpdir_make(g_dir, sizeof g_dir), 0);
}

static void teardown(void)
{
    if (g_dir[0])
        fixtures_tmpdir_remove(g_dir);
}

/* Run cmd with /bin/sh, stdout and stderr into g_out.  Returns its exit
 * status, or -1 if it could not be run or was killed. */
static int run(const char *cmd)
{
    char full[CMD_MAX + 16];
    ck_assert_int_lt(snprintf(full, sizeof full, "%s 2>&1", cmd), (int)sizeof full);
    FILE *p = popen(full, "r");
    if (!p)
        return -1;
    size_t n = 0, r;
    char buf[4096];
    while ((r = fread(buf, 1, sizeof buf, p)) > 0) {
        size_t k = r < sizeof g_out - 1 - n ? r : sizeof g_out - 1 - n;
        memcpy(g_out + n, buf, k);
        n += k;
    }
    g_out[n] = 0;
    int st = pclose(p);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

static char *file_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0, r;
    char tmp[4096];
    while ((r = fread(tmp, 1, sizeof tmp, f)) > 0) {
        if (len + r + 1 > cap) {
            cap = (len + r + 1) * 2;
            char *nb = realloc(buf, cap);
            ck_assert_ptr_nonnull(nb);
            buf = nb;
        }
        memcpy(buf + len, tmp, r);
        len += r;
    }
    fclose(f);
    if (!buf) {
        buf = malloc(1);
        ck_assert_ptr_nonnull(buf);
    }
    buf[len] = 0;
    return buf;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(text, 1, strlen(text), f), strlen(text));
    ck_assert_int_eq(fclose(f), 0);
}

/* dir + "/" + rel, asserting that it fits. */
static void join(char *out, const char *dir, const char *rel)
{
    ck_assert_int_lt(snprintf(out, FIXTURES_PATH_MAX, "%s/%s", dir, rel), FIXTURES_PATH_MAX);
}

/* text with every occurrence of from replaced by to (malloc'd). */
static char *replace_all(const char *text, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), count = 0;
    for (const char *p = strstr(text, from); p; p = strstr(p + fl, from))
        count++;
    char *out = malloc(strlen(text) + count * (tl > fl ? tl - fl : 0) + 1);
    ck_assert_ptr_nonnull(out);
    char *o = out;
    const char *p = text, *q;
    while ((q = strstr(p, from))) {
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, to, tl);
        o += tl;
        p = q + fl;
    }
    strcpy(o, p);
    return out;
}

/* make install DESTDIR=g_dir PREFIX=prefix, from the repository root. */
static void make_install(const char *prefix)
{
    ck_assert_msg(access("Makefile", R_OK) == 0 && access("systemd/psd.service.in", R_OK) == 0,
                  "run the tests from the repository root (no Makefile or systemd/ here)");
    char cmd[CMD_MAX];
    ck_assert_int_lt(snprintf(cmd, sizeof cmd, "make --no-print-directory install DESTDIR='%s' PREFIX='%s'",
                              g_dir, prefix),
                     (int)sizeof cmd);
    int rc = run(cmd);
    ck_assert_msg(rc == 0, "%s: exit %d:\n%s", cmd, rc, g_out);
}

static void assert_executable(const char *path)
{
    struct stat st;
    ck_assert_msg(stat(path, &st) == 0, "%s: not installed (%s)", path, strerror(errno));
    ck_assert_msg(S_ISREG(st.st_mode), "%s: not a regular file", path);
    ck_assert_msg((st.st_mode & 0111) == 0111 && access(path, X_OK) == 0,
                  "%s: not executable by everyone (mode %o)", path, (unsigned)(st.st_mode & 07777));
}

/* The installed unit `name` (psd or workerd) runs prefix/bin/name. */
static void assert_unit(const char *name, const char *prefix)
{
    char path[FIXTURES_PATH_MAX], rel[256], want[FIXTURES_PATH_MAX + 64];
    snprintf(rel, sizeof rel, "lib/systemd/system/%s.service", name);
    join(path, g_dir, rel);
    struct stat st;
    ck_assert_msg(stat(path, &st) == 0, "%s: not installed", path);
    ck_assert_msg((st.st_mode & 0777) == 0644, "%s: mode %o, want 644", path,
                  (unsigned)(st.st_mode & 0777));
    char *t = file_text(path);
    ck_assert_ptr_nonnull(t);
    ck_assert_msg(!strstr(t, "@PREFIX@"), "%s: @PREFIX@ not substituted", path);
    snprintf(want, sizeof want, "\nExecStart=%s/bin/%s --placement /etc/psd/placement.conf", prefix, name);
    ck_assert_msg(strstr(t, want) != NULL, "%s: no line \"%s\"", path, want + 1);
    free(t);
}

START_TEST(test_install_files)
{
    make_install("/usr/local");
    const char *progs[] = {"psd", "workerd", "psctl"};
    char path[FIXTURES_PATH_MAX], rel[256];
    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++) {
        snprintf(rel, sizeof rel, "usr/local/bin/%s", progs[i]);
        join(path, g_dir, rel);
        assert_executable(path);
        /* The installed copy runs. */
        char cmd[CMD_MAX];
        snprintf(cmd, sizeof cmd, "'%s' --help", path);
        int rc = run(cmd);
        ck_assert_msg(rc == 0 && strstr(g_out, "usage:"), "%s: exit %d:\n%s", cmd, rc, g_out);
    }
    assert_unit("psd", "/usr/local");
    assert_unit("workerd", "/usr/local");

    /* psd keeps its checkpoints in its StateDirectory. */
    join(path, g_dir, "lib/systemd/system/psd.service");
    char *t = file_text(path);
    ck_assert_ptr_nonnull(t);
    ck_assert_msg(strstr(t, "\nStateDirectory=psd\n") && strstr(t, "--state-dir /var/lib/psd"),
                  "%s: no StateDirectory=psd with --state-dir /var/lib/psd", path);
    free(t);

    /* The example placement, byte for byte. */
    join(path, g_dir, "etc/psd/placement.conf.example");
    char *got = file_text(path), *want = file_text("conf/placement.example.conf");
    ck_assert_msg(got != NULL, "%s: not installed", path);
    ck_assert_ptr_nonnull(want);
    ck_assert_msg(strcmp(got, want) == 0, "%s differs from conf/placement.example.conf", path);
    free(got);
    free(want);
}
END_TEST

/* Another PREFIX lands in the units too. */
START_TEST(test_install_prefix)
{
    make_install("/opt/psd");
    char path[FIXTURES_PATH_MAX];
    join(path, g_dir, "opt/psd/bin/psd");
    assert_executable(path);
    assert_unit("psd", "/opt/psd");
    assert_unit("workerd", "/opt/psd");
}
END_TEST

/* ------------------------------------------------------ systemd-analyze */

static int have_systemd_analyze(void)
{
    if (run("command -v systemd-analyze") == 0)
        return 1;
    fprintf(stderr, "install: systemd-analyze verify skipped: systemd-analyze not found "
                    "(Debian package systemd)\n");
    return 0;
}

/* Write a copy of the installed unit `name` into g_dir/verify/ with
 * ExecStart pointing at the DESTDIR copy of the program (systemd-analyze
 * verify checks that it exists); with typo, also misspell a directive;
 * with keep_path, leave ExecStart at /usr/local/bin (not installed there). */
static void verify_copy(const char *name, int typo, int keep_path, char *out)
{
    char path[FIXTURES_PATH_MAX], rel[256], dir[FIXTURES_PATH_MAX], bin[FIXTURES_PATH_MAX + 32];
    snprintf(rel, sizeof rel, "lib/systemd/system/%s.service", name);
    join(path, g_dir, rel);
    join(dir, g_dir, typo || keep_path ? "verify-bad" : "verify");
    ck_assert_msg(mkdir(dir, 0755) == 0 || errno == EEXIST, "%s: %s", dir, strerror(errno));
    char *t = file_text(path);
    ck_assert_msg(t != NULL, "%s: not installed", path);
    snprintf(bin, sizeof bin, "=%s/usr/local/bin/", g_dir);
    char *u = keep_path ? strdup(t) : replace_all(t, "=/usr/local/bin/", bin);
    ck_assert_ptr_nonnull(u);
    if (typo) {
        char *v = replace_all(u, "\nPrivateTmp=yes\n", "\nPrivatTmp=yes\n");
        ck_assert_msg(strcmp(u, v) != 0, "%s: no PrivateTmp=yes to misspell", path);
        free(u);
        u = v;
    }
    snprintf(rel, sizeof rel, "%s.service", name);
    join(out, dir, rel);
    write_text(out, u);
    free(t);
    free(u);
}

/* systemd-analyze verify on files: 0 when it exits 0 and prints nothing. */
static int verify(const char *a, const char *b)
{
    char cmd[CMD_MAX];
    ck_assert_int_lt(snprintf(cmd, sizeof cmd, "systemd-analyze verify '%s'%s%s%s", a, b ? " '" : "",
                              b ? b : "", b ? "'" : ""),
                     (int)sizeof cmd);
    int rc = run(cmd);
    return rc == 0 && g_out[0] == 0 ? 0 : -1;
}

START_TEST(test_units_verify)
{
    if (!have_systemd_analyze())
        return;
    make_install("/usr/local");
    char psd[FIXTURES_PATH_MAX], workerd[FIXTURES_PATH_MAX];
    verify_copy("psd", 0, 0, psd);
    verify_copy("workerd", 0, 0, workerd);
    ck_assert_msg(verify(psd, workerd) == 0, "systemd-analyze verify %s %s:\n%s", psd, workerd, g_out);
}
END_TEST

/* The check above can fail: a misspelt directive, and a missing binary. */
START_TEST(test_units_verify_fails)
{
    if (!have_systemd_analyze())
        return;
    make_install("/usr/local");
    char unit[FIXTURES_PATH_MAX];
    verify_copy("psd", 1, 0, unit);
    ck_assert_msg(verify(unit, NULL) != 0, "verify passed a unit with PrivatTmp=yes");
    ck_assert_msg(strstr(g_out, "PrivatTmp") != NULL, "verify did not name PrivatTmp:\n%s", g_out);

    if (access("/usr/local/bin/workerd", F_OK) == 0)
        return; /* installed on this machine for real: the path exists */
    verify_copy("workerd", 0, 1, unit);
    ck_assert_msg(verify(unit, NULL) != 0, "verify passed a unit whose ExecStart binary is missing");
    ck_assert_msg(strstr(g_out, "/usr/local/bin/workerd") != NULL, "verify did not name the binary:\n%s",
                  g_out);
}
END_TEST

/* The README's main command: make demo (conf/demo.sh) on Debian's
 * Fashion-MNIST for one epoch -- the job ends by itself, the model is
 * exported and psctl eval on the file gives the accuracy the worker saw. */
START_TEST(test_demo)
{
    const char *fashion = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
    if (access(fashion, R_OK) != 0) {
        fprintf(stderr, "install suite: test_demo skipped: %s missing (make deps installs "
                        "dataset-fashion-mnist)\n", fashion);
        return;
    }
    const char *bin = getenv("PSD_BIN");
    if (!bin || !*bin) {
        fprintf(stderr, "install suite: test_demo skipped: PSD_BIN is not set\n");
        return;
    }
    char cmd[CMD_MAX], model[FIXTURES_PATH_MAX + 32];
    snprintf(model, sizeof model, "%s/demo.psdm", g_dir);
    snprintf(cmd, sizeof cmd,
             "DEMO_DATA=fashion DEMO_EPOCHS=1 DEMO_MODEL='%s' conf/demo.sh '%s' </dev/null", model,
             bin);
    int rc = run(cmd);
    ck_assert_msg(rc == 0, "demo exited with %d:\n%s", rc, g_out);
    ck_assert_msg(strstr(g_out, "job: finished (all 2 workers done)"), "%s", g_out);
    ck_assert_msg(strstr(g_out, "exported lenet (431,080 parameters"), "%s", g_out);
    ck_assert_msg(access(model, R_OK) == 0, "no model file:\n%s", g_out);
    const char *fin = strstr(g_out, "final accuracy ");
    const char *evl = strstr(g_out, "model=lenet nparams=431080"); /* psctl eval's line */
    const char *ev = evl ? strstr(evl, " test_acc=") : NULL;
    ck_assert_msg(fin && ev, "%s", g_out);
    double a = strtod(fin + strlen("final accuracy "), NULL);
    double b = strtod(ev + strlen(" test_acc="), NULL);
    ck_assert_msg(a > 70.0 && a == b, "worker said %.2f%%, psctl eval %.2f%%:\n%s", a, b, g_out);
}
END_TEST

Suite *install_suite(void)
{
    Suite *s = suite_create("install");
    TCase *tc = tcase_create("install");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300); /* make may have to link the programs first */
    tcase_add_test(tc, test_install_files);
    tcase_add_test(tc, test_install_prefix);
    tcase_add_test(tc, test_units_verify);
    tcase_add_test(tc, test_units_verify_fails);
    tcase_add_test(tc, test_demo);
    suite_add_tcase(s, tc);
    return s;
}
