/* netdelay.c - a learning Ethernet switch in user space that holds every
 * frame for a fixed one-way delay before forwarding it (tests/net/, see
 * docs/testnet.md).
 *
 *   netdelay --delay-ms MS [--queue FRAMES] [--check] IFACE IFACE...
 *
 * (--check: open the sockets, print the ready line and exit 0.)
 *
 * It runs in the "switch" network namespace, which holds the switch-side end
 * of every host's veth pair.  On each IFACE it opens an AF_PACKET raw socket,
 * learns the source MAC of every frame that arrives there, and queues the
 * frame for the port of its destination MAC (all other ports for broadcast,
 * multicast and unknown destinations).  A queued frame is sent MS
 * milliseconds after it arrived, by the kernel's receive timestamp (the time
 * this process takes to get to it is not added), so two hosts see a
 * round-trip time of 2 * MS.  The delay is constant, so each port's queue is
 * a FIFO and the frames of one input port keep their order.  Queues are bounded (--queue frames per port, default 2048): a frame
 * that finds its queue full is dropped and counted, like a router's tail
 * drop; so is a frame the output device's qdisc refuses (ENOBUFS).
 *
 * Packet level on purpose: TCP between the hosts sees the real round-trip
 * time, the losses and the rate of the links end to end (a TCP proxy would
 * terminate the connections and hide them).
 *
 * The veths must have their offloads off (ethtool -K IF tx off rx off tso off
 * gso off gro off): frames are then at most MTU-sized and carry complete
 * checksums.  A frame larger than a slot, or one whose checksum the kernel
 * left for the hardware to fill in (PACKET_AUXDATA TP_STATUS_CSUMNOTREADY),
 * is dropped and counted ("oversize", "csum"), and the counters say so.
 *
 * It runs at normal priority: at SCHED_FIFO it was ~0.06 ms late instead of
 * ~0.35 ms, but the cluster it carried trained ~6% slower (it preempted the
 * workers at every frame); docs/testnet.md.
 *
 * Prints "netdelay: ready ..." on stdout once every socket is open; the
 * counters on SIGUSR1 and at exit (SIGTERM, SIGINT) on stdout, with how late
 * (mean/max microseconds) it read frames after their arrival and sent them
 * after they were due: what the emulated link adds to MS.  Exit status
 * 0 after a signal, 1 on an error at start (e.g. no AF_PACKET: not root, or
 * no such interface).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PORTS 32
#define SLOT 2048   /* bytes per queued frame; MTU 1500 + header fits */
#define MAX_MACS 1024

typedef struct {
    uint64_t due_ns;
    uint16_t len;
    uint8_t data[SLOT];
} frame;

typedef struct {
    char name[IF_NAMESIZE];
    int ifindex;
    int fd;
    frame *q;        /* ring of qcap frames */
    size_t head, count;
    size_t max_depth;
    uint64_t rx, rx_bytes, tx, tx_bytes, drop_full, drop_txerr, drop_oversize, drop_csum;
    /* how late this process read frames (after the kernel's arrival time)
     * and sent them (after they were due), ns */
    uint64_t rx_late_sum, rx_late_max, tx_late_sum, tx_late_max;
    int blocked;     /* the socket said EAGAIN: wait for POLLOUT */
} port;

typedef struct {
    uint8_t mac[6];
    int port;
} mac_entry;

static port g_ports[MAX_PORTS];
static int g_nports;
static size_t g_qcap = 2048;
static uint64_t g_delay_ns;
static mac_entry g_macs[MAX_MACS];
static int g_nmacs;
static volatile sig_atomic_t g_stop, g_dump;

