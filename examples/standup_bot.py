#!/usr/bin/env python3
"""A stand-up bot for nook, written against docs/json.md ("nook rpc").

It runs one `nook rpc` process, creates a talk (--relay), joins one (--invite) or uses
one this home already has (--talk), subscribes to it, and answers every message that
starts with "!standup" by its id:

    bob: !standup shipped the rpc
    bot: noted, bob (re 3f2a9c0d1e4b5a67): shipped the rpc

Python 3 standard library only. Examples:

    python3 examples/standup_bot.py --relay 'nook://…@relay.example.org:4433' --invite-file invite.txt
    python3 examples/standup_bot.py --invite 'nook://…/…#…'
    python3 examples/standup_bot.py --talk nev2-xem6 --replies 10
"""

import argparse
import json
import subprocess
import sys


class RpcError(Exception):
    """A JSON-RPC error: `kind` is the nook error kind (docs/json.md, "error")."""

    def __init__(self, error):
        super().__init__(error.get("message", "error"))
        self.code = error.get("code")
        self.kind = error.get("data", {}).get("kind")


class Nook:
    """One `nook rpc` process: calls wait for their answer; notifications queue up."""

    def __init__(self, nook, home):
        cmd = [nook] + (["--home", home] if home else []) + ["rpc"]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.next_id = 0
        self.notifications = []

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            raise EOFError("nook rpc ended")
        return json.loads(line)

    def call(self, method, **params):
        self.next_id += 1
        request = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        while True:
            message = self._read()
            if "id" not in message:
                self.notifications.append(message)
            elif message["id"] == self.next_id:
                if "error" in message:
                    raise RpcError(message["error"])
                return message["result"]

    def notification(self):
        if self.notifications:
            return self.notifications.pop(0)
        return self._read()

    def close(self):
        self.proc.stdin.close()
        return self.proc.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nook", default="nook", help="the nook binary")
    ap.add_argument("--home", help="nook home (default: nook's)")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--relay", help="create a talk on this relay")
    where.add_argument("--invite", help="join a talk with this invite")
    where.add_argument("--talk", help="a talk this home already has")
    ap.add_argument("--invite-file", help="with --relay: write the invite here")
    ap.add_argument("--replies", type=int, default=0, help="exit after this many (0: never)")
    args = ap.parse_args()

    nook = Nook(args.nook, args.home)
    if args.relay:
        talk = nook.call("new", relay=args.relay, alias="standup-bot")
        invite = talk["invites"][0]
        if args.invite_file:
            with open(args.invite_file, "w") as f:
                f.write(invite + "\n")
        else:
            print(f"invite: {invite}", file=sys.stderr)
    elif args.invite:
        talk = nook.call("join", invite=args.invite, alias="standup-bot")
    else:
        talk = {"talk": args.talk}
    name = talk["talk"]
    nook.call("subscribe", talk=name)
    print(f"standup-bot: in talk {name}", file=sys.stderr)

    replies = 0
    while not args.replies or replies < args.replies:
        note = nook.notification()
        params = note.get("params", {})
        if note.get("method") == "unsubscribed":
            print(f"standup-bot: talk {name} ended ({params.get('reason')})", file=sys.stderr)
            break
        if note.get("method") != "event" or params.get("talk") != name:
            continue
        event = params["event"]
        if event["type"] in ("closed", "expired"):
            break
        if event["type"] != "message" or event["own"]:
            continue
        text = event["text"]
        if not text.startswith("!standup"):
            continue
        what = text[len("!standup"):].strip() or "(nothing said)"
        reply = f"noted, {event['alias']} (re {event['id']}): {what}"
        try:
            nook.call("send", talk=name, text=reply)
            replies += 1
        except RpcError as e:
            print(f"standup-bot: could not reply: {e} ({e.kind})", file=sys.stderr)
    sys.exit(nook.close())


if __name__ == "__main__":
    main()
