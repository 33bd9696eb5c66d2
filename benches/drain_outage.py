#!/usr/bin/env python3
"""The drain outage, at full scale: a syslog drain's receiver is down while lines arrive,
then comes back. Run against logplex (release build, durable log on) and against rsyslog
(imptcp -> omfwd with a disk-assisted action queue), one after the other, and printed side
by side: lines delivered (exactly once? in order?), L10 notices, time from the receiver's
return to its first line and to the last one, the catch-up rate, and the CPU the router
used during the outage and during the catch-up.

    python3 benches/drain_outage.py [--outage 60] [--rate 100000] [--only logplex|rsyslog] [--no-build]

Everything listens on 127.0.0.1, on free ports; the work directory is temporary. The
receiver (this script, in a second process) writes what it gets to a file and counts the
`seq=` markers of the lines; at the end the file is checked line by line. Every wait is
bounded (--max-secs).
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TOKEN = "t.00000000-0000-4000-8000-0000000000b7"
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, secs=20):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def cpu_secs(pid):
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- the receiver (run as `drain_outage.py --receive PORT OUT STATUS`) ----

def receive(port, out, status):
    """Accepts every connection (a drain uses one at a time, a reconnect may overlap),
    appends every byte to OUT and writes the running count of `seq=` markers to STATUS
    every 50 ms."""
    import selectors
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(64)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ)
    # A restarted receiver goes on counting where the last one stopped.
    count, last, tails = 0, 0.0, {}
    if os.path.exists(out):
        with open(out, "rb") as f:
            count = f.read().count(b"seq=")
    with open(out, "ab") as f:
        while True:
            for key, _ in sel.select(timeout=0.05):
                sock = key.fileobj
                if sock is ls:
                    conn, _ = ls.accept()
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                    tails[conn] = b""
                    continue
                try:
                    data = sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(sock)
                    sock.close()
                    tails.pop(sock, None)
                    continue
                f.write(data)
                tail = tails[sock]
                count += (tail + data).count(b"seq=") - tail.count(b"seq=")
                tails[sock] = data[-3:]
            now = time.time()
            if now - last > 0.05:
                f.flush()
                with open(status + ".tmp", "w") as s:
                    s.write(f"{count} {now}\n")
                os.replace(status + ".tmp", status)
                last = now


class Receiver:
    def __init__(self, work, port):
        self.port, self.out = port, os.path.join(work, "received.bin")
        self.status = os.path.join(work, "received.status")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--receive", str(self.port), self.out, self.status])
        if not wait_port(self.port):
            sys.exit("the receiver did not listen")

    def stop(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def count(self):
        try:
            with open(self.status) as s:
                return int(s.read().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def check(self, total):
        """(delivered, distinct, in order, L10 frames) from what was received."""
        with open(self.out, "rb") as f:
            data = f.read()
        seqs = [int(m) for m in re.findall(rb"seq=(\d+) ", data)]
        distinct = len(set(seqs))
        in_order = all(b == a + 1 for a, b in zip(seqs, seqs[1:])) and (not seqs or seqs[0] == 0)
        return len(seqs), distinct, in_order and distinct == total, data.count(b"Error L10")


# ---- load ----

def frames(first, n):
    """Octet-counted RFC 5424 lines seq=FIRST … with the channel's token as APP-NAME."""
    out = []
    for i in range(first, first + n):
        m = (f"<190>1 2026-11-27T10:00:00.000000+00:00 host {TOKEN} web.1 - - "
             f"seq={i} at=info method=GET path=/items/{i % 977} status=200 bytes=1234").encode()
        out.append(b"%d %s" % (len(m), m))
    return b"".join(out)


