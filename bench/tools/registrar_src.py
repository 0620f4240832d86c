#!/usr/bin/env python3
"""A UDP registrar for bench/cluster.sh: answers every REGISTER with 200
(Contact echoed with expires=min(requested, GRANT)) and appends one line per
new REGISTER transaction to LOG: "<unix time> <To user> <source IP> <expires>".
No digest (the cluster benchmark measures ownership, not authentication).
Usage: registrar_src.py IP PORT LOG [GRANT=60]
"""
import asyncio
import re
import sys
import time

IP, PORT, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3]
GRANT = int(sys.argv[4]) if len(sys.argv) > 4 else 60
TO_USER = re.compile(rb"^(?:To|t)\s*:[^\r\n]*?sip:([^@;>\s]+)@", re.I | re.M)
BRANCH = re.compile(rb"branch=([^;,\s]+)", re.I)


class Registrar(asyncio.DatagramProtocol):
    def __init__(self):
        self.out = open(LOG, "a", buffering=1 << 16)
        self.seen = {}

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if not data.startswith(b"REGISTER "):
            return
        head = data.split(b"\r\n\r\n", 1)[0]
        lines = head.split(b"\r\n")
        keep, contact, expires = [], None, 3600
        for line in lines[1:]:
            name = line.split(b":", 1)[0].strip().lower()
            if name in (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"):
                keep.append(line if name not in (b"to", b"t") else line + b";tag=reg")
            elif name in (b"contact", b"m") and contact is None:
                contact = line.split(b":", 1)[1].strip()
            elif name == b"expires":
                try:
                    expires = int(line.split(b":", 1)[1])
                except ValueError:
                    pass
        m, b = TO_USER.search(head), BRANCH.search(head)
        if m is None or contact is None:
            return
        user, branch = m.group(1).decode(), (b.group(1) if b else b"")
        if self.seen.get(user) != branch:
            self.seen[user] = branch
            self.out.write(f"{time.time():.3f} {user} {addr[0]} {expires}\n")
        granted = min(expires, GRANT)
        reply = b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep)
        if granted:
            reply += b"\r\nContact: " + contact.split(b";expires")[0] + b";expires=%d" % granted
        reply += b"\r\nContent-Length: 0\r\n\r\n"
        self.transport.sendto(reply, addr)


async def main():
    loop = asyncio.get_running_loop()
    _, reg = await loop.create_datagram_endpoint(Registrar, local_addr=(IP, PORT))
    while True:
        await asyncio.sleep(0.5)
        reg.out.flush()


asyncio.run(main())
