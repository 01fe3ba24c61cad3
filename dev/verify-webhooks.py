"""Verifies webhook requests with the `standardwebhooks` package (PyPI), an
implementation independent of ours. Input: a JSON file {"secrets": [...], "requests":
[{"headers": {...}, "body": "..."}]}; every request must verify with one of the
secrets. Prints how many verified; exits 1 on the first that does not."""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    hooks = [Webhook(s) for s in data["secrets"]]
    verified = 0
    for r in data["requests"]:
        for hook in hooks:
            try:
                hook.verify(r["body"], r["headers"])
                break
            except WebhookVerificationError:
                continue
        else:
            print("does not verify:", r["headers"].get("webhook-id"), file=sys.stderr)
            return 1
        verified += 1
    print(verified)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
