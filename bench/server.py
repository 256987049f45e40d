"""Benchmark TCP server, run inside the server namespace.

    server.py hold  <addr> <port> <peers-file>   accept and keep every connection; on SIGTERM
                                                  write "<peer addr> <peer port>" lines
    server.py udpecho <addr> <port> <peers-file>  answer every datagram; on SIGTERM write each
                                                  peer once, as for hold
    server.py churn <port> [<port>...]            accept on 0.0.0.0 (the namespace routes a
                                                  whole /24 locally, so every address in it
                                                  answers) and close when the client has closed:
                                                  the server never holds TIME_WAIT, so a NAT
                                                  tuple reused after a conntrack flush is not
                                                  answered with a stale ACK

Prints "ready" on stdout once listening. One epoll loop, no threads.
"""
import os
import resource
import select
import signal
import socket
import sys


def main():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    mode = sys.argv[1]
    listeners = {}
    if mode == "hold":
        addr, port, peers_file = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        binds = [(addr, port)]
    elif mode == "udpecho":
        return udpecho(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif mode == "churn":
        peers_file = None
        binds = [("0.0.0.0", int(p)) for p in sys.argv[2:]]
    else:
        sys.exit("mode: hold | churn")
    ep = select.epoll()
    for b in binds:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(b)
        s.listen(4096)
        s.setblocking(False)
        listeners[s.fileno()] = s
        ep.register(s.fileno(), select.EPOLLIN)
    held = []
    conns = {}
    peers = []
    stop = []

    def on_term(*_):
        stop.append(1)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    print("ready", flush=True)
    while not stop:
        try:
            events = ep.poll(0.5)
        except InterruptedError:
            continue
        for fd, _ in events:
            if fd in conns:  # a churn connection: the client's FIN (or data) arrived
                c = conns.pop(fd)
                ep.unregister(fd)
                c.close()
                continue
            ls = listeners[fd]
            while True:
                try:
                    c, a = ls.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                if mode == "hold":
                    held.append(c)
                    peers.append(a)
                else:
                    c.setblocking(False)
                    conns[c.fileno()] = c
                    ep.register(c.fileno(), select.EPOLLIN | select.EPOLLRDHUP)
    if peers_file:
        with open(peers_file + ".tmp", "w") as f:
            for a, p in peers:
                f.write(f"{a} {p}\n")
        os.replace(peers_file + ".tmp", peers_file)


def udpecho(addr, port, peers_file):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((addr, port))
    u.settimeout(0.5)
    peers = {}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print("ready", flush=True)
    while not stop:
        try:
            d, a = u.recvfrom(2048)
        except (socket.timeout, InterruptedError):
            continue
        peers[a] = 1
        u.sendto(d, a)
    with open(peers_file + ".tmp", "w") as f:
        for a, p in peers:
            f.write(f"{a} {p}\n")
    os.replace(peers_file + ".tmp", peers_file)


if __name__ == "__main__":
    main()
