#!/usr/bin/env python3
"""A real SMTP server for Assent's tests (aiosmtpd), storing mail in a Maildir.

    smtp-test-server.py --port 2525 --maildir DIR [--starttls CERT_OUT] [--user U --password P]

With --starttls it makes a self-signed certificate for localhost/127.0.0.1,
writes it (PEM) to CERT_OUT for the client to trust, and offers STARTTLS
(required before AUTH and mail). Prints "READY <port>" when listening; stops
on SIGTERM. Test use only.
"""
import argparse, datetime, ipaddress, signal, ssl, sys, tempfile, threading

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


def make_certificate(cert_out):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    with open(cert_out, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    key_file = tempfile.NamedTemporaryFile(delete=False, suffix=".pem")
    key_file.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_file.close()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_out, key_file.name)
    return context


def main():
    # A parent may start us with signals blocked (the mask is inherited); unblock so SIGTERM stops us.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--starttls", metavar="CERT_OUT")
    parser.add_argument("--implicit-tls", metavar="CERT_OUT", help="TLS from the first byte (SMTPS, port 465 style)")
    parser.add_argument("--login-only", action="store_true", help="offer AUTH LOGIN but not PLAIN")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()

    kwargs = {}
    if args.starttls:
        kwargs["tls_context"] = make_certificate(args.starttls)
        kwargs["require_starttls"] = True
    if args.implicit_tls:
        kwargs["ssl_context"] = make_certificate(args.implicit_tls)
    if args.login_only:
        kwargs["auth_exclude_mechanism"] = ["PLAIN"]
    if args.user:
        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == args.user \
                and auth_data.password.decode() == args.password
            return AuthResult(success=ok, handled=False)
        kwargs["authenticator"] = authenticator
        kwargs["auth_required"] = True
        # aiosmtpd counts only STARTTLS as TLS for AUTH; implicit TLS is encrypted from the start anyway.
        kwargs["auth_require_tls"] = bool(args.starttls)

    controller = Controller(Mailbox(args.maildir), hostname="127.0.0.1", port=args.port, **kwargs)
    controller.start()
    print(f"READY {args.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    sys.exit(main())
