"""A runbook service for Tandem's `http` action, in the standard library and
`standardwebhooks`: it checks each call's signature, does the step (here: prints it) and
answers 200 with the step's output. Run it with the pair's runbook secret:

    RUNBOOK_SECRET=whsec_... python examples/runbook.py 9000
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["RUNBOOK_SECRET"])
done: dict[str, dict] = {}  # Idempotency-Key -> output: a retried call is not done twice


class Runbook(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802  (readiness: check_url)
        self.answer(200, {"ok": True})

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
        try:
            call = webhook.verify(body, dict(self.headers))
        except WebhookVerificationError:
            return self.answer(401, {"error": "bad signature"})
        key = self.headers["Idempotency-Key"]
        if key not in done:
            print(
                f"{call['action']} {call['step']} of {call['operation_id']}: "
                f"{call['source']['region']} -> {call['target']['region']}",
                flush=True,
            )
            done[key] = {"step": call["step"], "action": call["action"]}
        self.answer(200, done[key])

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Runbook).serve_forever()
