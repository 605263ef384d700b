#!/usr/bin/python3
"""netmeasure.py - the measurements of `netcluster.sh verify` (docs/testnet.md).

  netmeasure.py tcp-server PORT STREAMS TIMEOUT_S
      accepts STREAMS connections, reads each to EOF and prints one line
      "tcp streams=N bytes=B seconds=S mbit=R per_stream_mbit=a,b,..."
      (S: first byte of any stream to the last EOF: the receiver's rate)
  netmeasure.py tcp-client HOST PORT SECONDS STREAMS [CC]
      sends on STREAMS parallel connections for SECONDS, then closes them
      and waits until the server has read everything; CC: the congestion
      control (TCP_CONGESTION, e.g. cubic), default the namespace's
  netmeasure.py udp-server PORT COUNT TIMEOUT_S
      counts distinct sequence numbers of the client's datagrams until COUNT
      arrived, 1.5 s passed without one, or TIMEOUT_S; prints
      "udp sent=COUNT received=R lost=L loss_pct=P"
  netmeasure.py udp-client HOST PORT COUNT PPS
      sends COUNT numbered 64-byte datagrams at PPS per second

Only the standard library; the server runs in one network namespace, the
client in another.
"""
import socket
import struct
import sys
import threading
import time


def tcp_server(port, streams, timeout):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(streams + 4)
    ls.settimeout(timeout)
    print("listening", flush=True)
    results = []
    lock = threading.Lock()

    def reader(c):
        c.settimeout(timeout)
        n = 0
        first = None
        try:
            while True:
                b = c.recv(1 << 18)
                if not b:
                    break
                if first is None:
                    first = time.monotonic()
                n += len(b)
        except OSError:
            pass
        end = time.monotonic()
        c.close()
        with lock:
            results.append((first if first is not None else end, end, n))

    threads = []
    deadline = time.monotonic() + timeout
    for _ in range(streams):
        try:
            ls.settimeout(max(0.1, deadline - time.monotonic()))
            c, _addr = ls.accept()
        except OSError:
            break
        t = threading.Thread(target=reader, args=(c,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    if not results:
        print("tcp streams=0 bytes=0 seconds=0 mbit=0 per_stream_mbit=")
        return 1
    t0 = min(r[0] for r in results)
    t1 = max(r[1] for r in results)
    total = sum(r[2] for r in results)
    secs = max(t1 - t0, 1e-6)
    per = ",".join("%.2f" % (r[2] * 8 / max(r[1] - r[0], 1e-6) / 1e6) for r in results)
    print("tcp streams=%d bytes=%d seconds=%.3f mbit=%.2f per_stream_mbit=%s"
          % (len(results), total, secs, total * 8 / secs / 1e6, per))
    return 0 if len(results) == streams else 1


def tcp_client(host, port, seconds, streams, cc=None):
    buf = b"\0" * (1 << 16)
    errors = []

    def sender():
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if cc:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
            s.settimeout(10)
            s.connect((host, port))
            s.settimeout(30)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                s.sendall(buf)
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):
                pass
            s.close()
        except OSError as e:
            errors.append(str(e))

    threads = [threading.Thread(target=sender) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        print("tcp-client: " + "; ".join(errors), file=sys.stderr)
        return 1
    return 0


def udp_server(port, count, timeout):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("0.0.0.0", port))
    print("listening", flush=True)
    seen = set()
    deadline = time.monotonic() + timeout
    last = None
    while len(seen) < count:
        now = time.monotonic()
        if now > deadline or (last is not None and now - last > 1.5):
            break
        s.settimeout(0.2)
        try:
            b = s.recv(2048)
        except socket.timeout:
            continue
        if len(b) >= 8:
            seen.add(struct.unpack("!Q", b[:8])[0])
            last = time.monotonic()
    r = len(seen)
    print("udp sent=%d received=%d lost=%d loss_pct=%.3f" % (count, r, count - r, 100.0 * (count - r) / count))
    return 0


def udp_client(host, port, count, pps):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pad = b"\0" * 56
    t0 = time.monotonic()
    for i in range(count):
        due = t0 + i / pps
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)
        try:
            s.sendto(struct.pack("!Q", i) + pad, (host, port))
        except OSError:
            pass
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, a = argv[1], argv[2:]
    if cmd == "tcp-server" and len(a) == 3:
        return tcp_server(int(a[0]), int(a[1]), float(a[2]))
    if cmd == "tcp-client" and len(a) in (4, 5):
        return tcp_client(a[0], int(a[1]), float(a[2]), int(a[3]), a[4] if len(a) == 5 else None)
    if cmd == "udp-server" and len(a) == 3:
        return udp_server(int(a[0]), int(a[1]), float(a[2]))
    if cmd == "udp-client" and len(a) == 4:
        return udp_client(a[0], int(a[1]), int(a[2]), float(a[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