static void on_signal(int sig)
{
    if (sig == SIGUSR1)
        g_dump = 1;
    else
        g_stop = 1;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void usage(void)
{
    fprintf(stderr, "usage: netdelay --delay-ms MS [--queue FRAMES] [--check] IFACE IFACE...\n");
}

static int port_open(port *p, const char *name)
{
    memset(p, 0, sizeof *p);
    if (strlen(name) >= IF_NAMESIZE) {
        fprintf(stderr, "netdelay: interface name %s too long\n", name);
        return -1;
    }
    strcpy(p->name, name);
    p->ifindex = (int)if_nametoindex(name);
    if (p->ifindex == 0) {
        fprintf(stderr, "netdelay: no interface %s: %s\n", name, strerror(errno));
        return -1;
    }
    p->fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
    if (p->fd < 0) {
        fprintf(stderr, "netdelay: AF_PACKET socket: %s (needs CAP_NET_RAW, i.e. root)\n",
                strerror(errno));
        return -1;
    }
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = p->ifindex;
    if (bind(p->fd, (struct sockaddr *)&sll, sizeof sll) < 0) {
        fprintf(stderr, "netdelay: bind AF_PACKET to %s: %s\n", name, strerror(errno));
        return -1;
    }
    struct packet_mreq mr;
    memset(&mr, 0, sizeof mr);
    mr.mr_ifindex = p->ifindex;
    mr.mr_type = PACKET_MR_PROMISC;
    if (setsockopt(p->fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0) {
        fprintf(stderr, "netdelay: promiscuous mode on %s: %s\n", name, strerror(errno));
        return -1;
    }
    int one = 1;
#ifdef PACKET_IGNORE_OUTGOING
    /* our own transmissions are not received back (also checked below) */
    (void)setsockopt(p->fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
#endif
    if (setsockopt(p->fd, SOL_PACKET, PACKET_AUXDATA, &one, sizeof one) < 0) {
        fprintf(stderr, "netdelay: PACKET_AUXDATA on %s: %s\n", name, strerror(errno));
        return -1;
    }
    if (setsockopt(p->fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) < 0) {
        fprintf(stderr, "netdelay: SO_TIMESTAMPNS on %s: %s\n", name, strerror(errno));
        return -1;
    }
    int buf = 4 << 20;
    if (setsockopt(p->fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) < 0)
        (void)setsockopt(p->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    if (setsockopt(p->fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) < 0)
        (void)setsockopt(p->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
    p->q = malloc(g_qcap * sizeof *p->q);
    if (!p->q) {
        fprintf(stderr, "netdelay: out of memory for the queue of %s\n", name);
        return -1;
    }
    return 0;
}

static void learn(const uint8_t *src, int port_i)
{
    if (src[0] & 1)
        return; /* a multicast source is not a station */
    for (int i = 0; i < g_nmacs; i++)
        if (memcmp(g_macs[i].mac, src, 6) == 0) {
            g_macs[i].port = port_i; /* a station may move */
            return;
        }
    if (g_nmacs < MAX_MACS) {
        memcpy(g_macs[g_nmacs].mac, src, 6);
        g_macs[g_nmacs].port = port_i;
        g_nmacs++;
    }
}

static int lookup(const uint8_t *dst)
{
    if (dst[0] & 1)
        return -1;
    for (int i = 0; i < g_nmacs; i++)
        if (memcmp(g_macs[i].mac, dst, 6) == 0)
            return g_macs[i].port;
    return -1;
}

static void enqueue(port *out, const uint8_t *data, size_t len, uint64_t due)
{
    if (out->count == g_qcap) {
        out->drop_full++;
        return;
    }
    frame *f = &out->q[(out->head + out->count) % g_qcap];
    f->due_ns = due;
    f->len = (uint16_t)len;
    memcpy(f->data, data, len);
    out->count++;
    if (out->count > out->max_depth)
        out->max_depth = out->count;
}

/* Reads every frame waiting on port i. */
static void port_receive(int i)
{
    port *p = &g_ports[i];
    static uint8_t buf[65536];
    for (;;) {
        struct sockaddr_ll from;
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(struct tpacket_auxdata)) +
                   CMSG_SPACE(sizeof(struct timespec))];
        } ctl;
        struct iovec iov = {buf, sizeof buf};
        struct msghdr mh;
        memset(&mh, 0, sizeof mh);
        mh.msg_name = &from;
        mh.msg_namelen = sizeof from;
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = &ctl;
        mh.msg_controllen = sizeof ctl;
        ssize_t n = recvmsg(p->fd, &mh, MSG_TRUNC);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                fprintf(stderr, "netdelay: recv on %s: %s\n", p->name, strerror(errno));
            return;
        }
        if (from.sll_pkttype == PACKET_OUTGOING)
            continue;
        uint64_t t = now_ns(), late = 0;
        p->rx++;
        p->rx_bytes += (uint64_t)n;
        if ((size_t)n > SLOT || (size_t)n > sizeof buf) {
            p->drop_oversize++;
            continue;
        }
        if (n < 14)
            continue;
        int csum_bad = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA) {
                struct tpacket_auxdata aux;
                memcpy(&aux, CMSG_DATA(c), sizeof aux);
                if (aux.tp_status & TP_STATUS_CSUMNOTREADY)
                    csum_bad = 1;
            }
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                struct timespec ts;
                memcpy(&ts, CMSG_DATA(c), sizeof ts);
                uint64_t k = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
                uint64_t r = real_ns(); /* the timestamp is CLOCK_REALTIME */
                late = r > k ? r - k : 0;
            }
        }
        if (csum_bad) {
            p->drop_csum++;
            continue;
        }
        p->rx_late_sum += late;
        if (late > p->rx_late_max)
            p->rx_late_max = late;
        learn(buf + 6, i);
        int o = lookup(buf);
        /* the delay counts from the frame's arrival (the kernel's time),
         * not from when this process got to read it */
        uint64_t due = t - (late < t ? late : 0) + g_delay_ns;
        if (o >= 0) {
            if (o != i)
                enqueue(&g_ports[o], buf, (size_t)n, due);
        } else {
            for (int k = 0; k < g_nports; k++)
                if (k != i)
                    enqueue(&g_ports[k], buf, (size_t)n, due);
        }
    }
}

