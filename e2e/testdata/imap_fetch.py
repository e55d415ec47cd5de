"""Fetch every message of a mailbox over IMAP, for Posthorn's end-to-end tests.

Usage: imap_fetch.py HOST PORT USER PASSWORD

Logs in with LOGIN, selects INBOX and fetches each message whole. Prints
one line of JSON: {"exists": N, "messages": [{"uid": U, "body": BASE64}]},
in UID order. Errors end the script with a traceback and a non-zero exit.
"""

import base64
import imaplib
import json
import sys


def main():
    host, port, user, password = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    imap = imaplib.IMAP4(host, port, timeout=30)
    imap.login(user, password)
    typ, data = imap.select("INBOX")
    if typ != "OK":
        raise SystemExit("SELECT INBOX: %s %r" % (typ, data))
    exists = int(data[0])
    messages = []
    if exists > 0:
        typ, data = imap.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
        if typ != "OK":
            raise SystemExit("FETCH: %s %r" % (typ, data))
        for item in data:
            if not isinstance(item, tuple):
                continue  # the closing ")" of each response
            meta, body = item
            words = meta.decode("ascii").replace("(", " ").split()
            uid = int(words[words.index("UID") + 1])
            messages.append({"uid": uid, "body": base64.b64encode(body).decode("ascii")})
    imap.logout()
    messages.sort(key=lambda m: m["uid"])
    print(json.dumps({"exists": exists, "messages": messages}))


if __name__ == "__main__":
    main()
