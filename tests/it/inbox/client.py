"""IMAP client steps for tests/it/inbox.rs, on Python's imaplib (a real client).

Usage: client.py MODE HOST PORT CAFILE USER PASSWORD; prints one JSON object.
"""
import base64, imaplib, json, socket, ssl, sys, time

mode, host, port, cafile, user, password = sys.argv[1:7]
port = int(port)
ctx = ssl.create_default_context(cafile=cafile)
out = {}


def tls():
    return imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=20)


if mode == "read":
    m = tls()
    out["login"] = m.login(user, password)[0]
    typ, names = m.list()
    out["list"] = [n.decode() for n in names]
    typ, data = m.select("INBOX")
    out["exists"] = int(data[0])
    typ, data = m.uid("SEARCH", None, "SUBJECT", '"Quarterly"')
    out["search"] = data[0].decode().split()
    typ, data = m.uid("SEARCH", None, "UNSEEN")
    out["unseen"] = data[0].decode().split()
    uid = out["search"][0]
    typ, data = m.uid("FETCH", uid, "(BODY.PEEK[])")
    out["body"] = base64.b64encode(data[0][1]).decode()
    typ, data = m.uid("FETCH", uid, "(RFC822.SIZE ENVELOPE BODYSTRUCTURE)")
    out["meta"] = " ".join(
        (d[0] if isinstance(d, tuple) else d).decode(errors="replace") for d in data
    )
    typ, data = m.uid("FETCH", uid, "(FLAGS)")
    out["flags_before"] = data[0].decode()
    typ, data = m.uid("STORE", uid, "+FLAGS", "(\\Seen \\Flagged)")
    out["store"] = typ
    out["copy"] = str(m.uid("COPY", uid, "Trash"))
    m.logout()
    m = tls()
    m.login(user, password)
    m.select("INBOX")
    typ, data = m.uid("FETCH", uid, "(FLAGS)")
    out["flags_after"] = data[0].decode()
    typ, data = m.uid("SEARCH", None, "SEEN")
    out["seen"] = data[0].decode().split()
    m.logout()
elif mode == "login":
    m = tls()
    try:
        out["result"] = m.login(user, password)[0]
        typ, data = m.select("INBOX")
        out["exists"] = int(data[0])
        typ, data = m.search(None, "ALL")
        out["all"] = data[0].decode().split()
        out["flags"] = []
        if out["exists"]:
            typ, data = m.fetch("1:*", "(FLAGS)")
            out["flags"] = [d.decode() for d in data if d]
        typ, data = m.search(None, "KEYWORD", "$Delivered")
        out["delivered"] = data[0].decode().split()
        m.logout()
    except imaplib.IMAP4.error as e:
        out["result"] = "NO"
        out["error"] = str(e)
elif mode == "delete":
    m = tls()
    m.login(user, password)
    typ, data = m.select("INBOX")
    out["before"] = int(data[0])
    typ, data = m.store("1:*", "+FLAGS", "(\\Deleted)")
    out["store"] = typ
    out["flags"] = [d.decode() for d in data if d]
    typ, data = m.expunge()
    out["expunge"] = typ
    out["expunged"] = [d.decode() for d in data if d]
    m.logout()
    m = tls()
    m.login(user, password)
    typ, data = m.select("INBOX")
    out["after"] = int(data[0])
    m.logout()
elif mode == "starttls":
    m = imaplib.IMAP4(host, port, timeout=20)
    out["caps_before"] = sorted(m.capabilities)
    try:
        m.login(user, password)
        out["plain_login"] = "OK"
    except imaplib.IMAP4.error as e:
        out["plain_login"] = str(e)
    m.starttls(ssl_context=ctx)
    out["caps_after"] = sorted(m.capabilities)
    out["login"] = m.login(user, password)[0]
    typ, data = m.select("INBOX")
    out["exists"] = int(data[0])
    m.logout()
elif mode == "idle":
    m = tls()
    m.login(user, password)
    m.select("INBOX")
    m.send(b"i1 IDLE\r\n")
    line = m.readline()
    assert line.startswith(b"+"), line
    print("IDLING", flush=True)
    while True:
        line = m.readline()
        if line.endswith(b"EXISTS\r\n"):
            out["seen_at"] = time.time()
            out["line"] = line.decode().strip()
            break
        if not line:
            out["line"] = "closed"
            break
    m.send(b"DONE\r\n")
    while True:
        line = m.readline()
        if not line or line.startswith(b"i1 "):
            out["done"] = line.decode().strip()
            break
    m.logout()
print(json.dumps(out), flush=True)
