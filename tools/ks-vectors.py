#!/usr/bin/env python3
"""Recomputes keyserver.md §10's hash-chain vectors from §3.4 with hashlib
and `cryptography` (pip install cryptography), independently of ks-core.
Prints one JSON object; ks-core's tests/vectors.rs runs this script and
compares, so no vector comes only from the code under test."""
import hashlib
import json

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def ckdf(nonce):
    a = hashlib.sha512(nonce).digest()
    a1 = a[:32] * 2
    a2 = a[32:] * 2
    p = lambda x: bytes(b ^ 0x5C for b in x)
    q = lambda x: bytes(b ^ 0x36 for b in x)
    k1 = hashlib.sha512(p(a1) + hashlib.sha512(q(a2)).digest()).digest()
    k2 = hashlib.sha512(p(a2) + hashlib.sha512(q(a1)).digest()).digest()
    return k1, k2


def entry(identity, nonce, u, iv, prev):
    k1, k2 = ckdf(nonce)
    ident = identity.encode("ascii")
    hash_id = hashlib.sha256(k1 + ident).digest()
    id_key = hashlib.sha256(k2 + ident).digest()
    enc = Cipher(algorithms.AES(id_key), modes.CBC(iv)).encryptor()
    cr_uid = iv + enc.update(u) + enc.finalize()
    uid_index = hashlib.sha256(u).digest()
    body = b"\x01" + nonce + hash_id + cr_uid + uid_index
    h = hashlib.sha256(body + prev).digest()
    return {"hash_id": hash_id, "id_key": id_key, "cr_uid": cr_uid,
            "uid_index": uid_index, "h": h, "entry": h + body}


def leaf_hash(e):
    return hashlib.sha256(b"\x00" + b"LKKS\x01" + e).digest()


k1, k2 = ckdf(bytes(8))
e0 = entry("alice@example.org", bytes(range(8)), b"\x11" * 32, b"\x22" * 16, bytes(32))
e1 = entry("bob@example.org", b"\xff" * 8, b"\x33" * 32, b"\x44" * 16, e0["h"])
root = hashlib.sha256(b"\x01" + leaf_hash(e0["entry"]) + leaf_hash(e1["entry"])).digest()
print(json.dumps({
    "ckdf_k1": k1.hex(), "ckdf_k2": k2.hex(),
    "hash_id": e0["hash_id"].hex(), "id_key": e0["id_key"].hex(),
    "cr_uid": e0["cr_uid"].hex(), "uid_index": e0["uid_index"].hex(),
    "h0": e0["h"].hex(), "leaf_hash0": leaf_hash(e0["entry"]).hex(),
    "h1": e1["h"].hex(), "root2": root.hex(),
}, sort_keys=True))
