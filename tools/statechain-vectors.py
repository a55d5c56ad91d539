#!/usr/bin/env python3
"""An independent implementation of statechain.md's math (§2.2, §2.3, §2.5,
§3.2, §5.1) in plain Python integers and hashlib, used by statechain-core's
tests to cross-check the Rust code (which runs on libsecp256k1).

Prints JSON: the spec's vector (every byte value repeated x32) and, for each of
the eight (g_P, g_Q, sigma) parity combinations, the first case found by a
fixed search, with every derived value. Nothing here is random.
"""
import hashlib
import json

P_FIELD = 2**256 - 2**32 - 977
N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
G = (
    0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
    0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8,
)


def add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    if a[0] == b[0] and (a[1] + b[1]) % P_FIELD == 0:
        return None
    if a == b:
        lam = 3 * a[0] * a[0] * pow(2 * a[1], P_FIELD - 2, P_FIELD) % P_FIELD
    else:
        lam = (b[1] - a[1]) * pow(b[0] - a[0], P_FIELD - 2, P_FIELD) % P_FIELD
    x = (lam * lam - a[0] - b[0]) % P_FIELD
    return (x, (lam * (a[0] - x) - a[1]) % P_FIELD)


def mul(k, p):
    r = None
    for bit in bin(k % N)[2:]:
        r = add(r, r)
        if bit == "1":
            r = add(r, p)
    return r


def neg(p):
    return (p[0], (-p[1]) % P_FIELD)


def ser33(p):
    return bytes([2 + (p[1] & 1)]) + p[0].to_bytes(32, "big")


def xb(p):
    return p[0].to_bytes(32, "big")


def g(p):
    return 1 if p[1] % 2 == 0 else -1


def lift_x(xbytes):
    x = int.from_bytes(xbytes, "big")
    y = pow((x**3 + 7) % P_FIELD, (P_FIELD + 1) // 4, P_FIELD)
    return (x, y if y % 2 == 0 else P_FIELD - y)


def th(tag, *parts):
    t = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(t + t + b"".join(parts)).digest()


def sc(b):
    return b.to_bytes(32, "big") if isinstance(b, int) else b


def hexs(v):
    return v.hex()


def bip340_sign(seckey, msg, aux=bytes(32)):
    p = mul(seckey, G)
    d = seckey if g(p) == 1 else N - seckey
    t = (d ^ int.from_bytes(th("BIP0340/aux", aux), "big")).to_bytes(32, "big")
    k0 = int.from_bytes(th("BIP0340/nonce", t, xb(p), msg), "big") % N
    r = mul(k0, G)
    k = k0 if g(r) == 1 else N - k0
    e = int.from_bytes(th("BIP0340/challenge", xb(r), xb(p), msg), "big") % N
    return xb(r) + ((k + e * d) % N).to_bytes(32, "big")


def case(o, s, r_s, r_o, b, m):
    P = add(mul(o, G), mul(s, G))
    g_p = g(P)
    t = int.from_bytes(th("TapTweak", xb(P)), "big")
    assert t < N
    Q = add(P if g_p == 1 else neg(P), mul(t, G))
    g_q = g(Q)
    R_s, R_o = mul(r_s, G), mul(r_o, G)
    com = th("LK/statechain/commit/v1", ser33(R_o), sc(b), m)
    R = add(add(R_s, R_o), mul(b, P))
    sigma = g(R)
    e = int.from_bytes(th("BIP0340/challenge", xb(R), xb(Q), m), "big") % N
    c = (b + sigma * g_p * g_q * e) % N
    s_s = (r_s + c * s) % N
    s_o = (r_o + c * o + sigma * g_q * e * t) % N
    sig_s = (sigma * (s_s + s_o)) % N
    return {
        "P": hexs(ser33(P)),
        "g_P": g_p,
        "xQ": hexs(xb(Q)),
        "g_Q": g_q,
        "com": hexs(com),
        "R_star": hexs(ser33(R)),
        "sigma": sigma,
        "c": hexs(sc(c)),
        "s_s": hexs(sc(s_s)),
        "sig": hexs(xb(R) + sc(sig_s)),
    }


def rep(byte):
    return int.from_bytes(bytes([byte]) * 32, "big")


def main():
    out = {}
    v = case(rep(0x11), rep(0x23), rep(0x35), rep(0x47), rep(0x59), bytes([0x6B]) * 32)
    # §2.5 continuing: x1 = 0x7d.., o2 = 0x8f..
    o1, s1, x1, o2 = rep(0x11), rep(0x23), rep(0x7D), rep(0x8F)
    t1 = (o1 + x1) % N
    t2 = (t1 - o2) % N
    P = add(mul(o1, G), mul(s1, G))
    S2 = add(P, neg(mul(o2, G)))
    v["t1"], v["t2"], v["S2"] = hexs(sc(t1)), hexs(sc(t2)), hexs(ser33(S2))
    out["spec"] = v

    # §3.2 and §5.1.
    a = rep(0x9A)
    A = xb(mul(a, G))
    fields = ser33(mul(rep(0x35), G)) + bytes.fromhex(v["com"]) + bytes.fromhex(v["c"])
    digest = th("LK/statechain/auth/v1", b"\xaa" * 32, b"\x03", b"\xbb" * 16, b"\xcc" * 32, fields)
    sig = bip340_sign(a, digest)
    leaf = b"LKSC\x01g" + b"\xbb" * 16 + (1).to_bytes(4, "big") + b"\xcc" * 32
    leaf += (1).to_bytes(4, "big") + fields + sig
    out["auth"] = {
        "A": hexs(A),
        "digest": hexs(digest),
        "sig": hexs(sig),
        "g_leaf_hash": hexs(hashlib.sha256(b"\x00" + leaf).digest()),
    }

    # One case per parity combination, by a fixed search over byte values.
    found = {}
    for i in range(1, 255):
        vals = [rep((i * k + 0x10) % 255 + 1) for k in (3, 5, 7, 11, 13)]
        m = bytes([(i * 17) % 256]) * 32
        r = case(*vals, m)
        key = (r["g_P"], r["g_Q"], r["sigma"])
        if key not in found:
            r["inputs"] = [hexs(sc(x)) for x in vals] + [hexs(m)]
            found[key] = r
        if len(found) == 8:
            break
    out["parities"] = [found[k] for k in sorted(found)]
    print(json.dumps(out, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
