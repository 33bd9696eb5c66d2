#!/usr/bin/env python3
"""Test receivers for drains, bound on 127.0.0.1 only, bounded in time.

  receiver.py tcp  --port-file F --out F [--close-after N] [--read-delay-ms MS]
                   [--start-delay-ms MS] [--max-secs S]
      accepts syslog connections, splits octet-counted frames, appends each message (one
      per line, without the LF that ends every drain frame) to --out; --close-after N
      closes the first connection after N messages.
  receiver.py http --port-file F --out F [--statuses 429,200] [--max-secs S]
      answers POSTs with the statuses in turn (the last one repeats) and appends one JSON
      object per request: {"status", "headers", "frames"}.
The chosen port is written to --port-file once listening.
"""
import argparse, json, os, socket, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

def write_port(path, port):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, path)

def split_frames(data):
    """Whole octet-counted frames of `data`, and what is left (a partial frame)."""
    frames, i = [], 0
    while i < len(data):
        j = i
        while j < len(data) and data[j:j+1] in (b"\n", b" "):
            j += 1
        sp = data.find(b" ", j)
        if sp < 0:
            break
        n = int(data[j:sp])
        if len(data) < sp + 1 + n:
            break
        frames.append(data[sp+1:sp+1+n])
        i = sp + 1 + n
    return frames, data[i:]

def tcp(args):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(16)
    write_port(args.port_file, srv.getsockname()[1])
    out = open(args.out, "ab", buffering=0)
    lock = threading.Lock()
    first = [True]

    def handle(conn):
        with lock:
            limit = args.close_after if first[0] else 0
            first[0] = False
        buf, count = b"", 0
        conn.settimeout(1.0)
        if args.start_delay_ms:
            time.sleep(args.start_delay_ms / 1000.0)
        while True:
            try:
                d = conn.recv(4096 if args.read_delay_ms else 262144)
            except socket.timeout:
                continue
            except OSError:
                break
            if not d:
                break
            buf += d
            # Only whole frames; a partial one waits for more bytes.
            frames, buf = split_frames(buf)
            for fr in frames:
                if fr.endswith(b"\n"):
                    fr = fr[:-1]
                with lock:
                    out.write(fr.replace(b"\n", b"\\n") + b"\n")
                count += 1
                if limit and count >= limit:
                    conn.close()
                    return
            if args.read_delay_ms:
                time.sleep(args.read_delay_ms / 1000.0)
        conn.close()

    srv.settimeout(0.5)
    deadline = time.time() + args.max_secs
    while time.time() < deadline:
        try:
            c, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=handle, args=(c,), daemon=True).start()

def http(args):
    statuses = [int(s) for s in args.statuses.split(",")]
    lock = threading.Lock()
    state = {"n": 0}
    out = open(args.out, "a", buffering=1)

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                status = statuses[min(state["n"], len(statuses) - 1)]
                state["n"] += 1
                frames, rest = split_frames(body)
                out.write(json.dumps({"status": status, "path": self.path,
                                      "headers": {k.lower(): v for k, v in self.headers.items()},
                                      "frames": [f.decode("utf-8", "replace") for f in frames],
                                      "trailing": rest.decode("utf-8", "replace")}) + "\n")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), H)
    write_port(args.port_file, srv.server_address[1])
    threading.Timer(args.max_secs, srv.shutdown).start()
    srv.serve_forever()

if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["tcp", "http"])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--close-after", type=int, default=0)
    p.add_argument("--read-delay-ms", type=int, default=0)
    p.add_argument("--start-delay-ms", type=int, default=0)
    p.add_argument("--statuses", default="200")
    p.add_argument("--max-secs", type=float, default=60)
    a = p.parse_args()
    tcp(a) if a.mode == "tcp" else http(a)
