"""Send one message with Python's smtplib, for Posthorn's end-to-end tests.

Usage: smtplib_send.py SPEC.json

SPEC is a JSON object: host, port, from, to (a list), message (the path of
a file holding the message, sent as bytes), and optionally helo (send HELO
with this name instead of EHLO), ehlo (the EHLO name) and mail_options
(for example ["SMTPUTF8", "BODY=8BITMIME"]).

Prints one line of JSON: {"ok": true, "refused": {...}} when the message
was accepted for at least one recipient, otherwise {"ok": false, "code":
N, "error": "...", "refused": {...}}. smtplib does the client's share of
the protocol itself: dot-stuffing, SIZE, the end-of-data line.
"""

import json
import smtplib
import sys


def text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def refused_map(refused):
    return {addr: [code, text(msg)] for addr, (code, msg) in refused.items()}


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    with open(spec["message"], "rb") as f:
        message = f.read()
    result = {"ok": False}
    try:
        with smtplib.SMTP(spec["host"], spec["port"], timeout=30) as s:
            if spec.get("helo"):
                s.helo(spec["helo"])
            else:
                s.ehlo(spec.get("ehlo", "client.example.org"))
            refused = s.sendmail(spec["from"], spec["to"], message,
                                 mail_options=spec.get("mail_options", []))
            result = {"ok": True, "refused": refused_map(refused)}
    except smtplib.SMTPRecipientsRefused as e:
        result = {"ok": False, "refused": refused_map(e.recipients)}
    except smtplib.SMTPResponseException as e:
        result = {"ok": False, "code": e.smtp_code, "error": text(e.smtp_error)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
