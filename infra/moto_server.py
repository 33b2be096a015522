"""moto's server (DynamoDB, SQS, KMS on one loopback port), with two fixes where moto 5.2
diverges from AWS in ways Baton's adapters rely on. Used by the tests and infra/moto.sh:

    .venv/bin/python infra/moto_server.py -H 127.0.0.1 -p 5000

1. moto serves requests on threads and evaluates a DynamoDB condition and the write it guards
   as two steps, so two racing conditional writes can both succeed. DynamoDB applies each
   conditional write atomically; here every DynamoDB request runs under one lock.
2. moto accepts any receipt handle a message ever had. SQS only honours the most recent one:
   DeleteMessage with an older handle succeeds without deleting, and ChangeMessageVisibility
   with it fails. Here both behave as on SQS.

Everything else is moto as `moto_server` runs it.
"""

import argparse
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.sqs import models as sqs
from moto.sqs.exceptions import ReceiptHandleIsInvalid
from werkzeug.serving import run_simple


def _stale(queue, receipt_handle):
    """True when a message of `queue` had `receipt_handle` once but holds a newer one now."""
    return any(
        m.receipt_handle != receipt_handle and receipt_handle in m._old_receipt_handles for m in queue._messages
    )


_delete_message = sqs.Queue.delete_message


def delete_message(self, receipt_handle):
    if _stale(self, receipt_handle):
        return
    _delete_message(self, receipt_handle)


_change_visibility = sqs.SQSBackend.change_message_visibility


def change_message_visibility(self, queue_name, receipt_handle, visibility_timeout):
    if _stale(self.get_queue(queue_name), receipt_handle):
        raise ReceiptHandleIsInvalid()
    _change_visibility(self, queue_name, receipt_handle, visibility_timeout)


sqs.Queue.delete_message = delete_message
sqs.SQSBackend.change_message_visibility = change_message_visibility


def serialize_dynamodb(app):
    lock = threading.Lock()

    def wrapped(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with lock:
                return [b"".join(app(environ, start_response))]
        return app(environ, start_response)

    return wrapped


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        serialize_dynamodb(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
