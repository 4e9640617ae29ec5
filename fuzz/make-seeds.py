#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from the test vectors of protocol-spec.md.

Run from anywhere: python3 fuzz/make-seeds.py. The seeds are committed; rerun this
after the spec's vectors change. Each seed is named after the vector it comes from.
"""
import pathlib
import re

FUZZ = pathlib.Path(__file__).resolve().parent
SPEC = FUZZ.parent / "protocol-spec.md"


def vectors():
    """Every `name = value` of the spec's ```vectors blocks (long values joined)."""
    out, name, inside = {}, None, False
    for line in SPEC.read_text().splitlines():
        if line.startswith("```vectors"):
            inside = True
            continue
        if inside and line.startswith("```"):
            inside, name = False, None
            continue
        if not inside or line.startswith("#") or not line.strip():
            continue
        if line.startswith("    ") and name:
            out[name] += line.strip()
            continue
        m = re.match(r"^([\w.]+) =\s*(.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2).strip()
    return out


def main():
    v = vectors()
    raw = lambda n: bytes.fromhex(v[n])
    seeds = {t: {} for t in
             ["frame_decoder", "client_frame", "server_frame", "openers", "address",
              "vault_log", "keystore", "route_header"]}
    requests = sorted(n for n in v if n.startswith("frame.request."))
    server = sorted(n for n in v if n.startswith(("frame.response.", "frame.push.")))
    for n in requests:
        seeds["client_frame"][n] = raw(n)[4:]
        seeds["frame_decoder"][n] = b"\x00\x11\x22" + raw(n)
    for n in server:
        seeds["server_frame"][n] = raw(n)[4:]
        seeds["frame_decoder"][n] = b"\x01\x11\x22" + raw(n)
    seeds["frame_decoder"]["all-requests"] = b"\x00\x05\x09" + b"".join(raw(n) for n in requests)
    seeds["frame_decoder"]["all-server"] = b"\x01\x05\x09" + b"".join(raw(n) for n in server)
    # openers: the mode byte is (purpose << 4) | mode, see fuzz_targets/openers.rs.
    seeds["openers"]["welcome.sealed"] = b"\x00" + raw("welcome.sealed")
    seeds["openers"]["welcome.plaintext"] = b"\x05" + raw("welcome.plaintext")
    seeds["openers"]["welcome.plaintext.sealed"] = b"\x01" + raw("welcome.plaintext")
    seeds["openers"]["envelope.body"] = b"\x12" + raw("envelope.body")
    seeds["openers"]["pairwise.sealed"] = b"\x04" + raw("pairwise.sealed")
    for n, purpose in [("announce.inner", 0), ("direct.inner", 0), ("group.inner", 1),
                       ("farewell.inner", 2)]:
        seeds["openers"][n] = b"\x06" + raw(n)
        seeds["openers"][n + ".sealed"] = bytes([purpose << 4 | 3]) + raw(n)
    seeds["address"]["invite"] = v["invite"].encode()
    seeds["address"]["relay_address"] = v["relay_address"].encode()
    seeds["address"]["invite.pasted"] = ("<\u200b" + v["invite"][:40] + "\n  " +
                                         v["invite"][40:] + ">").encode()
    seeds["address"]["ipv6"] = v["relay_address"].replace("relay.example", "[::1]").encode()
    for n in sorted(n for n in v if n.startswith("route.")):
        seeds["route_header"][n] = raw(n)
    # Damage descriptions (see the targets): none, a flipped byte, a cut, junk after.
    seeds["vault_log"]["intact"] = b""
    seeds["vault_log"]["flip"] = bytes([0, 0, 0x40, 0x00, 0x10])
    seeds["vault_log"]["cut"] = bytes([1, 2, 0x80, 0x02, 0])
    seeds["vault_log"]["junk"] = bytes([2, 3, 0, 0, 0x41])
    seeds["keystore"]["intact"] = b""
    seeds["keystore"]["flip"] = bytes([0, 0x50, 0, 0x08])
    seeds["keystore"]["cut"] = bytes([2, 0x60, 0, 0])
    seeds["keystore"]["raw-empty"] = b"\xff"
    for target, files in seeds.items():
        d = FUZZ / "seeds" / target
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():
            old.unlink()
        for name, data in files.items():
            (d / name).write_bytes(data)
        print(f"{target}: {len(files)} seeds")


if __name__ == "__main__":
    main()
