"""A model of the port-set round robin, to compare bucket counts over many hash outcomes.

    python3 bench/bucket_model.py v6plus|ocn <trials>

Not a measurement: bench/run.sh measures the real rules on the kernel, for ONE hash outcome
(fixed seeds and addresses). This model asks how often a drop before 90 % use happens over
<trials> random outcomes: every destination key (protocol, address, port) gets a random bucket
(what jhash does for unknown addresses), each bucket (per protocol group, or shared) has one
round-robin counter over the N port sets of S ports, and a flow to a key fails when its set has
no free port left for that key (the kernel searches only that set). Traffic shapes as in
bench/hold.py: "mixed" (one site + 0-3 short TCP and 0-2 UDP to other hosts per connection),
"sites" (three sites in turn + DNS to one resolver + QUIC-like flows to four servers), "udp"
(UDP flows to one server + the same background). Prints P(drop before 90 %) and the mean and
smallest share of the ports held when the model stops (after 10 failures past 90 %, so it is
lower than bench/run.sh's held ÷ allowed, which ends on a failed connect).

    python3 bench/bucket_model.py end v6plus|ocn <trials>

The end of the line as bench/hold.py meets it: the LAN host opens one connection at a time, the
background flows of a shape come only between connections, and a connection fails when all of
its 11 tries (the SYN and 10 retransmissions, `tcp_syn_retries` 6 with 4 linear timeouts) found
their set full; each try takes the next value of its bucket's counter. Prints the mean and
smallest held ÷ allowed (the smallest of the sites for "sites") and how often it is below 0.99.
"""
import random, sys, statistics
def background_of(shape, rng, flow):
    """The other traffic of a shape before each connection (as bench/hold.py): 0-3 short TCP
    connections and 0-2 UDP datagrams to other hosts; for "sites" and "udp" also DNS to one
    resolver and, half the time, a QUIC-like flow to one of four servers."""
    k = 0
    def background():
        nonlocal k
        for _ in range(rng.randint(0, 3)):
            k += 1; flow(("tcp", 1 + k % 250, 9000 + (k//250) % 8))
        for _ in range(rng.randint(0, 2)):
            k += 1; flow(("udp", 1 + k % 250, 53))
        if shape in ("sites", "udp"):
            flow(("udp", "resolver", 53))           # DNS to one resolver
            if rng.random() < 0.5: flow(("udp", "quic%d" % rng.randrange(4), 443))
    return background
def run(N, S, K, perproto, shape, rng):
    # bucket of a key: random (a fresh hash seed per trial)
    bk = {}
    def bucket(key):
        if key not in bk: bk[key] = rng.randrange(K)
        g = key[0] if perproto else "all"
        return (g, bk[key])
    ctr = {}
    used = {}
    def flow(key):
        b = bucket(key); c = ctr.get(b, 0); ctr[b] = c + 1
        s = c % N
        u = used.setdefault(key, [0]*N)
        if u[s] < S:
            u[s] += 1; return True
        return False
    allowed = N*S; ninety = -(-allowed*9//10)
    background = background_of(shape, rng, flow)
    if shape in ("alone", "mixed", "udp"):
        sites = [("udp" if shape == "udp" else "tcp", "srv", 8080)]
    else:
        sites = [("tcp", "site%d" % i, 443) for i in range(3)]
    held = {s: 0 for s in sites}; drops = {s: 0 for s in sites}; d90 = {s: None for s in sites}
    active = list(sites)
    pending = []  # retries
    steps = 0
    while active and steps < 20000:
        steps += 1
        s = rng.choice(active)
        if shape != "alone": background()
        if flow(s):
            held[s] += 1
            if held[s] == ninety: d90[s] = drops[s]
        else:
            drops[s] += 1
            if drops[s] - (d90[s] if d90[s] is not None else 0) > 10 or held[s] >= allowed:
                active.remove(s)
            # real kernel: SYN retried; ~10 retries then give up
            if drops[s] >= 10 + (0 if d90[s] is None else d90[s]) and d90[s] is None:
                active.remove(s) if s in active else None
        if held[s] >= allowed and s in active: active.remove(s)
    return [(held[s]/allowed, d90[s]) for s in sites]
def held_at_end(N, S, K, shape, rng, tries=11):
    """held ÷ allowed when the first connection fails all its tries (see the module's doc)."""
    bk, ctr, used = {}, {}, {}
    def flow(key):
        b = (key[0], bk.setdefault(key, rng.randrange(K)))
        c = ctr.get(b, 0); ctr[b] = c + 1
        u = used.setdefault(key, [0]*N)
        if u[c % N] < S:
            u[c % N] += 1; return True
        return False
    background = background_of(shape, rng, flow)
    sites = [("tcp", "srv", 8080)] if shape == "mixed" else [("tcp", "site%d" % i, 443) for i in range(3)]
    held = {s: 0 for s in sites}
    turn = 0
    while True:
        s = sites[turn % len(sites)]; turn += 1
        background()
        if not any(flow(s) for _ in range(tries)):
            break
        held[s] += 1
    return min(held.values()) / (N*S)
def end(line, trials):
    N, S = (15, 16) if line == "v6plus" else (63, 16)
    for shape in ("mixed", "sites"):
        for K in (64, 128, 256):
            rng = random.Random(11)
            u = [held_at_end(N, S, K, shape, rng) for _ in range(trials)]
            low = sum(1 for x in u if x < 0.99) / len(u)
            print(f"{line:6} {shape:6} K={K:3}: held mean {statistics.mean(u):.4f} min {min(u):.4f} "
                  f"P(held < 0.99)={low:.2f}", flush=True)
def main():
    if sys.argv[1] == "end":
        return end(sys.argv[2], int(sys.argv[3]))
    N, S = (15, 16) if sys.argv[1] == "v6plus" else (63, 16)
    trials = int(sys.argv[2])
    for shape in ("mixed", "sites", "udp"):
        for perproto in (0, 1):
            for K in (1, 8, 16, 32, 64, 128):
                rng = random.Random(42)
                res = [r for _ in range(trials) for r in run(N, S, K, perproto, shape, rng)]
                bad = sum(1 for u, d in res if d is None or d > 0)
                util = statistics.mean(u for u, d in res)
                mind = min(u for u,d in res)
                print(f"{sys.argv[1]:6} {shape:6} perproto={perproto} K={K:3}: P(drop before 90%)={bad/len(res):.3f} mean util={util:.3f} min={mind:.3f}", flush=True)
if __name__ == "__main__":
    main()
