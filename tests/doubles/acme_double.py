#!/usr/bin/python3
"""A test double of an ACME server, for certfleet's contract tests. It is not a CA.

It follows RFC 8555 (ACME) and RFC 9773 (ACME Renewal Information) for the paths certfleet
uses, and only as far as a client can tell: directory with renewalInfo and meta.profiles,
nonces, newAccount, newOrder, authorizations (always valid), finalize (answered
`processing` with Retry-After: 1 for the first polls), certificate download, revokeCert and
renewalInfo. It exists because Pebble 2.4.0 has no renewal information, no profiles and no
Retry-After, and cannot be told to fail on purpose.

What it does not do, on purpose:
  - It does not verify JWS signatures: it reads the protected header (for the nonce) and
    the payload only. Pebble checks certfleet's signatures in the other contract tests.
  - It validates nothing: every authorization is valid from the start.
  - Its certificates come from a throw-away issuer made at start-up and are worthless.

Faults and answers are chosen per test through a control endpoint on the same listener:

  POST /control/reset   JSON body, every key optional (the defaults apply otherwise):
      new_order_fault       null | "rateLimited" | "caa" | "unavailable_once" |
                            "userActionRequired" (new terms, named by a Link header)
      fault_count           how many new orders get the fault before it stops (null: all;
                            "unavailable_once" means 1)
      rate_limit_retry_after  seconds sent with rateLimited (default 3600)
      bad_nonce_first       true: the first POST to each URL, and every second one after,
                            is refused with badNonce
      processing_polls      how many order polls after finalize still say processing (1)
      renewal_window        {"start": RFC 3339, "end": RFC 3339, "retry_after": seconds,
                             "explanation_url": URL}
      profiles              {"name": "description"} offered in meta.profiles
    It also clears the counters and records.
  GET /control/state    counts per endpoint, the orders as received (identifiers,
                        replaces, profile), renewalInfo IDs asked for, and the times of the
                        finalize and order polls.

Usage: acme_double.py --cert C --key K --port-file F   (listens on 127.0.0.1 only; the port
is chosen by the kernel and written to F once the server accepts connections)
"""

import argparse
import base64
import datetime
import http.server
import json
import os
import secrets
import ssl
import sys
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PROBLEM = "urn:ietf:params:acme:error:"

DEFAULTS = {
    "new_order_fault": None,
    "fault_count": None,
    "rate_limit_retry_after": 3600,
    "bad_nonce_first": False,
    "processing_polls": 1,
    "renewal_window": {
        "start": "2026-12-03T20:00:00Z",
        "end": "2026-12-04T20:00:00Z",
        "retry_after": 21600,
        "explanation_url": "https://ca.example.test/renewal-explained",
    },
    "profiles": {
        "classic": "the default profile",
        "shortlived": "six days",
    },
}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Issuer:
    """A throw-away issuing certificate with a subject key identifier, so that the leaves it
    signs carry the authority key identifier RFC 9773 certificate IDs are built from."""

    def __init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "certfleet acme double")])
        now = datetime.datetime.utcnow()
        self.ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(self.ski, critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, csr_der):
        csr = x509.load_der_x509_csr(csr_der)
        now = datetime.datetime.utcnow()
        # The top bit set on purpose: the serial's DER then needs a leading zero byte, which
        # a client must keep in the certificate ID.
        serial = int.from_bytes(os.urandom(16), "big") | (1 << 127)
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(self.cert.subject)
            .public_key(csr.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self.ski),
                critical=False,
            )
        )
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            builder = builder.add_extension(san.value, critical=False)
        except x509.ExtensionNotFound:
            pass
        leaf = builder.sign(self.key, hashes.SHA256())
        return (
            leaf.public_bytes(serialization.Encoding.PEM)
            + self.cert.public_bytes(serialization.Encoding.PEM)
        ).decode("ascii")


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.issuer = Issuer()
        self.nonces = set()
        self.reset({})

    def reset(self, config):
        with self.lock:
            self.config = json.loads(json.dumps(DEFAULTS))
            self.config.update(config)
            self.counts = {}
            self.orders = {}  # id -> dict
            self.order_log = []  # as received, for the tests
            self.renewal_requests = []
            self.poll_times = []
            self.nonce_toggles = {}
            self.faults_served = 0
            self.accounts = {}

    def new_nonce(self):
        nonce = b64url(secrets.token_bytes(16))
        with self.lock:
            self.nonces.add(nonce)
        return nonce


