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
"""
import random, sys, statistics
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
def main():
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
main()