def send(port, first, n, rate, max_secs):
    """Sends lines FIRST … FIRST+N-1 at about RATE per second; returns (seconds taken, lines
    accepted). A router that stops reading for 10 s (rsyslog once its queues are full) ends
    the sending: only whole lines it took are counted."""
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    tick, t0, sent = 0.01, time.time(), 0
    per_tick = max(1, int(rate * tick))
    while sent < n and time.time() - t0 < max_secs:
        k = min(per_tick, n - sent)
        buf = frames(first + sent, k)
        off = 0
        try:
            while off < len(buf):
                off += s.send(buf[off:])
        except socket.timeout:
            # Whole frames of this chunk that went out before it stalled.
            sent += sum(1 for _ in re.finditer(rb"\d+ <", buf[:off])) - (1 if off else 0)
            print(f"the router stopped reading after {sent} lines", file=sys.stderr)
            break
        sent += k
        ahead = t0 + sent / rate - time.time()
        if ahead > 0:
            time.sleep(ahead)
    s.close()
    return time.time() - t0, sent


# ---- the routers ----

def start_logplex(work, in_port, out_port):
    binary = os.path.join(REPO, "target", "release", "logplex")
    api = free_port()
    conf = os.path.join(work, "logplex.toml")
    with open(conf, "w") as f:
        f.write(f"""
[api]
listen = "127.0.0.1:{api}"
[ingest.tcp]
listen = "127.0.0.1:{in_port}"
[ingest.udp]
listen = "off"
[ingest.http]
listen = "off"
[store]
path = "{work}/data/logplex.db"
[[channels]]
name = "outage"
tokens = {{ app = "{TOKEN}" }}
drains = ["syslog://127.0.0.1:{out_port}"]
""")
    p = subprocess.Popen([binary, "serve", "--config", conf], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(work, "logplex.stderr"), "w"),
                         env={**os.environ, "RUST_LOG": "warn"})
    if not wait_port(in_port):
        sys.exit("logplex did not listen: see " + os.path.join(work, "logplex.stderr"))
    return p


def start_rsyslog(work, in_port, out_port):
    conf = os.path.join(work, "rsyslog.conf")
    spool = os.path.join(work, "spool")
    os.makedirs(spool, exist_ok=True)
    with open(conf, "w") as f:
        f.write(f"""
global(workDirectory="{spool}" maxMessageSize="64k")
module(load="imptcp")
template(name="drain" type="string"
         string="<%PRI%>1 %TIMESTAMP:::date-rfc3339% %HOSTNAME% %APP-NAME% %PROCID% - - %msg%\\n")
# The input's own queue, in memory, with room for seconds of intake: it only hands lines
# to the action's queue, which is the one that spools.
ruleset(name="fwd" queue.type="LinkedList" queue.size="500000"
        queue.dequeueBatchSize="1024") {{
  # Disk-assisted: in memory up to queue.highWatermark, then spooled to files in
  # workDirectory until it is back under queue.lowWatermark; never discards
  # (queue.discardMark above the size), kept at a stop, retried for ever, every second.
  action(type="omfwd" target="127.0.0.1" port="{out_port}" protocol="tcp"
         tcp_framing="octet-counted" template="drain"
         queue.type="LinkedList" queue.filename="drainq" queue.saveOnShutdown="on"
         queue.size="200000" queue.highWatermark="100000" queue.lowWatermark="20000"
         queue.discardMark="1000000" queue.maxFileSize="64m" queue.maxDiskSpace="8g"
         queue.dequeueBatchSize="1024" queue.checkpointInterval="100000"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
input(type="imptcp" address="127.0.0.1" port="{in_port}" ruleset="fwd")
""")
    p = subprocess.Popen(["rsyslogd", "-n", "-f", conf, "-i", os.path.join(work, "rsyslogd.pid")],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "rsyslog.stderr"), "w"))
    if not wait_port(in_port):
        sys.exit("rsyslogd did not listen: see " + os.path.join(work, "rsyslog.stderr"))
    return p


