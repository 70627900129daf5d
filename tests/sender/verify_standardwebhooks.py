# Verifies a delivery with the Standard Webhooks reference library
# (`pip install standardwebhooks`). argv: whsec secret, webhook-id,
# webhook-timestamp, webhook-signature; the raw body on stdin.
import sys
from standardwebhooks.webhooks import Webhook

body = sys.stdin.buffer.read()
secret, msg_id, ts, sig = sys.argv[1:5]
try:
    Webhook(secret).verify(body, {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sig})
except Exception as e:  # WebhookVerificationError
    print(f"refused: {e}", file=sys.stderr)
    sys.exit(1)
