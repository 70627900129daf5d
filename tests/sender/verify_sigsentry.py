# Seed 000's verification snippet, verbatim, run against what hookgate sent.
# argv: secret, signature header value; the raw body on stdin.
import hmac, hashlib
import sys

def is_valid(body: bytes, signature: str, secret: str) -> bool:
    expected = 'sha256=' + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature, expected)

body = sys.stdin.buffer.read()
sys.exit(0 if is_valid(body, sys.argv[2], sys.argv[1]) else 1)