def run(name, a):
    work = tempfile.mkdtemp(prefix=f"drain-outage-{name}-")
    in_port, out_port = free_port(), free_port()
    rcv = Receiver(work, out_port)
    rcv.start()
    router = (start_logplex if name == "logplex" else start_rsyslog)(work, in_port, out_port)
    try:
        warm = 10_000
        send(in_port, 0, warm, a.rate, a.max_secs)
        end = time.time() + a.max_secs
        while rcv.count() < warm and time.time() < end:
            time.sleep(0.05)
        rcv.stop()
        c0 = cpu_secs(router.pid)
        n = int(a.rate * a.outage)
        secs, sent = send(in_port, warm, n, a.rate, a.outage * 2 + 30)
        total = warm + sent
        time.sleep(1)
        c1 = cpu_secs(router.pid)
        before = rcv.count()
        rcv.start()
        t_up = time.time()
        first = last = None
        end = t_up + a.max_secs
        seen, moved = before, t_up
        while time.time() < end:
            c = rcv.count()
            now = time.time()
            if first is None and c > before:
                first = now
            if c > seen:
                seen, moved = c, now
            if c >= total:
                last = now
                break
            # Delivery stopped short (lines lost in flight, or a router that gave up):
            # what arrived is what it delivered.
            if first is not None and now - moved > a.stall:
                last = moved
                break
            time.sleep(0.02)
        if last is None and first is not None:
            last = moved  # --max-secs ran out first
        c2 = cpu_secs(router.pid)
        time.sleep(0.5)
        got, distinct, in_order, l10 = rcv.check(total)
        res = {
            "sent": total, "in outage": sent, "outage msg/s": sent / secs,
            "delivered": got, "distinct": distinct, "exactly once, in order": in_order,
            "L10 frames": l10,
            "first line after up (s)": (first - t_up) if first else None,
            "caught up after up (s)": (last - t_up) if last and got >= total else None,
            "last line after up (s)": (last - t_up) if last else None,
            "catch-up msg/s": (min(got, total) - before) / (last - first)
            if last and first and last > first else None,
            "router CPU in outage (s)": c1 - c0,
            "router CPU in catch-up (s)": c2 - c1,
            "router CPU µs/msg (all)": (c2 - c0) * 1e6 / sent if sent else None,
        }
        return res
    finally:
        router.send_signal(signal.SIGTERM)
        try:
            router.wait(timeout=30)
        except subprocess.TimeoutExpired:
            router.kill()
        rcv.stop()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--receive":
        receive(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outage", type=float, default=60, help="seconds the receiver is down")
    ap.add_argument("--rate", type=float, default=100_000, help="lines per second meanwhile")
    ap.add_argument("--only", choices=["logplex", "rsyslog"])
    ap.add_argument("--max-secs", type=float, default=300, help="bound of every wait")
    ap.add_argument("--stall", type=float, default=15,
                    help="seconds without a new line that end the catch-up short")
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    ap.add_argument("--no-build", action="store_true",
                    help="use target/release/logplex as it is (no cargo build first)")
    a = ap.parse_args()
    names = [a.only] if a.only else ["logplex", "rsyslog"]
    if "logplex" in names and not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "logplex"], cwd=REPO, check=True)
    if "rsyslog" in names and not shutil.which("rsyslogd"):
        print("SKIP rsyslog: rsyslogd not found (apt-get install rsyslog)")
        names.remove("rsyslog")
    results = {n: run(n, a) for n in names}
    keys = list(next(iter(results.values())).keys())
    print(f"\ndrain outage: receiver down {a.outage:g} s while {a.rate:,.0f} lines/s arrive\n")
    print(f"{'':32}" + "".join(f"{n:>18}" for n in names))
    for k in keys:
        row = []
        for n in names:
            v = results[n][k]
            row.append("-" if v is None else f"{v:,.2f}" if isinstance(v, float) else str(v))
        print(f"{k:32}" + "".join(f"{v:>18}" for v in row))


if __name__ == "__main__":
    main()