/* Sends the frames of port i that are due. */
static void port_send(int i, uint64_t t)
{
    port *p = &g_ports[i];
    while (p->count > 0) {
        frame *f = &p->q[p->head];
        if (f->due_ns > t)
            return;
        ssize_t n = send(p->fd, f->data, f->len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            p->blocked = 1;
            return;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            p->drop_txerr++; /* ENOBUFS: the qdisc (tbf) was full */
        } else {
            p->tx++;
            p->tx_bytes += (uint64_t)n;
            p->tx_late_sum += t - f->due_ns;
            if (t - f->due_ns > p->tx_late_max)
                p->tx_late_max = t - f->due_ns;
        }
        p->head = (p->head + 1) % g_qcap;
        p->count--;
    }
}

static void dump(void)
{
    for (int i = 0; i < g_nports; i++) {
        port *p = &g_ports[i];
        printf("netdelay: port %s rx=%llu rx_bytes=%llu tx=%llu tx_bytes=%llu drop_queue_full=%llu "
               "drop_tx_error=%llu drop_oversize=%llu drop_csum=%llu queued=%zu max_queue=%zu "
               "read_late_us=%.0f/%.0f send_late_us=%.0f/%.0f\n",
               p->name, (unsigned long long)p->rx, (unsigned long long)p->rx_bytes,
               (unsigned long long)p->tx, (unsigned long long)p->tx_bytes,
               (unsigned long long)p->drop_full, (unsigned long long)p->drop_txerr,
               (unsigned long long)p->drop_oversize, (unsigned long long)p->drop_csum, p->count,
               p->max_depth, p->rx ? (double)p->rx_late_sum / 1e3 / (double)p->rx : 0,
               (double)p->rx_late_max / 1e3,
               p->tx ? (double)p->tx_late_sum / 1e3 / (double)p->tx : 0,
               (double)p->tx_late_max / 1e3);
    }
    fflush(stdout);
}

int main(int argc, char **argv)
{
    double delay_ms = -1;
    int i = 1, check = 0;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--delay-ms") == 0 && i + 1 < argc) {
            char *end;
            delay_ms = strtod(argv[++i], &end);
            if (*end || delay_ms < 0 || delay_ms > 10000) {
                fprintf(stderr, "netdelay: --delay-ms %s: expected 0..10000\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--queue") == 0 && i + 1 < argc) {
            char *end;
            long q = strtol(argv[++i], &end, 10);
            if (*end || q < 1 || q > 1000000) {
                fprintf(stderr, "netdelay: --queue %s: expected 1..1000000\n", argv[i]);
                return 2;
            }
            g_qcap = (size_t)q;
        } else if (strcmp(argv[i], "--check") == 0) {
            check = 1;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage();
            return 0;
        } else {
            usage();
            return 2;
        }
    }
    if (delay_ms < 0 || argc - i < 2 || argc - i > MAX_PORTS) {
        usage();
        return 2;
    }
    g_delay_ns = (uint64_t)(delay_ms * 1e6);
    for (; i < argc; i++)
        if (port_open(&g_ports[g_nports++], argv[i]) < 0)
            return 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    printf("netdelay: ready: %d ports, one-way delay %.3f ms, queue %zu frames per port\n",
           g_nports, delay_ms, g_qcap);
    fflush(stdout);
    if (check)
        g_stop = 1; /* --check: the sockets open; exit without forwarding */

    struct pollfd pfd[MAX_PORTS];
    while (!g_stop) {
        if (g_dump) {
            g_dump = 0;
            dump();
        }
        uint64_t t = now_ns(), next = UINT64_MAX;
        for (int k = 0; k < g_nports; k++) {
            pfd[k].fd = g_ports[k].fd;
            pfd[k].events = POLLIN | (g_ports[k].blocked ? POLLOUT : 0);
            pfd[k].revents = 0;
            if (!g_ports[k].blocked && g_ports[k].count > 0 &&
                g_ports[k].q[g_ports[k].head].due_ns < next)
                next = g_ports[k].q[g_ports[k].head].due_ns;
        }
        struct timespec ts, *tsp = NULL;
        if (next != UINT64_MAX) {
            uint64_t w = next > t ? next - t : 0;
            ts.tv_sec = (time_t)(w / 1000000000ull);
            ts.tv_nsec = (long)(w % 1000000000ull);
            tsp = &ts;
        }
        int r = ppoll(pfd, (nfds_t)g_nports, tsp, NULL);
        if (r < 0 && errno != EINTR) {
            fprintf(stderr, "netdelay: poll: %s\n", strerror(errno));
            break;
        }
        if (r > 0)
            for (int k = 0; k < g_nports; k++) {
                if (pfd[k].revents & POLLOUT)
                    g_ports[k].blocked = 0;
                if (pfd[k].revents & (POLLIN | POLLERR))
                    port_receive(k);
            }
        t = now_ns();
        for (int k = 0; k < g_nports; k++)
            if (!g_ports[k].blocked)
                port_send(k, t);
    }
    dump();
    for (int k = 0; k < g_nports; k++) {
        close(g_ports[k].fd);
        free(g_ports[k].q);
    }
    return 0;
}
