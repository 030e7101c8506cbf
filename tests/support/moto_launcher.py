"""moto's server with the two Auto Scaling calls moto lacks (CompleteLifecycleAction and
RecordLifecycleActionHeartbeat answer HTTP 500 there). Each call is checked against the group's
lifecycle hooks (an unknown hook is a ValidationError, as on AWS) and recorded as one JSON line
in the file named by SIH_MOTO_CALLS, so tests can assert on what the controller sent. Every SQS
message deletion is recorded there too (its queue, message id, body and time), so an invariant
checker can tell when each message went.

Every AWS request moto serves is also recorded, as the IAM action it needs and the access key
that sent it, in the file named by SIH_MOTO_REQUESTS: tests compare what the controller calls
with the IAM policy the documentation asks for.

Run: SIH_MOTO_CALLS=/tmp/calls.jsonl python3 tests/support/moto_launcher.py -H 127.0.0.1 -p 5000
"""
import json
import os
import sys
import time

from moto.autoscaling.exceptions import ValidationError
from moto.autoscaling.responses import AutoScalingResponse
from moto.core.responses import BaseResponse, EmptyResult
from moto.server import main
from moto.sqs.models import Queue

CALLS = os.environ.get("SIH_MOTO_CALLS", os.devnull)
REQUESTS = os.environ.get("SIH_MOTO_REQUESTS", os.devnull)

_call_action = BaseResponse.call_action


# moto's names for services whose IAM prefix differs.
IAM_PREFIX = {"elbv2": "elasticloadbalancing"}


def _call_and_record(self):
    prefix = IAM_PREFIX.get(self.service_name, self.service_name)
    entry = {"iam": f"{prefix}:{self._get_action()}", "key": self.get_access_key()}
    with open(REQUESTS, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    return _call_action(self)


BaseResponse.call_action = _call_and_record


def _record(self, action):
    group = self._get_param("AutoScalingGroupName")
    hook = self._get_param("LifecycleHookName")
    if not self.autoscaling_backend.describe_lifecycle_hooks(group, [hook]):
        raise ValidationError(f"No Lifecycle Hook named {hook} for group {group}")
    entry = {
        "action": action,
        "group": group,
        "hook": hook,
        "token": self._get_param("LifecycleActionToken"),
        "instance": self._get_param("InstanceId"),
        "result": self._get_param("LifecycleActionResult"),
        "time": time.time(),
    }
    with open(CALLS, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
    return EmptyResult()


AutoScalingResponse.complete_lifecycle_action = lambda self: _record(self, "CompleteLifecycleAction")
AutoScalingResponse.record_lifecycle_action_heartbeat = lambda self: _record(
    self, "RecordLifecycleActionHeartbeat"
)

_delete_message = Queue.delete_message


def _delete_and_record(self, receipt_handle):
    gone = [
        m
        for m in self._messages
        if receipt_handle not in self.deleted_messages and m.had_receipt_handle(receipt_handle)
    ]
    _delete_message(self, receipt_handle)
    for m in gone:
        entry = {"action": "DeleteMessage", "queue": self.name, "message_id": m.id,
                 "body": m.body, "time": time.time()}
        with open(CALLS, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")


Queue.delete_message = _delete_and_record

if __name__ == "__main__":
    sys.exit(main())