STATE = State()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "certfleet-acme-double"

    # ------------------------------------------------------------------ plumbing
    def base(self):
        return "https://127.0.0.1:%d" % self.server.server_address[1]

    def count(self, name):
        with STATE.lock:
            STATE.counts[name] = STATE.counts.get(name, 0) + 1

    def send(self, status, body=b"", content_type=None, headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            content_type = content_type or "application/json"
        elif isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Replay-Nonce", STATE.new_nonce())
        self.send_header("Cache-Control", "no-store")
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def problem(self, status, kind, detail, headers=None, extra=None):
        document = {"type": PROBLEM + kind, "detail": detail, "status": status}
        document.update(extra or {})
        self.send(status, json.dumps(document), "application/problem+json", headers)

    def read_jws(self):
        """The payload of a POSTed JWS (None for POST-as-GET), or None after answering with
        a problem. The signature is not checked: see the module's doc string."""
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        header = json.loads(b64url_decode(body.get("protected", "")))
        nonce = header.get("nonce", "")
        with STATE.lock:
            known = nonce in STATE.nonces
            STATE.nonces.discard(nonce)
            refuse = False
            if STATE.config.get("bad_nonce_first"):
                refuse = not STATE.nonce_toggles.get(self.path, False)
                STATE.nonce_toggles[self.path] = refuse
        if not known or refuse:
            self.problem(400, "badNonce", "JWS has an invalid anti-replay nonce")
            return False, None
        payload = body.get("payload", "")
        return True, (json.loads(b64url_decode(payload)) if payload else None)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % args))

    # ------------------------------------------------------------------ GET / HEAD
    def do_HEAD(self):
        if self.path == "/new-nonce":
            self.count("new-nonce")
            self.send(200)
            return
        self.send(404)

    def do_GET(self):
        path = self.path
        if path == "/directory":
            self.count("directory")
            base = self.base()
            with STATE.lock:
                profiles = STATE.config.get("profiles")
            self.send(200, {
                "newNonce": base + "/new-nonce",
                "newAccount": base + "/new-account",
                "newOrder": base + "/new-order",
                "revokeCert": base + "/revoke-cert",
                "keyChange": base + "/key-change",
                "renewalInfo": base + "/renewal-info",
                "meta": {"termsOfService": base + "/terms", "profiles": profiles},
            })
            return
        if path == "/new-nonce":
            self.count("new-nonce")
            self.send(204)
            return
        if path.startswith("/renewal-info/"):
            self.count("renewal-info")
            cert_id = path[len("/renewal-info/"):]
            with STATE.lock:
                STATE.renewal_requests.append(cert_id)
                window = dict(STATE.config["renewal_window"])
            headers = []
            if window.get("retry_after") is not None:
                headers.append(("Retry-After", str(window["retry_after"])))
            self.send(200, {
                "suggestedWindow": {"start": window["start"], "end": window["end"]},
                "explanationURL": window.get("explanation_url", ""),
            }, headers=headers)
            return
        if path == "/control/state":
            with STATE.lock:
                state = {
                    "counts": STATE.counts,
                    "orders": STATE.order_log,
                    "renewal_requests": STATE.renewal_requests,
                    "poll_times": STATE.poll_times,
                }
                body = json.dumps(state)
            self.send(200, body, "application/json")
            return
        self.send(404)

    # ------------------------------------------------------------------ POST
    def do_POST(self):
        path = self.path
        if path == "/control/reset":
            length = int(self.headers.get("Content-Length", "0"))
            STATE.reset(json.loads(self.rfile.read(length) or b"{}"))
            self.send(200, {"ok": True})
            return

        name = path.strip("/").split("/")[0]
        if path.endswith("/finalize"):
            name = "finalize"
        self.count(name)
        ok, payload = self.read_jws()
        if not ok:
            return
        base = self.base()

        if path == "/new-account":
            with STATE.lock:
                account_id = str(len(STATE.accounts) + 1)
                STATE.accounts[account_id] = "valid"
            self.send(201, {"status": "valid", "orders": base + "/orders/" + account_id},
                      headers=[("Location", base + "/account/" + account_id)])
            return

        if path.startswith("/account/"):
            account_id = path[len("/account/"):]
            with STATE.lock:
                if payload and payload.get("status") == "deactivated":
                    STATE.accounts[account_id] = "deactivated"
                status = STATE.accounts.get(account_id, "valid")
            self.send(200, {"status": status})
            return

        if path == "/new-order":
            self.new_order(payload)
            return

        if path.startswith("/authz/"):
            order_id, index = path[len("/authz/"):].split("/")
            with STATE.lock:
                identifier = STATE.orders[order_id]["identifiers"][int(index)]
            self.send(200, {
                "status": "valid",
                "identifier": identifier,
                "challenges": [{
                    "type": "dns-01",
                    "url": "%s/challenge/%s/%s" % (base, order_id, index),
                    "token": b64url(secrets.token_bytes(16)),
                    "status": "valid",
                }],
            })
            return

        if path.startswith("/challenge/"):
            self.send(200, {"type": "dns-01", "status": "valid", "url": base + path})
            return

        if path.startswith("/order/") and path.endswith("/finalize"):
            order_id = path[len("/order/"):-len("/finalize")]
            chain = STATE.issuer.issue(b64url_decode(payload["csr"]))
            with STATE.lock:
                order = STATE.orders[order_id]
                order["chain"] = chain
                order["status"] = "processing"
                order["polls_left"] = int(STATE.config["processing_polls"])
                STATE.poll_times.append(time.time())
            self.send(200, self.order_object(order_id),
                      headers=[("Retry-After", "1"), ("Location", base + "/order/" + order_id)])
            return

        if path.startswith("/order/"):
            order_id = path[len("/order/"):]
            headers = []
            with STATE.lock:
                order = STATE.orders[order_id]
                STATE.poll_times.append(time.time())
                if order["status"] == "processing":
                    if order["polls_left"] > 0:
                        order["polls_left"] -= 1
                        headers.append(("Retry-After", "1"))
                    else:
                        order["status"] = "valid"
            self.send(200, self.order_object(order_id), headers=headers)
            return

        if path.startswith("/certificate/"):
            order_id = path[len("/certificate/"):]
            with STATE.lock:
                chain = STATE.orders[order_id]["chain"]
            self.send(200, chain, "application/pem-certificate-chain")
            return

        if path == "/revoke-cert":
            self.send(200)
            return

        self.problem(404, "malformed", "no such resource " + path)

    def new_order(self, payload):
        identifiers = payload.get("identifiers", [])
        with STATE.lock:
            STATE.order_log.append({
                "identifiers": identifiers,
                "replaces": payload.get("replaces"),
                "profile": payload.get("profile"),
            })
            fault = STATE.config.get("new_order_fault")
            retry_after = STATE.config.get("rate_limit_retry_after")
            limit = 1 if fault == "unavailable_once" else STATE.config.get("fault_count")
            if fault is not None and limit is not None and STATE.faults_served >= limit:
                fault = None
            if fault is not None:
                STATE.faults_served += 1

        if fault == "rateLimited":
            self.problem(429, "rateLimited", "too many new orders recently",
                         headers=[("Retry-After", str(retry_after))])
            return
        if fault == "caa":
            subproblems = [{
                "type": PROBLEM + "caa",
                "detail": "CAA record for %s prevents issuance" % i["value"],
                "identifier": i,
            } for i in identifiers]
            self.problem(403, "caa", "CAA records forbid issuance",
                         extra={"subproblems": subproblems})
            return
        if fault == "userActionRequired":
            terms = self.base() + "/terms/v2"
            self.problem(403, "userActionRequired", "the terms of service have changed",
                         headers=[("Link", '<%s>;rel="terms-of-service"' % terms)])
            return
        if fault == "userActionRequired":
            terms = self.base() + "/terms/v2"
            self.problem(403, "userActionRequired", "the terms of service have changed",
                         headers=[("Link", '<%s>;rel="terms-of-service"' % terms)])
            return
        if fault == "unavailable_once":
            self.send(503, "the service is briefly unavailable\n", "text/plain")
            return

        profile = payload.get("profile")
        with STATE.lock:
            offered = STATE.config.get("profiles") or {}
        if profile is not None and profile not in offered:
            self.problem(400, "invalidProfile", "profile %s is not offered" % profile)
            return

        with STATE.lock:
            order_id = str(len(STATE.orders) + 1)
            STATE.orders[order_id] = {"identifiers": identifiers, "status": "ready"}
        self.send(201, self.order_object(order_id),
                  headers=[("Location", self.base() + "/order/" + order_id)])

    def order_object(self, order_id):
        base = self.base()
        with STATE.lock:
            order = STATE.orders[order_id]
            document = {
                "status": order["status"],
                "identifiers": order["identifiers"],
                "authorizations": [
                    "%s/authz/%s/%d" % (base, order_id, i)
                    for i in range(len(order["identifiers"]))
                ],
                "finalize": "%s/order/%s/finalize" % (base, order_id),
            }
            if order["status"] == "valid":
                document["certificate"] = "%s/certificate/%s" % (base, order_id)
        return document


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cert", required=True, help="PEM certificate for 127.0.0.1")
    parser.add_argument("--key", required=True, help="its private key")
    parser.add_argument("--port-file", required=True, help="where to write the port")
    args = parser.parse_args()

    # Loopback only: this is a test double and must never be reachable from elsewhere.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)

    temp = args.port_file + ".tmp"
    with open(temp, "w") as out:
        out.write("%d\n" % server.server_address[1])
    os.rename(temp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
