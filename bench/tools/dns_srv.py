#!/usr/bin/env python3
"""Tiny authoritative DNS server over UDP for the failover benchmark (stdlib only).

Usage: dns_srv.py IP PORT ZONE_FILE
ZONE_FILE lines:  NAME SRV PRIORITY WEIGHT PORT TARGET
                  NAME A ADDRESS
Other query types for known names get an empty NOERROR answer; unknown names
NXDOMAIN. Runs until SIGTERM.
"""
import socket
import struct
import sys


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def read_name(buf, off):
    labels = []
    while True:
        n = buf[off]
        if n == 0:
            return ".".join(labels).lower(), off + 1
        if n & 0xC0:
            raise ValueError("compressed name in query")
        labels.append(buf[off + 1 : off + 1 + n].decode())
        off += 1 + n


def main():
    ip, port, zone_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    zone = {}
    with open(zone_file) as f:
        for line in f:
            p = line.split()
            if not p:
                continue
            name, typ = p[0].lower().rstrip("."), p[1].upper()
            if typ == "SRV":
                rdata = struct.pack("!HHH", int(p[2]), int(p[3]), int(p[4])) + encode_name(p[5])
                zone.setdefault(name, []).append((33, rdata))
            elif typ == "A":
                zone.setdefault(name, []).append((1, socket.inet_aton(p[2])))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port))
    while True:
        buf, peer = s.recvfrom(4096)
        try:
            qid, flags, qd = struct.unpack("!HHH", buf[:6])
            name, off = read_name(buf, 12)
            qtype, _qclass = struct.unpack("!HH", buf[off : off + 4])
            question = buf[12 : off + 4]
        except Exception:
            continue
        answers = [r for r in zone.get(name, []) if r[0] == qtype]
        rcode = 0 if name in zone else 3
        rflags = 0x8400 | (flags & 0x0100) | rcode
        resp = struct.pack("!HHHHHH", qid, rflags, 1, len(answers), 0, 0) + question
        for typ, rdata in answers:
            resp += b"\xc0\x0c" + struct.pack("!HHIH", typ, 1, 60, len(rdata)) + rdata
        s.sendto(resp, peer)


if __name__ == "__main__":
    main()
